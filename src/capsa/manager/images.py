"""Images in the store: names, manifests, configs and their layers.

An image is its config (the OCI image config: the default process, rootfs diff ids, history),
a manifest naming the config and layer blobs, and an ordered list of unpacked layers. A layer is
stored once, under its chain id (OCI image-spec: the digest of the layers below and its own diff
id), whatever image brought it. Names are normalised as podman does: `busybox` is
docker.io/library/busybox:latest when pulled, and images imported or built here are localhost/NAME.

Blobs: the config's and the manifest's bytes as they came (an image's id is the sha256 of its
config's bytes, its digest that of its manifest's bytes: a re-serialised JSON would change both)
and each layer's blob as it came (gzip or plain tar) are kept under blobs/sha256/, so that `save`
and `push` give back the same digests without re-packing the unpacked directories.

Nothing half-stored: a layer is unpacked and its blob written under tmp/ and renamed into place
in the transaction that inserts its row; a directory or blob left by a crash before its row is
replaced by the next one that needs it, and `clean_tmp` removes what dead processes left in tmp/.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

from capsa.manager import layers as layer_files
from capsa.manager.errors import AmbiguousId, ImageError, InvalidState, NoSuchImage
from capsa.manager.store import Store, dumps, loads

DEFAULT_REGISTRY = "docker.io"
LOCAL_REGISTRY = "localhost"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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
        if digest and not (digest.startswith("sha256:") and len(digest) == 71
                           and all(c in "0123456789abcdef" for c in digest[7:])):
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
            if not tag or len(tag) > 128 or not all(c.isalnum() or c in "_.-" for c in tag) or tag[0] in ".-":
                raise ImageError(f"invalid tag in image reference {text!r}")
        if not path or path != path.lower() or path.startswith("/") or path.endswith("/") or "//" in path \
                or not all(c.isalnum() or c in "._-/" for c in path):
            raise ImageError(f"invalid image reference {text!r}: repository names are lower case "
                             f"letters, digits and . _ - /")
        if registry == "docker.io" and "/" not in path:
            path = "library/" + path
        if tag is None and not digest:
            tag = "latest"
        return cls(registry, path, tag, digest or None)

    @property
    def name(self) -> str:
        """registry/repository:tag (the form stored in image_names)."""
        return f"{self.registry}/{self.repository}:{self.tag or 'latest'}"

    @property
    def repo(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.repo
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
    __slots__ = ("id", "digest", "manifest", "config", "layers", "size", "created", "names", "extra")

    def __init__(self, row, names: list[str]):
        self.id = row["id"]
        self.digest = row["digest"]
        self.manifest = loads(row["manifest"], f"image {self.id[:12]}")
        self.config = loads(row["config"], f"image {self.id[:12]}")
        self.layers = loads(row["layers"], f"image {self.id[:12]}")
        self.size = row["size"]
        self.created = row["created"]
        self.extra = loads(row["extra"], f"image {self.id[:12]}") if "extra" in row.keys() else {}
        self.names = names

    @property
    def process_defaults(self) -> dict:
        """The image config's `config` object: Entrypoint, Cmd, Env, WorkingDir, User, ..."""
        return self.config.get("config") or {}

    @property
    def config_created(self) -> str:
        """When the image was built (its config's `created`), else when it entered the store."""
        return self.config.get("created") or self.created


def chain_id(parent: str | None, diff_id: str) -> str:
    """The layer's id: its diff id for a base layer, else sha256(parent chain id + " " + diff id)."""
    if parent is None:
        return diff_id.partition(":")[2]
    return hashlib.sha256(f"sha256:{parent} {diff_id}".encode()).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    ids: list[str] = []
    for diff_id in diff_ids:
        ids.append(chain_id(ids[-1] if ids else None, diff_id))
    return ids


def config_diff_ids(config: dict) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and d.startswith("sha256:") and len(d) == 71
                                                 for d in diff_ids):
        raise ImageError("the image config has no valid rootfs.diff_ids")
    return diff_ids


