"""capsa.manager.storage: container rootfs of many layers (overlayfs's one-page option limit),
the vfs copy where overlayfs cannot be mounted, and a podman-built layer that deletes a file."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import pytest

from capsa.manager.images import ImageStore
from capsa.manager.paths import Paths
from capsa.manager.storage import RootfsStorage, driver_name
from capsa.manager.store import Store

CAPSACTL = os.path.join(os.path.dirname(sys.executable), "capsactl")


def layer_tar(files: dict[str, bytes | None]) -> io.BytesIO:
    """A layer: name -> content; None: a whiteout of that name; "dir/": an opaque directory."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            if name.endswith("/"):
                info = tarfile.TarInfo(name.rstrip("/"))
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                name, data = name + ".wh..wh..opq", b""
            elif data is None:
                directory, _, base = name.rpartition("/")
                name, data = (directory + "/" if directory else "") + ".wh." + base, b""
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def image_of_layers(images: ImageStore, layers: list[dict]) -> list[str]:
    ids: list[str] = []
    for files in layers:
        ids.append(images.add_layer(layer_tar(files), ids[-1] if ids else None))
    return ids


@pytest.fixture
def store(tmp_path):
    paths = Paths.default(str(tmp_path / "graph"), str(tmp_path / "run"))
    opened = Store(paths)
    yield ImageStore(opened)
    opened.close()


def check_layers_applied(merged: str, count: int) -> None:
    for n in range(count - 1):
        assert open(os.path.join(merged, "stack", f"layer{n:03d}")).read() == str(n), n
    assert not os.path.lexists(os.path.join(merged, "stack", f"layer{count - 1:03d}"))  # whited out
    assert sorted(os.listdir(os.path.join(merged, "opaque"))) == ["top"]


def many_layers(images: ImageStore, count: int) -> list[str]:
    layers = [{"opaque/bottom": b"hidden by the top layer's opaque directory"}]
    layers += [{f"stack/layer{n:03d}": str(n).encode()} for n in range(count)]
    layers += [{f"stack/layer{count - 1:03d}": None, "opaque/": None, "opaque/top": b"t"}]
    return image_of_layers(images, layers)


def test_overlay_of_150_layers(store, monkeypatch):
    monkeypatch.setenv("CAPSA_STORAGE_DRIVER", "overlay")
    layer_ids = many_layers(store, 150)
    storage = RootfsStorage(store.paths, store)
    assert storage.driver == "overlay"
    container = "a" * 64
    storage.create(container)
    try:
        merged = storage.mount(container, layer_ids)
        assert os.path.ismount(merged)
        check_layers_applied(merged, 150)
        # The container's writes go to its upper directory, not into a shared layer.
        with open(os.path.join(merged, "stack", "layer000"), "w") as f:
            f.write("changed")
        assert open(os.path.join(store.layer_diff(layer_ids[1]), "stack", "layer000")).read() == "0"
    finally:
        storage.remove(container)
    assert not os.path.ismount(storage.merged(container))
    assert not os.path.exists(storage.directory(container))


def test_vfs_copy_when_overlayfs_cannot_be_mounted(tmp_path, monkeypatch):
    """A graph root on an overlayfs (which overlayfs refuses as an upper directory): vfs is chosen,
    recorded, and gives the same rootfs as overlayfs would."""
    monkeypatch.delenv("CAPSA_STORAGE_DRIVER", raising=False)
    base = tmp_path / "ovl"
    for name in ("lower", "upper", "work", "merged"):
        (base / name).mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work", str(base / "merged")],
                   check=True)
    try:
        paths = Paths.default(str(base / "merged" / "graph"), str(tmp_path / "run"))
        opened = Store(paths)
        try:
            images = ImageStore(opened)
            assert driver_name(paths) == "vfs"
            assert open(os.path.join(paths.graph_root, "storage-driver")).read() == "vfs\n"
            layer_ids = many_layers(images, 5)
            storage = RootfsStorage(paths, images)
            container = "b" * 64
            storage.create(container)
            merged = storage.mount(container, layer_ids)
            assert not os.path.ismount(merged)
            check_layers_applied(merged, 5)
            assert storage.mount(container, layer_ids) == merged  # once copied, kept
            assert not os.path.lexists(os.path.join(merged, "stack", ".wh.layer004"))
            assert not os.path.lexists(os.path.join(merged, "opaque", ".wh..wh..opq"))
            storage.remove(container)
            assert not os.path.exists(storage.directory(container))
        finally:
            opened.close()
    finally:
        subprocess.run(["umount", str(base / "merged")], check=True)


@pytest.fixture
def podman(tmp_path):
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    runroot = tempfile.mkdtemp(prefix="cps-", dir="/tmp")
    command = ["podman", "--root", str(tmp_path / "podman"), "--runroot", runroot, "--storage-driver", "vfs"]

    def run(*args: str) -> str:
        result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result.stdout

    yield run
    subprocess.run([*command, "system", "reset", "--force"], capture_output=True, timeout=120)
    shutil.rmtree(runroot, ignore_errors=True)


@pytest.mark.parametrize("driver", ["overlay", "vfs"])
def test_podman_layer_deleting_a_file(podman, tmp_path, rootfs_template, driver):
    """podman commit of a container whose /bin/ls and /etc were changed: its layer has a whiteout
    (and /etc an opaque or changed content); the rootfs made here no longer has /bin/ls."""
    rootfs_tar = str(tmp_path / "rootfs.tar")
    subprocess.run(["tar", "-C", rootfs_template, "-cf", rootfs_tar, "."], check=True)
    podman("import", rootfs_tar, "localhost/base:1")
    container = podman("create", "--name", "work", "localhost/base:1", "true").strip()
    mounted = podman("mount", container).strip()
    os.unlink(os.path.join(mounted, "bin", "ls"))
    with open(os.path.join(mounted, "added"), "w") as f:
        f.write("new file\n")
    podman("unmount", container)
    podman("commit", container, "localhost/derived:1")
    archive = str(tmp_path / "derived.tar")
    podman("save", "-o", archive, "localhost/derived:1")

    env = {**os.environ, "CAPSA_STORAGE_DRIVER": driver}
    root, runroot = str(tmp_path / "graph"), str(tmp_path / "run")
    subprocess.run([CAPSACTL, "--root", root, "--runroot", runroot, "load", "-q", "-i", archive], check=True, env=env,
                   capture_output=True)
    paths = Paths.default(root, runroot)
    opened = Store(paths)
    images = ImageStore(opened)
    image = images.resolve("localhost/derived:1")
    assert len(image.layers) == 2
    diff = images.layer_diff(image.layers[1])
    if driver == "overlay":
        assert os.lstat(os.path.join(diff, "bin", "ls")).st_rdev == 0  # the whiteout, as overlayfs wants it
    else:
        assert os.path.isfile(os.path.join(diff, "bin", ".wh.ls"))  # as the tar has it, for copy_layers
    storage = RootfsStorage(paths, images)
    assert storage.driver == driver
    cid = "c" * 64
    storage.create(cid)
    try:
        merged = storage.mount(cid, image.layers)
        assert not os.path.lexists(os.path.join(merged, "bin", "ls"))
        assert os.path.exists(os.path.join(merged, "bin", "busybox"))
        assert open(os.path.join(merged, "added")).read() == "new file\n"
        out = subprocess.run(["chroot", merged, "/bin/busybox", "cat", "/added"], capture_output=True, text=True)
        assert out.stdout == "new file\n"
    finally:
        storage.remove(cid)
        opened.close()
