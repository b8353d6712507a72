"""The manager's errors: each names what the user asked for and what is wrong with it."""

from __future__ import annotations

from capsa.errors import CapsaError


class ManagerError(CapsaError):
    """Base of every error capsactl reports (exit code 125, as podman's own errors)."""

    exit_code = 125


class NoSuchContainer(ManagerError):
    def __init__(self, name_or_id: str):
        super().__init__(f"no container with name or ID {name_or_id!r} found")


class NoSuchImage(ManagerError):
    def __init__(self, reference: str):
        super().__init__(f"{reference}: image not known")


class NoSuchVolume(ManagerError):
    def __init__(self, name: str):
        super().__init__(f"no volume with name {name!r} found")


class AmbiguousId(ManagerError):
    def __init__(self, kind: str, prefix: str, matches: list[str]):
        shown = ", ".join(m[:12] for m in matches[:5])
        super().__init__(f"more than one {kind} matches {prefix!r} ({shown}): give more of the ID or the name")


class NameInUse(ManagerError):
    def __init__(self, kind: str, name: str, owner_id: str):
        super().__init__(f"the {kind} name {name!r} is already in use by {owner_id[:12]}: "
                         f"remove that {kind} or choose another name")


class InvalidState(ManagerError):
    """An operation the container's current state does not allow (rm of a running one, ...)."""


class ImageError(ManagerError):
    """An image or archive that cannot be used: not an image, truncated, digest mismatch, ..."""


class StoreError(ManagerError):
    """The database cannot be opened or holds a row that cannot be read back."""
