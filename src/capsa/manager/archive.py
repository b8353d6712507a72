"""Image archives: `load` and `save` of docker-archive and OCI archive tars.

docker-archive (`docker save`, `podman save`'s default): manifest.json lists each image's config
file, its names (RepoTags) and its layer tars (uncompressed, maybe symlinks to one another, or
blobs/sha256/... in docker 25's archives). OCI archive (`podman save --format oci-archive`): the
OCI image layout in a tar: oci-layout, index.json naming manifests (the image's names in the
annotation org.opencontainers.image.ref.name), blobs/sha256/<hex>.

Loading checks every blob against its digest and every layer against the config's diff ids
(images.ImageStore.ingest); an archive that is neither kind, or is truncated, is an ImageError and
leaves nothing stored. Saving writes the blobs the store kept, so a saved image has the ids and
digests it had.
"""

from __future__ import annotations

import io
import json
import os
import tarfile

from capsa.manager.errors import ImageError
from capsa.manager.images import (
    DEFAULT_REGISTRY,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageStore,
    Reference,
    clean_tmp,
    disk_error,
    go_arch,
    scratch,
    sha256_digest,
)

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


# --- load ------------------------------------------------------------------------------------

def load(images: ImageStore, path: str, progress=None) -> list[tuple[str, list[str]]]:
    """Load every image of the archive at `path`; return [(image id, names)]."""
    clean_tmp(images.paths)
    try:
        tar = tarfile.open(path, mode="r:*")
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ImageError(f"{path} is not an image archive (not a tar: {err})") from None
    with tar:
        members = _members(tar, path)
        if "manifest.json" in members:
            return _load_docker(images, tar, members, progress)
        if "index.json" in members:
            return _load_oci(images, tar, members, progress)
    raise ImageError(f"{path} is not an image archive: it has neither manifest.json (docker-archive) nor "
                     f"index.json (OCI archive)")


def _members(tar: tarfile.TarFile, path: str) -> dict[str, tarfile.TarInfo]:
    try:
        return {os.path.normpath(m.name).lstrip("/"): m for m in tar.getmembers()}
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ImageError(f"{path} is not a valid image archive (truncated or corrupt: {err})") from None


class _ArchiveFile:
    """A member of the archive, opened when the layer is stored (`with opener() as f`)."""

    def __init__(self, tar: tarfile.TarFile, members: dict, name: str):
        self.tar, self.members, self.name = tar, members, name

    def __call__(self):
        return _read_member(self.tar, self.members, self.name)


def _read_member(tar: tarfile.TarFile, members: dict, name: str):
    name = os.path.normpath(name).lstrip("/")
    member = members.get(name)
    if member is None:
        raise ImageError(f"the archive has no {name} (it names it)")
    try:
        f = tar.extractfile(member)
    except (KeyError, tarfile.TarError) as err:
        raise ImageError(f"the archive's {name} cannot be read: {err}") from None
    if f is None:
        raise ImageError(f"the archive's {name} is not a file")
    return _Checked(f, name)


class _Checked:
    """An archive member whose short read (a truncated archive) is an ImageError."""

    def __init__(self, f, name: str):
        self.f, self.name = f, name

    def read(self, n: int = -1) -> bytes:
        try:
            return self.f.read(n)
        except (tarfile.TarError, EOFError, OSError) as err:
            if isinstance(err, OSError) and err.errno:
                raise
            raise ImageError(f"the archive's {self.name} is truncated or corrupt: {err}") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def _read_json(tar, members, name: str, limit: int = 16 << 20) -> tuple[bytes, object]:
    with _read_member(tar, members, name) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ImageError(f"the archive's {name} is too large for JSON ({limit} bytes at most)")
    try:
        return data, json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ImageError(f"the archive's {name} is not JSON: {err}") from None


def _load_docker(images: ImageStore, tar, members, progress) -> list[tuple[str, list[str]]]:
    _, manifest = _read_json(tar, members, "manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise ImageError("the archive's manifest.json is not a list of images")
    loaded = []
    for entry in manifest:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list):
            raise ImageError("an entry of the archive's manifest.json has no Config or Layers")
        config_bytes, _ = _read_json(tar, members, entry["Config"])
        names = [Reference.parse(tag, DEFAULT_REGISTRY).name for tag in entry.get("RepoTags") or []]
        layers = [(None, _size(members, name), _ArchiveFile(tar, members, name)) for name in entry["Layers"]]
        image_id = images.ingest(config_bytes, layers, names, progress=progress, manifest_type=DOCKER_MANIFEST)
        loaded.append((image_id, names))
    return loaded


