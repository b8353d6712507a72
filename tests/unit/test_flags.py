"""runc-compatible flag parsing and signal names."""

from __future__ import annotations

import pytest

from capsa.cli.flags import BOOL, INT, LIST, STRING, Flag, UsageError, parse
from capsa.cli.kill import parse_signal

FLAGS = [Flag("bundle,b", STRING, ""), Flag("detach,d", BOOL), Flag("preserve-fds", INT, 0), Flag("env,e", LIST)]


@pytest.mark.parametrize(
    "argv",
    [
        ["--bundle", "/b", "id"],
        ["-bundle", "/b", "id"],
        ["--bundle=/b", "id"],
        ["-b", "/b", "id"],
        ["-b=/b", "id"],
    ],
)
def test_value_spellings(argv):
    parsed = parse(argv, FLAGS)
    assert parsed.bundle == "/b"
    assert parsed.args == ["id"]


def test_bool_and_int_and_list():
    parsed = parse(["-d", "--preserve-fds", "2", "-e", "A=1", "--env=B=2", "id"], FLAGS)
    assert parsed.detach is True
    assert parsed.preserve_fds == 2
    assert parsed.env == ["A=1", "B=2"]
    assert parse(["--detach=false", "id"], FLAGS).detach is False


def test_stops_at_first_positional():
    parsed = parse(["id", "--detach"], FLAGS)
    assert parsed.args == ["id", "--detach"]
    assert parsed.detach is False


def test_interspersed():
    parsed = parse(["id", "--detach", "9"], FLAGS, interspersed=True)
    assert parsed.args == ["id", "9"] and parsed.detach


def test_double_dash():
    assert parse(["--", "-x"], FLAGS).args == ["-x"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--nope"], "flag provided but not defined: -nope"),
        (["--bundle"], "flag needs an argument"),
        (["--preserve-fds", "x"], "invalid value"),
        (["--detach=maybe"], "invalid boolean"),
    ],
)
def test_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        parse(argv, FLAGS)


@pytest.mark.parametrize(
    "text,number",
    [("9", 9), ("KILL", 9), ("SIGKILL", 9), ("kill", 9), ("TERM", 15), ("SIGUSR1", 10), ("RTMIN+1", 35), ("HUP", 1)],
)
def test_signals(text, number):
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["0", "65", "NOPE", "SIGFOO", "-1"])
def test_bad_signals(text):
    with pytest.raises(UsageError):
        parse_signal(text)