def parse_config(data: bytes) -> dict:
    try:
        config = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ImageError(f"the image config is not JSON: {err}") from None
    if not isinstance(config, dict):
        raise ImageError("the image config is not a JSON object")
    config_diff_ids(config)
    return config


def clean_tmp(paths) -> None:
    """Remove what dead processes left in tmp/ (named <what>-<pid>-<n>): a `kill -9` in the
    middle of a pull or load leaves its scratch files there and nothing anywhere else."""
    try:
        entries = os.listdir(paths.tmp)
    except FileNotFoundError:
        return
    for entry in entries:
        parts = entry.split("-")
        if len(parts) < 3 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # alive: someone's pull in progress
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        path = os.path.join(paths.tmp, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def scratch(paths, what: str) -> str:
    """A fresh name under tmp/ that clean_tmp recognises as this process's."""
    return os.path.join(paths.tmp, f"{what}-{os.getpid()}-{time.monotonic_ns()}")


def disk_error(err: OSError, doing: str) -> ImageError:
    """An OSError while writing the store as a clear error (a full disk above all)."""
    import errno

    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ImageError(f"{doing}: no space left on the device of the store: nothing was stored; "
                          f"free some space (capsactl image prune) and try again")
    return ImageError(f"{doing}: {err.strerror or err}")


class _TeeToFile:
    """Read through: what is read is hashed and written to `out` (the layer's blob)."""

    def __init__(self, raw, out):
        self.raw = raw
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.sha256.update(data)
            self.out.write(data)
            self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 16):
            pass

    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


