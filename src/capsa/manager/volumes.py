"""Named volumes (podman's "local" driver): a directory <graph root>/volumes/<name>/_data, bound
into the containers that name it (`-v NAME:/path`). A volume named on `-v` that does not exist
is created, as podman does; `-v /path` alone makes an anonymous one (a random name) that
`rm -v` removes with its container.

Which containers use a volume is read from the containers' records (their `Mounts`), in the same
transaction as a removal, so that a volume in use is never removed under a container.
"""

from __future__ import annotations

import os
import shutil

from capsa.manager.errors import InvalidState, ManagerError, NoSuchVolume
from capsa.manager.store import dumps, is_unique_violation, loads, valid_name


def now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Volume:
    __slots__ = ("name", "config", "created")

    def __init__(self, name: str, config: dict, created: str):
        self.name, self.config, self.created = name, config, created

    @classmethod
    def from_row(cls, row) -> Volume:
        return cls(row["name"], loads(row["config"], f"volume {row['name']}"), row["created"])

    @property
    def mountpoint(self) -> str:
        return self.config["Mountpoint"]

    def inspect(self, users: int = 0) -> dict:
        """podman's `volume inspect` keys."""
        return {"Name": self.name, "Driver": self.config.get("Driver", "local"), "Mountpoint": self.mountpoint,
                "CreatedAt": self.created, "Labels": self.config.get("Labels") or {}, "Scope": "local",
                "Options": self.config.get("Options") or {}, "MountCount": 0,
                "NeedsCopyUp": bool(self.config.get("NeedsCopyUp")),
                "NeedsChown": False, "Anonymous": bool(self.config.get("Anonymous")), "UsedBy": users}


class Volumes:
    def __init__(self, store):
        self.store = store
        self.paths = store.paths

    def _path(self, name: str) -> str:
        return os.path.join(self.paths.volumes, name)

    def create(self, name: str | None = None, labels: dict | None = None, options: dict | None = None,
               anonymous: bool = False, exist_ok: bool = False, db=None) -> Volume:
        """A new volume (a random name if none); `exist_ok`: an existing one of that name is
        returned (-v NAME:/path). `db`: the caller's transaction."""
        if name is None:
            name = os.urandom(32).hex()
        if not valid_name(name, 255):
            raise ManagerError(f"volume name {name!r} is not valid: letters, digits, '_', '.' and '-', "
                               "starting with a letter or digit")
        if options:
            unknown = set(options) - {"o", "type", "device"}
            if unknown:
                raise ManagerError(f"volume {name}: unknown option(s) {', '.join(sorted(unknown))} of the local driver")
            if options.get("type") or options.get("device"):
                raise ManagerError(f"volume {name}: mounted volumes (-o type=, device=) are not supported yet")
        config = {"Driver": "local", "Labels": labels or {}, "Options": options or {},
                  "Mountpoint": os.path.join(self._path(name), "_data"), "Anonymous": anonymous,
                  # podman's copy-up: the first container to mount it fills it with what its
                  # image has at the mount point (copy_up_done then clears this)
                  "NeedsCopyUp": True}
        if db is None:
            with self.store.transaction() as tx:
                return self._insert(tx, name, config, exist_ok)
        return self._insert(db, name, config, exist_ok)

    def _insert(self, db, name: str, config: dict, exist_ok: bool) -> Volume:
        import sqlite3

        row = db.one("SELECT * FROM volumes WHERE name = ?", (name,))
        if row is not None:
            if exist_ok:
                volume = Volume.from_row(row)
                os.makedirs(volume.mountpoint, mode=0o755, exist_ok=True)
                return volume
            raise ManagerError(f"volume with name {name} already exists: choose another name")
        created = now()
        try:
            db.execute("INSERT INTO volumes VALUES (?, ?, ?)", (name, dumps(config), created))
        except sqlite3.IntegrityError as err:
            if is_unique_violation(err):
                raise ManagerError(f"volume with name {name} already exists: choose another name") from None
            raise
        # Inside the transaction: a failure here rolls the row back.
        if os.path.lexists(self._path(name)):
            shutil.rmtree(self._path(name), ignore_errors=True)  # left by a crash before its row
        os.makedirs(config["Mountpoint"], mode=0o755)
        return Volume(name, config, created)

    def claim_copy_up(self, name: str) -> Volume | None:
        """The volume if it still needs its copy-up, now marked done (one transaction: of two
        containers starting at once, one copies)."""
        with self.store.transaction() as db:
            row = db.one("SELECT * FROM volumes WHERE name = ?", (name,))
            if row is None:
                return None
            volume = Volume.from_row(row)
            if not volume.config.get("NeedsCopyUp"):
                return None
            volume.config["NeedsCopyUp"] = False
            db.execute("UPDATE volumes SET config = ? WHERE name = ?", (dumps(volume.config), name))
        return volume

    def get(self, name: str) -> Volume:
        rows = self.store.query("SELECT * FROM volumes WHERE name = ?", (name,))
        if not rows:
            raise NoSuchVolume(name)
        return Volume.from_row(rows[0])

    def list(self) -> list[Volume]:
        return [Volume.from_row(r) for r in self.store.query("SELECT * FROM volumes ORDER BY name")]

    def users(self, db=None) -> dict[str, list[str]]:
        """volume name -> names of the containers whose mounts name it."""
        query = db.all if db is not None else self.store.query
        result: dict[str, list[str]] = {}
        for row in query("SELECT name, config FROM containers"):
            try:
                config = loads(row["config"], f"container {row['name']}")
            except ManagerError:
                continue
            for mount in config.get("Mounts") or []:
                if mount.get("type") == "volume":
                    result.setdefault(mount["source"], []).append(row["name"])
        return result

    def remove(self, name: str, force: bool = False, remove_container=None) -> None:
        """Remove a volume; one in use is an error unless `force`, which first removes its
        containers through `remove_container(name)`."""
        self.get(name)
        users = self.users().get(name, [])
        if users:
            if not force:
                raise InvalidState(f"volume {name} is being used by the following container(s): "
                                   f"{', '.join(users)}: remove them first, or use --force")
            for container in users:
                remove_container(container)
        with self.store.transaction() as db:
            if self.users(db).get(name):
                raise InvalidState(f"volume {name} came into use while being removed")
            db.execute("DELETE FROM volumes WHERE name = ?", (name,))
        shutil.rmtree(self._path(name), ignore_errors=True)

    def prune(self, filters: dict | None = None) -> list[tuple[str, int]]:
        """Remove every volume no container uses; (name, bytes freed) of each."""
        removed = []
        with self.store.transaction() as db:
            used = self.users(db)
            for row in db.all("SELECT * FROM volumes ORDER BY name"):
                if row["name"] in used:
                    continue
                volume = Volume.from_row(row)
                if not _labels_match(volume.config.get("Labels") or {}, (filters or {}).get("label", [])):
                    continue
                db.execute("DELETE FROM volumes WHERE name = ?", (row["name"],))
                removed.append((row["name"], du(self._path(row["name"]))))
        for name, _ in removed:
            shutil.rmtree(self._path(name), ignore_errors=True)
        return removed


def _labels_match(labels: dict, wanted: list[str]) -> bool:
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def du(path: str) -> int:
    """Bytes used under `path` (files counted once per inode, as du)."""
    total = 0
    seen = set()
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512 if st.st_blocks else st.st_size
    return total
