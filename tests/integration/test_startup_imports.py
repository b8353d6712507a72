"""What the per-container calls managers repeat (state, start, kill, delete) import.

Each module is start-up time on every call: `import os` alone is ~4.4M instructions (~1 ms,
it builds the collections ABCs), ctypes ~1 ms, the hooks and logging modules a few hundred
thousand each. These calls avoid them (posix and capsa.posixlite instead of os, hooks and
the logger loaded only when used); this test runs the installed launcher as managers do, under
`python -X importtime`, and fails when one of them comes back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from capsa import jsonfast

# Never on these paths (the create and exec paths load them).
HEAVY = {"os", "posixpath", "ctypes", "_ctypes", "subprocess", "capsa.hooks", "capsa.cli.log", "typing", "json"}


def imported(bundle, *args: str) -> set[str]:
    """The modules `capsa --root ROOT args...` imports, from the launcher's -X importtime report."""
    from conftest import capsa_command

    launcher = capsa_command()
    if len(launcher) != 1:
        pytest.skip("no installed launcher next to this interpreter (setup.sh installs it)")
    # -IS as in the launcher's own #! line: without site (which imports os for every Python).
    result = subprocess.run([sys.executable, "-IS", "-X", "importtime", launcher[0], "--root", bundle.root, *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    names = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    names.discard("package")  # the report's header line
    assert "capsa.cli" in names, result.stderr  # the report was read: the launcher's own import is in it
    return names


def wait_stopped(bundle, cid: str) -> None:
    deadline = time.monotonic() + 10
    while jsonfast.loads(bundle.capsa("state", cid).stdout)["status"] != "stopped":
        assert time.monotonic() < deadline, "the container did not stop"
        time.sleep(0.02)


def test_delete_of_an_exited_container_imports_no_os_hooks_or_ctypes(bundle):
    bundle.create("c1")
    bundle.capsa("start", "c1")
    wait_stopped(bundle, "c1")
    names = imported(bundle, "delete", "c1")
    assert not names & HEAVY, sorted(names & HEAVY)
    assert "capsa.cgroups.common" in names  # it did remove the container's cgroup
    assert not os.path.exists(os.path.join(bundle.root, "c1"))


def test_delete_force_of_a_running_container_imports_no_os_hooks_or_ctypes(bundle):
    bundle.set_args("sleep", "30")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    names = imported(bundle, "delete", "--force", "c1")
    assert not names & HEAVY, sorted(names & HEAVY)
    assert not os.path.exists(os.path.join(bundle.root, "c1"))


def test_state_start_kill_pause_resume_import_no_os(bundle):
    bundle.set_args("sleep", "30")
    bundle.create("c1")
    for args in (("state", "c1"), ("start", "c1"), ("pause", "c1"), ("resume", "c1"), ("kill", "c1", "KILL"),
                 ("list",)):
        names = imported(bundle, *args)
        assert not names & HEAVY, (args, sorted(names & HEAVY))
    wait_stopped(bundle, "c1")
    names = imported(bundle, "kill", "--all", "c1", "KILL")  # a stopped container: its cgroup is searched
    assert not names & HEAVY, sorted(names & HEAVY)


def test_delete_loads_hooks_when_there_are_poststop_hooks(bundle, tmp_path):
    """The other side: a container with a poststop hook does get capsa.hooks, and the hook runs
    (so the checks above would see the module if it came back)."""
    marker = tmp_path / "ran"
    bundle.config["hooks"] = {"poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {marker}"]}]}
    bundle.create("c1")
    names = imported(bundle, "delete", "--force", "c1")
    assert "capsa.hooks" in names
    assert jsonfast.loads(marker.read_text())["status"] == "stopped"
