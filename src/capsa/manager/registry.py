"""Pull and push over the OCI distribution API (a registry's /v2/ endpoints).

Only the standard library (http.client, ssl, json, hashlib): the protocol is a handful of
requests (GET/HEAD manifests and blobs, POST/PATCH/PUT blob uploads, PUT manifests, a token
request), so a dependency (requests, httpx) would add start-up time and install weight to every
capsactl call for little; http.client also streams responses, which a layer needs (it is hashed
and unpacked while it arrives, never held in memory).

    pull   manifest (an index or manifest list: the entry of this machine's platform; docker
           v2 schema 2 and OCI manifests), config (its digest checked: it is the image id),
           layers: each blob's sha256 computed while it streams into the unpacker and compared
           with the manifest's digest at its end, the unpacked tar's with the config's diff id;
           a mismatch removes everything that pull stored (images.ImageStore.ingest).
    push   each blob the registry does not have (HEAD), monolithic (POST then PUT) or chunked
           (POST, PATCHes, PUT) above `CHUNK_SIZE`; then the manifest.
    auth   on a 401: `Basic` sends --creds; `Bearer realm=,service=,scope=` gets a token from the
           realm (with --creds as basic auth if given) and retries, as docker's token protocol.
    TLS    HTTPS, verified against the system's CAs plus --cert-dir/*.crt and
           /etc/containers/certs.d/<registry>/*.crt (podman's place); --tls-verify=false skips
           verification and falls back to plain HTTP when the registry does not speak TLS.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import urllib.parse

from capsa.manager.errors import ImageError, NoSuchImage
from capsa.manager.images import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    ImageStore,
    Reference,
    clean_tmp,
    sha256_digest,
)

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST)
SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
           "application/vnd.docker.distribution.manifest.v1+prettyjws")
MAX_MANIFEST = 4 << 20
MAX_CONFIG = 16 << 20
CHUNK_SIZE = 16 << 20  # blobs larger than this are uploaded in chunks of this size
CERTS_D = "/etc/containers/certs.d"
USER_AGENT = "capsactl"


class RegistryError(ImageError):
    """A registry that cannot be reached, refuses, or answers something that is not the API."""


class Response:
    """A response's status, headers and body stream (closing its connection when done)."""

    def __init__(self, connection, response):
        self.connection = connection
        self.raw = response
        self.status = response.status
        self.headers = response.headers

    def read(self, n: int = -1) -> bytes:
        import http.client

        try:
            return self.raw.read(n) if n >= 0 else self.raw.read()
        except (OSError, http.client.HTTPException) as err:  # the connection cut in the middle of a body
            raise RegistryError(f"the registry's answer was cut short: {err!r}") from None

    def read_limited(self, limit: int, what: str) -> bytes:
        data = self.read(limit + 1)
        if len(data) > limit:
            self.close()
            raise RegistryError(f"the registry's {what} is larger than {limit} bytes")
        return data

    def close(self) -> None:
        self.connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Client:
    """One registry: its scheme (https, or http when allowed and needed), its credentials and
    the bearer tokens got for it."""

    def __init__(self, registry: str, tls_verify: bool = True, creds: tuple[str, str] | None = None,
                 cert_dir: str | None = None, timeout: float = 60.0):
        self.registry = "registry-1.docker.io" if registry == "docker.io" else registry
        self.name = registry
        self.tls_verify = tls_verify
        self.creds = creds
        self.cert_dir = cert_dir
        self.timeout = timeout
        self.scheme: str | None = None
        self.authorization: str | None = None

    # -- connection --
    def _ssl_context(self) -> ssl.SSLContext:
        if not self.tls_verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        context = ssl.create_default_context()
        for directory in (self.cert_dir, os.path.join(CERTS_D, self.name)):
            if directory and os.path.isdir(directory):
                for entry in sorted(os.listdir(directory)):
                    if entry.endswith(".crt"):
                        try:
                            context.load_verify_locations(os.path.join(directory, entry))
                        except (ssl.SSLError, OSError) as err:
                            raise RegistryError(f"cannot load the CA certificate {entry} of {directory}: {err}") \
                                from None
        return context

    def _connect(self, scheme: str, host: str):
        import http.client

        if scheme == "https":
            return http.client.HTTPSConnection(host, timeout=self.timeout, context=self._ssl_context())
        return http.client.HTTPConnection(host, timeout=self.timeout)

    def _send(self, scheme: str, host: str, method: str, target: str, headers: dict, body=None) -> Response:
        connection = self._connect(scheme, host)
        try:
            connection.request(method, target, body=body, headers=headers)
            return Response(connection, connection.getresponse())
        except BaseException:
            connection.close()
            raise

    def _base(self) -> str:
        """https, or (with tls_verify false) http when the registry does not answer TLS."""
        if self.scheme is not None:
            return self.scheme
        try:
            with self._send("https", self.registry, "GET", "/v2/", self._headers({})) as response:
                response.read()
            self.scheme = "https"
        except ssl.SSLError as err:
            if self.tls_verify:
                raise RegistryError(f"cannot talk TLS to the registry {self.name}: {err.reason or err} "
                                    f"(--tls-verify=false allows an unverified certificate or plain HTTP)") from None
            self.scheme = "http"
        except (ConnectionResetError, ConnectionAbortedError):
            if self.tls_verify:
                raise RegistryError(f"the registry {self.name} closed the TLS connection (plain HTTP? "
                                    f"--tls-verify=false allows it)") from None
            self.scheme = "http"
        except OSError as err:
            raise RegistryError(f"cannot reach the registry {self.name}: {err.strerror or err}") from None
        except Exception as err:  # http.client.BadStatusLine ...: not HTTP at all
            raise RegistryError(f"the registry {self.name} does not answer HTTP: {err!r}") from None
        return self.scheme

    def _headers(self, extra: dict) -> dict:
        headers = {"User-Agent": USER_AGENT, **extra}
        if self.authorization:
            headers["Authorization"] = self.authorization
        return headers

    def request(self, method: str, path: str, headers: dict | None = None, body=None, scope: str | None = None,
                expect: tuple[int, ...] = (200,), what: str = "") -> Response:
        """A request to the registry, authenticating on a 401 and following redirects; a
        status not in `expect` is a RegistryError with the registry's own message."""
        scheme = self._base()
        host, target = self.registry, path
        retried = False
        for _ in range(6):
            try:
                response = self._send(scheme, host, method, target, self._headers(headers or {})
                                      if host == self.registry else {"User-Agent": USER_AGENT, **(headers or {})},
                                      body)
            except OSError as err:
                raise RegistryError(f"cannot reach the registry {self.name}: {err.strerror or err}") from None
            except Exception as err:
                raise RegistryError(f"the registry {self.name} does not answer HTTP: {err!r}") from None
            if response.status == 401 and not retried and host == self.registry:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.read()
                response.close()
                self._authenticate(challenge, scope)
                retried = True
                if hasattr(body, "seek"):
                    body.seek(0)
                continue
            if response.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                location = response.headers.get("Location", "")
                response.close()
                parsed = urllib.parse.urlsplit(urllib.parse.urljoin(f"{scheme}://{host}{target}", location))
                scheme, host = parsed.scheme, parsed.netloc
                target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
                continue
            if response.status not in expect:
                raise self._error(response, method, path, what)
            return response
        raise RegistryError(f"too many redirects or authentication rounds for {method} {path}")

    def _error(self, response: Response, method: str, path: str, what: str) -> RegistryError:
        try:
            body = response.read(64 << 10)
        except RegistryError:
            body = b""
        response.close()
        message = ""
        try:
            errors = json.loads(body).get("errors") or []
            message = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors if isinstance(e, dict))
        except (ValueError, AttributeError, UnicodeDecodeError):
            pass
        subject = what or f"{method} {path}"
        if response.status == 401:
            return RegistryError(f"{subject}: the registry {self.name} refuses the credentials "
                                 f"({'give --creds user:password or capsactl login' if not self.creds else 'wrong credentials'})"
                                 + (f": {message}" if message else ""))
        if response.status == 404:
            return RegistryError(f"{subject}: not found in the registry {self.name}" + (f" ({message})" if message else ""))
        return RegistryError(f"{subject}: the registry {self.name} answered {response.status} {response.raw.reason}"
                             + (f": {message}" if message else ""))

    # -- authentication --
    def _authenticate(self, challenge: str, scope: str | None) -> None:
        kind, _, params_text = challenge.partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', params_text))
        if kind.lower() == "basic":
            if not self.creds:
                raise RegistryError(f"the registry {self.name} wants a user and password: give --creds user:password "
                                    "or capsactl login")
            self.authorization = "Basic " + _basic(self.creds)
        elif kind.lower() == "bearer":
            self.authorization = "Bearer " + self._token(params, scope)
        else:
            raise RegistryError(f"the registry {self.name} asks for authentication of an unknown kind: {challenge!r}")

    def _token(self, params: dict, scope: str | None) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"the registry {self.name}'s bearer challenge names no realm")
        query = [("service", params["service"])] if params.get("service") else []
        for s in dict.fromkeys(filter(None, [params.get("scope"), scope])):
            query.append(("scope", s))
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https"):
            raise RegistryError(f"the registry {self.name}'s token realm {realm!r} is not an http(s) URL")
        headers = {"User-Agent": USER_AGENT}
        if self.creds:
            headers["Authorization"] = "Basic " + _basic(self.creds)
        try:
            response = self._send(parsed.scheme, parsed.netloc, "GET",
                                  parsed.path + (f"?{parsed.query}" if parsed.query else ""), headers)
        except OSError as err:
            raise RegistryError(f"cannot reach the token server {parsed.netloc} of {self.name}: "
                                f"{err.strerror or err}") from None
        with response:
            body = response.read_limited(1 << 20, "token answer")
        if response.status in (401, 403):
            raise RegistryError(f"the token server of {self.name} refuses the credentials "
                                f"({'give --creds user:password or capsactl login' if not self.creds else 'wrong credentials'})")
        if response.status != 200:
            raise RegistryError(f"the token server of {self.name} answered {response.status}")
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError, UnicodeDecodeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"the token server of {self.name} answered no token")
        return token

    # -- reading --
    def manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """(the manifest's bytes, its media type); a digest reference is checked."""
        response = self.request("GET", f"/v2/{repository}/manifests/{reference}",
                                {"Accept": ", ".join(MANIFEST_TYPES + SCHEMA1)}, scope=f"repository:{repository}:pull",
                                what=f"manifest {repository}:{reference}")
        with response:
            data = response.read_limited(MAX_MANIFEST, "manifest")
        if reference.startswith("sha256:") and sha256_digest(data) != reference:
            raise ImageError(f"manifest digest mismatch: asked for {reference}, got {sha256_digest(data)}")
        try:
            manifest = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"the registry {self.name} answered a manifest that is not JSON") from None
        if not isinstance(manifest, dict):
            raise RegistryError(f"the registry {self.name} answered a manifest that is not a JSON object")
        media_type = manifest.get("mediaType") or response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type in SCHEMA1 or manifest.get("schemaVersion") == 1:
            raise ImageError(f"{repository}:{reference} has a docker schema 1 manifest, which is not supported")
        if media_type not in MANIFEST_TYPES:
            media_type = OCI_INDEX if "manifests" in manifest else OCI_MANIFEST
        return data, media_type

    def blob(self, repository: str, digest: str) -> Response:
        return self.request("GET", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull",
                            what=f"blob {digest}")

    def blob_bytes(self, repository: str, digest: str, limit: int) -> bytes:
        with self.blob(repository, digest) as response:
            data = response.read_limited(limit, f"blob {digest}")
        if sha256_digest(data) != digest:
            raise ImageError(f"blob digest mismatch: {digest} from the registry is {sha256_digest(data)}")
        return data

    # -- writing --
    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull,push",
                                expect=(200, 404), what=f"blob {digest}")
        response.close()
        return response.status == 200

    def upload(self, repository: str, digest: str, source, size: int, bar=None, chunk_size: int = CHUNK_SIZE) -> None:
        """Upload a blob read from the file object `source`: one PUT, or PATCHes of `chunk_size`."""
        scope = f"repository:{repository}:pull,push"
        response = self.request("POST", f"/v2/{repository}/blobs/uploads/", {"Content-Length": "0"}, scope=scope,
                                expect=(202,), what=f"upload of {digest}")
        location = self._location(response)
        response.close()
        offset = 0
        if size > chunk_size:
            while offset < size:
                data = source.read(min(chunk_size, size - offset))
                if not data:
                    raise ImageError(f"blob {digest} ended at {offset} bytes of {size}")
                response = self.request("PATCH", location, {
                    "Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
                    "Content-Range": f"{offset}-{offset + len(data) - 1}"}, body=data, scope=scope,
                    expect=(202,), what=f"upload of {digest}")
                location = self._location(response)
                response.close()
                offset += len(data)
                if bar is not None:
                    bar.update(len(data))
            body, length = b"", 0
        else:
            body, length = _Reading(source, bar), size
        separator = "&" if "?" in location else "?"
        response = self.request("PUT", f"{location}{separator}digest={urllib.parse.quote(digest)}", {
            "Content-Type": "application/octet-stream", "Content-Length": str(length)}, body=body, scope=scope,
            expect=(201,), what=f"upload of {digest}")
        response.close()

    def _location(self, response: Response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"the registry {self.name} started an upload without a Location")
        parsed = urllib.parse.urlsplit(location)
        if parsed.netloc and parsed.netloc != self.registry:
            raise RegistryError(f"the registry {self.name} sends uploads to another host ({parsed.netloc})")
        return parsed.path + (f"?{parsed.query}" if parsed.query else "")

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        response = self.request("PUT", f"/v2/{repository}/manifests/{reference}",
                                {"Content-Type": media_type, "Content-Length": str(len(data))}, body=data,
                                scope=f"repository:{repository}:pull,push", expect=(201,),
                                what=f"manifest {repository}:{reference}")
        response.close()
        return response.headers.get("Docker-Content-Digest") or sha256_digest(data)


