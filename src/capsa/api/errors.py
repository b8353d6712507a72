"""The exceptions of capsa's Python API (capsa.api), all under capsa.errors.CapsaError."""

from __future__ import annotations

from capsa.errors import CapsaError


class SandboxError(CapsaError):
    """Base of the errors of capsa's Python API."""


class InvalidArgumentError(SandboxError, ValueError):
    """An argument of run/Sandbox is invalid; nothing was made. `argument` names it."""

    def __init__(self, name: str, problem: str):
        self.argument = name
        super().__init__(f"{name}: {problem}")


class RootfsError(InvalidArgumentError):
    """rootfs= names something that is not a root filesystem."""

    def __init__(self, problem: str):
        super().__init__("rootfs", problem)


class SandboxStartError(SandboxError):
    """The sandbox could not be set up (the runtime's message says why); nothing of it is left."""


class SandboxClosedError(SandboxError):
    """The Sandbox was closed."""
