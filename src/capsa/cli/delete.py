"""capsa delete: remove a container and everything it holds."""

from __future__ import annotations

from capsa.cli import command_usage, in_sandbox, parse_command, require_args
from capsa.cli.flags import BOOL, Flag

FLAGS = [Flag("force,f", BOOL, help="Forcibly deletes the container if it is still running (uses SIGKILL)")]


def usage() -> str:
    return command_usage("delete", FLAGS)


def run(g, argv: list[str]) -> int:
    parsed = parse_command("delete", argv, FLAGS)
    if parsed is None:
        return 0
    require_args(parsed, "delete", 1)
    from capsa.container import Container, delete_leftovers
    from capsa.errors import CorruptStateError, NotFoundError

    try:
        container = Container.load(g.root, parsed.args[0])
    except NotFoundError:
        if not parsed.force:
            raise
        # As runc: --force also clears a directory left by an aborted create, and is quiet otherwise.
        delete_leftovers(g.root, parsed.args[0])
        if in_sandbox(g.root, parsed.args[0], None):  # a sandbox whose holder's create never finished
            from capsa import sandbox

            sandbox.delete_sandbox(g.root, parsed.args[0], force=True, warn=g.warn)
        return 0
    except CorruptStateError as err:
        if not parsed.force:
            raise
        # Nothing in it can be trusted (no pid, no cgroup to act on): only the directory goes.
        g.log.warning(f"{err}: removing it")
        delete_leftovers(g.root, parsed.args[0])
        return 0
    delete_container(g, container, force=parsed.force)
    return 0


def delete_container(g, container, force: bool = False) -> None:
    """Container.delete, or, for a container in a sandbox, through capsa.sandbox: a member leaves
    its sandbox, the holder takes the sandbox with it."""
    if in_sandbox(g.root, container.id, container.record.get("annotations")):
        from capsa import sandbox

        sandbox.delete_container(g.root, container, force=force, warn=g.warn)
        return
    container.delete(force=force, warn=g.warn)
