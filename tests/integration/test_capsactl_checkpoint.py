"""capsactl container checkpoint / restore (issue 18, checkpoint part), as root.

On any host: a checkpoint archive that is truncated, of another architecture, names a container
name already in use or an image the store lacks is refused with its own error, and the store is
left as it was. Where `criu check` fails (this host), checkpoint and restore say CRIU cannot work
here and why, and the container keeps running. Where it passes (the guest tier), a busybox loop
counting in its rootfs is checkpointed, exported, and restored on a second store that never saw
it, where it counts on from where it was, with the file it wrote before the checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time

from test_capsactl_containers import Ctl, busybox_rootfs, ctl, wait_until  # noqa: F401 - fixtures
from test_checkpoint import CRIU_SAID, needs_broken_criu, needs_criu

from capsa.manager.checkpoint import host_architecture

COUNTING = "echo before > /marker; i=0; while true; do i=$((i+1)); echo $i > /count.new; mv /count.new /count; sleep 0.1; done"


def _second_store(tmp_path, first: Ctl) -> Ctl:
    """Another --root/--runroot with the first's busybox image, the same id (saved and loaded:
    an `import` of the same files would get another id, its config's creation time)."""
    other = Ctl(str(tmp_path / "second"))
    saved = str(tmp_path / "busybox-image.tar")
    first("save", "-q", "-o", saved, "busybox")
    other("load", "-q", "-i", saved)
    assert _image_id(other) == _image_id(first)
    return other


def _image_id(store: Ctl) -> str:
    return json.loads(store("image", "inspect", "busybox").stdout)[0]["Id"]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _archive(path: str, image_id: str, name: str = "web", architecture: str | None = None) -> str:
    """An archive as checkpoint --export writes it (CRIU cannot make a real one on this host)."""
    old_id = "ab" * 32
    diff = io.BytesIO()
    with tarfile.open(fileobj=diff, mode="w") as tar:
        _add(tar, "./marker", b"before\n")
    spec = {"ociVersion": "1.0.2", "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": f"/old/graph/containers/{old_id}/merged"}, "hostname": old_id[:12]}
    row = {"id": old_id, "name": name, "image_id": image_id, "image": "busybox",
           "config": {"Name": name, "Image": "busybox", "ImageName": "busybox", "Spec": spec},
           "roots": {"graph": "/old/graph", "run": "/old/run", "state": "/old/run/runtime", "id": old_id}}
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "manifest.json", json.dumps({"format": 1, "architecture": architecture or host_architecture(),
                                               "capsaVersion": "0.1.0"}).encode())
        _add(tar, "config.dump", json.dumps(row).encode())
        _add(tar, "checkpoint/descriptors.json", b'["pipe:[1]", "pipe:[2]", "pipe:[3]"]')
        _add(tar, "checkpoint/inventory.img", b"\0" * 4096)
        _add(tar, "rootfs-diff.tar", diff.getvalue())
    return path


def _store_snapshot(store: Ctl) -> tuple:
    """What a refused import must not change: the containers, their directories, scratch files."""
    names = sorted(c["Names"][0] if isinstance(c["Names"], list) else c["Names"] for c in store.ps())
    containers = sorted(os.listdir(os.path.join(store.root, "containers")))
    scratch = os.listdir(os.path.join(store.root, "tmp")) if os.path.isdir(os.path.join(store.root, "tmp")) else []
    return names, containers, scratch


def _refused(store: Ctl, *args: str) -> str:
    before = _store_snapshot(store)
    result = store("container", "restore", *args, check=False)
    assert result.returncode == 125, result
    assert _store_snapshot(store) == before, "a refused restore changed the store"
    return result.stderr


