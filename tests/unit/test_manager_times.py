"""capsa.manager.times: podman's --since/--until values."""

from __future__ import annotations

import time

import pytest

from capsa.manager import times

NOW = 1796622780 * 10**9


@pytest.mark.parametrize("text,expected", [
    ("2026-12-07T05:53:00Z", 1796622780 * 10**9),
    ("2026-12-07T05:53:00.5Z", 1796622780 * 10**9 + 500000000),
    ("2026-12-07T05:53:00.123456789+00:00", 1796622780 * 10**9 + 123456789),
    ("2026-12-07T06:53:00+01:00", 1796622780 * 10**9),
    ("2026-12-07T04:53:00-0100", 1796622780 * 10**9),
])
def test_rfc3339(text, expected):
    assert times.parse_input_time(text, since=True) == expected


def test_local_time_without_offset():
    expected = int(time.mktime((2026, 12, 7, 5, 53, 0, 0, 0, -1))) * 10**9
    assert times.parse_input_time("2026-12-07T05:53:00", since=True) == expected
    assert times.parse_input_time("2026-12-07", since=True) == int(time.mktime((2026, 12, 7, 0, 0, 0, 0, 0, -1))) * 10**9


def test_unix_time():
    assert times.parse_input_time("1700000000", since=True) == 1700000000 * 10**9
    assert times.parse_input_time("1700000000.25", since=False) == 1700000000 * 10**9 + 250000000


@pytest.mark.parametrize("text,nanos", [("10m", 600 * 10**9), ("1h30m", 5400 * 10**9), ("1.5s", 1500000000),
                                        ("300ms", 300 * 10**6), ("2h", 7200 * 10**9)])
def test_durations_back_for_since_forward_for_until(text, nanos):
    assert times.parse_input_time(text, since=True, now_ns=NOW) == NOW - nanos
    assert times.parse_input_time(text, since=False, now_ns=NOW) == NOW + nanos


@pytest.mark.parametrize("text", ["", "yesterday", "10x", "2026-13-01", "1e5", "m10", "10m5"])
def test_bad_times_name_what_is_taken(text):
    with pytest.raises(ValueError, match="RFC 3339"):
        times.parse_input_time(text, since=True)


def test_formats():
    assert times.format_rfc3339_nano(NOW + 120000000) == "2026-12-07T05:53:00.12Z"
    assert times.format_rfc3339_nano(NOW) == "2026-12-07T05:53:00Z"
    assert times.format_go_time(NOW + 706707511) == "2026-12-07 05:53:00.706707511 +0000 UTC"
