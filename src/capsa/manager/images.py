"""Images in the store: names, manifests, configs and their layers.

An image is its config (the OCI image config: the default process, rootfs diff ids, history),
a manifest naming the config and layer blobs, and an ordered list of unpacked layers. A layer is
stored once, under its chain id (OCI image-spec: the digest of the layers below and its own diff
id), whatever image brought it. Names are normalised as podman does: `busybox` is
docker.io/library/busybox:latest when pulled, and images imported or built here are localhost/NAME.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

from capsa.manager import layers as layer_files
from capsa.manager.errors import AmbiguousId, ImageError, NoSuchImage
from capsa.manager.store import Store, dumps, loads

DEFAULT_REGISTRY = "docker.io"
LOCAL_REGISTRY = "localhost"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- references --------------------------------------------------------------------------

class Reference:
    """registry/repository[:tag][@digest], normalised."""

    __slots__ = ("registry", "repository", "tag", "digest")

    def __init__(self, registry: str, repository: str, tag: str | None, digest: str | None):
        self.registry, self.repository, self.tag, self.digest = registry, repository, tag, digest

    @classmethod
    def parse(cls, text: str, default_registry: str = DEFAULT_REGISTRY) -> Reference:
        if not text or text != text.strip() or any(c.isspace() for c in text):
            raise ImageError(f"invalid image reference {text!r}")
        rest, _, digest = text.partition("@")
        if digest and not (digest.startswith("sha256:") and len(digest) == 71):
            raise ImageError(f"invalid digest in image reference {text!r}")
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
        else:
            registry, path = default_registry, rest
        tag = None
        name, colon, maybe_tag = path.rpartition(":")
        if colon and "/" not in maybe_tag:
            path, tag = name, maybe_tag
        if not path or path != path.lower() or path.startswith("/") or path.endswith("/") or "//" in path:
            raise ImageError(f"invalid image reference {text!r}: repository names are lower case")
        if registry == "docker.io" and "/" not in path:
            path = "library/" + path
        if tag is None and not digest:
            tag = "latest"
        return cls(registry, path, tag, digest or None)

    @property
    def name(self) -> str:
        """registry/repository:tag (the form stored in image_names)."""
        return f"{self.registry}/{self.repository}:{self.tag or 'latest'}"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def has_registry(text: str) -> bool:
    first, slash, _ = text.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


# --- records -------------------------------------------------------------------------------

class Image:
    __slots__ = ("id", "digest", "manifest", "config", "layers", "size", "created", "names")

    def __init__(self, row, names: list[str]):
        self.id = row["id"]
        self.digest = row["digest"]
        self.manifest = loads(row["manifest"], f"image {self.id[:12]}")
        self.config = loads(row["config"], f"image {self.id[:12]}")
        self.layers = loads(row["layers"], f"image {self.id[:12]}")
        self.size = row["size"]
        self.created = row["created"]
        self.names = names

    @property
    def process_defaults(self) -> dict:
        """The image config's `config` object: Entrypoint, Cmd, Env, WorkingDir, User, ..."""
        return self.config.get("config") or {}


def chain_id(parent: str | None, diff_id: str) -> str:
    """The layer's id: its diff id for a base layer, else sha256(parent chain id + " " + diff id)."""
    if parent is None:
        return diff_id.partition(":")[2]
    return hashlib.sha256(f"sha256:{parent} {diff_id}".encode()).hexdigest()


