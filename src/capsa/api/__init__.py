"""capsa's Python API: run untrusted code in an isolated sandbox from a Python program.

    import capsa
    r = capsa.run(["python3", "-c", "print(1)"], rootfs=capsa.HostTools(), timeout=5, memory="256M")
    with capsa.Sandbox(rootfs=capsa.HostTools(), memory="256M") as sb:
        sb.write_file("/work/main.py", b"print(2)")
        r = sb.run(["python3", "/work/main.py"], timeout=2)
    with capsa.Pool(4, rootfs=capsa.HostTools()) as pool:
        r = pool.run(["python3", "-c", "print(3)"], timeout=2)     # or: await pool.arun([...])

The API is a library over the runtime's library (capsa.container, capsa.launch): it never calls
the CLI. It is loaded lazily (capsa.__getattr__), so the runtime's own start-up does not pay for
it. Its modules, by concept (docs/api.md has the whole picture):

    errors     the exception hierarchy (SandboxError under capsa.errors.CapsaError)
    arguments  argument checks, sizes, Limits
    rootfs     rootfs= : a directory, an OCI bundle, HostTools (the host's programs, read-only)
    spec       the strict OCI spec of a run, the default seccomp profile
    result     Result
    session    once per program: subreaper, leftovers of crashed programs, the guard
    guard      the process that cleans after a program that died
    supervise  output, timeout and the Result of a started run; Stream
    oneshot    capsa.run / capsa.arun: a fresh container per run
    sandbox    capsa.Sandbox: /work kept across runs
    pool       capsa.Pool: warm sandboxes
"""

from __future__ import annotations

from capsa.api.arguments import PATH, Limits, parse_size
from capsa.api.errors import (
    InvalidArgumentError,
    RootfsError,
    SandboxClosedError,
    SandboxError,
    SandboxStartError,
)
from capsa.api.oneshot import arun, run
from capsa.api.pool import Pool
from capsa.api.result import Result
from capsa.api.rootfs import HostTools
from capsa.api.sandbox import Sandbox
from capsa.api.spec import build_spec, default_seccomp
from capsa.api.supervise import Stream

__all__ = [
    "run", "arun", "Sandbox", "Stream", "Pool", "Result", "HostTools", "SandboxError", "InvalidArgumentError",
    "RootfsError", "SandboxStartError", "SandboxClosedError", "parse_size", "Limits", "PATH", "build_spec",
    "default_seccomp",
]