# -- bad input (any host: CRIU is never reached) ---------------------------------------------------
def test_restore_refuses_a_truncated_archive(ctl, tmp_path):  # noqa: F811
    whole = _archive(str(tmp_path / "whole.tar.gz"), _image_id(ctl))
    with open(whole, "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[:len(data) // 2])
    error = _refused(ctl, "--import", str(cut))
    assert "not a complete checkpoint archive" in error and str(cut) in error


def test_restore_refuses_an_archive_of_another_architecture(ctl, tmp_path):  # noqa: F811
    other = "s390x" if host_architecture() != "s390x" else "amd64"
    archive = _archive(str(tmp_path / "other.tar.gz"), _image_id(ctl), architecture=other)
    error = _refused(ctl, "--import", archive)
    assert f"made on '{other}'" in error and f"this host is '{host_architecture()}'" in error


def test_restore_refuses_a_name_in_use(ctl, tmp_path):  # noqa: F811
    ctl("create", "--name", "web", "busybox", "true")
    archive = _archive(str(tmp_path / "web.tar.gz"), _image_id(ctl))
    error = _refused(ctl, "--import", archive)
    assert "web" in error and "already in use" in error


def test_restore_says_which_image_is_missing(tmp_path, ctl):  # noqa: F811
    archive = _archive(str(tmp_path / "web.tar.gz"), _image_id(ctl))
    empty = Ctl(str(tmp_path / "empty"))
    empty("ps", "-a")  # makes the store
    error = _refused(empty, "--import", archive)
    assert "image busybox" in error and "not in this store" in error


def test_restore_of_a_container_without_checkpoint_is_refused(ctl):  # noqa: F811
    ctl("create", "--name", "plain", "busybox", "true")
    error = _refused(ctl, "plain")
    assert "no checkpoint to restore" in error
    assert "--name can only be used with --import" in _refused(ctl, "--name", "x", "plain")


def test_checkpoint_refuses_what_it_cannot_keep(ctl):  # noqa: F811
    ctl("run", "-d", "--rm", "--name", "gone", "busybox", "sleep", "1000")
    result = ctl("container", "checkpoint", "gone", check=False)
    assert result.returncode == 125 and "--rm" in result.stderr and "--leave-running" in result.stderr
    ctl("run", "-d", "-t", "--name", "tty", "busybox", "sleep", "1000")
    result = ctl("container", "checkpoint", "tty", check=False)
    assert result.returncode == 125 and "has a terminal" in result.stderr
    assert {c["State"] for c in ctl.ps()} == {"running"}


# -- this host: CRIU cannot work -------------------------------------------------------------------
@needs_broken_criu
def test_checkpoint_says_criu_cannot_work_here_and_the_container_runs_on(ctl, tmp_path):  # noqa: F811
    container_id = ctl("run", "-d", "--name", "counter", "busybox", "sh", "-c", COUNTING).stdout.strip()
    counter = os.path.join(ctl.root, "containers", container_id, "upper", "count")
    wait_until(lambda: _count(counter) > 0, "the loop to count")
    result = ctl("container", "checkpoint", "--export", str(tmp_path / "c.tar.gz"), "counter", check=False)
    assert result.returncode == 125
    assert "CRIU cannot checkpoint or restore on this host" in result.stderr and os.uname().release in result.stderr
    first_error = next(line for line in CRIU_SAID.splitlines() if line.strip())
    assert first_error.strip() in result.stderr
    assert not (tmp_path / "c.tar.gz").exists()
    assert not os.path.exists(os.path.join(ctl.root, "containers", container_id, "checkpoint"))
    assert ctl.inspect("counter")["State"]["Status"] == "running"
    before = _count(counter)
    wait_until(lambda: _count(counter) > before, "the loop to count on")


@needs_broken_criu
def test_restore_import_says_criu_cannot_work_here_and_makes_nothing(ctl, tmp_path):  # noqa: F811
    archive = _archive(str(tmp_path / "web.tar.gz"), _image_id(ctl))
    error = _refused(ctl, "--import", archive)
    assert "CRIU cannot checkpoint or restore on this host" in error


# -- where CRIU works (the guest tier) -------------------------------------------------------------
def _count(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _upper(store: Ctl, container_id: str, name: str) -> str:
    return os.path.join(store.root, "containers", container_id, "upper", name)


@needs_criu
def test_checkpoint_export_restores_on_a_store_that_never_saw_it(ctl, tmp_path):  # noqa: F811
    container_id = ctl("run", "-d", "--name", "counter", "busybox", "sh", "-c", COUNTING).stdout.strip()
    counter = _upper(ctl, container_id, "count")
    wait_until(lambda: _count(counter) >= 5, "the loop to count")
    archive = str(tmp_path / "counter.tar.gz")
    ctl("container", "checkpoint", "--export", archive, "counter", timeout=300)
    assert ctl.inspect("counter")["State"]["Status"] == "exited"
    stopped_at = _count(counter)
    time.sleep(0.5)
    assert _count(counter) == stopped_at, "the loop went on counting after its checkpoint"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert {"manifest.json", "config.dump", "spec.dump", "rootfs-diff.tar", "checkpoint/descriptors.json"} <= set(names)
    assert manifest["architecture"] == host_architecture()

    second = _second_store(tmp_path, ctl)
    try:
        new_id = second("container", "restore", "--import", archive, "--name", "moved", timeout=300).stdout.strip()
        assert new_id != container_id
        state = second.inspect("moved")["State"]
        assert state["Status"] == "running" and state["Restored"]
        # The restored process is in the new container's cgroup, not its old one's path.
        with open(f"/proc/{state['Pid']}/cgroup") as f:
            cgroups = f.read()
        assert new_id in cgroups and container_id not in cgroups, cgroups
        with open(_upper(second, new_id, "marker")) as f:
            assert f.read() == "before\n"
        moved = _upper(second, new_id, "count")
        # Its own shell variable counts on: a rerun of the command would start again at 1.
        wait_until(lambda: _count(moved) > stopped_at + 3, "the restored loop to count on")
    finally:
        second("rm", "-a", "-f", "-t", "0", check=False)


@needs_criu
def test_checkpoint_then_restore_in_place(ctl):  # noqa: F811
    container_id = ctl("run", "-d", "--name", "counter", "busybox", "sh", "-c", COUNTING).stdout.strip()
    counter = _upper(ctl, container_id, "count")
    wait_until(lambda: _count(counter) >= 3, "the loop to count")
    ctl("container", "checkpoint", "counter", timeout=300)
    stopped_at = _count(counter)
    state = ctl.inspect("counter")["State"]
    assert state["Status"] == "exited" and state["Checkpointed"] and state["CheckpointedAt"] != "0001-01-01T00:00:00Z"
    assert ctl("container", "restore", "counter", timeout=300).stdout.strip() == container_id
    state = ctl.inspect("counter")["State"]
    assert state["Status"] == "running" and state["Restored"] and not state["Checkpointed"]
    wait_until(lambda: _count(counter) > stopped_at + 3, "the restored loop to count on")
    assert not os.path.exists(os.path.join(ctl.root, "containers", container_id, "checkpoint")), \
        "the images stay only with --keep"
    statuses = [e.get("Status") for e in ctl.events()]
    assert "checkpoint" in statuses and "restore" in statuses
