"""Who cleans up after a container's exit: an empty file <run root>/exits/<id>.cleanup made
with O_EXCL, claimed by the attached client or by the monitor's hook, whichever comes first
(see capsa.manager.exithook). Its own module: both the light hook and the manager use it, and
the hook must not import the manager to make its claim."""

from __future__ import annotations

import os


def claim_path(paths, container_id: str) -> str:
    return os.path.join(paths.exits, f"{container_id}.cleanup")


def claim(paths, container_id: str) -> bool:
    """True for the one caller that gets to clean up after this exit."""
    try:
        fd = os.open(claim_path(paths, container_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    except FileNotFoundError:  # no exits directory: a boot refresh removed it meanwhile
        os.makedirs(paths.exits, mode=0o700, exist_ok=True)
        return claim(paths, container_id)
    os.close(fd)
    return True
