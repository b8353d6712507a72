"""How the manager runs a container: capsa's library in this process (the default: no runtime
binary per call), or any runc-compatible binary (runc, crun, capsa itself) through its command
line, as podman drives them (`--runtime PATH`, kept per container).

The create call gives the container the caller's fds 0-2 as its stdio (the monitor arranges
them first), or a pty whose master goes to `console_socket` (runc's --console-socket).
"""

from __future__ import annotations

import os
import subprocess

from capsa.manager.errors import ManagerError


def for_container(paths, runtime_path: str | None):
    """The runtime a container was created with (None: capsa's library)."""
    if runtime_path is None:
        return LibraryRuntime(paths.state_root)
    return CliRuntime(runtime_path, os.path.join(paths.run_root, "runtime", os.path.basename(runtime_path)))


class LibraryRuntime:
    """capsa's library, in process."""

    name = "capsa"
    path = None

    def __init__(self, state_root: str):
        self.root = state_root

    def _load(self, container_id: str):
        from capsa.container import Container

        return Container.load(self.root, container_id)

    def create(self, container_id: str, bundle: str, console_socket: str | None = None,
               console_fd: int | None = None) -> int:
        """Create the container (its init waits for start); return the init's pid. A pty
        master goes to `console_fd` (a connected socket) or to the socket at `console_socket`."""
        from capsa.container import Container

        options = {}
        if console_socket is not None or console_fd is not None:
            from capsa.launch import Console

            options["console"] = Console(socket=console_socket) if console_fd is None else Console(fd=console_fd)
        from capsa.spec import load_bundle

        spec = load_bundle(bundle)
        if _in_sandbox(spec.get("annotations")):
            # A pod's infra container or member (capsa.manager.pods writes CRI annotations):
            # capsa.sandbox makes the sandbox, or joins the member to its holder's namespaces.
            from capsa import sandbox

            return sandbox.create_container(self.root, container_id, bundle, spec, **options).pid
        return Container.create(self.root, container_id, bundle, spec=spec, **options).pid

    def start(self, container_id: str) -> None:
        self._load(container_id).start()

    def exec(self, container_id: str, process: dict, *, interactive: bool = False, detach: bool = False) -> int | None:
        """Run `process` (an OCI Process) in the running container: its exit code, once it has
        exited (we are its subreaper), or None when detached (stdio /dev/null). Our stdin is its
        stdin with `interactive`, else /dev/null; a terminal is copied through TerminalProxy."""
        from capsa import process as processes
        from capsa.errors import CapsaError

        container = self._load(container_id)
        proxy = None
        if not detach:
            processes.become_subreaper()  # the exec'd process is forked by a child that exits
            if process["terminal"]:
                from capsa.terminal import TerminalProxy

                proxy = TerminalProxy()
        stdin = _Stdin(interactive, detach)
        try:
            from capsa.launch import Console

            console = Console(fd=proxy.child_end) if proxy else None
            try:
                pid = container.exec(process, console=console)
            except CapsaError as err:
                raise ManagerError(str(err)) from None
        finally:
            if detach or proxy is None:
                stdin.restore()
        if detach:
            return None
        handle = processes.Process.open(pid)
        try:
            if proxy:
                proxy.receive_master()
            status = processes.supervise(handle, proxy)
        finally:
            stdin.restore()
        return status.exit_code if status.exit_code is not None else 0

    def kill(self, container_id: str, signal: int, all_processes: bool = False) -> None:
        self._load(container_id).kill(signal, all_processes)

    def delete(self, container_id: str, force: bool = False) -> None:
        from capsa.errors import NotFoundError

        try:
            container = self._load(container_id)
        except NotFoundError:
            return
        if _in_sandbox(container.record.get("annotations")):
            # a member leaves its sandbox; the infra container takes the sandbox with it (its
            # members killed first: with force, as every delete here)
            from capsa import sandbox

            try:
                sandbox.delete_container(self.root, container, force=force)
            except (NotFoundError, sandbox.SandboxNotFoundError):
                pass  # deleted meanwhile: the infra's exit hook and an rm race to delete the sandbox
            return
        try:
            container.delete(force=force)
        except NotFoundError:
            pass

    def state(self, container_id: str) -> dict | None:
        """The OCI state, or None when the runtime does not know the container."""
        from capsa.errors import NotFoundError

        try:
            return self._load(container_id).state()
        except NotFoundError:
            return None

    def pause(self, container_id: str) -> None:
        self._load(container_id).pause()

    def resume(self, container_id: str) -> None:
        self._load(container_id).resume()

    def checkpoint(self, container_id: str, image_path: str, *, leave_running: bool = False,
                   tcp_established: bool = False, criu: str = "criu") -> None:
        """CRIU dump of the container into image_path (capsa.checkpoint; `criu check` first)."""
        from capsa.checkpoint import CriuOptions

        options = CriuOptions(image_path=image_path, leave_running=leave_running, tcp_established=tcp_established)
        self._load(container_id).checkpoint(criu, options)

    def restore(self, container_id: str, bundle: str, *, image_path: str, tcp_established: bool = False,
                criu: str = "criu") -> int:
        """A new running container restored by CRIU from image_path, the caller's fds 0-2 in
        place of the dumped init's stdio pipes; return the restored init's pid (our child)."""
        from capsa.checkpoint import CriuOptions
        from capsa.container import Container
        from capsa.create import CreateConfig

        options = CriuOptions(image_path=image_path, tcp_established=tcp_established)
        return Container.restore(self.root, CreateConfig(container_id, bundle), criu, options).pid


