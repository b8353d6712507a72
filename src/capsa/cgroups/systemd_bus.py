"""A connection to systemd's manager over D-Bus, for the systemd cgroup driver (systemd.py).

Marshalling is jeepney's (PyPI, pure Python, no C library: see docs/cgroups.md for the choice);
the socket, the SASL EXTERNAL handshake and the wait for replies and signals are done here,
blocking and with deadlines, because the two ways of reaching systemd differ:

- /run/systemd/private (as root, what runc and systemctl use): a direct peer connection to pid 1;
  no bus daemon, so no Hello, and systemd sends its signals (JobRemoved) to every private peer.
- /run/dbus/system_bus_socket: through dbus-daemon; Hello first, then a match rule and
  Manager.Subscribe, without which systemd emits no job signals on the bus.

Imported only on the --systemd-cgroup path: `capsa state` never loads jeepney.
"""

from __future__ import annotations

import os
import socket
import time

from capsa.cgroups.common import CgroupError

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from typing import Any

BOOTED_MARKER = "/run/systemd/system"  # sd_booted(): systemd is the init of this system
PRIVATE_SOCKET = "/run/systemd/private"
SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
TIMEOUT = 30.0  # runc waits 30 s for a unit job
NUDGE_AFTER = 1.0  # see Manager._nudge


class UnitExistsError(CgroupError):
    """StartTransientUnit refused the name: the unit is someone else's."""


class DBusError(CgroupError):
    def __init__(self, name: str, message: str):
        super().__init__(f"{message} ({name})")
        self.name = name


def socket_path() -> str:
    """The socket to reach systemd through, or a CgroupError saying why there is none."""
    if not os.path.isdir(BOOTED_MARKER):
        raise CgroupError(f"--systemd-cgroup: systemd is not the init system here (no {BOOTED_MARKER}); "
                          "run without --systemd-cgroup to use the cgroupfs driver")
    candidates = ([PRIVATE_SOCKET] if os.geteuid() == 0 else []) + [SYSTEM_BUS_SOCKET]
    for path in candidates:
        if os.path.exists(path):
            return path
    raise CgroupError(f"--systemd-cgroup: systemd runs but its bus cannot be reached (no {' nor '.join(candidates)})")


