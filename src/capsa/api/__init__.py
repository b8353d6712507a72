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

# Names of the API and the module each lives in: loaded on first use (PEP 562), so that a
# process that needs one module of the package (the pool's zygote, capsa.api.agent) does not
# import them all.
_WHERE = {
    "PATH": "arguments", "Limits": "arguments", "parse_size": "arguments",
    "InvalidArgumentError": "errors", "RootfsError": "errors", "SandboxClosedError": "errors",
    "SandboxError": "errors", "SandboxStartError": "errors",
    "arun": "oneshot", "run": "oneshot", "Pool": "pool", "Result": "result", "HostTools": "rootfs",
    "Sandbox": "sandbox", "build_spec": "spec", "default_seccomp": "spec", "Stream": "supervise",
}

__all__ = [
    "run", "arun", "Sandbox", "Stream", "Pool", "Result", "HostTools", "SandboxError", "InvalidArgumentError",
    "RootfsError", "SandboxStartError", "SandboxClosedError", "parse_size", "Limits", "PATH", "build_spec",
    "default_seccomp",
]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'capsa.api' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"capsa.api.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
