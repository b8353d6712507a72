"""capsactl healthcheck run NAME: one health check now (podman's), as the monitor's schedule
runs them (capsa.manager.healthcheck).

Exit codes, podman's: 0 when the check passed, 1 when it failed ("unhealthy" is printed, as
podman prints it, whatever the status after it: a failure may leave it starting or healthy
until --health-retries failures in a row), 125 for an error: no such container, one that is
not running, one without a health check. A check killed at its timeout is a failure, 1
(podman 4 says 125 and the timeout's error).
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
    from capsa.manager.healthcheck import run_check

    _, code = run_check(Containers(ctx.store), args.container)
    if code == 0:
        return 0
    print("unhealthy")
    return 1
