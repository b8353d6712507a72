"""Where the manager keeps things, for root and for an unprivileged user (podman's layout).

    graph root   root: /var/lib/capsa;  user: $XDG_DATA_HOME/capsa (~/.local/share/capsa)
                 db.sqlite        the store (capsa.manager.store)
                 blobs/sha256/    manifests, configs and compressed layers, by digest
                 layers/<id>/     unpacked layers (diff/), by chain id
                 containers/<id>/ a container's upper, work and merged directories, its bundle
                 volumes/<name>/_data
    run root     root: /run/capsa/@manager;  user: $XDG_RUNTIME_DIR/capsa/@manager
                 exits/<id>       exit files written by the monitors
                 monitors/<id>/   a monitor's pid file and attach socket
                 events.log       (under the graph root: it survives reboots)
    state root   the runtime's --root for managed containers: /run/capsa (root), so that
                 `capsa list` shows them as `runc list` shows podman's

"@" is not allowed in a container id, so the run root never collides with a container's state.
"""

from __future__ import annotations

import os


class Paths:
    __slots__ = ("graph_root", "run_root", "state_root")

    def __init__(self, graph_root: str, run_root: str, state_root: str):
        self.graph_root = os.path.abspath(graph_root)
        self.run_root = os.path.abspath(run_root)
        self.state_root = os.path.abspath(state_root)

    @classmethod
    def default(cls, graph_root: str | None = None, run_root: str | None = None) -> Paths:
        """The layout for the calling user; `graph_root`/`run_root` override (podman's --root and
        --runroot). The state root follows the run root: <run root>/.. is the runtime's root."""
        if os.geteuid() == 0:
            default_graph, runtime_root = "/var/lib/capsa", "/run/capsa"
        else:
            data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
            runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/capsa-run-{os.geteuid()}"
            default_graph, runtime_root = os.path.join(data, "capsa"), os.path.join(runtime_dir, "capsa")
        if run_root is None:
            run_root = os.path.join(runtime_root, "@manager")
            state_root = runtime_root
        else:
            state_root = os.path.join(run_root, "runtime")
        return cls(graph_root or default_graph, run_root, state_root)

    @property
    def database(self) -> str:
        return os.path.join(self.graph_root, "db.sqlite")

    @property
    def blobs(self) -> str:
        return os.path.join(self.graph_root, "blobs", "sha256")

    def blob(self, digest: str) -> str:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64:
            raise ValueError(f"unsupported digest {digest!r}")
        return os.path.join(self.blobs, hexdigest)

    @property
    def layers(self) -> str:
        return os.path.join(self.graph_root, "layers")

    def layer(self, layer_id: str) -> str:
        return os.path.join(self.layers, layer_id)

    def container(self, container_id: str) -> str:
        return os.path.join(self.graph_root, "containers", container_id)

    @property
    def volumes(self) -> str:
        return os.path.join(self.graph_root, "volumes")

    @property
    def events_log(self) -> str:
        return os.path.join(self.graph_root, "events", "events.log")

    @property
    def exits(self) -> str:
        return os.path.join(self.run_root, "exits")

    def monitor(self, container_id: str) -> str:
        return os.path.join(self.run_root, "monitors", container_id)

    @property
    def tmp(self) -> str:
        """Scratch space on the graph root's file system (downloads, unpacking), so that a
        finished piece is renamed into place atomically."""
        return os.path.join(self.graph_root, "tmp")

    def ensure(self) -> None:
        for directory in (self.graph_root, self.blobs, self.layers, os.path.join(self.graph_root, "containers"),
                          self.volumes, self.tmp, self.run_root, self.exits):
            os.makedirs(directory, mode=0o700, exist_ok=True)
