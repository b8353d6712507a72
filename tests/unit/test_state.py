"""The state store and the lifecycle state machine, without containers."""

from __future__ import annotations

import os
import threading

import pytest

from capsa import state as st
from capsa.errors import AmbiguousIdError, ExistsError, InvalidIdError, NotFoundError, StateError


@pytest.mark.parametrize("good", ["a", "abc-DEF_1.2+3", "x" * st.MAX_ID_LENGTH, "..a", "a..b"])
def test_valid_ids(good):
    st.validate_id(good)


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a b", "é", "x" * (st.MAX_ID_LENGTH + 1), "a\n", "../x"])
def test_invalid_ids(bad):
    with pytest.raises(InvalidIdError):
        st.validate_id(bad)


@pytest.mark.parametrize(
    "operation,status,allowed",
    [
        ("start", st.CREATED, True),
        ("start", st.RUNNING, False),
        ("start", st.STOPPED, False),
        ("start", st.PAUSED, False),
        ("kill", st.RUNNING, True),
        ("kill", st.CREATED, True),
        ("kill", st.STOPPED, False),
        ("delete", st.STOPPED, True),
        ("delete", st.RUNNING, False),
        ("resume", st.PAUSED, True),
        ("resume", st.RUNNING, False),
    ],
)
def test_transitions(operation, status, allowed):
    if allowed:
        st.check_transition(operation, "c1", status)
    else:
        with pytest.raises(StateError, match="c1"):
            st.check_transition(operation, "c1", status)


def test_start_stopped_message():
    with pytest.raises(StateError, match="cannot start a container that has stopped"):
        st.check_transition("start", "c1", st.STOPPED)


def test_delete_running_message():
    with pytest.raises(StateError, match="cannot delete container c1 that is not stopped: running"):
        st.check_transition("delete", "c1", st.RUNNING)


def test_create_read_write_remove(tmp_path):
    store = st.StateStore(str(tmp_path / "root"))
    directory = store.create("abc")
    assert os.stat(directory).st_mode & 0o777 == 0o700
    store.write("abc", {"id": "abc", "status": "created"})
    assert store.read("abc") == {"id": "abc", "status": "created"}
    assert store.ids() == ["abc"]
    with pytest.raises(ExistsError, match="container with id exists: abc"):
        store.create("abc")
    store.remove("abc")
    assert store.ids() == []
    with pytest.raises(NotFoundError, match="container abc does not exist"):
        store.read("abc")


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    store = st.StateStore(str(tmp_path))
    store.create("c")
    for i in range(20):
        store.write("c", {"id": "c", "n": i})
    assert sorted(os.listdir(store.path("c"))) == ["state.json"]
    assert store.read("c")["n"] == 19


def test_corrupt_state_is_a_clear_error(tmp_path):
    store = st.StateStore(str(tmp_path))
    store.create("c")
    (tmp_path / "c" / "state.json").write_text("{not json")
    with pytest.raises(st.CapsaError, match="corrupt"):
        store.read("c")


def test_concurrent_creates_exactly_one_wins(tmp_path):
    store = st.StateStore(str(tmp_path))
    results = []

    def attempt():
        try:
            store.create("same")
            results.append("won")
        except ExistsError:
            results.append("lost")

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("won") == 1
    assert results.count("lost") == 15


def test_prefix_resolution(tmp_path):
    store = st.StateStore(str(tmp_path))
    for cid in ("alpha1", "alpha2", "beta"):
        store.create(cid)
        store.write(cid, {"id": cid})
    assert store.resolve("beta") == "beta"
    assert store.resolve("b") == "beta"
    assert store.resolve("alpha1") == "alpha1"
    with pytest.raises(AmbiguousIdError, match="alpha1, alpha2"):
        store.resolve("alp")
    with pytest.raises(NotFoundError):
        store.resolve("gamma")
    with pytest.raises(NotFoundError):
        store.resolve("../etc")


def test_lock_of_removed_container_reports_not_found(tmp_path):
    store = st.StateStore(str(tmp_path))
    store.create("c")
    store.remove("c")
    with pytest.raises(NotFoundError):
        with store.lock("c"):
            pass


def test_rfc3339_shape():
    stamp = st.now_rfc3339()
    assert stamp.endswith("Z") and stamp[4] == "-" and stamp[10] == "T"


def test_an_atomic_write_by_exchange_leaves_the_new_content_and_nothing_else(tmp_path):
    from capsa import linux

    path = str(tmp_path / "state.json")
    st.write_atomic(path, "first", exchange=linux.exchange)  # no old file: a plain rename
    st.write_atomic(path, "second", exchange=linux.exchange)  # the old and the new swap names
    with open(path) as f:
        assert f.read() == "second"
    assert os.listdir(tmp_path) == ["state.json"]  # the old content, under the temporary name, unlinked


def test_exchange_swaps_two_names_and_says_when_it_cannot(tmp_path):
    from capsa import linux

    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("A")
    b.write_text("B")
    assert linux.exchange(str(a), str(b))
    assert (a.read_text(), b.read_text()) == ("B", "A")
    assert not linux.exchange(str(a), str(tmp_path / "missing"))  # ENOENT: nothing done
    assert a.read_text() == "B"
