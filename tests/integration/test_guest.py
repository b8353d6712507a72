"""The guest test tier: tests that need what this host lacks run inside a QEMU guest.

One guest boots per session (tests/guest/vm.py: Debian 12's kernel, cgroup2 only, the host's
files read-only under a tmpfs overlay) and runs the GUEST_TESTS files with this checkout's
interpreter; each of their tests is reported here as a test of its own. CAPSA_SKIP_GUEST=1 skips
the tier; CAPSA_GUEST_TESTS names other test files to run in the guest; CAPSA_GUEST_ACCEL=kvm
uses KVM where /dev/kvm works (default: tcg, software emulation).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import sys

import pytest

if os.environ.get("CAPSA_IN_GUEST"):
    pytest.skip("already inside the guest", allow_module_level=True)
if os.environ.get("CAPSA_SKIP_GUEST"):
    pytest.skip("CAPSA_SKIP_GUEST is set", allow_module_level=True)

from guest import vm  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# CAPSA_GUEST_TESTS="tests/integration/a.py tests/integration/b.py" runs other files in the guest.
GUEST_TESTS = os.environ.get("CAPSA_GUEST_TESTS", "").split() or [
    "tests/integration/test_cgroups_v2.py", "tests/integration/test_cgroup_tree.py",
    "tests/integration/test_devices_bpf.py", "tests/integration/test_checkpoint.py", "tests/integration/test_lsm.py",
    "tests/integration/test_sandbox_cgroups.py", "tests/integration/test_capsactl_checkpoint.py"]
TIMEOUT = 600.0  # the whole tier must fit in CI's time
# The guest mounts tmpfs of its own on /tmp and /var/tmp (tests/guest/vm.py, stage 2): a checkout
# under either is out of its sight, and every test would fail with "can't cd".
HIDDEN_BY_GUEST = next((d for d in ("/tmp", "/var/tmp") if REPO.startswith(d + "/")), None)


def _boot(script: str, timeout: float = TIMEOUT, init: str = "sh") -> vm.GuestResult:
    """vm.run, booted a second time if the guest never reported an exit code (it hung or was
    killed at the deadline: seen once in many runs with systemd as pid 1, before any test
    reported). The first attempt's end goes to a warning, so that it still shows in the summary."""
    result = vm.run(script, timeout=timeout, init=init)
    if result.exit_code is not None:
        return result
    import warnings

    tail = "".join(result.output.splitlines(keepends=True)[-15:])
    warnings.warn(f"guest ({init}) gave no exit code after {result.seconds:.0f} s; booting it again. Its last lines:\n{tail}",
                  stacklevel=2)
    return vm.run(script, timeout=timeout, init=init)


def _refuse_hidden_checkout() -> None:
    if HIDDEN_BY_GUEST:
        pytest.fail(f"the checkout {REPO} is under {HIDDEN_BY_GUEST}, which the guest covers with a tmpfs of its "
                    "own: run the guest tier from a checkout elsewhere", pytrace=False)


def _test_names(relative: str) -> list[str]:
    """The test functions of a file, read without importing it (it may skip at import here)."""
    with open(os.path.join(REPO, relative)) as f:
        tree = ast.parse(f.read())
    return [f"{relative}::{node.name}" for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]


# CRIU itself, without capsa (capsa checkpoint is tested by test_checkpoint.py): dump a counting shell loop,
# see it stop, restore it, see it count again. The counter is replaced by a rename, never seen empty (an
# `echo > counter` truncates it first: a read at that moment got "", once, in CI).
CRIU_ROUND_TRIP = """
  cd /tmp && mkdir criu-images
  setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.1; done' </dev/null >/dev/null 2>&1 &
  pid=$!
  sleep 1
  criu dump -t $pid -D criu-images -o dump.log && dumped=yes || dumped=no
  sleep 0.3; a=$(cat counter); sleep 0.5; b=$(cat counter)
  criu restore -D criu-images -d -o restore.log && restored=yes || restored=no
  sleep 0.3; c=$(cat counter); sleep 0.5; d=$(cat counter)
  echo "== capsa-guest: criu round trip dumped=$dumped restored=$restored stopped=$a,$b running=$c,$d"
  [ $dumped = yes ] || tail -5 criu-images/dump.log
  [ $restored = yes ] || tail -5 criu-images/restore.log
  kill -9 $pid 2>/dev/null
"""


def _guest_script() -> str:
    python = shlex.quote(sys.executable)
    tests = " ".join(shlex.quote(t) for t in GUEST_TESTS)
    return f"""
cd {shlex.quote(REPO)}
echo "== capsa-guest: pytest"
{python} -m pytest -p no:cacheprovider -q -rA {tests}
code=$?
echo "== capsa-guest: pytest exit $code"
echo "== capsa-guest: criu check"
if command -v criu >/dev/null; then
  criu check 2>&1; echo "== capsa-guest: criu check exit $?"
{CRIU_ROUND_TRIP}
fi
exit $code
"""


@pytest.fixture(scope="session")
def guest_session():
    _refuse_hidden_checkout()
    try:
        result = _boot(_guest_script())
    except vm.GuestUnavailable as err:
        pytest.skip(f"guest tier unavailable: {err}")
    outcomes = {}
    for line in result.output.splitlines():
        match = re.match(r"(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S+::\S+)", line)
        if match:
            outcomes[match.group(2)] = match.group(1)
    return result, outcomes


