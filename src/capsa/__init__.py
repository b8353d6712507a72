"""capsa: a Linux container runtime (an OCI runtime, runc-compatible).

The package is a library first; ``capsa.cli`` is a thin layer over :mod:`capsa.container`.
Nothing heavy is imported here: every runtime call pays for what this file imports.
"""

__version__ = "0.1.0"
# The OCI runtime-spec release capsa implements; any 1.x config.json is accepted.
OCI_VERSION = "1.3.0"

# The Python API (capsa.api): run, arun, Sandbox, Stream, Pool, Result, HostTools and its errors, loaded on first use
# so that the runtime's start-up does not pay for it.
_API_NAMES = frozenset({
    "run", "arun", "Sandbox", "Stream", "Pool", "Result", "HostTools", "SandboxError", "InvalidArgumentError", "RootfsError",
    "SandboxStartError", "SandboxClosedError",
})


def __getattr__(name: str):
    if name in _API_NAMES:
        from capsa import api

        return getattr(api, name)
    raise AttributeError(f"module 'capsa' has no attribute {name!r}")
