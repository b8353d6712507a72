"""SCMP_ACT_NOTIFY: the notify fd reaches a listener (written here, as a seccomp agent would be)
with runc's ContainerProcessState, and the listener's answers decide the container's syscalls."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import struct
import threading

import pytest

from capsa import jsonfast

NOTIF_RECV = 0xC0502100  # SECCOMP_IOCTL_NOTIF_RECV: _IOWR('!', 0, struct seccomp_notif)
NOTIF_SEND = 0xC0182101  # SECCOMP_IOCTL_NOTIF_SEND: _IOWR('!', 1, struct seccomp_notif_resp)
NOTIF = struct.Struct("<QIIiIQ6Q")  # id, pid, flags, nr, arch, instruction_pointer, args[6]
RESP = struct.Struct("<QqiI")  # id, val, error, flags
FLAG_CONTINUE = 1
NR_MKDIR, NR_MKDIRAT = 83, 258  # x86-64


def profile(listener: str | None, *names: str, **extra) -> dict:
    result = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
              "syscalls": [{"names": list(names or ["mkdir", "mkdirat"]), "action": "SCMP_ACT_NOTIFY"}]}
    if listener:
        result["listenerPath"] = listener
    result.update(extra)
    return result


class Listener:
    """Accepts one connection per container process; answers mkdir by the directory's name:
    "deny" fails with EDQUOT, "fake" succeeds without doing anything, anything else proceeds."""

    def __init__(self, path: str):
        self.path = path
        self.states: list[dict] = []
        self.seen: list[str] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(4)
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            message, fds, _, _ = socket.recv_fds(connection, 65536, 1)
            connection.close()
            if not fds:
                continue  # the process failed before its filter was loaded
            self.states.append(jsonfast.loads(message.decode()))
            threading.Thread(target=self._answer, args=(fds[0],), daemon=True).start()

    def _answer(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        try:
            while not self._stop.is_set():
                events = poller.poll(100)
                if any(event & (select.POLLHUP | select.POLLERR) for _, event in events):
                    return  # every process under the filter is gone
                if not events:
                    continue
                buffer = bytearray(NOTIF.size)
                try:
                    fcntl.ioctl(fd, NOTIF_RECV, buffer)
                except OSError:
                    continue  # the caller was interrupted before we took the notification
                ident, pid, _, nr, _, _, *args = NOTIF.unpack(buffer)
                name = self._path(pid, args[0] if nr == NR_MKDIR else args[1])
                self.seen.append(name)
                base = os.path.basename(name)
                if base == "deny":
                    answer = RESP.pack(ident, 0, -errno.EDQUOT, 0)
                elif base == "fake":
                    answer = RESP.pack(ident, 0, 0, 0)
                else:
                    answer = RESP.pack(ident, 0, 0, FLAG_CONTINUE)
                try:
                    fcntl.ioctl(fd, NOTIF_SEND, bytearray(answer))
                except OSError:
                    pass
        finally:
            os.close(fd)

    @staticmethod
    def _path(pid: int, address: int) -> str:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            mem.seek(address)
            return mem.read(256).split(b"\0", 1)[0].decode(errors="replace")


@pytest.fixture
def listener(tmp_path):
    agent = Listener(str(tmp_path / "seccomp.sock"))
    yield agent
    agent.close()


SCRIPT = ("mkdir /deny 2>&1; echo deny=$?; mkdir /fake; echo fake=$?; [ -d /fake ] && echo fake-exists; "
          "mkdir /real; [ -d /real ] && echo real-exists; true")


@pytest.mark.parametrize("no_new_privs", [True, False])
def test_listener_answers_the_container_syscalls(bundle, listener, no_new_privs):
    bundle.config["root"]["readonly"] = False
    bundle.process["noNewPrivileges"] = no_new_privs  # the filter is loaded at another moment
    bundle.config["linux"]["seccomp"] = profile(listener.path, listenerMetadata="agent-metadata")
    out = bundle.sh(SCRIPT).stdout.splitlines()
    assert "Disk quota exceeded" in out[0] and out[1] == "deny=1"  # the errno the listener chose
    assert out[2:] == ["fake=0", "real-exists"]  # success faked; the real one really happened
    assert listener.seen == ["/deny", "/fake", "/real"]
    assert not os.path.exists(os.path.join(bundle.rootfs, "fake"))
    (state,) = listener.states
    assert state["fds"] == ["seccompFd"] and state["metadata"] == "agent-metadata"
    assert state["state"]["id"] == "c1" and state["state"]["status"] == "creating"
    assert state["pid"] == state["state"]["pid"] > 0 and state["state"]["bundle"] == bundle.path


def test_exec_sends_its_own_notify_fd(bundle, listener):
    bundle.config["root"]["readonly"] = False
    bundle.config["linux"]["seccomp"] = profile(listener.path)
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    init_pid = jsonfast.loads(bundle.capsa("state", "c1").stdout)["pid"]
    out = bundle.capsa("exec", "c1", "sh", "-c", SCRIPT).stdout.splitlines()
    assert out[1:] == ["deny=1", "fake=0", "real-exists"]
    init_state, exec_state = listener.states
    assert init_state["pid"] == init_pid
    assert exec_state["state"]["status"] == "running" and exec_state["state"]["pid"] == init_pid
    assert exec_state["pid"] not in (0, init_pid) and "metadata" not in exec_state


def test_wait_killable_recv_and_tsync_flags(bundle, listener):
    from capsa.seccomp import kernel_has_flag

    if not kernel_has_flag("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"):
        pytest.skip("this kernel has no SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19+)")
    bundle.config["root"]["readonly"] = False
    bundle.config["linux"]["seccomp"] = profile(
        listener.path, flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", "SECCOMP_FILTER_FLAG_TSYNC"])
    assert bundle.sh(SCRIPT).stdout.splitlines()[1:] == ["deny=1", "fake=0", "real-exists"]


@pytest.mark.parametrize(
    "seccomp,field,message",
    [
        (profile("/x", defaultAction="SCMP_ACT_NOTIFY"), "linux.seccomp.defaultAction",
         "cannot be used as default action"),
        (profile("/x", "mkdir", "write"), "linux.seccomp.syscalls[0]", "cannot be used for the write syscall"),
        (profile("/x", "sendmsg"), "linux.seccomp.syscalls[0]", "cannot be used for the sendmsg syscall"),
        (profile(None), "linux.seccomp.listenerPath", "needs a listenerPath"),
        (profile("/nonexistent/seccomp.sock"), "linux.seccomp.listenerPath", "cannot connect to /nonexistent/seccomp.sock"),
        (profile("/x", listenerPath=7), "linux.seccomp.listenerPath", "must be a string"),
    ],
)
def test_bad_notify_profiles_are_clear_errors(bundle, seccomp, field, message):
    bundle.config["linux"]["seccomp"] = seccomp
    result = bundle.run("true", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert field in result.stderr and message in result.stderr
    assert bundle.capsa("list", "-q").stdout == ""


def test_features_list_notify_and_probed_flags(bundle):
    from capsa.seccomp import kernel_has_flag

    seccomp = jsonfast.loads(bundle.capsa("features").stdout)["linux"]["seccomp"]
    assert "SCMP_ACT_NOTIFY" in seccomp["actions"]
    assert set(seccomp["knownFlags"]) == {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                                          "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"}
    assert seccomp["supportedFlags"] == sorted(f for f in seccomp["knownFlags"] if kernel_has_flag(f))
