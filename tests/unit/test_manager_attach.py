"""capsa.manager.attach's pure parts: detach keys, and the exec'd process built by execs."""

from __future__ import annotations

import pytest

from capsa.manager import attach, execs
from capsa.manager.errors import ManagerError


def test_parse_detach_keys():
    assert attach.parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert attach.parse_detach_keys("a,ctrl-[,ctrl-@") == b"a\x1b\x00"
    assert attach.parse_detach_keys("") == b""
    for bad in ("ctrl-", "ctrl-1", "shift-a", "ab"):
        with pytest.raises(ManagerError, match="--detach-keys"):
            attach.parse_detach_keys(bad)


@pytest.mark.parametrize("data,expected", [
    (b"hello", (b"hello", b"", False)),
    (b"ab\x10\x11cd", (b"ab", b"", True)),
    (b"ab\x10", (b"ab", b"\x10", False)),        # held back: maybe the start of the keys
    (b"\x10x", (b"\x10x", b"", False)),          # not the keys after all: sent on
    (b"\x10\x11", (b"", b"", True)),
])
def test_scan_detach_keys(data, expected):
    assert attach._scan_detach_keys(data, b"\x10\x11") == expected


def test_scan_without_keys_sends_everything():
    assert attach._scan_detach_keys(b"\x10\x11", b"") == (b"\x10\x11", b"", False)


def test_build_process_changes_only_what_is_asked(monkeypatch):
    base = {"args": ["sh"], "env": ["PATH=/bin", "HOME=/root"], "cwd": "/", "terminal": True,
            "consoleSize": {"height": 1, "width": 1}, "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": ["CAP_CHOWN"]}}
    monkeypatch.setenv("FROM_HOST", "yes")
    monkeypatch.delenv("NOT_SET", raising=False)
    process = execs.build_process(base, ["ls", "-l"], env=["HOME=/home", "NEW=1", "FROM_HOST", "NOT_SET"],
                                  workdir="/tmp", user={"uid": 5, "gid": 6})
    assert process["args"] == ["ls", "-l"]
    assert process["env"] == ["PATH=/bin", "HOME=/home", "NEW=1", "FROM_HOST=yes"]
    assert process["cwd"] == "/tmp" and process["user"] == {"uid": 5, "gid": 6}
    assert process["terminal"] is False and "consoleSize" not in process
    assert process["capabilities"] == base["capabilities"] and base["args"] == ["sh"]
    assert "TERM=xterm" in execs.build_process(base, ["sh"], tty=True)["env"]
    with pytest.raises(ManagerError, match="absolute"):
        execs.build_process(base, ["sh"], workdir="relative")


@pytest.mark.parametrize("message,code", [
    ('exec: "nope": executable file not found in $PATH', 127),
    ("stat /x: no such file or directory", 127),
    ("exec /etc/passwd: permission denied", 126),
    ("something else", 125),
])
def test_error_exit_codes(message, code):
    assert execs.error_exit_code(message) == code
