"""The restarter process (capsa.manager.restarts spawns it): the back-off, then the container's
start by its restart policy. A module of its own, so that restarts.py, which the containers'
exit hook imports, does not import the containers module back."""

from __future__ import annotations

import os


def main(arguments: list[str]) -> None:
    """The restarter: back-off, then the restart by policy (Containers.restart_by_policy)."""
    from capsa.manager.containers import Containers
    from capsa.manager.paths import Paths
    from capsa.manager.store import Store

    graph, run, state, container_id = arguments
    paths = Paths(graph, run, state)
    store = Store(paths)
    try:
        Containers(store, refresh=False).restart_by_policy(container_id)
    finally:
        store.close()
        _drop_empty_log(paths, container_id)


def _drop_empty_log(paths, container_id: str) -> None:
    path = os.path.join(paths.run_root, "restarts", f"{container_id}.log")
    try:
        if os.path.getsize(path) == 0:
            os.unlink(path)
    except OSError:
        pass