def test_guest_boots_and_reports(guest_session):
    result, _ = guest_session
    boot = f"{result.boot_seconds:.1f}" if result.boot_seconds is not None else "?"
    print(f"guest: boot {boot} s, whole session {result.seconds:.1f} s")
    assert result.exit_code is not None, f"the guest reported no exit code:\n{result.output[-4000:]}"
    assert "== capsa-guest: pytest exit" in result.output


@pytest.mark.parametrize("name", [n for path in GUEST_TESTS for n in _test_names(path)])
def test_in_guest(guest_session, name):
    result, outcomes = guest_session
    # A parametrized inner test reports as name[param]: all of them count.
    mine = {inner: outcome for inner, outcome in outcomes.items() if inner == name or inner.startswith(name + "[")}
    if not mine:
        skipped = _skip_reason(result.output, name)
        if skipped:
            pytest.skip(f"skipped in the guest: {skipped}")
        pytest.fail(f"{name} has no result in the guest's output:\n{result.output[-4000:]}")
    failed = [inner for inner, outcome in mine.items() if outcome in ("FAILED", "ERROR")]
    if failed:
        pytest.fail("\n\n".join(f"{inner} {mine[inner]} in the guest:\n{_section(result.output, inner)}" for inner in failed))


def _skip_reason(output: str, name: str) -> str | None:
    """The inner skip of this test. pytest's "SKIPPED [1] file:line: reason" names a line, not a
    test: the skipif decorator, the pytest.skip call or the def; all are within the function's
    lines (decorators included), so the line says which test it was."""
    path, short = name.split("::")
    with open(os.path.join(REPO, path)) as f:
        tree = ast.parse(f.read())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == short)
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    for match in re.finditer(rf"SKIPPED \[\d+\] {re.escape(path)}:(\d+): ([^\n]*)", output):
        if first <= int(match.group(1)) <= node.end_lineno:
            return match.group(2)
    return None


def _section(output: str, name: str) -> str:
    """The inner pytest's failure report for one test (its '____ test_x ____' section)."""
    short = name.rsplit("::", 1)[1]
    match = re.search(rf"_{{3,}} {re.escape(short)} _.*?(?=\n_{{3,}} |\n={{3,}} )", output, re.S)
    return match.group(0) if match else output[-4000:]


def test_criu_check_in_guest(guest_session):
    """Report whether CRIU works under the guest's 6.1 kernel (it fails on this host's 6.18)."""
    result, _ = guest_session
    match = re.search(r"== capsa-guest: criu check\n(.*?)== capsa-guest: criu check exit (\d+)", result.output, re.S)
    if match is None:
        pytest.skip("criu is not installed")
    print(match.group(1))
    assert match.group(2) == "0", f"criu check failed in the guest:\n{match.group(1)}"


def test_criu_dump_restore_in_guest(guest_session):
    """CRIU 3.17 checkpoints and restores a process under the guest's kernel (the base for
    checkpoint/restore tests once capsa has them)."""
    result, _ = guest_session
    match = re.search(r"criu round trip dumped=(\w+) restored=(\w+) stopped=(\d*),(\d*) running=(\d*),(\d*)", result.output)
    if match is None:
        pytest.skip("criu is not installed")
    dumped, restored, a, b, c, d = match.groups()
    assert dumped == "yes" and restored == "yes", result.output[match.end():match.end() + 2000]
    assert a == b, "the process kept running after criu dump"
    assert int(d) > int(c) >= int(b), "the restored process does not run"


def test_systemd_guest_boots():
    """The guest can also boot the host's systemd as pid 1 (its command then runs as a service):
    the base for testing the systemd cgroup driver, which capsa does not have yet."""
    try:
        result = _boot("cat /proc/1/comm; cat /proc/self/cgroup; systemctl show -p Version --value; "
                       "test -S /run/systemd/private && echo private-bus", timeout=300, init="systemd")
    except vm.GuestUnavailable as err:
        pytest.skip(f"guest tier unavailable: {err}")
    print(f"systemd guest: boot {result.boot_seconds or 0:.1f} s, whole {result.seconds:.1f} s")
    assert result.exit_code == 0, result.output[-3000:]
    lines = result.output.splitlines()
    assert "systemd" in lines and "0::/system.slice/capsa-guest.service" in lines and "private-bus" in lines


# The systemd cgroup driver needs systemd as pid 1: its tests run in a second guest, booted with
# systemd (a session of its own; CAPSA_SKIP_SYSTEMD_GUEST=1 leaves it out).
SYSTEMD_GUEST_TESTS = ["tests/integration/test_systemd_cgroup.py"]


@pytest.fixture(scope="session")
def systemd_guest_session():
    if os.environ.get("CAPSA_SKIP_SYSTEMD_GUEST"):
        pytest.skip("CAPSA_SKIP_SYSTEMD_GUEST is set")
    _refuse_hidden_checkout()
    tests = " ".join(shlex.quote(t) for t in SYSTEMD_GUEST_TESTS)
    script = f"cd {shlex.quote(REPO)}\n{shlex.quote(sys.executable)} -m pytest -p no:cacheprovider -q -rA {tests}\n"
    try:
        result = _boot(script, init="systemd")
    except vm.GuestUnavailable as err:
        pytest.skip(f"guest tier unavailable: {err}")
    found = (re.match(r"(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S+::\S+)", line) for line in result.output.splitlines())
    return result, {m.group(2): m.group(1) for m in found if m}


@pytest.mark.parametrize("name", [n for path in SYSTEMD_GUEST_TESTS for n in _test_names(path)])
def test_in_systemd_guest(systemd_guest_session, name):
    test_in_guest(systemd_guest_session, name)
