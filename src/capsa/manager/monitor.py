"""The monitor: one small process per running container, podman's conmon in capsactl's role.

`launch` forks it (detached: a session of its own, re-parented to init, so `capsactl run -d`
returns at once); it creates the container through the runtime, with its own pipes as the
container's stdio, and tells the caller the init's pid (or the runtime's error). Then it
stays, as the container's parent and a child subreaper:
    - it copies the container's output into the log (k8s-file: capsa.manager.logs);
    - when the init exits it learns the exit status (only the parent can), writes the exit file
      <run root>/exits/<id> (the exit code, as conmon's --exit-dir) and calls the exit hook
      ("module:function", podman's --exit-command: capsactl's container clean-up), then ends.
The caller starts the container itself (runtime.start) once it has attached, if it attaches,
so that no output is lost before an attach.

(First cut: stdout/stderr to the log, exit file and hook. stdin (-i), terminals (-t), attach
sockets and log rotation: issue 17's monitor work.)
"""

from __future__ import annotations

import os

from capsa.manager.errors import ManagerError


def launch(paths, container_id: str, bundle: str, *, runtime_path: str | None, log_path: str,
           on_exit: str | None = None) -> int:
    """Fork the container's monitor and have it create the container; return the init's pid."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    first = os.fork()
    if first == 0:
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() == 0:
                _monitor(paths, container_id, bundle, runtime_path, log_path, on_exit, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(first, 0)
    with os.fdopen(read_end, "rb") as report:
        message = report.read().decode(errors="replace")
    if message.startswith("pid "):
        return int(message[4:])
    raise ManagerError(message or f"the monitor of container {container_id[:12]} ended before creating it")


def _monitor(paths, container_id, bundle, runtime_path, log_path, on_exit, report_fd) -> None:
    """The monitor process: never returns."""
    code = 1
    try:
        code = _run_monitor(paths, container_id, bundle, runtime_path, log_path, on_exit, report_fd)
    finally:
        os._exit(code)


def _run_monitor(paths, container_id, bundle, runtime_path, log_path, on_exit, report_fd) -> int:
    from capsa.manager import runtime as runtimes
    from capsa.process import Process, become_subreaper, reap_until

    become_subreaper()
    monitor_dir = paths.monitor(container_id)
    os.makedirs(monitor_dir, mode=0o700, exist_ok=True)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    devnull = os.open("/dev/null", os.O_RDWR)
    # The container's stdio is whatever fds 0-2 are when the runtime creates it.
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    try:
        runtime = runtimes.for_container(paths, runtime_path)
        pid = runtime.create(container_id, bundle)
    except Exception as err:  # noqa: BLE001 - the caller gets the message, whatever failed
        os.write(report_fd, str(err).encode() or repr(err).encode())
        return 1
    # The monitor's own stdio must not keep the container's pipes open (EOF when it exits).
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    for fd in (out_w, err_w, devnull):
        os.close(fd)
    with open(os.path.join(monitor_dir, "pid"), "w") as f:
        f.write(f"{os.getpid()}\n")
    os.write(report_fd, f"pid {pid}".encode())
    os.close(report_fd)

    from capsa.manager.logs import LogWriter

    process = Process.open(pid)
    with LogWriter(log_path) as log:
        _copy_output(log, {out_r: "stdout", err_r: "stderr"})
    status = reap_until(process)
    _write_exit_file(paths, container_id, status)
    if on_exit:
        module_name, _, function = on_exit.partition(":")
        import importlib

        getattr(importlib.import_module(module_name), function)(paths, container_id, status)
    return 0


def _copy_output(log, streams: dict[int, str]) -> None:
    """Copy the container's output into the log until every writer has closed it."""
    import select

    while streams:
        readable, _, _ = select.select(list(streams), [], [])
        for fd in readable:
            data = os.read(fd, 65536)
            if data:
                log.write(streams[fd], data)
            else:
                os.close(fd)
                del streams[fd]


def _write_exit_file(paths, container_id: str, status) -> None:
    from capsa.state import write_atomic

    os.makedirs(paths.exits, mode=0o700, exist_ok=True)
    code = status.exit_code if status.exit_code is not None else -1
    write_atomic(os.path.join(paths.exits, container_id), f"{code}", 0o644)


def read_exit_file(paths, container_id: str) -> int | None:
    try:
        with open(os.path.join(paths.exits, container_id)) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None
