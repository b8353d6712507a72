"""The guard of a program that uses capsa's Python API: when that program ends, even by SIGKILL,
its sandboxes end with it.

capsa.api.session starts one guard per program, the first time it is used: a small process of its own
(its own session, so that a Ctrl-C meant for the program does not end it first) whose stdin is a
pipe only the program holds open. When the program is gone, the pipe reaches EOF and the guard
deletes every container and sandbox directory the API made for a program that is no longer
alive (capsa.api.session.clean_leftovers): their processes are killed through their cgroups, and their
mounts and cgroups removed.

    python -m capsa.api.guard      (stdin: the pipe)
"""

from __future__ import annotations

import os


def main() -> int:
    while os.read(0, 4096):
        pass
    from capsa.api.session import clean_leftovers

    clean_leftovers()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
