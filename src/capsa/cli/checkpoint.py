"""capsa checkpoint: save a running container with CRIU (as runc checkpoint)."""

from __future__ import annotations

from capsa.cli import command_usage, parse_command, require_args
from capsa.cli.flags import BOOL, INT, LIST, STRING, Flag

FLAGS = [
    Flag("image-path", STRING, "", "path for saving criu image files"),
    Flag("work-path", STRING, "", "path for saving work files and logs"),
    Flag("parent-path", STRING, "", "path for previous criu image files in pre-dump"),
    Flag("leave-running", BOOL, help="leave the process running after checkpointing"),
    Flag("tcp-established", BOOL, help="allow open tcp connections"),
    Flag("ext-unix-sk", BOOL, help="allow external unix sockets"),
    Flag("shell-job", BOOL, help="allow shell jobs"),
    Flag("lazy-pages", BOOL, help="use userfaultfd to lazily restore memory pages"),
    Flag("status-fd", INT, -1, "criu writes \\0 to this FD once lazy-pages is ready"),
    Flag("page-server", STRING, "", "ADDRESS:PORT of the page server"),
    Flag("file-locks", BOOL, help="handle file locks, for safety"),
    Flag("pre-dump", BOOL, help="dump container's memory information only, leave the container running after this"),
    Flag("manage-cgroups-mode", STRING, "", "cgroups mode: 'soft' (default), 'full', 'strict' or 'ignore'"),
    Flag("empty-ns", LIST, help="create a namespace, but don't restore its properties"),
    Flag("auto-dedup", BOOL, help="enable auto deduplication of memory images"),
]


def usage() -> str:
    return command_usage("checkpoint", FLAGS)


def run(g, argv: list[str]) -> int:
    parsed = parse_command("checkpoint", argv, FLAGS)
    if parsed is None:
        return 0
    require_args(parsed, "checkpoint", 1)
    from capsa.checkpoint import CriuOptions
    from capsa.container import Container

    options = CriuOptions(**{flag.key: getattr(parsed, flag.key) for flag in FLAGS})
    container = Container.load(g.root, parsed.args[0])
    container.checkpoint(g.criu, options)
    return 0
