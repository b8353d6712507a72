"""The manager's store: one SQLite database (the standard library's sqlite3, WAL mode).

Why SQLite: every change is one transaction that either happens or does not, across processes
(parallel `capsactl` calls), with no daemon; a `kill -9` mid-change leaves the previous state.
podman moved from BoltDB to SQLite for the same reasons.

Rows keep what is queried (ids, names, status for `ps --filter`) in columns and the rest as JSON
in `config` and `state` columns, so a new field needs no migration. Writers take the database's
write lock at the start of their transaction (BEGIN IMMEDIATE): a check and the write that
depends on it ("is the name free?" then insert) cannot interleave with another writer's.

After a reboot (the kernel's boot id changed) the first call refreshes, as libpod's refresh
does: the handlers registered with `on_reboot` run in one transaction with the new boot id's
write, so exactly one caller does it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from capsa.manager.errors import StoreError
from capsa.manager.paths import Paths

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- An image: its id is the hex sha256 of its config blob, as podman's and docker's.
CREATE TABLE IF NOT EXISTS images (
    id       TEXT PRIMARY KEY,
    digest   TEXT,                 -- the manifest's digest (sha256:...), as pulled or pushed
    manifest TEXT NOT NULL,        -- the image manifest (JSON)
    config   TEXT NOT NULL,        -- the image config (JSON)
    layers   TEXT NOT NULL,        -- JSON list of layer ids (chain ids), bottom first
    size     INTEGER NOT NULL,     -- bytes unpacked
    created  TEXT NOT NULL,        -- RFC 3339, when it entered this store
    extra    TEXT NOT NULL DEFAULT '{}'
);
-- Names (registry/repository:tag, normalised) of images: an image may have several, or none.
CREATE TABLE IF NOT EXISTS image_names (
    name     TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
);
-- An unpacked layer, shared by every image that has it (id: its chain id's hex).
CREATE TABLE IF NOT EXISTS layers (
    id          TEXT PRIMARY KEY,
    diff_id     TEXT NOT NULL,     -- sha256 of the uncompressed tar
    parent      TEXT,              -- the layer below (id), NULL for a base layer
    blob_digest TEXT,              -- the compressed blob it came from, when known
    size        INTEGER NOT NULL   -- bytes unpacked
);
CREATE TABLE IF NOT EXISTS containers (
    id       TEXT PRIMARY KEY,     -- 64 hex digits
    name     TEXT NOT NULL UNIQUE,
    image_id TEXT REFERENCES images(id),
    status   TEXT NOT NULL,        -- configured, created, running, paused, stopping, exited, removing
    config   TEXT NOT NULL,        -- JSON: what the user asked for (command, env, mounts, limits, ...)
    state    TEXT NOT NULL,        -- JSON: pid, exit code, started/finished times, monitor, ...
    created  TEXT NOT NULL
);
-- A pod (capsa.manager.pods): its members are the containers whose config names it ("Pod").
CREATE TABLE IF NOT EXISTS pods (
    id       TEXT PRIMARY KEY,     -- 64 hex digits
    name     TEXT NOT NULL UNIQUE,
    config   TEXT NOT NULL,        -- JSON: infra (bool), infra container id, shared namespaces, ports, labels
    state    TEXT NOT NULL,        -- JSON: what pod-wide operations recorded
    created  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS volumes (
    name     TEXT PRIMARY KEY,
    config   TEXT NOT NULL,        -- JSON: driver, labels, options, mountpoint
    created  TEXT NOT NULL
);
"""


def valid_name(name: str, max_length: int = 253) -> bool:
    """The rule for the names of containers, pods and volumes (podman's): letters, digits, '_',
    '.' and '-', starting with a letter or digit."""
    return bool(name) and name[0].isalnum() and all(c.isalnum() or c in "_.-" for c in name) \
        and len(name) <= max_length


