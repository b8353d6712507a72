"""A container's root filesystem: its image's layers (read-only, shared) under an upper
directory of its own, merged by overlayfs, as podman's overlay driver does.

    containers/<id>/upper   the container's changes (what `export` and `diff` see on top)
    containers/<id>/work    overlayfs's work directory
    containers/<id>/merged  the mount: the bundle's rootfs

Where overlayfs cannot be mounted (a graph root on a file system it refuses, a user without the
right), the layers are copied into merged/ instead ("vfs", said in `capsactl info`).
"""

from __future__ import annotations

import os
import shutil

from capsa.manager.errors import ManagerError


class RootfsStorage:
    def __init__(self, paths, images):
        self.paths = paths
        self.images = images

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
        return os.path.ismount(self.merged(container_id))

    def mount(self, container_id: str, layer_ids: list[str]) -> str:
        """Mount the rootfs (idempotent); return its path."""
        merged = self.merged(container_id)
        if self.is_mounted(container_id):
            return merged
        base = self.directory(container_id)
        lowers = [self.images.layer_diff(layer) for layer in reversed(layer_ids)]  # top layer first
        if not lowers:  # overlayfs needs a lower directory: an image of no layer is an empty one
            empty = os.path.join(base, "empty")
            os.makedirs(empty, exist_ok=True)
            lowers = [empty]
        options = f"lowerdir={':'.join(lowers)},upperdir={base}/upper,workdir={base}/work"
        from capsa import linux

        try:
            linux.mount("overlay", merged, "overlay", 0, options)
        except OSError as err:
            raise ManagerError(f"cannot mount the rootfs of container {container_id[:12]} (overlayfs: "
                               f"{err.strerror}); lower layers: {len(lowers)}") from None
        return merged

    def unmount(self, container_id: str) -> None:
        merged = self.merged(container_id)
        if not os.path.ismount(merged):
            return
        from capsa import linux

        try:
            linux.umount2(merged, 0)
        except OSError:
            linux.umount2(merged, 2)  # MNT_DETACH: busy (a shell cd'ed into it); it goes when freed

    def remove(self, container_id: str) -> None:
        self.unmount(container_id)
        shutil.rmtree(self.directory(container_id), ignore_errors=True)
