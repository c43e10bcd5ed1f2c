#!/usr/bin/env bash
# Creates (or reuses) the virtualenv holding bolide's interoperability peers:
# Comet 3.1.0 (twistd comet, comet-sendvo) and pygcn (pygcn-listen).
#
#   tests/interop/setup.sh            -> prints the venv path, exit 0
#
# The venv lives at ${BOLIDE_INTEROP_VENV:-<repo>/target/interop-venv}.
# On success the only line on stdout is the venv path. On failure the only
# line on stdout is "interop setup failed: <reason>" and the exit status is 1;
# the details are in <venv>.setup.log. Warnings go to stderr.
#
# Idempotent: a venv whose stamp matches requirements.txt and whose peers
# answer --help is reused as it is (about a second). Anything else is rebuilt.
# Concurrent runs are serialised with flock on <venv>.lock.
#
# What it may install with apt-get (as root, or through sudo -n), only when
# missing: python3.11 and python3.11-venv (the venv and its pip), and
# python3-gdbm, which gives the venv dbm.gnu for Comet's event database. A
# plain venv sees dbm.gnu once python3-gdbm is installed; no
# --system-site-packages is needed. Should python3-gdbm be impossible to
# install, Comet still works on dbm.ndbm (Berkeley DB, part of Debian's
# python3.11), so that is only a warning.
#
# Environment:
#   BOLIDE_INTEROP_VENV    where the venv goes
#   BOLIDE_INTEROP_PYTHON  the interpreter (default /usr/bin/python3.11; any
#                          CPython 3.11 with venv, ensurepip and dbm works, but
#                          apt-get is used only for the default one)
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${BOLIDE_INTEROP_VENV:-$repo/target/interop-venv}"
python="${BOLIDE_INTEROP_PYTHON:-/usr/bin/python3.11}"
reqs="$here/requirements.txt"
# Build tools for Comet, which PyPI has only as an sdist (setup.py with
# distutils): setuptools 66.1.1 is what Debian's python3.11 venv brings, and
# wheel 0.45.1 is the last wheel whose bdist_wheel works with it.
build_reqs=(setuptools==66.1.1 wheel==0.45.1)
pip_opts=(--disable-pip-version-check --no-input --quiet --retries 5 --timeout 30)

mkdir -p "$(dirname "$venv")" 2>/dev/null || {
  echo "interop setup failed: cannot create $(dirname "$venv")"
  exit 1
}
venv="$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")"
log="$venv.setup.log"

fail() {
  echo "interop setup failed: $* (details: $log)"
  exit 1
}
warn() { echo "interop setup: warning: $*" >&2; }
logrun() {
  echo "+ $*" >>"$log"
  "$@" >>"$log" 2>&1
}

# One run at a time per venv.
exec 9>"$venv.lock" || fail "cannot open lock file $venv.lock"
if command -v flock >/dev/null 2>&1; then
  flock -w 600 9 || fail "timed out waiting for another setup.sh ($venv.lock)"
fi
: >"$log" 2>/dev/null || log=/dev/null

stamp_want="$(cat "$reqs" 2>/dev/null; printf '%s\n' "${build_reqs[@]}" "python=$python")" \
  || fail "cannot read $reqs"

# Succeeds when the venv's peers are all there and working.
check_venv() {
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - <<'EOF' >>"$log" 2>&1 || return 1
import sys
assert sys.version_info[:2] == (3, 11), sys.version
import dbm, dbm.ndbm  # noqa: F401  (dbm.gnu preferred, see below)
import comet, gcn, lxml.etree, twisted  # noqa: F401
assert comet.__version__ == "3.1.0", comet.__version__
EOF
  # (grep without -q: twistd must not get EPIPE while printing its help)
  "$venv/bin/twistd" comet --help 2>>"$log" | grep -- '--save-event-directory' >/dev/null \
    || return 1
  "$venv/bin/comet-sendvo" --help >/dev/null 2>>"$log" || return 1
  "$venv/bin/pygcn-listen" --version >/dev/null 2>>"$log" || return 1
}

# --- Debian packages, only those missing --------------------------------------
have_pkg() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}
apt_updated=
apt_install() {
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    sudo -n true 2>/dev/null || return 1
    sudo=(sudo -n)
  fi
  if [ -z "$apt_updated" ]; then
    logrun timeout 180 "${sudo[@]}" apt-get -q -o Acquire::Retries=3 update || return 1
    apt_updated=1
  fi
  logrun timeout 240 "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends \
    -o Acquire::Retries=3 -o DPkg::Lock::Timeout=120 "$@"
}

if [ "$python" = /usr/bin/python3.11 ] && command -v dpkg-query >/dev/null 2>&1; then
  need=()
  for p in python3.11 python3.11-venv; do have_pkg "$p" || need+=("$p"); done
  if [ ${#need[@]} -gt 0 ]; then
    apt_install "${need[@]}" || fail "apt-get install ${need[*]} failed"
  fi
  # After one failed try, the marker <venv>.no-gdbm stops later reuses of the
  # venv from trying apt again (a rebuild of the venv clears it).
  if ! have_pkg python3-gdbm && [ ! -e "$venv.no-gdbm" ]; then
    if ! apt_install python3-gdbm; then
      warn "apt-get install python3-gdbm failed; Comet will use dbm.ndbm"
      : >"$venv.no-gdbm"
    fi
  fi
fi

[ -x "$python" ] || fail "no Python interpreter at $python"
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>>"$log" \
  || fail "$python is not Python 3.11"
"$python" -c 'import dbm.gnu' 2>/dev/null \
  || warn "dbm.gnu not importable from $python; Comet will use dbm.ndbm"

if [ -f "$venv/.bolide-interop-stamp" ] \
   && [ "$(cat "$venv/.bolide-interop-stamp")" = "$stamp_want" ] \
   && check_venv; then
  echo "$venv"
  exit 0
fi

# --- the venv ----------------------------------------------------------------
if [ -e "$venv" ]; then
  # Only ever delete something that is a venv (or an empty directory).
  if [ -f "$venv/pyvenv.cfg" ] || { [ -d "$venv" ] && [ -z "$(ls -A "$venv")" ]; }; then
    rm -rf "$venv" || fail "cannot remove the stale venv $venv"
  else
    fail "$venv exists and is not a virtualenv; remove it or set BOLIDE_INTEROP_VENV"
  fi
fi

rm -f "$venv.no-gdbm"
logrun "$python" -m venv "$venv" || fail "$python -m venv $venv failed"
vpip=("$venv/bin/python" -m pip "${pip_opts[@]}")
logrun "${vpip[@]}" install "${build_reqs[@]}" \
  || fail "pip install ${build_reqs[*]} failed"
logrun "${vpip[@]}" install --no-build-isolation --use-pep517 -r "$reqs" \
  || fail "pip install -r tests/interop/requirements.txt failed"

# Build Twisted's plugin caches now, so that several twistd started at once
# later do not race to write them.
logrun "$venv/bin/python" -c '
from twisted.plugin import IPlugin, getPlugins
import comet.plugins, twisted.plugins
list(getPlugins(IPlugin)); list(getPlugins(IPlugin, comet.plugins))
' || fail "building the Twisted plugin cache failed"

check_venv || fail "the new venv does not work (twistd comet, comet-sendvo or pygcn-listen)"
printf '%s' "$stamp_want" >"$venv/.bolide-interop-stamp" || fail "cannot write the stamp"
echo "$venv"