class _Reading:
    """A request body read from a file, reporting to a progress bar (http.client reads it)."""

    def __init__(self, source, bar):
        self.source, self.bar = source, bar

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        if self.bar is not None and data:
            self.bar.update(len(data))
        return data


class _Limited:
    """A blob stream that may not exceed its descriptor's size (a registry sending forever)."""

    def __init__(self, response: Response, size: int | None, digest: str):
        self.response, self.size, self.digest, self.count = response, size, digest, 0

    def read(self, n: int = -1) -> bytes:
        data = self.response.read(n)
        self.count += len(data)
        if self.size is not None and self.count > self.size:
            raise ImageError(f"blob {self.digest} is longer than the {self.size} bytes its manifest says")
        if not data and self.size is not None and self.count < self.size:
            raise ImageError(f"blob {self.digest} ended at {self.count} of its {self.size} bytes (truncated)")
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.response.close()


def _basic(creds: tuple[str, str]) -> str:
    import base64

    return base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()


# --- pull ------------------------------------------------------------------------------------

def pull(images: ImageStore, text: str, progress=None, tls_verify: bool = True, creds: tuple[str, str] | None = None,
         cert_dir: str | None = None, platform: tuple[str, str | None, str | None] | None = None,
         authfile: str | None = None) -> str:
    """Pull `text` (a reference) into the store; return the image id. Without `creds`, those
    `capsactl login` stored (manager.auth, in `authfile` or the default files) are used."""
    from capsa.manager.archive import choose_platform
    from capsa.manager.progress import QUIET

    progress = progress or QUIET
    clean_tmp(images.paths)
    reference = Reference.parse(text)
    client = Client(reference.registry, tls_verify, creds or stored_creds(reference, authfile), cert_dir)
    repository = reference.repository
    progress.say(f"Trying to pull {reference}...")
    data, media_type = client.manifest(repository, reference.digest or reference.tag or "latest")
    extra = {}
    if media_type in (OCI_INDEX, DOCKER_LIST):
        os_name, arch, variant = platform or ("linux", None, None)
        chosen = choose_platform(_json(data).get("manifests") or [], os_name, arch, variant)
        extra["list_digest"] = sha256_digest(data)
        digest = chosen.get("digest", "")
        data, media_type = client.manifest(repository, digest)
        if media_type in (OCI_INDEX, DOCKER_LIST):
            raise ImageError(f"{text}: a manifest list inside a manifest list is not supported")
    digest = sha256_digest(data)
    manifest = _json(data)
    config_descriptor = manifest.get("config") or {}
    layers = manifest.get("layers")
    if not isinstance(config_descriptor.get("digest"), str) or not isinstance(layers, list):
        raise RegistryError(f"{text}: the manifest has no config or layers")
    progress.say("Getting image source signatures")
    config_bytes = client.blob_bytes(repository, config_descriptor["digest"], MAX_CONFIG)
    sources = []
    for descriptor in layers:
        layer_digest, size, kind = descriptor.get("digest"), descriptor.get("size"), descriptor.get("mediaType", "")
        if not isinstance(layer_digest, str) or not layer_digest.startswith("sha256:"):
            raise RegistryError(f"{text}: a layer of the manifest has no sha256 digest")
        if "zstd" in kind:
            raise ImageError(f"{text}: layer {layer_digest} is zstd-compressed, which is not supported")
        sources.append((layer_digest, size if isinstance(size, int) else None,
                        _BlobOpener(client, repository, layer_digest, size if isinstance(size, int) else None)))
    names = [reference.name] if reference.tag and not reference.digest else []
    return images.ingest(config_bytes, sources, names, manifest=data, digest=digest, progress=progress,
                         extra=extra)


