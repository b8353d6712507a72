"""The manager's SQLite store (capsa.manager.store): transactions and errors."""

import sqlite3

import pytest

from capsa.manager.errors import StoreError
from capsa.manager.paths import Paths
from capsa.manager.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(Paths(str(tmp_path / "g"), str(tmp_path / "r"), str(tmp_path / "s")))
    yield s
    s.close()


def test_a_failed_transaction_keeps_nothing(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as db:
            db.execute("INSERT INTO volumes VALUES ('v', '{}', 'now')")
            raise RuntimeError("midway")
    assert store.query("SELECT * FROM volumes") == []


def test_database_failures_are_store_errors_naming_the_store(store):
    with pytest.raises(StoreError, match="db.sqlite failed"):
        with store.transaction() as db:
            db.execute("INSERT INTO no_such_table VALUES (1)")
    with pytest.raises(StoreError, match="db.sqlite failed"):
        store.query("SELECT * FROM no_such_table")
    # A UNIQUE violation stays an IntegrityError: callers turn it into "name in use".
    with store.transaction() as db:
        db.execute("INSERT INTO volumes VALUES ('v', '{}', 'now')")
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as db:
            db.execute("INSERT INTO volumes VALUES ('v', '{}', 'now')")
    assert len(store.query("SELECT * FROM volumes")) == 1


def test_a_full_disk_is_a_store_error(tmp_path):
    """A database that cannot grow (SQLite's max_page_count standing in for a full disk)."""
    s = Store(Paths(str(tmp_path / "g"), str(tmp_path / "r"), str(tmp_path / "s")))
    pages = s.db.execute("PRAGMA page_count").fetchone()[0]
    s.db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreError, match="full"):
        with s.transaction() as db:
            for i in range(200):
                db.execute("INSERT INTO volumes VALUES (?, ?, 'now')", (f"v{i}", "x" * 2000))
    s.db.execute("PRAGMA max_page_count = 1073741823")
    assert s.query("SELECT count(*) FROM volumes")[0][0] == 0
    s.close()
