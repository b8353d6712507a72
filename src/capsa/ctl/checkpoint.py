"""capsactl container checkpoint / restore: podman's commands of those names over
capsa.manager.checkpoint (capsa's CRIU support)."""

from __future__ import annotations

from capsa.ctl.containers import _manager, _parse, _parser


def checkpoint(ctx, argv: list[str]) -> int:
    parser = _parser("container checkpoint", "Checkpoint a running container with CRIU")
    parser.add_argument("-e", "--export", metavar="FILE", help="also write the checkpoint to a tar.gz archive")
    parser.add_argument("-R", "--leave-running", action="store_true", help="leave the container running")
    parser.add_argument("--tcp-established", action="store_true", help="checkpoint established TCP connections")
    parser.add_argument("container")
    args = _parse(parser, argv)
    from capsa.manager import checkpoint as checkpoints

    container = checkpoints.checkpoint(_manager(ctx), args.container, export=args.export,
                                       leave_running=args.leave_running, tcp_established=args.tcp_established)
    print(container.id)
    return 0


def restore(ctx, argv: list[str]) -> int:
    parser = _parser("container restore", "Restore a checkpointed container")
    parser.add_argument("-i", "--import", dest="import_path", metavar="FILE",
                        help="restore from a checkpoint archive (checkpoint --export)")
    parser.add_argument("-n", "--name", help="the name of the container restored from --import")
    parser.add_argument("-k", "--keep", action="store_true", help="keep the checkpoint's images after the restore")
    parser.add_argument("--tcp-established", action="store_true", help="restore established TCP connections")
    parser.add_argument("container", nargs="?")
    args = _parse(parser, argv)
    from capsa.manager import checkpoint as checkpoints

    container = checkpoints.restore(_manager(ctx), args.container, import_path=args.import_path, name=args.name,
                                    keep=args.keep, tcp_established=args.tcp_established)
    print(container.id)
    return 0