class ImageStore:
    def __init__(self, store: Store):
        self.store = store
        self.paths = store.paths

    # -- blobs --
    def blob_path(self, digest: str) -> str:
        try:
            return self.paths.blob(digest)
        except ValueError as err:
            raise ImageError(str(err)) from None

    def has_blob(self, digest: str) -> bool:
        return os.path.exists(self.blob_path(digest))

    def read_blob(self, digest: str) -> bytes:
        try:
            with open(self.blob_path(digest), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is missing from the store") from None

    def write_blob(self, data: bytes) -> str:
        """Store a small blob (a config, a manifest) atomically; return its digest."""
        digest = sha256_digest(data)
        target = self.blob_path(digest)
        if os.path.exists(target):
            return digest
        tmp = scratch(self.paths, "blob")
        try:
            with open(tmp, "xb") as f:
                f.write(data)
            os.rename(tmp, target)
        except OSError as err:
            raise disk_error(err, "cannot store a blob") from None
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        return digest

    # -- layers --
    def layer_diff(self, layer_id: str) -> str:
        """The directory of an unpacked layer (an overlayfs lower directory)."""
        return os.path.join(self.paths.layer(layer_id), "diff")

    def has_layer(self, layer_id: str) -> bool:
        return bool(self.store.query("SELECT 1 FROM layers WHERE id = ?", (layer_id,)))

    def layer_row(self, layer_id: str):
        rows = self.store.query("SELECT * FROM layers WHERE id = ?", (layer_id,))
        if not rows:
            raise ImageError(f"layer {layer_id[:12]} is missing from the store")
        return rows[0]

    def add_layer(self, fileobj, parent: str | None, expected_diff_id: str | None = None,
                  blob_digest: str | None = None) -> str:
        """Unpack a layer blob (tar, maybe gzip) on top of `parent` (a layer id); return the new
        layer's id. The blob is written beside while it is read and its digest checked against
        `blob_digest` when given, the tar's against `expected_diff_id`. A layer already stored is
        kept. Unpacks into tmp and renames, so a crash leaves no half layer under layers/."""
        work = scratch(self.paths, "layer")
        try:
            os.makedirs(os.path.join(work, "diff"), mode=0o700)
            with open(os.path.join(work, "blob"), "xb") as blob:
                tee = _TeeToFile(fileobj, blob)
                diff_id, size = layer_files.unpack(_Peekable(tee), os.path.join(work, "diff"),
                                                   native_whiteouts=layer_files.driver_name(self.paths) == "overlay")
                tee.drain()  # what follows the compressed stream is the blob's too
            got_blob = tee.digest()
            if blob_digest is not None and got_blob != blob_digest:
                raise ImageError(f"layer blob digest mismatch: expected {blob_digest}, got {got_blob}")
            if expected_diff_id is not None and diff_id != expected_diff_id:
                raise ImageError(f"layer digest mismatch: the image config says {expected_diff_id}, "
                                 f"the layer's tar is {diff_id}")
            layer_id = chain_id(parent, diff_id)
            os.chmod(os.path.join(work, "diff"), 0o755)
            with self.store.transaction() as db:
                row = db.one("SELECT blob_digest FROM layers WHERE id = ?", (layer_id,))
                if row is None:
                    target = self.paths.layer(layer_id)
                    if os.path.lexists(target):  # left by a crash before its row was written
                        shutil.rmtree(target)
                    os.rename(os.path.join(work, "blob"), self.blob_path(got_blob))
                    os.rename(work, target)
                    db.execute("INSERT INTO layers VALUES (?, ?, ?, ?, ?)",
                               (layer_id, diff_id, parent, got_blob, size))
                elif row["blob_digest"] is None or not self.has_blob(row["blob_digest"]):
                    os.rename(os.path.join(work, "blob"), self.blob_path(got_blob))
                    db.execute("UPDATE layers SET blob_digest = ? WHERE id = ?", (got_blob, layer_id))
            return layer_id
        except OSError as err:
            raise disk_error(err, "cannot store a layer") from None
        finally:
            if os.path.lexists(work):
                shutil.rmtree(work, ignore_errors=True)

    def layer_diff_ids(self, layer_ids: list[str]) -> list[str]:
        rows = {r["id"]: r["diff_id"] for r in self.store.query(
            f"SELECT id, diff_id FROM layers WHERE id IN ({','.join('?' * len(layer_ids))})", tuple(layer_ids))}
        return [rows[i] for i in layer_ids]

    def open_layer_blob(self, layer_id: str):
        """(file object of the layer's blob as stored, its digest, its size, whether gzip)."""
        row = self.layer_row(layer_id)
        digest = row["blob_digest"]
        if not digest:
            raise ImageError(f"layer {layer_id[:12]} has no blob in the store (it cannot be saved or pushed)")
        try:
            f = open(self.blob_path(digest), "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise ImageError(f"the blob {digest} of layer {layer_id[:12]} is missing from the store") from None
        gzipped = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        return f, digest, os.fstat(f.fileno()).st_size, gzipped

    # -- images --
    def add_image(self, config: dict | bytes, layer_ids: list[str], names: list[str],
                  manifest: dict | bytes | None = None, digest: str | None = None, extra: dict | None = None) -> str:
        """Record an image whose layers are stored; `names` move to it from any other image.
        `config` and `manifest` are best given as the bytes that came (their digests)."""
        config_bytes = config if isinstance(config, bytes) else json.dumps(config, separators=(",", ":")).encode()
        config_obj = parse_config(config_bytes)
        image_id = self.write_blob(config_bytes).partition(":")[2]
        if manifest is None:
            manifest = self.make_manifest(image_id, len(config_bytes), layer_ids, OCI_MANIFEST)
        manifest_bytes = manifest if isinstance(manifest, bytes) else json.dumps(manifest, separators=(",", ":")).encode()
        manifest_digest = self.write_blob(manifest_bytes)
        if digest is None:
            digest = manifest_digest
        manifest_obj = json.loads(manifest_bytes)
        extra = dict(extra or {})
        with self.store.transaction() as db:
            rows = db.all(f"SELECT id, size FROM layers WHERE id IN ({','.join('?' * len(layer_ids))})",
                          tuple(layer_ids)) if layer_ids else []
            if len({r["id"] for r in rows}) != len(set(layer_ids)):
                raise ImageError("a layer of the image was removed while it was being stored (a parallel "
                                 "rmi or prune): try again")
            size = sum(r["size"] for r in rows)
            if db.one("SELECT 1 FROM images WHERE id = ?", (image_id,)) is None:
                db.execute("INSERT INTO images (id, digest, manifest, config, layers, size, created, extra) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (image_id, digest, dumps(manifest_obj), dumps(config_obj), dumps(layer_ids), size,
                            now(), dumps(extra)))
            else:
                db.execute("UPDATE images SET digest = ?, manifest = ? WHERE id = ?",
                           (digest, dumps(manifest_obj), image_id))
            for name in names:
                self._set_name(db, name, image_id)
        return image_id

    def ingest(self, config_bytes: bytes, layers: list, names: list[str], manifest: bytes | None = None,
               digest: str | None = None, progress=None, manifest_type: str = OCI_MANIFEST,
               extra: dict | None = None) -> str:
        """Store an image from a source (an archive, a registry): `layers` are (blob digest or
        None, blob size or None, opener returning a file object of the blob), bottom first. Each
        layer is checked against the config's diff ids; one already stored is not read."""
        from capsa.manager.progress import QUIET, Counting

        progress = progress or QUIET
        config = parse_config(config_bytes)
        diff_ids = config_diff_ids(config)
        if len(layers) != len(diff_ids):
            raise ImageError(f"the image has {len(layers)} layers but its config lists {len(diff_ids)} diff ids")
        ids = chain_ids(diff_ids)
        parent = None
        for (blob_digest, size, opener), diff_id, layer_id in zip(layers, diff_ids, ids, strict=True):
            row = self.store.query("SELECT blob_digest FROM layers WHERE id = ?", (layer_id,))
            if row and row[0]["blob_digest"] and self.has_blob(row[0]["blob_digest"]):
                progress.skipped(blob_digest or diff_id)
            else:
                bar = progress.blob(blob_digest or diff_id, size)
                with opener() as f:
                    got = self.add_layer(Counting(f, bar), parent, diff_id, blob_digest)
                bar.done()
                assert got == layer_id
            parent = layer_id
        progress.say(f"Copying config {sha256_digest(config_bytes)} done" if not progress.terminal
                     else f"Copying config {sha256_digest(config_bytes)[7:19]} done")
        if manifest is None:
            manifest = json.dumps(self.make_manifest(sha256_digest(config_bytes)[7:], len(config_bytes), ids,
                                                     manifest_type), separators=(",", ":")).encode()
        progress.say("Writing manifest to image destination")
        return self.add_image(config_bytes, ids, names, manifest, digest, extra)

    def _set_name(self, db, name: str, image_id: str) -> None:
        """Point `name` at `image_id`, recording the names an image has had (podman's NamesHistory)."""
        db.execute("INSERT OR REPLACE INTO image_names VALUES (?, ?)", (name, image_id))
        row = db.one("SELECT extra FROM images WHERE id = ?", (image_id,))
        extra = loads(row["extra"], f"image {image_id[:12]}") if row else {}
        history = [n for n in extra.get("names_history", []) if n != name]
        extra["names_history"] = [name, *history]
        db.execute("UPDATE images SET extra = ? WHERE id = ?", (dumps(extra), image_id))

    def make_manifest(self, image_id: str, config_size: int, layer_ids: list[str], media_type: str) -> dict:
        """A manifest for stored layers (their blobs as stored: gzip or plain tar)."""
        docker = media_type == DOCKER_MANIFEST
        layers = []
        for layer_id in layer_ids:
            f, blob_digest, size, gzipped = self.open_layer_blob(layer_id)
            f.close()
            if docker:
                kind = DOCKER_LAYER_GZIP if gzipped else DOCKER_LAYER
            else:
                kind = OCI_LAYER_GZIP if gzipped else OCI_LAYER
            layers.append({"mediaType": kind, "digest": blob_digest, "size": size})
        return {"schemaVersion": 2, "mediaType": media_type,
                "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                           "digest": "sha256:" + image_id, "size": config_size},
                "layers": layers}

    def config_bytes(self, image: Image) -> bytes:
        """The config as it came (its sha256 is the image id)."""
        if self.has_blob("sha256:" + image.id):
            return self.read_blob("sha256:" + image.id)
        return json.dumps(image.config, separators=(",", ":")).encode()

    def manifest_for_push(self, image: Image, media_type: str | None = None) -> bytes:
        """The stored manifest's bytes when its blobs are the stored ones, else a new manifest of
        the stored layer blobs (`media_type`: OCI unless the stored one is docker's)."""
        stored = image.manifest
        blobs = [self.layer_row(layer)["blob_digest"] for layer in image.layers]
        same = [d.get("digest") for d in stored.get("layers", [])] == blobs and \
            stored.get("config", {}).get("digest") == "sha256:" + image.id
        if same and image.digest and self.has_blob(image.digest) and \
                (media_type is None or stored.get("mediaType") == media_type):
            return self.read_blob(image.digest)
        kind = media_type or (DOCKER_MANIFEST if stored.get("mediaType") == DOCKER_MANIFEST else OCI_MANIFEST)
        manifest = self.make_manifest(image.id, len(self.config_bytes(image)), image.layers, kind)
        return json.dumps(manifest, separators=(",", ":")).encode()

    def import_rootfs(self, source: str, name: str | None, changes: dict | None = None,
                      message: str = "") -> str:
        """A one-layer image from a root directory or a rootfs tar (`podman import`)."""
        clean_tmp(self.paths)
        if os.path.isdir(source):
            layer = self._import_directory(source)
        else:
            try:
                f = open(source, "rb")  # noqa: SIM115
            except OSError as err:
                raise ImageError(f"cannot read {source}: {err.strerror}") from None
            with f:
                layer = self.add_layer(f, None)
        diff_id = self.layer_diff_ids([layer])[0]
        created = now()
        history = {"created": created, "created_by": f"/bin/sh -c #(nop) ADD file:{diff_id[7:]} in /",
                   "comment": message or "imported from tarball"}
        config = {"created": created, "architecture": go_arch(), "os": "linux",
                  "config": dict(changes or {}),
                  "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "history": [history]}
        names = [Reference.parse(name, LOCAL_REGISTRY).name] if name else []
        return self.add_image(config, [layer], names)

    def _import_directory(self, source: str) -> str:
        """A layer of a root directory: tarred into a scratch file (not memory) and unpacked."""
        import tarfile

        tmp = scratch(self.paths, "import")
        try:
            with tarfile.open(tmp, mode="x", format=tarfile.PAX_FORMAT) as tar:
                for entry in sorted(os.listdir(source)):
                    tar.add(os.path.join(source, entry), arcname=entry)
            with open(tmp, "rb") as f:
                return self.add_layer(f, None)
        except OSError as err:
            raise disk_error(err, f"cannot import {source}") from None
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)

    # -- lookups --
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

    def exists(self, text: str) -> bool:
        try:
            self.resolve_id(text)
        except (NoSuchImage, AmbiguousId):
            return False
        return True

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

    # -- names --
    def tag(self, image: Image, target: str) -> str:
        """Add a name (`podman tag`: a name without a registry is localhost/NAME)."""
        name = Reference.parse(target, LOCAL_REGISTRY)
        if name.digest:
            raise ImageError(f"cannot tag with a digest: {target!r}")
        with self.store.transaction() as db:
            if db.one("SELECT 1 FROM images WHERE id = ?", (image.id,)) is None:
                raise NoSuchImage(image.id)
            self._set_name(db, name.name, image.id)
        return name.name

    def untag(self, image: Image, targets: list[str]) -> list[str]:
        """Remove names (all of them when `targets` is empty); return those removed."""
        if not targets:
            removed = list(image.names)
        else:
            removed = []
            for target in targets:
                name = self._full_name_of(image, target)
                if name is None:
                    raise ImageError(f"{target!r}: tag not known on image {image.id[:12]}")
                removed.append(name)
        with self.store.transaction() as db:
            for name in removed:
                db.execute("DELETE FROM image_names WHERE name = ? AND image_id = ?", (name, image.id))
        return removed

    def _full_name_of(self, image: Image, text: str) -> str | None:
        for registry in (LOCAL_REGISTRY, DEFAULT_REGISTRY):
            try:
                name = Reference.parse(text, registry).name
            except ImageError:
                return None
            if name in image.names:
                return name
        return None

    # -- removal --
    def users(self, image_id: str) -> list[tuple[str, str]]:
        """(id, name) of the containers made from the image."""
        return [(r["id"], r["name"]) for r in self.store.query(
            "SELECT id, name FROM containers WHERE image_id = ?", (image_id,))]

    def remove(self, image: Image, name: str | None = None) -> tuple[list[str], bool]:
        """`rmi`: given by one of several names, only that name goes (podman's untag); else the
        image and the layers no other image uses. Refuses while a container uses it (the caller
        removes those first for -f). Returns (names removed, whether the image was deleted)."""
        if name is not None and len(image.names) > 1:
            full = self._full_name_of(image, name)
            if full is not None:
                with self.store.transaction() as db:
                    db.execute("DELETE FROM image_names WHERE name = ?", (full,))
                return [full], False
        with self.store.transaction() as db:
            users = db.all("SELECT id, name FROM containers WHERE image_id = ?", (image.id,))
            if users:
                raise InvalidState(f"image {image.id[:12]} is in use by container(s) "
                                   f"{', '.join(u['name'] for u in users)}: remove them first or use --force")
            db.execute("DELETE FROM image_names WHERE image_id = ?", (image.id,))
            db.execute("DELETE FROM images WHERE id = ?", (image.id,))
            dead_layers, dead_blobs = self._unused(db)
        self._delete_files(dead_layers, dead_blobs)
        return image.names, True

    def _unused(self, db) -> tuple[list[str], list[str]]:
        """Layers no image uses and the blobs of no image or layer (deleted in `db`'s
        transaction; their files go after it commits)."""
        used_layers: set[str] = set()
        used_blobs: set[str] = set()
        for row in db.all("SELECT id, digest, layers FROM images"):
            used_layers.update(loads(row["layers"], f"image {row['id'][:12]}"))
            used_blobs.add(row["id"])
            if row["digest"]:
                used_blobs.add(row["digest"].partition(":")[2])
        dead_layers = []
        for row in db.all("SELECT id, blob_digest FROM layers"):
            if row["id"] in used_layers:
                if row["blob_digest"]:
                    used_blobs.add(row["blob_digest"].partition(":")[2])
            else:
                dead_layers.append(row["id"])
                db.execute("DELETE FROM layers WHERE id = ?", (row["id"],))
        try:
            blobs = os.listdir(self.paths.blobs)
        except FileNotFoundError:
            blobs = []
        dead_blobs = [b for b in blobs if b not in used_blobs]
        return dead_layers, dead_blobs

    def _delete_files(self, dead_layers: list[str], dead_blobs: list[str]) -> None:
        for layer_id in dead_layers:
            layer_files.remove_short_link(self.paths, layer_id)
            shutil.rmtree(self.paths.layer(layer_id), ignore_errors=True)
        for blob in dead_blobs:
            try:
                os.unlink(os.path.join(self.paths.blobs, blob))
            except OSError:
                pass

    def prune(self, all_images: bool = False) -> list[str]:
        """`image prune`: dangling images (no name), or with `all_images` every image no
        container uses; also layer directories and blobs that nothing records (a crash's)."""
        removed = []
        while True:  # removing a child may leave its parent dangling (not here: no parents yet)
            candidates = [image for image in self.list()
                          if (all_images or not image.names) and not self.users(image.id)]
            if not candidates:
                break
            for image in candidates:
                try:
                    self.remove(image)
                except (InvalidState, NoSuchImage):
                    continue
                removed.append(image.id)
            break
        with self.store.transaction() as db:
            dead_layers, dead_blobs = self._unused(db)
            known = {r["id"] for r in db.all("SELECT id FROM layers")}
        try:
            stray = [d for d in os.listdir(self.paths.layers) if d not in known and d != "l"]
        except FileNotFoundError:
            stray = []
        self._delete_files(dead_layers + stray, dead_blobs)
        clean_tmp(self.paths)
        return removed

    # -- inspection --
    def history(self, image: Image) -> list[dict]:
        """podman history's rows, newest first: id, created, created_by, size, comment."""
        entries = image.config.get("history") or []
        sizes = [self.layer_row(layer)["size"] for layer in image.layers]
        rows = []
        layer_index = 0
        for index, entry in enumerate(entries):
            empty = bool(entry.get("empty_layer"))
            size = 0
            if not empty and layer_index < len(sizes):
                size = sizes[layer_index]
                layer_index += 1
            rows.append({"id": image.id if index == len(entries) - 1 else "<missing>",
                         "created": entry.get("created", ""), "created_by": entry.get("created_by", ""),
                         "size": size, "comment": entry.get("comment", ""), "tags": []})
        if not rows:
            rows.append({"id": image.id, "created": image.config_created, "created_by": "", "size": image.size,
                         "comment": "", "tags": []})
        rows.reverse()
        rows[0]["tags"] = image.names
        return rows

    def inspect_data(self, image: Image) -> dict:
        """`podman image inspect`'s object."""
        return inspect_data(image, self)


def inspect_data(image: Image, images: ImageStore | None = None) -> dict:
    """podman image inspect's keys for `image` (the generic `inspect` calls this too)."""
    config = image.config
    process = image.process_defaults
    repos = sorted({n.rpartition(":")[0] for n in image.names})
    history = config.get("history") or []
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    graph = {"Name": "overlay", "Data": {}}
    if images is not None and image.layers:
        top = images.paths.layer(image.layers[-1])
        data = {"UpperDir": os.path.join(top, "diff"), "WorkDir": os.path.join(top, "work")}
        if len(image.layers) > 1:
            data["LowerDir"] = ":".join(images.layer_diff(layer) for layer in reversed(image.layers[:-1]))
        graph["Data"] = data
    return {
        "Id": image.id,
        "Digest": image.digest or "",
        "RepoTags": list(image.names),
        "RepoDigests": [f"{repo}@{image.digest}" for repo in repos] if image.digest else [],
        "Parent": "",
        "Comment": history[-1].get("comment", "") if history else "",
        "Created": config.get("created") or image.created,
        "Config": process,
        "Version": config.get("docker_version", ""),
        "Author": config.get("author", ""),
        "Architecture": config.get("architecture", ""),
        "Os": config.get("os", ""),
        **({"Variant": config["variant"]} if config.get("variant") else {}),
        "Size": image.size,
        "VirtualSize": image.size,
        "GraphDriver": graph,
        "RootFS": {"Type": config.get("rootfs", {}).get("type", "layers"), "Layers": diff_ids},
        "Labels": process.get("Labels"),
        "Annotations": image.manifest.get("annotations") or {},
        "ManifestType": image.manifest.get("mediaType") or OCI_MANIFEST,
        "User": process.get("User", ""),
        "History": history,
        "NamesHistory": image.extra.get("names_history", list(image.names)),
    }


class _Peekable:
    """A file object with peek(), for the compression sniffing of layers.unpack."""

    def __init__(self, raw):
        self.raw = raw
        self.head = b""

    def peek(self, n: int) -> bytes:
        if len(self.head) < n:
            self.head += self.raw.read(n - len(self.head))
        return self.head

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.raw.read(n)
        if n < 0:
            data, self.head = self.head + self.raw.read(), b""
            return data
        data, self.head = self.head[:n], self.head[n:]
        if len(data) < n:
            data += self.raw.read(n - len(data))
        return data


def go_arch() -> str:
    """This machine's architecture in Go's (and so OCI's) words."""
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "riscv64": "riscv64", "armv7l": "arm",
            "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x"}.get(machine, machine)
