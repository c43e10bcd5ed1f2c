#!/usr/bin/env python3
"""Smoke test of the interop peers on loopback, without bolide.

    python3 tests/interop/smoke.py [VENV]

VENV defaults to what tests/interop/setup.sh prints. Starts, in a temporary
directory, a Comet broker, a Comet subscriber (save-event), a second Comet
subscriber with a non-matching --filter, pygcn-listen and a raw VTP
subscriber; submits an event with comet-sendvo and checks that every peer
got the very bytes that were sent; resubmits it and checks comet-sendvo's
exit status on a nak. Everything talks to 127.0.0.1 only. Standard library
only; prints "N passed, N failed" at the end. Exit 0 when all passed.
"""
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
EVENT = os.path.join(HERE, "..", "..", "..", "shared", "voevents", "invalid",
                     "control", "valid-base.xml")
IVORN = "ivo://bolide.test/invalid#base-1"

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print("%s %s%s" % ("ok  " if ok else "FAIL", name,
                       "" if ok else "  -- " + detail), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


class VTP:
    """Raw VTP subscriber: records every message, never answers."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)

    def recv(self):
        def exact(n):
            b = b""
            while len(b) < n:
                c = self.s.recv(n - len(b))
                if not c:
                    raise EOFError
                b += c
            return b
        (n,) = struct.unpack("!I", exact(4))
        return exact(n)


def main():
    if len(sys.argv) > 1:
        venv = sys.argv[1]
    else:
        out = subprocess.run([os.path.join(HERE, "setup.sh")],
                             stdout=subprocess.PIPE, text=True)
        if out.returncode != 0:
            print("skipped: " + out.stdout.strip())
            return 0
        venv = out.stdout.strip().splitlines()[-1]
    bin_ = os.path.join(venv, "bin")
    event = read(EVENT)
    assert event, "missing " + EVENT

    tmp = tempfile.mkdtemp(prefix="bolide-interop-")
    env = dict(os.environ, PYTHONUTF8="1", PYTHONUNBUFFERED="1")
    procs = []

    def spawn(name, argv, cwd):
        os.makedirs(cwd, exist_ok=True)
        logf = open(os.path.join(tmp, name + ".log"), "wb")
        p = subprocess.Popen(argv, cwd=cwd, stdout=logf,
                             stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL)
        procs.append(p)
        return os.path.join(tmp, name + ".log")

    rport, bport = free_port(), free_port()
    try:
        # 1. Broker.
        t0 = time.monotonic()
        blog = spawn("broker", [
            os.path.join(bin_, "twistd"), "-n",
            "--pidfile=" + os.path.join(tmp, "broker", "twistd.pid"),
            "--logfile=-",
            "comet", "--receive", "--broadcast",
            "--local-ivo=ivo://comet.test/broker",
            "--receive-port=%d" % rport, "--broadcast-port=%d" % bport,
            "--eventdb=" + os.path.join(tmp, "broker", "eventdb"),
            "--author-whitelist=127.0.0.1/32",
            "--subscriber-whitelist=127.0.0.1/32",
            "--broadcast-test-interval=0",
        ], os.path.join(tmp, "broker"))
        ready = wait_for(lambda: b"VOEventReceiverFactory (WhitelistingFactory) starting on %d" % rport
                         in read(blog) and
                         b"VOEventBroadcasterFactory (WhitelistingFactory) starting on %d" % bport
                         in read(blog), 30)
        check("broker listening (%.2f s)" % (time.monotonic() - t0), ready,
              read(blog).decode(errors="replace"))

        # 2. Subscribers.
        sub_dir = os.path.join(tmp, "sub", "events")
        t0 = time.monotonic()
        def comet_subscriber(name, *extra):
            """A Comet subscribed to the broker, saving what it gets in NAME/events."""
            spawn(name, [
                os.path.join(bin_, "twistd"), "-n",
                "--pidfile=" + os.path.join(tmp, name, "twistd.pid"),
                "--logfile=-", "comet",
                "--local-ivo=ivo://comet.test/" + name,
                "--remote=127.0.0.1:%d" % bport,
                "--eventdb=" + os.path.join(tmp, name, "eventdb"),
                *extra,
                "--save-event",
                "--save-event-directory=" + os.path.join(tmp, name, "events"),
            ], os.path.join(tmp, name))
        comet_subscriber("sub")
        comet_subscriber("subf", "--filter=//Param[@name='Packet_Type' and @value='999']")
        gcn_dir = os.path.join(tmp, "gcn")
        glog = spawn("gcn", [os.path.join(bin_, "pygcn-listen"),
                             "127.0.0.1:%d" % bport], gcn_dir)
        raw = VTP(bport)
        first = raw.recv()
        check("broker sends authenticate on connect",
              b'role="authenticate"' in first, first.decode(errors="replace"))
        ok = wait_for(lambda: read(blog).count(b"New subscriber at") >= 4, 30)
        check("4 subscribers connected (%.2f s)" % (time.monotonic() - t0), ok,
              read(blog).decode(errors="replace"))
        ok = wait_for(lambda: b"Installing filter" in read(blog), 10)
        check("broker installed the --filter of subf", ok)

        # 3. Submit.
        t0 = time.monotonic()
        send = [os.path.join(bin_, "comet-sendvo"), "--host=127.0.0.1",
                "--port=%d" % rport, "--file=" + EVENT]
        p = subprocess.run(send, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=env)
        check("comet-sendvo exits 0 on ack (%.2f s)" % (time.monotonic() - t0),
              p.returncode == 0, p.stdout.decode(errors="replace"))

        got = raw.recv()
        check("raw subscriber got the submitted bytes", got == event)
        sub_file = os.path.join(sub_dir, "ivo__bolide.test_invalidbase1")
        ok = wait_for(lambda: read(sub_file) == event, 10)
        check("Comet subscriber saved the submitted bytes", ok,
              str(os.listdir(sub_dir) if os.path.isdir(sub_dir) else None))
        gcn_file = os.path.join(gcn_dir, urllib.parse.quote_plus(IVORN))
        ok = wait_for(lambda: read(gcn_file) == event, 10)
        check("pygcn-listen archived the submitted bytes", ok,
              str(os.listdir(gcn_dir)))
        time.sleep(0.5)
        filtered = os.path.join(tmp, "subf", "events")
        check("filtered subscriber got nothing",
              not os.path.exists(filtered) or not os.listdir(filtered))
        check("broker logged 'Event rejected by filter'",
              b"Event rejected by filter" in read(blog))

        # 4. Duplicate: nak.
        p = subprocess.run(send, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=env)
        out = p.stdout.decode(errors="replace")
        check("comet-sendvo exits 1 on nak", p.returncode == 1 and
              "Previously seen by this broker" in out, out)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    passed = sum(results)
    failed = len(results) - passed
    print("%d passed, %d failed" % (passed, failed))
    print("logs in " + tmp)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
