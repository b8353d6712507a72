"""capsa.manager.events: emit, rotation, reading, filters and podman's output."""

from __future__ import annotations

import json
import os
import threading

import pytest

from capsa.manager import events
from capsa.manager.paths import Paths


@pytest.fixture
def paths(tmp_path):
    return Paths(str(tmp_path / "g"), str(tmp_path / "r"), str(tmp_path / "s"))


def test_emit_and_read_back(paths):
    events.emit(paths, "create", id="a" * 64, name="web", image="docker.io/library/busybox:latest")
    events.emit(paths, "died", id="a" * 64, name="web", image="docker.io/library/busybox:latest",
                attributes={"containerExitCode": "3"})
    read = events.read(paths)
    assert [e["Status"] for e in read] == ["create", "died"]
    assert read[1]["Attributes"] == {"containerExitCode": "3"}


def test_rotation_keeps_one_old_file_and_reads_both(paths):
    for number in range(50):
        events.emit(paths, "start", id=f"{number:064d}", name=f"c{number}", max_size=2000)
    directory = os.path.dirname(paths.events_log)
    assert sorted(n for n in os.listdir(directory) if not n.endswith(".lock")) == ["events.log", "events.log.1"]
    assert os.path.getsize(paths.events_log) <= 2000 + 400
    names = [e["Name"] for e in events.read(paths)]
    assert names == [f"c{n}" for n in range(50 - len(names), 50)] and len(names) > 5


def test_parallel_emitters_rotate_once_each_time_and_lose_nothing_of_the_newest(paths):
    def emit_many(prefix):
        for number in range(200):
            events.emit(paths, "start", name=f"{prefix}{number}", max_size=100_000)

    threads = [threading.Thread(target=emit_many, args=(p,)) for p in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = [e["Name"] for e in events.read(paths)]
    assert len(names) == len(set(names))
    assert all(f"{p}199" in names for p in "abcd")


@pytest.mark.parametrize("filters,expected", [
    (["type=container"], ["c-create", "c-died", "c2-start"]),
    (["event=died"], ["c-died"]),
    (["status=create", "event=start"], ["c-create", "c2-start"]),
    (["container=web"], ["c-create", "c-died"]),
    (["container=aaaa"], ["c-create", "c-died"]),
    (["image=busybox"], ["c-create", "c-died", "i-pull"]),
    (["label=containerExitCode"], ["c-died"]),
    (["label=containerExitCode=3"], ["c-died"]),
    (["label=containerExitCode=4"], []),
    (["type=container", "container=other"], ["c2-start"]),
    (["type=image"], ["i-pull"]),
])
def test_filters(filters, expected):
    recorded = [
        {"Type": "container", "Status": "create", "ID": "a" * 64, "Name": "web", "Image": "busybox", "_": "c-create"},
        {"Type": "container", "Status": "died", "ID": "a" * 64, "Name": "web", "Image": "busybox",
         "Attributes": {"containerExitCode": "3"}, "_": "c-died"},
        {"Type": "image", "Status": "pull", "ID": "b" * 64, "Name": "busybox", "_": "i-pull"},
        {"Type": "container", "Status": "start", "ID": "c" * 64, "Name": "other", "Image": "alpine", "_": "c2-start"},
    ]
    parsed = events.parse_filters(filters)
    assert [e["_"] for e in recorded if events.matches(e, parsed)] == expected


@pytest.mark.parametrize("bad", ["type", "colour=red", "event="])
def test_bad_filters(bad):
    with pytest.raises(ValueError, match="--filter"):
        events.parse_filters([bad])


def test_since_and_until(paths):
    for name in ("a", "b", "c"):
        events.emit(paths, "start", name=name)
    stamps = [e["TimeNano"] for e in events.read(paths)]
    assert [e["Name"] for e in events.read(paths, since=stamps[1])] == ["b", "c"]
    assert [e["Name"] for e in events.read(paths, until=stamps[1])] == ["a", "b"]


def test_follow_sees_new_events_across_rotation(paths):
    events.emit(paths, "start", name="before")
    stop = threading.Event()
    stream = events.follow(paths, done=stop.is_set, poll_interval=0.001)
    assert next(stream)["Name"] == "before"
    for number in range(30):
        events.emit(paths, "start", name=f"n{number}", max_size=1500)
    stop.set()
    assert [e["Name"] for e in stream] == [f"n{n}" for n in range(30)]


def test_podman_json_and_human_lines():
    event = {"Type": "container", "Status": "died", "ID": "a" * 64, "Name": "web", "Image": "busybox",
             "Time": "2026-12-07T06:05:19.706707511Z", "TimeNano": 1796623519706707511,
             "Attributes": {"containerExitCode": "3"}}
    assert list(events.podman_json(event)) == ["ContainerExitCode", "ID", "Image", "Name", "Status", "Time", "Type",
                                               "Attributes"]
    assert events.podman_json(event)["ContainerExitCode"] == 3
    assert events.human(event) == ("2026-12-07 06:05:19.706707511 +0000 UTC container died " + "a" * 64 +
                                   " (image=busybox, name=web, containerExitCode=3)")
    image = {"Type": "image", "Status": "pull", "ID": "b" * 64, "Name": "busybox", "TimeNano": 1796623519000000000}
    assert events.human(image) == "2026-12-07 06:05:19 +0000 UTC image pull " + "b" * 64 + " busybox"
    assert "Image" not in events.podman_json(image)


def test_unparsable_lines_are_skipped(paths):
    events.emit(paths, "start", name="ok")
    with open(paths.events_log, "ab") as f:
        f.write(b"{not json\n" + json.dumps({"no": "status"}).encode() + b"\n")
    events.emit(paths, "stop", name="ok")
    assert [e["Status"] for e in events.read(paths)] == ["start", "stop"]