class ImageStore:
    def __init__(self, store: Store):
        self.store = store
        self.paths = store.paths

    # -- layers --
    def layer_diff(self, layer_id: str) -> str:
        """The directory of an unpacked layer (an overlayfs lower directory)."""
        return os.path.join(self.paths.layer(layer_id), "diff")

    def add_layer(self, fileobj, parent: str | None, expected_diff_id: str | None = None,
                  blob_digest: str | None = None) -> str:
        """Unpack a layer tar on top of `parent` (a layer id); return the new layer's id. A layer
        already stored is kept (the tar is still read and checked). Unpacks into tmp and renames,
        so a crash leaves no half layer under layers/."""
        work = os.path.join(self.paths.tmp, f"layer-{os.getpid()}-{time.monotonic_ns()}")
        os.makedirs(os.path.join(work, "diff"), mode=0o700)
        try:
            diff_id, size = layer_files.unpack(fileobj, os.path.join(work, "diff"))
            if expected_diff_id is not None and diff_id != expected_diff_id:
                raise ImageError(f"layer digest mismatch: expected {expected_diff_id}, got {diff_id}")
            layer_id = chain_id(parent, diff_id)
            os.chmod(os.path.join(work, "diff"), 0o755)
            with self.store.transaction() as db:
                if db.one("SELECT 1 FROM layers WHERE id = ?", (layer_id,)) is None:
                    target = self.paths.layer(layer_id)
                    if os.path.lexists(target):  # left by a crash before its row was written
                        shutil.rmtree(target)
                    os.rename(work, target)
                    db.execute("INSERT INTO layers VALUES (?, ?, ?, ?, ?)",
                               (layer_id, diff_id, parent, blob_digest, size))
            return layer_id
        finally:
            if os.path.lexists(work):
                shutil.rmtree(work, ignore_errors=True)

    def layer_diff_ids(self, layer_ids: list[str]) -> list[str]:
        rows = {r["id"]: r["diff_id"] for r in self.store.query(
            f"SELECT id, diff_id FROM layers WHERE id IN ({','.join('?' * len(layer_ids))})", tuple(layer_ids))}
        return [rows[i] for i in layer_ids]

    # -- images --
    def add_image(self, config: dict, layer_ids: list[str], names: list[str], manifest: dict | None = None,
                  digest: str | None = None) -> str:
        """Record an image whose layers are stored; `names` move to it from any other image."""
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        image_id = hashlib.sha256(config_bytes).hexdigest()
        if manifest is None:
            manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": "sha256:" + image_id, "size": len(config_bytes)},
                        "layers": []}
        size = sum(r["size"] for r in self.store.query(
            f"SELECT size FROM layers WHERE id IN ({','.join('?' * len(layer_ids))})", tuple(layer_ids))) \
            if layer_ids else 0
        with self.store.transaction() as db:
            if db.one("SELECT 1 FROM images WHERE id = ?", (image_id,)) is None:
                db.execute("INSERT INTO images (id, digest, manifest, config, layers, size, created) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (image_id, digest, dumps(manifest), dumps(config), dumps(layer_ids), size, now()))
            elif digest:
                db.execute("UPDATE images SET digest = ? WHERE id = ?", (digest, image_id))
            for name in names:
                db.execute("INSERT OR REPLACE INTO image_names VALUES (?, ?)", (name, image_id))
        return image_id

    def import_rootfs(self, source: str, name: str | None, changes: dict | None = None) -> str:
        """A one-layer image from a root directory or a rootfs tar (`podman import`)."""
        if os.path.isdir(source):
            import io
            import tarfile

            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for entry in sorted(os.listdir(source)):
                    tar.add(os.path.join(source, entry), arcname=entry)
            buffer.seek(0)
            layer = self.add_layer(_Peekable(buffer), None)
        else:
            try:
                f = open(source, "rb")  # noqa: SIM115
            except OSError as err:
                raise ImageError(f"cannot read {source}: {err.strerror}") from None
            with f:
                layer = self.add_layer(_Peekable(f), None)
        diff_id = self.layer_diff_ids([layer])[0]
        config = {"architecture": go_arch(), "os": "linux", "created": now(),
                  "config": dict(changes or {}),
                  "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                  "history": [{"created": now(), "created_by": f"capsactl import {os.path.basename(source)}"}]}
        names = [Reference.parse(name, LOCAL_REGISTRY).name] if name else []
        return self.add_image(config, [layer], names)

    def names_of(self, image_id: str) -> list[str]:
        return [r["name"] for r in self.store.query(
            "SELECT name FROM image_names WHERE image_id = ? ORDER BY name", (image_id,))]

    def get(self, image_id: str) -> Image:
        rows = self.store.query("SELECT * FROM images WHERE id = ?", (image_id,))
        if not rows:
            raise NoSuchImage(image_id)
        return Image(rows[0], self.names_of(image_id))

    def list(self) -> list[Image]:
        names: dict[str, list[str]] = {}
        for r in self.store.query("SELECT name, image_id FROM image_names ORDER BY name"):
            names.setdefault(r["image_id"], []).append(r["name"])
        return [Image(r, names.get(r["id"], [])) for r in self.store.query("SELECT * FROM images ORDER BY created")]

    def resolve(self, text: str) -> Image:
        """An image by full or short name, id, id prefix (3+ hex digits) or sha256:id."""
        image_id = self.resolve_id(text)
        return self.get(image_id)

    def resolve_id(self, text: str) -> str:
        candidate = text[len("sha256:"):] if text.startswith("sha256:") else text
        if len(candidate) >= 3 and all(c in "0123456789abcdef" for c in candidate):
            ids = [r["id"] for r in self.store.query(
                "SELECT id FROM images WHERE id LIKE ? || '%'", (candidate,))]
            if len(ids) == 1:
                return ids[0]
            if len(ids) > 1:
                raise AmbiguousId("image", text, ids)
        try:
            reference = Reference.parse(text)
        except ImageError:
            raise NoSuchImage(text) from None
        if reference.digest:
            rows = self.store.query("SELECT id FROM images WHERE digest = ?", (reference.digest,))
            if rows:
                return rows[0]["id"]
            raise NoSuchImage(text)
        row = self.store.query("SELECT image_id FROM image_names WHERE name = ?", (reference.name,))
        if row:
            return row[0]["image_id"]
        if not has_registry(text):
            # A short name: any registry's image of that repository and tag, localhost first.
            short = Reference.parse(text, LOCAL_REGISTRY)
            suffix = "/" + short.repository.removeprefix("library/") + ":" + (short.tag or "latest")
            matches = {r["name"]: r["image_id"] for r in self.store.query(
                "SELECT name, image_id FROM image_names WHERE name LIKE ?", ("%" + suffix,))
                if r["name"].endswith(suffix) and r["name"].count("/") <= suffix.count("/") + 2}
            for preferred in (f"{LOCAL_REGISTRY}/", f"{DEFAULT_REGISTRY}/"):
                for name, image_id in matches.items():
                    if name.startswith(preferred):
                        return image_id
            if len(set(matches.values())) == 1:
                return next(iter(matches.values()))
            if matches:
                raise AmbiguousId("image", text, sorted(matches))
        raise NoSuchImage(text)


class _Peekable:
    """A file object with peek(), for the compression sniffing of layers.unpack."""

    def __init__(self, raw):
        import io

        self.raw = raw if hasattr(raw, "peek") else io.BufferedReader(raw)

    def peek(self, n: int) -> bytes:
        return self.raw.peek(n)

    def read(self, n: int = -1) -> bytes:
        return self.raw.read(n)


def go_arch() -> str:
    """This machine's architecture in Go's (and so OCI's) words."""
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "riscv64": "riscv64", "armv7l": "arm",
            "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x"}.get(machine, machine)