class Manager:
    """systemd's org.freedesktop.systemd1.Manager, through one connection."""

    def __init__(self, path: str | None = None, timeout: float = TIMEOUT):
        from jeepney.low_level import Parser

        self.path = path or socket_path()
        self.timeout = timeout
        self._parser = Parser()
        self._serial = 0
        self._signals: list[Any] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(self.path)
            self._authenticate()
            if self.path != PRIVATE_SOCKET:
                self._join_bus()
        except OSError as err:
            self.close()
            raise CgroupError(f"--systemd-cgroup: cannot talk to systemd at {self.path}: {err.strerror or err}") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the protocol -------------------------------------------------------------------------------
    def _authenticate(self) -> None:
        from jeepney.auth import BEGIN, Authenticator

        self._sock.sendall(b"\0")  # the kernel passes our uid (SO_PEERCRED); EXTERNAL names it
        auth = Authenticator(inc_null_byte=False)
        for line in auth:
            self._sock.sendall(line)
            data = self._sock.recv(1024)
            if not data:
                raise ConnectionResetError(0, "closed during authentication")
            auth.feed(data)
        self._sock.sendall(BEGIN)

    def _join_bus(self) -> None:
        self.call("/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello", destination="org.freedesktop.DBus")
        rule = f"type='signal',sender='{SYSTEMD}',interface='{MANAGER}',member='JobRemoved'"
        self.call("/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s", (rule,),
                  destination="org.freedesktop.DBus")
        self.manager("Subscribe")

    def call(self, path: str, interface: str, method: str, signature: str | None = None, body: tuple = (),
             destination: str = SYSTEMD) -> tuple:
        """A method call; its reply's body, or a DBusError. Signals that arrive meanwhile are kept."""
        from jeepney import DBusAddress, MessageType, new_method_call
        from jeepney.low_level import HeaderFields

        self._serial += 1
        serial = self._serial
        message = new_method_call(DBusAddress(path, destination, interface), method, signature, body)
        self._sock.sendall(message.serialise(serial=serial))
        deadline = time.monotonic() + self.timeout
        nudge = time.monotonic() + NUDGE_AFTER
        while True:
            try:
                reply = self._receive(min(deadline, nudge) if nudge else deadline)
            except CgroupError:
                if not nudge or time.monotonic() >= deadline:
                    raise
                self._nudge()
                nudge = 0.0
                continue
            if reply.header.message_type == MessageType.signal:
                self._signals.append(reply)
                continue
            if reply.header.fields.get(HeaderFields.reply_serial) != serial:
                continue
            if reply.header.message_type == MessageType.error:
                name = reply.header.fields.get(HeaderFields.error_name, "")
                text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else name
                raise DBusError(name, text)
            return reply.body

    def _nudge(self) -> None:
        """A Peer.Ping that makes systemd read its socket again. Seen with systemd 252: a call sent
        right after BEGIN, while pid 1 is busy unloading a scope, can sit unread until more data
        arrives on the connection; the ping brings the call's reply (and its own)."""
        from jeepney import DBusAddress, new_method_call

        self._serial += 1
        ping = new_method_call(DBusAddress("/", SYSTEMD, "org.freedesktop.DBus.Peer"), "Ping")
        self._sock.sendall(ping.serialise(serial=self._serial))

    def _receive(self, deadline: float) -> Any:
        while True:
            message = self._parser.get_next_message()
            if message is not None:
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CgroupError(f"systemd did not answer within {self.timeout:.0f} s")
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise CgroupError("systemd closed the D-Bus connection")
            self._parser.add_data(data)

    def manager(self, method: str, signature: str | None = None, body: tuple = ()) -> tuple:
        return self.call(MANAGER_PATH, MANAGER, method, signature, body)

    # -- units --------------------------------------------------------------------------------------
    def start_transient_unit(self, name: str, properties: list[tuple[str, tuple[str, Any]]]) -> None:
        """StartTransientUnit(name, "fail", properties) and wait for its job to end."""
        try:
            (job,) = self.manager("StartTransientUnit", "ssa(sv)a(sa(sv))", (name, "fail", properties, []))
        except DBusError as err:
            if err.name == "org.freedesktop.systemd1.UnitExists":
                raise UnitExistsError(f"--systemd-cgroup: unit {name} already exists (another container's, or a "
                                  f"leftover: `systemctl stop {name}`)") from None
            raise
        result = self.wait_for_job(job)
        if result != "done":
            raise CgroupError(f"systemd could not start unit {name}: job {result} "
                              f"(see `journalctl -u {name}` / `systemctl status {name}`)")

    def stop_unit(self, name: str) -> None:
        """StopUnit(name, "replace"), waiting for it; a unit systemd no longer has is fine (an empty
        scope is stopped and unloaded by systemd itself)."""
        try:
            (job,) = self.manager("StopUnit", "ss", (name, "replace"))
        except DBusError as err:
            if err.name == "org.freedesktop.systemd1.NoSuchUnit":
                return
            raise
        self.wait_for_job(job)

    def set_unit_properties(self, name: str, properties: list[tuple[str, tuple[str, Any]]]) -> None:
        self.manager("SetUnitProperties", "sba(sv)", (name, True, properties))

    def wait_for_job(self, job: str) -> str:
        """The result of job `job` ("done", "failed", "timeout", ...) from its JobRemoved signal."""
        from jeepney.low_level import HeaderFields

        deadline = time.monotonic() + self.timeout
        while True:
            while self._signals:
                signal = self._signals.pop(0)
                if signal.header.fields.get(HeaderFields.member) == "JobRemoved" and signal.body[1] == job:
                    return signal.body[3]
            try:
                message = self._receive(deadline)
            except CgroupError:
                raise CgroupError(f"systemd job {job} did not finish within {self.timeout:.0f} s") from None
            if message.header.fields.get(HeaderFields.member) == "JobRemoved":
                self._signals.append(message)
