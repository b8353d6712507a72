#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for capsa and run a first container.
# Usage (as root): ./setup.sh            -- installs, then runs a busybox container
#                  ./setup.sh --no-demo  -- installs only (used by .ci/run)
set -euo pipefail
cd "$(dirname "$0")"

# busybox-static: the test and demo rootfs (a dynamic busybox would need a libc in the rootfs).
# libseccomp2: linux.seccomp is compiled with libseccomp (loaded through ctypes).
if [ ! -x /bin/busybox ] || grep -q 'ld-linux' /bin/busybox || ! ldconfig -p | grep -q 'libseccomp.so.2 '; then
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq busybox-static libseccomp2 >/dev/null
fi

# The machine's Python 3.11: Debian's own interpreter starts fastest (no shared libpython).
PY=""
for candidate in /usr/bin/python3.11 python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys, ensurepip; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    PY=$(command -v "$candidate"); break
  fi
done
if [ -z "$PY" ]; then
  apt-get -o DPkg::Lock::Timeout=300 update -qq && apt-get -o DPkg::Lock::Timeout=300 install -y -qq python3.11 python3.11-venv >/dev/null
  PY=/usr/bin/python3.11
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# pip builds in the tree: setuptools' build/ would put back modules this checkout no longer has.
rm -rf build
.venv/bin/pip install -q ".[test]"
# The launcher runs isolated and without site (see bin/capsa); pip writes a plain "#!<python>".
sed -i '1s|^#!\(.*python[0-9.]*\)$|#!\1 -IS|' .venv/bin/capsa .venv/bin/capsactl
# CAPSA_NO_LINK=1: a second checkout (a git worktree) keeps its own venv and leaves the link alone.
if [ -z "${CAPSA_NO_LINK:-}" ]; then
  ln -sf "$PWD/.venv/bin/capsa" /usr/local/bin/capsa
  ln -sf "$PWD/.venv/bin/capsactl" /usr/local/bin/capsactl
fi

if [ "${1:-}" != "--no-demo" ]; then
  bundle=/var/lib/capsa/bundles/busybox
  rm -rf "$bundle"
  .venv/bin/python -m capsa.bundle "$bundle" -- sh -c 'echo "hello from capsa: pid $$ on $(hostname), $(id)"' >/dev/null
  capsa delete --force first-container >/dev/null 2>&1 || true
  capsa run --bundle "$bundle" first-container
fi