def _in_sandbox(annotations) -> bool:
    """CRI container-type annotations (capsa.sandbox's families): the manager is no CLI's client."""
    from capsa.sandbox import TYPE_KEYS

    return bool(annotations) and any(key in annotations for key in TYPE_KEYS)


class CliRuntime:
    """A runc-compatible binary, through the commands and flags conmon and podman use."""

    def __init__(self, path: str, root: str):
        import shutil

        found = shutil.which(path)
        if found is None:
            raise ManagerError(f"OCI runtime {path!r} not found: give a path to runc, crun or capsa")
        self.path = found
        self.name = os.path.basename(found)
        self.root = root

    def _run(self, *args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
        command = [self.path, "--root", self.root, *args]
        result = subprocess.run(command, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE if capture else None,
                                stderr=subprocess.PIPE, text=True)
        if check and result.returncode != 0:
            message = (result.stderr or result.stdout or "").strip().splitlines()
            raise ManagerError(f"{self.name} {args[0]}: {message[-1] if message else f'exit {result.returncode}'}")
        return result

    def create(self, container_id: str, bundle: str, console_socket: str | None = None,
               console_fd: int | None = None) -> int:
        if console_fd is not None:
            raise ManagerError(f"{self.name}: a console is given to a runtime binary as --console-socket PATH")
        pid_file = os.path.join(bundle, "runtime.pid")
        log_file = os.path.join(bundle, "runtime.log")
        args = ["create", "--bundle", bundle, "--pid-file", pid_file]
        if console_socket is not None:
            args += ["--console-socket", console_socket]
        # stdio: the caller's fds 0-2 are the container's (the runtime passes them to the init);
        # so the runtime's errors are read from its --log, as conmon reads them.
        command = [self.path, "--root", self.root, "--log", log_file, "--log-format", "json", *args, container_id]
        result = subprocess.run(command)
        if result.returncode != 0:
            raise ManagerError(f"{self.name} create: {_last_log_message(log_file) or f'exit {result.returncode}'}")
        with open(pid_file) as f:
            return int(f.read().strip())

    def start(self, container_id: str) -> None:
        self._run("start", container_id)

    def exec(self, container_id: str, process: dict, *, interactive: bool = False, detach: bool = False) -> int | None:
        """`RUNTIME exec --process FILE` with our stdio (the runtime copies a terminal itself);
        its errors from its JSON --log."""
        import json
        import tempfile

        with tempfile.TemporaryDirectory(prefix="capsactl-exec-") as scratch:
            process_file = os.path.join(scratch, "process.json")
            with open(process_file, "w") as f:
                json.dump(process, f)
            log_file = os.path.join(scratch, "runtime.log")
            command = [self.path, "--root", self.root, "--log", log_file, "--log-format", "json", "exec",
                       "--process", process_file, *(["--detach"] if detach else []), container_id]
            stdin = None if interactive and not detach else subprocess.DEVNULL
            output = subprocess.DEVNULL if detach else None
            result = subprocess.run(command, stdin=stdin, stdout=output, stderr=output)
            failure = _last_log_message(log_file)
        if failure:
            raise ManagerError(f"{self.name} exec: {failure}")
        if detach:
            if result.returncode != 0:
                raise ManagerError(f"{self.name} exec: exit {result.returncode}")
            return None
        return result.returncode

    def kill(self, container_id: str, signal: int, all_processes: bool = False) -> None:
        self._run("kill", *(["--all"] if all_processes else []), container_id, str(signal))

    def delete(self, container_id: str, force: bool = False) -> None:
        result = self._run("delete", *(["--force"] if force else []), container_id, check=False)
        if result.returncode != 0 and "not exist" not in result.stderr:
            raise ManagerError(f"{self.name} delete: {result.stderr.strip()}")

    def state(self, container_id: str) -> dict | None:
        result = self._run("state", container_id, check=False)
        if result.returncode != 0:
            return None
        import json

        return json.loads(result.stdout)

    def pause(self, container_id: str) -> None:
        self._run("pause", container_id)

    def resume(self, container_id: str) -> None:
        self._run("resume", container_id)


class _Stdin:
    """Our stdin, or /dev/null in its place (a process without -i reads nothing of ours)."""

    def __init__(self, interactive: bool, detach: bool):
        self.saved = None
        if detach or not interactive:
            self.saved = os.dup(0)
            null = os.open("/dev/null", os.O_RDWR)
            os.dup2(null, 0)
            if detach:
                self.saved_out = (os.dup(1), os.dup(2))
                os.dup2(null, 1)
                os.dup2(null, 2)
            os.close(null)
        self.detach = detach

    def restore(self) -> None:
        if self.saved is not None:
            os.dup2(self.saved, 0)
            os.close(self.saved)
            self.saved = None
            if self.detach:
                for fd, saved in zip((1, 2), self.saved_out, strict=True):
                    os.dup2(saved, fd)
                    os.close(saved)


def _last_log_message(log_file: str) -> str:
    """The last error of a runtime's JSON log (runc's and crun's --log-format json)."""
    import json

    message = ""
    try:
        with open(log_file) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("level") in ("error", "fatal"):
                    message = entry.get("msg", "")
    except OSError:
        pass
    return message
