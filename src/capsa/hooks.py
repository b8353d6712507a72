"""OCI hooks: each gets the container's state JSON on stdin, with its args, env and timeout.

subprocess is imported only when a hook actually runs: most containers have none, and the import
costs several milliseconds.
"""

from __future__ import annotations

from capsa import jsonfast
from capsa.errors import CapsaError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

# The phases the container's init runs, in the container's namespaces: their hooks never inherit
# the environment (the init's is still the caller's; runc's init clears its own).
INIT_PHASES = ("createContainer", "startContainer")


class HookError(CapsaError):
    pass


def run_hooks(spec: dict[str, Any], phase: str, state: dict[str, Any], warn: Any = None) -> None:
    """Run every hook of `phase` in order.

    Without `warn` the first failure raises HookError (the create-time phases). With it, as the
    spec wants for poststart and poststop, each failure is a warning and the next hook still runs.
    """
    hooks = (spec.get("hooks") or {}).get(phase) or []
    if not hooks:
        return
    payload = jsonfast.dumps(state).encode()
    inherit = phase not in INIT_PHASES
    for index, hook in enumerate(hooks):
        try:
            _run_one(hook, f"{phase} hook #{index} ({hook['path']})", payload, inherit)
        except HookError as err:
            if warn is None:
                raise
            warn(str(err))


def _run_one(hook: dict[str, Any], where: str, payload: bytes, inherit: bool) -> None:
    import subprocess

    path = hook["path"]
    try:
        result = subprocess.run(
            hook.get("args") or [path],
            executable=path,
            input=payload,
            env=_env(hook.get("env"), inherit),
            capture_output=True,
            timeout=hook.get("timeout"),
            close_fds=True,
        )
    except subprocess.TimeoutExpired:
        raise HookError(f"{where} timed out after {hook['timeout']} s") from None
    except OSError as err:
        raise HookError(f"{where} could not run: {err.strerror or err}") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise HookError(f"{where} failed with exit status {result.returncode}" + (f": {detail}" if detail else ""))


def _env(entries: list[str] | None, inherit: bool) -> dict[str, str] | None:
    """The hook's environment: `env` as given (`[]` is an empty one); without it, as runc's Go
    exec.Cmd with a nil Env, the runtime's own (None) where `inherit`, else an empty one."""
    if entries is None and inherit:
        return None
    env: dict[str, str] = {}
    for entry in entries or ():
        key, _, value = entry.partition("=")
        env[key] = value
    return env
