"""A caller of capsa.manager's monitor and attach, as ctr's `run` and `attach` will be, run by
test_capsactl_monitor.py in a process of its own (so that it can be killed, and so that the
monitor is forked from it, not from pytest).

    python monitor_driver.py run|attach|launch JSON
"""

from __future__ import annotations

import json
import sys

from capsa.manager import attach, monitor
from capsa.manager import runtime as runtimes
from capsa.manager.paths import Paths


def main(action: str, options: dict) -> int:
    paths = Paths.default(options["root"], options["runroot"])
    paths.ensure()
    cid = options["id"]
    stdin = 0 if options.get("stdin") else None
    if action == "exec":
        from capsa.manager import execs

        try:
            code = execs.exec_process(paths, cid, options.get("runtime"), options["args"], env=options.get("env", []),
                                      user=options.get("user"), workdir=options.get("workdir"),
                                      tty=options.get("tty", False), interactive=bool(options.get("stdin")),
                                      detach=options.get("detach", False))
        except execs.ManagerError as err:
            sys.stderr.write(f"Error: {err}\n")
            return err.exit_code
        return _report(code)
    if action == "attach":
        code = attach.attach(paths, cid, stdin=stdin, tty=options.get("tty", False))
        return _report(code)
    try:
        keep = []
        if options.get("hold_port"):  # as ctr does with network.reserve_ports: a socket the monitor holds
            import socket

            held = socket.socket()
            held.bind(("127.0.0.1", 0))
            held.listen(1)
            print(f"port {held.getsockname()[1]}", flush=True)
            keep.append(held.fileno())
        pid = monitor.launch(paths, cid, options["bundle"], runtime_path=options.get("runtime"),
                             log_path=options["log"], stdin=bool(options.get("stdin")), tty=options.get("tty", False),
                             log_max_size=options.get("max_size"), log_max_files=options.get("max_files", 1),
                             keep_fds=keep, warn=lambda text: sys.stderr.write(f"warning: {text}\n"))
        if keep:
            held.close()  # the monitor has its own copy
    except monitor.CreateError as err:
        sys.stderr.write(f"Error: {err}\n")
        return err.exit_code
    runtime = runtimes.for_container(paths, options.get("runtime"))
    if action == "launch":
        runtime.start(cid)
        print(pid, flush=True)
        return 0
    session = attach.connect(paths, cid)
    if options.get("size"):
        session.resize(*options["size"])
    runtime.start(cid)
    print(f"started {pid}", file=sys.stderr, flush=True)
    return _report(session.run(stdin=stdin, tty=options.get("tty", False)))


def _report(code):
    if code is None:
        print("detached", file=sys.stderr, flush=True)
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], json.loads(sys.argv[2])))
