"""capsactl healthcheck run NAME: one health check now (podman's), as the monitor's schedule
runs them (capsa.manager.healthcheck).

Exit codes, podman's: 0 when the container is healthy after the check, 1 when it is not (the
status, starting or unhealthy, is printed), 125 for an error: no such container, one that is
not running, one without a health check.
"""

from __future__ import annotations

import argparse


def run(ctx, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="capsactl healthcheck run", add_help=False,
                                     description="Run the health check of a container")
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("container")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            return 125
        raise
    from capsa.manager.containers import Containers
    from capsa.manager.health import HEALTHY
    from capsa.manager.healthcheck import run_check

    status = run_check(Containers(ctx.store), args.container)
    if status == HEALTHY:
        return 0
    print(status)
    return 1