def _size(members, name: str) -> int | None:
    member = members.get(os.path.normpath(name).lstrip("/"))
    return member.size if member is not None and member.isreg() else None


def _blob_name(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise ImageError(f"unsupported or invalid digest {digest!r} in the archive")
    return f"blobs/sha256/{hexdigest}"


def _read_blob_json(tar, members, descriptor: dict) -> tuple[bytes, dict]:
    digest = descriptor.get("digest", "")
    data, value = _read_json(tar, members, _blob_name(digest))
    if sha256_digest(data) != digest:
        raise ImageError(f"blob digest mismatch in the archive: {digest} holds {sha256_digest(data)}")
    if not isinstance(value, dict):
        raise ImageError(f"the archive's {digest} is not a JSON object")
    return data, value


def _load_oci(images: ImageStore, tar, members, progress) -> list[tuple[str, list[str]]]:
    _, index = _read_json(tar, members, "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list) or not index["manifests"]:
        raise ImageError("the archive's index.json names no manifest")
    loaded = []
    for descriptor in index["manifests"]:
        annotations = descriptor.get("annotations") or {}
        manifest_bytes, manifest = _read_blob_json(tar, members, descriptor)
        digest = descriptor["digest"]
        if descriptor.get("mediaType") in (OCI_INDEX, DOCKER_LIST) or "manifests" in manifest:
            chosen = choose_platform(manifest.get("manifests") or [])
            manifest_bytes, manifest = _read_blob_json(tar, members, chosen)
            digest = chosen["digest"]
        config_bytes, _ = _read_blob_json(tar, members, manifest.get("config") or {})
        layers = [(d.get("digest"), d.get("size"), _ArchiveFile(tar, members, _blob_name(d.get("digest", ""))))
                  for d in manifest.get("layers") or []]
        names = _oci_names(annotations)
        image_id = images.ingest(config_bytes, layers, names, manifest=manifest_bytes, digest=digest,
                                 progress=progress)
        loaded.append((image_id, names))
    return loaded


def _oci_names(annotations: dict) -> list[str]:
    """The image's name from the index annotations: podman writes the full name, other tools a
    tag only (no name can be made of that) or containerd's own annotation."""
    for key in (CONTAINERD_NAME, REF_NAME):
        value = annotations.get(key)
        if isinstance(value, str) and ("/" in value or ":" in value):
            try:
                return [Reference.parse(value, DEFAULT_REGISTRY).name]
            except ImageError:
                continue
    return []


def choose_platform(manifests: list[dict], os_name: str = "linux", arch: str | None = None,
                    variant: str | None = None) -> dict:
    """The descriptor of a manifest list (index) for this machine: os and architecture equal,
    the variant when one is asked for (arm's v7, ...); else an ImageError listing what there is."""
    arch = arch or go_arch()
    candidates = [m for m in manifests if isinstance(m, dict)
                  and (m.get("platform") or {}).get("os") == os_name
                  and (m.get("platform") or {}).get("architecture") == arch]
    if variant:
        exact = [m for m in candidates if m["platform"].get("variant") == variant]
        candidates = exact or candidates
    if not candidates:
        offered = ", ".join(sorted({f"{(m.get('platform') or {}).get('os')}/{(m.get('platform') or {}).get('architecture')}"
                                    for m in manifests if isinstance(m, dict)}))
        raise ImageError(f"no image for {os_name}/{arch} in the manifest list (it has: {offered or 'nothing'})")
    return candidates[0]


# --- save ------------------------------------------------------------------------------------

def save(images: ImageStore, image_refs: list[tuple[object, str | None]], output, fmt: str = "docker-archive",
         progress=None) -> None:
    """Write [(Image, name given or None)] to the binary file object `output`."""
    clean_tmp(images.paths)
    if fmt == "docker-archive":
        _save_docker(images, image_refs, output, progress)
    elif fmt == "oci-archive":
        if len(image_refs) != 1:
            raise ImageError("an OCI archive holds one image here (as podman's oci-archive): save one at a time")
        _save_oci(images, image_refs[0], output, progress)
    else:
        raise ImageError(f"unsupported --format {fmt!r}: docker-archive or oci-archive")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o444) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, f, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o444
    tar.addfile(info, f)


def _save_docker(images: ImageStore, image_refs, output, progress) -> None:
    from capsa.manager.progress import QUIET

    progress = progress or QUIET
    manifest, repositories, written = [], {}, set()
    with tarfile.open(fileobj=output, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for image, given in image_refs:
            layer_files = []
            diff_ids = images.layer_diff_ids(image.layers)
            for layer_id, diff_id in zip(image.layers, diff_ids, strict=True):
                name = f"{diff_id[7:]}.tar"
                layer_files.append(name)
                if name in written:
                    continue
                written.add(name)
                bar = progress.blob(diff_id, None)
                _add_uncompressed_layer(images, tar, name, layer_id)
                bar.done()
            config_name = f"{image.id}.json"
            if config_name not in written:
                written.add(config_name)
                _add_bytes(tar, config_name, images.config_bytes(image))
            tags = _tags_for(image, given)
            manifest.append({"Config": config_name, "RepoTags": tags, "Layers": layer_files})
            for tag in tags:
                repo, _, version = tag.rpartition(":")
                repositories.setdefault(repo, {})[version] = diff_ids[-1][7:] if diff_ids else image.id
        _add_bytes(tar, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
        _add_bytes(tar, "repositories", json.dumps(repositories, separators=(",", ":")).encode())
    progress.say("Writing manifest to image destination")


def _tags_for(image, given: str | None) -> list[str]:
    """The names a saved image carries: the one it was asked by if that is a name, else all."""
    if given:
        for name in image.names:
            if given in (name, name.partition("/")[2]) or Reference.parse(given, "localhost").name == name:
                return [name]
            try:
                if Reference.parse(given).name == name:
                    return [name]
            except ImageError:
                pass
    return list(image.names)


def _add_uncompressed_layer(images: ImageStore, tar: tarfile.TarFile, name: str, layer_id: str) -> None:
    """docker-archive layers are plain tars: a gzip blob is decompressed into tmp first (a tar
    member's size comes before its data)."""
    f, _, size, gzipped = images.open_layer_blob(layer_id)
    with f:
        if not gzipped:
            _add_file(tar, name, f, size)
            return
        import gzip
        import shutil

        tmp = scratch(images.paths, "save")
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as source, open(tmp, "xb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            with open(tmp, "rb") as plain:
                _add_file(tar, name, plain, os.fstat(plain.fileno()).st_size)
        except OSError as err:
            raise disk_error(err, f"cannot save layer {layer_id[:12]}") from None
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)


def _save_oci(images: ImageStore, image_ref, output, progress) -> None:
    from capsa.manager.progress import QUIET

    progress = progress or QUIET
    image, given = image_ref
    manifest_bytes = images.manifest_for_push(image, OCI_MANIFEST)
    config_bytes = images.config_bytes(image)
    with tarfile.open(fileobj=output, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_dir(tar, "blobs")
        _add_dir(tar, "blobs/sha256")
        for layer_id in image.layers:
            f, digest, size, _ = images.open_layer_blob(layer_id)
            bar = progress.blob(digest, size)
            with f:
                _add_file(tar, _blob_name(digest), f, size)
            bar.done()
        _add_bytes(tar, _blob_name(sha256_digest(config_bytes)), config_bytes, 0o644)
        _add_bytes(tar, _blob_name(sha256_digest(manifest_bytes)), manifest_bytes, 0o644)
        descriptor = {"mediaType": OCI_MANIFEST, "digest": sha256_digest(manifest_bytes), "size": len(manifest_bytes)}
        tags = _tags_for(image, given)
        if tags:
            descriptor["annotations"] = {REF_NAME: tags[0]}
        index = {"schemaVersion": 2, "manifests": [descriptor]}
        _add_bytes(tar, "index.json", json.dumps(index, separators=(",", ":")).encode(), 0o644)
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}', 0o644)
    progress.say("Writing manifest to image destination")


__all__ = ["choose_platform", "load", "save"]
