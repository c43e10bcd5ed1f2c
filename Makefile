# bolide: build, test, install.
#   make            release build
#   make test       formatting, lints, man-page check, and every test (what CI runs)
#   make install    binaries and man pages under $(DESTDIR)$(PREFIX)
#   make bench      the benchmark matrix against bolide (bench/run.sh; BENCH_* env vars)
#   make bench-compare  the same against bolide and Comet 3.1.0 side by side
PREFIX  ?= /usr/local
DESTDIR ?=
CARGO   ?= cargo
BINDIR   = $(DESTDIR)$(PREFIX)/bin
MANDIR   = $(DESTDIR)$(PREFIX)/share/man
UNITDIR  = $(DESTDIR)$(PREFIX)/lib/systemd/system
BINS     = bolide bolide-send bolide-bench
MANPAGES = man8/bolide.8 man1/bolide-send.1 man1/bolide-bench.1
# Where `make install` takes the binaries from; NOBUILD=1 skips the release build (the
# install test points BUILT at the test build).
BUILT   ?= target/release

# The systemd unit: an unprivileged dynamic user, state in /var/lib/bolide, the usual
# hardening. Options go in /etc/default/bolide as BOLIDE_OPTS=...; reload = SIGHUP
# (re-reads --subscriber-config).
define SYSTEMD_UNIT
[Unit]
Description=bolide VOEvent broker (VOEvent Transport Protocol)
Documentation=man:bolide(8)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
Environment="BOLIDE_OPTS=--receive --broadcast --local-ivo=ivo://example.org/broker"
EnvironmentFile=-/etc/default/bolide
ExecStart=$(PREFIX)/bin/bolide --eventdb=/var/lib/bolide/eventdb $$BOLIDE_OPTS
ExecReload=/bin/kill -HUP $$MAINPID
KillSignal=SIGTERM
TimeoutStopSec=30
Restart=on-failure
RestartSec=5
DynamicUser=yes
StateDirectory=bolide
WorkingDirectory=/var/lib/bolide
LimitNOFILE=65536
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
UMask=0027

[Install]
WantedBy=multi-user.target
endef
export SYSTEMD_UNIT

.PHONY: all release run test lint check-man install uninstall clean soak bench bench-compare

all: release

release:
	$(CARGO) build --release --locked

# The broker on its defaults (ports 8098/8099, event database in the per-user data dir).
run:
	$(CARGO) run --release --locked --bin bolide -- --receive --broadcast --local-ivo=ivo://example.org/broker

test: lint check-man
	$(CARGO) test --locked --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Every man page must render without a single groff warning.
check-man:
	@for m in man/*.[0-9]; do \
	  out=$$(groff -man -ww -z "$$m" 2>&1); \
	  if [ -n "$$out" ]; then echo "$$m:"; echo "$$out"; exit 1; fi; \
	  echo "$$m: renders cleanly"; \
	done

# Long run with misbehaving subscribers; SOAK_SECONDS (default 600) and SOAK_RATE (events/s).
soak:
	$(CARGO) test --release --locked --test soak -- --ignored --nocapture

# bolide's figures (table + JSON in target/bench/); bench-compare also runs Comet 3.1.0.
bench: release
	tests/bench/run.sh

bench-compare: release
	tests/bench/run.sh compare

# Binaries, man pages and the systemd unit under $(DESTDIR)$(PREFIX).
install: $(if $(NOBUILD),,release)
	install -d $(BINDIR) $(MANDIR)/man1 $(MANDIR)/man8 $(UNITDIR)
	for b in $(BINS); do install -m 0755 $(BUILT)/$$b $(BINDIR)/$$b; done
	for m in $(MANPAGES); do install -m 0644 man/$$(basename $$m) $(MANDIR)/$$m; done
	printf '%s\n' "$$SYSTEMD_UNIT" > $(UNITDIR)/bolide.service
	chmod 0644 $(UNITDIR)/bolide.service

uninstall:
	for b in $(BINS); do rm -f $(BINDIR)/$$b; done
	for m in $(MANPAGES); do rm -f $(MANDIR)/$$m; done
	rm -f $(UNITDIR)/bolide.service

clean:
	$(CARGO) clean