def boot_id() -> str:
    """The kernel's boot id. CAPSA_BOOT_ID_FILE, when set, names a file read instead: the tests'
    way to simulate a reboot (a new id) without one."""
    import os

    with open(os.environ.get("CAPSA_BOOT_ID_FILE") or "/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


class Store:
    """An open database. Use `transaction()` for every change and for reads that must agree."""

    def __init__(self, paths: Paths, timeout: float = 30.0):
        self.paths = paths
        paths.ensure()
        try:
            # isolation_level=None: sqlite3 opens no transaction of its own; ours are explicit.
            self.db = sqlite3.connect(paths.database, timeout=timeout, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            self.db.row_factory = sqlite3.Row
            self._create_schema()
        except sqlite3.DatabaseError as err:
            raise StoreError(f"cannot open the store {paths.database}: {err}") from None

    def _create_schema(self) -> None:
        with self.transaction() as db:
            # statement by statement: executescript() would COMMIT the transaction first
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(f"the store {self.paths.database} is of schema {row[0]}, newer than this "
                                 f"capsactl knows ({SCHEMA_VERSION}): use a newer capsactl")

    @contextmanager
    def transaction(self) -> Iterator[_Cursor]:
        """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception. Not re-entrant. The database's
        own failures (a full disk, a lock held past the timeout, a damaged file) are StoreErrors
        naming the store; the transaction is then rolled back, nothing of it kept."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            raise self._error(err) from None
        try:
            yield _Cursor(self.db)
            self.db.execute("COMMIT")
        except BaseException as err:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            # IntegrityError stays itself: callers turn a UNIQUE violation into "name in use".
            if isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.IntegrityError):
                raise self._error(err) from None
            raise

    def _error(self, err: sqlite3.DatabaseError) -> StoreError:
        return StoreError(f"the store {self.paths.database} failed: {err}")

    def query(self, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        """A read outside any transaction (a consistent snapshot of one statement)."""
        try:
            return self.db.execute(sql, parameters).fetchall()
        except sqlite3.DatabaseError as err:
            raise self._error(err) from None

    def ids_named(self, table: str, text: str) -> list[str]:
        """The ids `text` names in `table` (containers, pods: tables with id and name): its
        name or full id (one), else every id it is a hex prefix of (none, one, or several:
        ambiguous). The caller raises its own not-found and ambiguity errors."""
        rows = self.query(f"SELECT id FROM {table} WHERE id = ? OR name = ?", (text, text))
        if rows:
            return [rows[0]["id"]]
        if text and all(c in "0123456789abcdef" for c in text):
            return [r["id"] for r in self.query(f"SELECT id FROM {table} WHERE id LIKE ? || '%'", (text,))]
        return []

    def refresh_after_reboot(self, handlers: list[Callable[[_Cursor], None]]) -> bool:
        """Run `handlers` once per boot, in the transaction that records the new boot id."""
        current = boot_id()
        row = self.db.execute("SELECT value FROM meta WHERE key = 'boot_id'").fetchone()
        if row is not None and row[0] == current:
            return False
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'boot_id'").fetchone()
            if row is not None and row[0] == current:
                return False  # another caller refreshed first
            if row is not None:  # a fresh store has nothing to refresh
                for handler in handlers:
                    handler(db)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('boot_id', ?)", (current,))
        return True

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def closed_for_fork(self) -> Iterator[None]:
        """Closed while the block forks a process that will open the store itself (a monitor):
        SQLite's table of the process's file locks is in memory a fork copies, and a child whose
        copy names the parent's locks can lose its own commits (or the parent's). Reopened after."""
        # close() leaves a "zombie" connection, its files open, while prepared statements
        # live (the connection's statement cache): dropping the connection finalises them.
        self.db.close()
        self.db = None
        try:
            yield
        finally:
            self.__init__(self.paths)


class _Cursor:
    """The connection inside a transaction, with JSON helpers for the JSON columns."""

    __slots__ = ("db",)

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def execute(self, sql: str, parameters: tuple = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, parameters)

    def one(self, sql: str, parameters: tuple = ()) -> sqlite3.Row | None:
        return self.db.execute(sql, parameters).fetchone()

    def all(self, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, parameters).fetchall()


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def loads(text: str, what: str) -> object:
    """JSON of a row; a corrupt row is a StoreError naming it, not a traceback."""
    try:
        return json.loads(text)
    except (TypeError, ValueError) as err:
        raise StoreError(f"the store's record of {what} is corrupt ({err}); remove it with --force "
                         f"or restore the database") from None


def is_unique_violation(err: sqlite3.IntegrityError) -> bool:
    return "UNIQUE" in str(err)


__all__ = ["Store", "boot_id", "dumps", "is_unique_violation", "loads"]
