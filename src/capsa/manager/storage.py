"""A container's root filesystem: its image's layers (read-only, shared) under an upper
directory of its own, merged by overlayfs, as podman's overlay driver does.

    containers/<id>/upper   the container's changes (what `export` and `diff` see on top)
    containers/<id>/work    overlayfs's work directory
    containers/<id>/merged  the mount: the bundle's rootfs
    layers/l/<short>        a short symlink to each layer's diff/ (podman's l/ directory)

Many layers: the mount's options are limited to one page (4096 bytes), which absolute layer
paths (~90 bytes each) fill at ~40 layers. The lower directories are given as l/<16 hex digits>
relative to layers/ (the mount is made with layers/ as the working directory), 19 bytes each:
about 200 layers fit, more than overlayfs's own limit of lower layers on most kernels is useful.

"vfs": where overlayfs cannot be mounted on the graph root (a graph root on overlayfs or on a
file system overlayfs refuses as upper, a user without the right), each container gets a copy
of its layers in merged/ (whiteouts and opaque directories applied layer by layer), as podman's
vfs driver. The choice is made once per graph root (a probe mount) and recorded in
<graph root>/storage-driver; CAPSA_STORAGE_DRIVER=overlay|vfs decides it for a new graph root.
`driver_name(paths)` says which (capsactl info).
"""

from __future__ import annotations

import os
import shutil
import stat

from capsa.manager.errors import ManagerError
from capsa.manager.layers import DRIVERS, OPAQUE, WHITEOUT_PREFIX, driver_name, short_link

VFS_READY = ".capsa-vfs-ready"

__all__ = ["DRIVERS", "RootfsStorage", "copy_layers", "driver_name"]


class RootfsStorage:
    def __init__(self, paths, images):
        self.paths = paths
        self.images = images
        self.driver = driver_name(paths)

    def directory(self, container_id: str) -> str:
        return self.paths.container(container_id)

    def merged(self, container_id: str) -> str:
        return os.path.join(self.directory(container_id), "merged")

    def create(self, container_id: str) -> None:
        """Make the container's directories (nothing is mounted yet)."""
        base = self.directory(container_id)
        for name in ("upper", "work", "merged"):
            os.makedirs(os.path.join(base, name), mode=0o755, exist_ok=True)

    def is_mounted(self, container_id: str) -> bool:
        if self.driver == "vfs":
            return os.path.exists(os.path.join(self.directory(container_id), VFS_READY))
        return os.path.ismount(self.merged(container_id))

    def mount(self, container_id: str, layer_ids: list[str]) -> str:
        """Mount the rootfs (idempotent); return its path."""
        merged = self.merged(container_id)
        if self.is_mounted(container_id):
            return merged
        if self.driver == "vfs":
            copy_layers(self.images, layer_ids, merged)
            with open(os.path.join(self.directory(container_id), VFS_READY), "w"):
                pass
            return merged
        base = self.directory(container_id)
        lowers = [os.path.relpath(short_link(self.paths, layer), self.paths.layers) for layer in reversed(layer_ids)]
        if not lowers:  # overlayfs needs a lower directory: an image of no layer is an empty one
            empty = os.path.join(base, "empty")
            os.makedirs(empty, exist_ok=True)
            lowers = [empty]
        options = f"lowerdir={':'.join(lowers)},upperdir={base}/upper,workdir={base}/work"
        if len(options) >= 4096:
            raise ManagerError(f"the image of container {container_id[:12]} has too many layers ({len(layer_ids)}) "
                               f"for one overlayfs mount")
        from capsa import linux

        # Relative lower directories: the mount resolves them against the working directory.
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir(self.paths.layers)
            linux.mount("overlay", merged, "overlay", 0, options)
        except OSError as err:
            raise ManagerError(f"cannot mount the rootfs of container {container_id[:12]} (overlayfs: "
                               f"{err.strerror}); lower layers: {len(lowers)}") from None
        finally:
            os.fchdir(cwd)
            os.close(cwd)
        return merged

    def unmount(self, container_id: str) -> None:
        if self.driver == "vfs":
            return  # a copy: nothing is mounted, the files stay until remove()
        merged = self.merged(container_id)
        if not os.path.ismount(merged):
            return
        from capsa import linux

        try:
            linux.umount2(merged, 0)
        except OSError:
            linux.umount2(merged, 2)  # MNT_DETACH: busy (a shell cd'ed into it); it goes when freed

    def remove(self, container_id: str) -> None:
        if self.driver != "vfs":
            self.unmount(container_id)
        shutil.rmtree(self.directory(container_id), ignore_errors=True)


# --- vfs: layers copied into one directory ------------------------------------------------------

def copy_layers(images, layer_ids: list[str], target: str) -> None:
    """Apply each layer's diff/ onto `target`, bottom first: a whiteout (a file .wh.NAME as the
    vfs driver keeps them, or overlay's 0:0 character device) removes what it names, an opaque
    directory (.wh..wh..opq in it, or trusted.overlay.opaque=y) empties what is below it first;
    everything else is copied with its owner, mode, times and xattrs (cp -a), hard links within
    a layer kept. The markers themselves are not left in `target`."""
    import subprocess

    for layer_id in layer_ids:
        diff = images.layer_diff(layer_id)
        whiteouts, opaques, markers = _markers(diff)
        for relative in opaques:
            _empty(os.path.join(target, relative))
        for relative in whiteouts:
            _remove(os.path.join(target, relative))
        result = subprocess.run(["cp", "-a", "--no-target-directory", diff, target], capture_output=True, text=True)
        if result.returncode != 0:
            raise ManagerError(f"cannot copy layer {layer_id[:12]} into {target} (vfs): {result.stderr.strip()}")
        for relative in whiteouts + markers:  # cp copied the markers themselves
            _remove(os.path.join(target, relative))
        for relative in opaques:
            try:
                os.removexattr(os.path.join(target, relative), "trusted.overlay.opaque", follow_symlinks=False)
            except OSError:
                pass


def _markers(diff: str) -> tuple[list[str], list[str], list[str]]:
    """(paths whited out, opaque directories, marker files to drop after the copy), relative."""
    whiteouts, opaques, markers = [], [], []
    for directory, dirs, files in os.walk(diff):
        relative_dir = os.path.relpath(directory, diff)
        if relative_dir != "." and _is_opaque(directory):
            opaques.append(relative_dir)
        for name in files + dirs:
            relative = os.path.normpath(os.path.join(relative_dir, name))
            if name == OPAQUE:
                opaques.append(relative_dir)
                markers.append(relative)
            elif name.startswith(WHITEOUT_PREFIX):
                whiteouts.append(os.path.normpath(os.path.join(relative_dir, name[len(WHITEOUT_PREFIX):])))
                markers.append(relative)
            else:
                st = os.lstat(os.path.join(directory, name))
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    whiteouts.append(relative)
    return whiteouts, opaques, markers


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _empty(path: str) -> None:
    if not os.path.isdir(path) or os.path.islink(path):
        return
    for entry in os.listdir(path):
        _remove(os.path.join(path, entry))


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
