"""capsactl attach and exec.

    capsactl attach [--detach-keys KEYS] [--no-stdin] [--sig-proxy=false] CONTAINER
    capsactl exec [-i] [-t] [-d] [-e KEY[=VALUE]]... [-u USER[:GROUP]] [-w DIR] CONTAINER COMMAND [ARG...]

attach connects to the container's monitor (capsa.manager.attach): its output from now on,
our stdin to it if it was created with -i, our terminal's size to its pty with -t; it exits with
the container's exit code, or 0 when detached (ctrl-p ctrl-q). exec runs a process in the running
container (capsa.manager.execs) and exits with its code (126/127 when it cannot run / is not
found, as podman).
"""

from __future__ import annotations

import argparse

from capsa.ctl.flags import boolean as _boolean
from capsa.ctl.logs import find_container


def attach(ctx, argv: list[str]) -> int:
    from capsa.manager import attach as attaching

    parser = argparse.ArgumentParser(prog="capsactl attach", description="Attach to a running container")
    parser.add_argument("--detach-keys", default=attaching.DEFAULT_DETACH_KEYS,
                        help="the keys that detach (default ctrl-p,ctrl-q; '' disables)")
    parser.add_argument("--no-stdin", action="store_true", help="do not attach stdin")
    parser.add_argument("--sig-proxy", type=_boolean, nargs="?", const=True, default=True,
                        help="pass received signals on to the container (default true)")
    parser.add_argument("container")
    args = parser.parse_args(argv)
    attaching.parse_detach_keys(args.detach_keys)  # a bad value is an error before anything happens
    container = find_container(ctx, args.container)
    interactive = bool(container.config.get("Interactive")) and not args.no_stdin
    session = attaching.connect(ctx.paths, container.id)
    from capsa.manager import events

    events.emit(ctx.paths, "attach", id=container.id, name=container.name, image=container.config.get("ImageName", ""))
    code = session.run(stdin=0 if interactive else None, tty=bool(container.config.get("Tty")),
                       detach_keys=args.detach_keys, sig_proxy=args.sig_proxy)
    return 0 if code is None else code


def exec_command(ctx, argv: list[str]) -> int:
    """podman's exec (COMMANDS["exec"] points here)."""
    parser = argparse.ArgumentParser(prog="capsactl exec", description="Run a process in a running container")
    parser.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    parser.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    parser.add_argument("-d", "--detach", action="store_true", help="run the process in the background")
    parser.add_argument("-e", "--env", action="append", default=[], help="set KEY=VALUE (KEY alone: our value)")
    parser.add_argument("--env-file", action="append", default=[], help="read KEY=VALUE lines from a file")
    parser.add_argument("-u", "--user", help="USER[:GROUP], names or numbers")
    parser.add_argument("-w", "--workdir", help="working directory inside the container")
    parser.add_argument("container")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if not args.command:
        parser.error("exec needs a command to run in the container")
    from capsa.manager.execs import exec_process

    container = find_container(ctx, args.container)  # running or not: the runtime's state says
    env = _env_files(args.env_file) + args.env
    from capsa.manager import events

    events.emit(ctx.paths, "exec", id=container.id, name=container.name, image=container.config.get("ImageName", ""))
    code = exec_process(ctx.paths, container.id, container.runtime_path, args.command, env=env, user=args.user,
                        workdir=args.workdir, tty=args.tty, interactive=args.interactive, detach=args.detach)
    return 0 if code is None else code


def _env_files(files: list[str]) -> list[str]:
    from capsa.manager.errors import ManagerError

    env = []
    for path in files:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError as err:
            raise ManagerError(f"--env-file {path}: {err.strerror}") from None
        env += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return env