def stored_creds(reference: Reference, authfile: str | None) -> tuple[str, str] | None:
    from capsa.manager import auth

    return auth.lookup(reference.registry, reference.repository, authfile)


def check_login(registry: str, creds: tuple[str, str], tls_verify: bool = True, cert_dir: str | None = None) -> None:
    """Raise RegistryError unless the registry accepts `creds` (`GET /v2/`, authenticating as
    its challenge asks, as podman login checks them)."""
    client = Client(registry, tls_verify, creds, cert_dir)
    with client.request("GET", "/v2/", what=f"log in to {registry}") as response:
        response.read()


class _BlobOpener:
    def __init__(self, client: Client, repository: str, digest: str, size: int | None):
        self.client, self.repository, self.digest, self.size = client, repository, digest, size

    def __call__(self) -> _Limited:
        return _Limited(self.client.blob(self.repository, self.digest), self.size, self.digest)


def _json(data: bytes) -> dict:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError("the registry answered a manifest that is not JSON") from None
    if not isinstance(value, dict):
        raise RegistryError("the registry answered a manifest that is not a JSON object")
    return value


def pull_if_missing(ctx_or_store, reference: str, progress=None, **options) -> Image:
    """The image `reference` names, pulled first if it is not in the store (podman's
    --pull=missing, for run and create). `ctx_or_store`: a capsa.ctl Context, a Store or an
    ImageStore; `options`: tls_verify, creds, cert_dir, platform, as `pull` takes."""
    from capsa.manager.store import Store

    if isinstance(ctx_or_store, ImageStore):
        images = ctx_or_store
    elif isinstance(ctx_or_store, Store):
        images = ImageStore(ctx_or_store)
    else:
        images = ImageStore(ctx_or_store.store)
    try:
        return images.resolve(reference)
    except NoSuchImage:
        pass
    image_id = pull(images, reference, progress=progress, **options)
    return images.get(image_id)


