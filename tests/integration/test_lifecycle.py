"""create / start / state / list / kill / delete against real containers, checked from the outside."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from capsa import jsonfast


def state_of(bundle, cid: str = "c1") -> dict:
    return jsonfast.loads(bundle.capsa("state", cid).stdout)


def wait_for_status(bundle, cid: str, status: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = state_of(bundle, cid)
        if state["status"] == status or time.monotonic() > deadline:
            return state
        time.sleep(0.02)


def create(bundle, cid: str = "c1", *extra: str) -> subprocess.CompletedProcess:
    return bundle.create(cid, *extra)


def test_create_start_state_delete(bundle, tmp_path):
    bundle.set_args("sleep", "30")
    pid_file = tmp_path / "pid"
    create(bundle, "c1", "--pid-file", str(pid_file))
    state = state_of(bundle)
    assert state["status"] == "created"
    assert state["id"] == "c1" and state["bundle"] == bundle.path
    assert pid_file.read_text() == str(state["pid"])
    assert os.path.exists(f"/proc/{state['pid']}")
    bundle.capsa("start", "c1")
    assert state_of(bundle)["status"] == "running"
    with open(f"/proc/{state['pid']}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"
    bundle.capsa("kill", "c1", "KILL")
    assert wait_for_status(bundle, "c1", "stopped")["pid"] == 0
    bundle.capsa("delete", "c1")
    assert bundle.capsa("list", "-q").stdout == ""
    assert not os.path.exists(os.path.join(bundle.root, "c1"))


def test_state_json_fields(bundle):
    bundle.config["annotations"] = {"org.example.key": "value"}
    bundle.set_args("sleep", "30")
    create(bundle)
    state = state_of(bundle)
    assert set(state) >= {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}
    assert state["annotations"] == {"org.example.key": "value"}
    assert state["rootfs"] == os.path.realpath(bundle.rootfs)


def test_list_table_and_json(bundle):
    bundle.set_args("sleep", "30")
    create(bundle, "one")
    create(bundle, "two")
    table = bundle.capsa("list").stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER", "SANDBOX"]
    assert {line.split()[0] for line in table[1:]} == {"one", "two"}
    listed = jsonfast.loads(bundle.capsa("list", "--format", "json").stdout)
    assert {c["id"]: c["status"] for c in listed} == {"one": "created", "two": "created"}
    assert bundle.capsa("list", "-q").stdout.split() == ["one", "two"]


def test_prefix_ids(bundle):
    bundle.set_args("sleep", "30")
    create(bundle, "alpha-one")
    create(bundle, "alpha-two")
    assert state_of(bundle, "alpha-o")["id"] == "alpha-one"
    ambiguous = bundle.capsa("state", "alpha", check=False)
    assert ambiguous.returncode == 1 and "ambiguous" in ambiguous.stderr
    bundle.capsa("delete", "--force", "alpha-t")
    assert bundle.capsa("list", "-q").stdout.split() == ["alpha-one"]


def test_unknown_container(bundle):
    for command in (["state", "nope"], ["start", "nope"], ["kill", "nope"], ["delete", "nope"]):
        result = bundle.capsa(*command, check=False)
        assert result.returncode == 1
        assert "container nope does not exist" in result.stderr
        assert "Traceback" not in result.stderr
    assert bundle.capsa("delete", "--force", "nope").returncode == 0


def test_duplicate_id_is_refused(bundle):
    bundle.set_args("sleep", "30")
    create(bundle)
    result = bundle.create("c1", check=False)
    assert result.returncode == 1 and "container with id exists: c1" in result.stderr
    assert state_of(bundle)["status"] == "created"


def test_concurrent_create_exactly_one_wins(bundle):
    bundle.set_args("sleep", "30")
    results = []

    def attempt():
        results.append(bundle.create("same", check=False))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.returncode for r in results) == [0, 1, 1, 1]
    assert state_of(bundle, "same")["status"] == "created"


def test_invalid_transitions(bundle):
    bundle.set_args("sleep", "30")
    create(bundle)
    bundle.capsa("start", "c1")
    again = bundle.capsa("start", "c1", check=False)
    assert again.returncode == 1 and "already running" in again.stderr
    refused = bundle.capsa("delete", "c1", check=False)
    assert refused.returncode == 1 and "not stopped" in refused.stderr
    bundle.capsa("delete", "--force", "c1")
    assert not os.path.exists(os.path.join(bundle.root, "c1"))


def test_delete_of_created_container_needs_force(bundle):
    bundle.set_args("sleep", "30")
    create(bundle)
    pid = state_of(bundle)["pid"]
    refused = bundle.capsa("delete", "c1", check=False)
    assert refused.returncode == 1 and "not stopped: created" in refused.stderr
    assert state_of(bundle)["status"] == "created"
    bundle.capsa("delete", "--force", "c1")
    time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    assert not os.path.exists(os.path.join(bundle.root, "c1"))


def test_kill_stopped_container_fails(bundle):
    bundle.set_args("true")
    create(bundle)
    bundle.capsa("start", "c1")
    wait_for_status(bundle, "c1", "stopped")
    result = bundle.capsa("kill", "c1", "9", check=False)
    assert result.returncode == 1 and "not running" in result.stderr


@pytest.mark.parametrize("signal", ["TERM", "SIGTERM", "15"])
def test_kill_signal_spellings(bundle, signal):
    # pid 1 of a pid namespace gets only the signals it has a handler for.
    bundle.set_args("sh", "-c", "trap 'exit 0' TERM; sleep 30 & wait")
    create(bundle)
    bundle.capsa("start", "c1")
    bundle.capsa("kill", "c1", signal)
    assert wait_for_status(bundle, "c1", "stopped")["status"] == "stopped"


def test_kill_all(bundle):
    bundle.set_args("sh", "-c", "sleep 30 & sleep 30 & wait")
    create(bundle)
    bundle.capsa("start", "c1")
    bundle.capsa("kill", "--all", "c1", "KILL")
    assert wait_for_status(bundle, "c1", "stopped")["status"] == "stopped"


def test_kill_all_after_init_exit_kills_leftovers(bundle):
    # Without a pid namespace of its own, the init's children outlive it. containerd's shim (a Kubernetes pod
    # sharing its pid namespace) then calls `kill --all ID 9` on the stopped container: runc signals what is
    # left in the cgroup and succeeds, and so must capsa.
    linux = bundle.config["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "pid"]
    bundle.config["root"]["readonly"] = False
    bundle.set_args("sh", "-c", "sleep 30 & echo $! > /tmp/leftover")
    create(bundle)
    bundle.capsa("start", "c1")
    wait_for_status(bundle, "c1", "stopped")
    with open(os.path.join(bundle.rootfs, "tmp", "leftover")) as f:
        leftover = int(f.read())
    assert os.path.exists(f"/proc/{leftover}")
    bundle.capsa("kill", "--all", "c1", "KILL")
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{leftover}") and open(f"/proc/{leftover}/stat").read().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline, "kill --all left the init's child alive"
        time.sleep(0.02)
    bundle.capsa("kill", "--all", "c1", "KILL")  # nothing left: still no error
    assert bundle.capsa("kill", "c1", "KILL", check=False).returncode == 1  # without --all: not running
    bundle.capsa("delete", "c1")


def test_run_exit_code(bundle):
    assert bundle.sh("exit 42", check=False).returncode == 42
    assert bundle.capsa("list", "-q").stdout == ""


def test_run_keep_and_detach(bundle):
    bundle.set_args("true")
    bundle.capsa("run", "--keep", "--bundle", bundle.path, "kept")
    assert state_of(bundle, "kept")["status"] == "stopped"
    bundle.capsa("delete", "kept")
    bundle.set_args("sleep", "30")
    bundle.detached("run", "-d", "--bundle", bundle.path, "detached")
    assert state_of(bundle, "detached")["status"] == "running"


def test_run_forwards_signals(bundle):
    bundle.set_args("sh", "-c", "trap 'exit 7' TERM; while true; do sleep 0.1; done")
    process = subprocess.Popen(
        bundle_command(bundle, "run", "--bundle", bundle.path, "sig"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_until(lambda: os.path.isdir(os.path.join(bundle.root, "sig")) and state_of(bundle, "sig")["status"] == "running")
    time.sleep(0.2)
    process.terminate()
    assert process.wait(timeout=10) == 7


def bundle_command(bundle, *args):
    from conftest import capsa_command

    return capsa_command() + ["--root", bundle.root, *args]


def wait_until(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_corrupt_state_is_named_skipped_by_list_and_removed_by_force_delete(bundle):
    """Only a crash mid-write can leave a state file that does not parse (writes are renames):
    it must not hide the other containers, and delete --force must be able to clear it."""
    bundle.set_args("sleep", "60")
    bundle.detached("run", "-d", "--bundle", bundle.path, "good")
    os.makedirs(os.path.join(bundle.root, "broken"))
    with open(os.path.join(bundle.root, "broken", "state.json"), "w") as f:
        f.write('{"id": "bro')
    try:
        listed = bundle.capsa("list", "-q")
        assert listed.stdout == "good\n" and "state of container broken is corrupt" in listed.stderr
        for args in (["state", "broken"], ["delete", "broken"]):
            result = bundle.capsa(*args, check=False)
            assert result.returncode == 1 and "state of container broken is corrupt" in result.stderr
        bundle.capsa("delete", "--force", "broken")
        assert not os.path.exists(os.path.join(bundle.root, "broken"))
    finally:
        bundle.capsa("delete", "--force", "good")


def _imports_of(bundle, *args: str) -> list[tuple[int, str]]:
    """(depth, module) of every import a capsa call makes (python -X importtime, children first),
    the container's init included: it shares the caller's stderr."""
    import sys
    import tempfile

    from conftest import capsa_command

    launcher = capsa_command()
    if len(launcher) != 1:
        pytest.skip("needs the installed launcher")
    with tempfile.TemporaryFile() as err:
        subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", launcher[0], "--root", bundle.root, *args],
                       stdout=subprocess.DEVNULL, stderr=err, timeout=60, check=True)
        err.seek(0)
        lines = err.read().decode(errors="replace").splitlines()
    entries = []
    for line in lines:
        if line.startswith("import time:") and not line.endswith("imported package"):
            name = line.rsplit("|", 1)[1]
            entries.append((len(name) - len(name.lstrip()), name.strip()))
    return entries


def _costly_imports(entries: list[tuple[int, str]]) -> list[str]:
    """os (or posixpath) and ctypes, with what imported them: none of these calls loads them, the
    cgroups package included."""
    found = []
    for index, (depth, name) in enumerate(entries):
        if name not in ("os", "posixpath", "ctypes"):
            continue
        importer = next((other for level, other in entries[index + 1:] if level < depth), "a function")
        found.append(f"{name} (imported by {importer})")
    return found


def test_create_run_exec_import_neither_os_nor_ctypes(bundle):
    """Their start-up cost (docs/performance.md): 10.6M instructions for ctypes, 4.4M for os."""
    bundle.set_args("sleep", "30")
    bundle.write()
    entries = _imports_of(bundle, "create", "--bundle", bundle.path, "c1")
    assert any(name == "capsa.launch" for _, name in entries)  # the parse saw the create path
    assert _costly_imports(entries) == []
    bundle.capsa("start", "c1")
    assert _costly_imports(_imports_of(bundle, "exec", "c1", "true")) == []
    bundle.capsa("kill", "c1", "KILL")
    bundle.set_args("true")
    bundle.write()
    assert _costly_imports(_imports_of(bundle, "run", "--bundle", bundle.path, "c2")) == []


# What the calls managers repeat per container must not load: `os` (4.4M instructions, ~1 ms),
# ctypes, and modules a call without hooks or warnings does not use (hooks, the logger, subprocess).
NOT_ON_THE_HOT_PATH = {"os", "posixpath", "ctypes", "_ctypes", "subprocess", "capsa.hooks", "capsa.cli.log",
                       "typing", "json", "errno"}


def _hot_path_extras(bundle, *args: str) -> list[str]:
    entries = _imports_of(bundle, *args)
    assert any(name == "capsa.container" for _, name in entries)  # the parse saw the call
    return sorted({name for _, name in entries} & NOT_ON_THE_HOT_PATH)


def test_delete_imports_no_os_ctypes_hooks_or_logger(bundle):
    bundle.create("c1")
    bundle.capsa("start", "c1")
    wait_for_status(bundle, "c1", "stopped")
    entries = _imports_of(bundle, "delete", "c1")
    assert "capsa.cgroups.common" in {name for _, name in entries}  # it did remove the container's cgroup
    assert sorted({name for _, name in entries} & NOT_ON_THE_HOT_PATH) == []
    assert not os.path.exists(os.path.join(bundle.root, "c1"))
    bundle.set_args("sleep", "30")
    bundle.create("c2")
    bundle.capsa("start", "c2")
    assert _hot_path_extras(bundle, "delete", "--force", "c2") == []
    assert not os.path.exists(os.path.join(bundle.root, "c2"))


def test_state_start_kill_pause_resume_list_import_no_os(bundle):
    bundle.set_args("sleep", "30")
    bundle.create("c1")
    for args in (("state", "c1"), ("start", "c1"), ("pause", "c1"), ("resume", "c1"), ("list",), ("kill", "c1", "KILL")):
        assert _hot_path_extras(bundle, *args) == [], args
    wait_for_status(bundle, "c1", "stopped")
    # kill --all of a stopped container looks for what is left in its cgroup.
    assert _hot_path_extras(bundle, "kill", "--all", "c1", "KILL") == []


def test_delete_loads_hooks_only_for_poststop_hooks(bundle, tmp_path):
    """The other side of the checks above: with a poststop hook, capsa.hooks is loaded and runs it."""
    marker = tmp_path / "ran"
    bundle.config["hooks"] = {"poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {marker}"]}]}
    bundle.create("c1")
    assert "capsa.hooks" in {name for _, name in _imports_of(bundle, "delete", "--force", "c1")}
    assert jsonfast.loads(marker.read_text())["status"] == "stopped"
