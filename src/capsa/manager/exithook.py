"""The monitor's exit hook (monitor.launch's on_exit), kept light to import.

The monitor runs the hook in its lean interpreter, which has imported nothing of the manager:
importing the clean-up (capsa.manager.containers, the store, the runtime) there costs tens of
milliseconds after every exit. A foreground `run` or `start -a` is attached and has all of it
imported already, so whoever learns of the exit first claims the clean-up: an empty file
<run root>/exits/<id>.cleanup made with O_EXCL. The client claims it as soon as the monitor
tells it the exit code; the hook claims it otherwise (`run -d`, a client that detached or died),
and only then imports the clean-up. A claimant that dies before it is done leaves a container
whose record says running and whose monitor is gone: the next command finishes it from the exit
file (Containers.sync). The claim is removed with the exit file (start, rm, boot refresh).
"""

from __future__ import annotations

from capsa.manager.cleanupclaim import claim


def on_exit(paths, container_id: str, status) -> None:
    """The hook: the clean-up, unless an attached client has claimed it."""
    if not claim(paths, container_id):
        return
    from capsa.manager.containers import on_exit as clean_up

    clean_up(paths, container_id, status)