# --- push ------------------------------------------------------------------------------------

def push(images: ImageStore, image, destination: str, progress=None, tls_verify: bool = True,
         creds: tuple[str, str] | None = None, cert_dir: str | None = None, media_type: str | None = None,
         chunk_size: int = CHUNK_SIZE, authfile: str | None = None) -> str:
    """Push `image` (images.Image) to `destination` (registry/repository[:tag]); return the
    manifest's digest."""
    import io

    from capsa.manager.progress import QUIET

    progress = progress or QUIET
    reference = Reference.parse(destination)
    if reference.digest:
        raise ImageError(f"cannot push to a digest reference {destination!r}: give a tag")
    client = Client(reference.registry, tls_verify, creds or stored_creds(reference, authfile), cert_dir)
    repository = reference.repository
    manifest_bytes = images.manifest_for_push(image, media_type)
    manifest = json.loads(manifest_bytes)
    progress.say("Getting image source signatures")
    for layer_id, descriptor in zip(image.layers, manifest["layers"], strict=True):
        f, digest, size, _ = images.open_layer_blob(layer_id)
        with f:
            if digest != descriptor["digest"]:
                raise ImageError(f"layer {layer_id[:12]}'s stored blob is not the one its manifest names")
            if client.has_blob(repository, digest):
                progress.skipped(digest)
                continue
            bar = progress.blob(digest, size)
            client.upload(repository, digest, f, size, bar, chunk_size)
            bar.done()
    config_bytes = images.config_bytes(image)
    config_digest = sha256_digest(config_bytes)
    if not client.has_blob(repository, config_digest):
        client.upload(repository, config_digest, io.BytesIO(config_bytes), len(config_bytes), None, chunk_size)
    progress.say(f"Copying config {config_digest} done")
    progress.say("Writing manifest to image destination")
    kind = manifest.get("mediaType") or OCI_MANIFEST
    digest = client.put_manifest(repository, reference.tag or "latest", manifest_bytes, kind)
    if digest != sha256_digest(manifest_bytes):
        raise ImageError(f"the registry stored the manifest as {digest}, not {sha256_digest(manifest_bytes)}")
    return digest


__all__ = ["Client", "RegistryError", "pull", "pull_if_missing", "push"]
