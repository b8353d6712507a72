"""capsactl pull and push against a real registry: Debian's docker-registry (the CNCF
distribution registry) started on 127.0.0.1 with a config of the test's own (plain HTTP, HTTPS
with a self-signed certificate, htpasswd basic auth, bearer tokens from a token server of the
test's own); images put there by podman and by capsactl."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import pytest

CAPSACTL = os.path.join(os.path.dirname(sys.executable), "capsactl")
REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"

if not os.access(REGISTRY, os.X_OK):
    pytest.skip("docker-registry is not installed (apt-get install docker-registry)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """A docker-registry process; `host` is 127.0.0.1:PORT, `data` its storage directory."""

    def __init__(self, base, tls: bool = False, htpasswd: tuple[str, str] | None = None, token: dict | None = None):
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.data = str(base / "data")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.cert = None
        config = ["version: 0.1", "log:", "  level: error", "storage:", "  filesystem:",
                  f"    rootdirectory: {self.data}", "  delete:", "    enabled: true",
                  "http:", f"  addr: {self.host}", "  secret: capsa-test"]
        if tls:
            self.cert, key = str(base / "cert.crt"), str(base / "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                            "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key,
                            "-out", self.cert], check=True, capture_output=True)
            config += ["  tls:", f"    certificate: {self.cert}", f"    key: {key}"]
        if htpasswd:
            import warnings

            with warnings.catch_warnings():  # bcrypt, which the registry's htpasswd wants: Python 3.11's crypt
                warnings.simplefilter("ignore", DeprecationWarning)
                import crypt

                hashed = crypt.crypt(htpasswd[1], crypt.mksalt(crypt.METHOD_BLOWFISH))
            path = base / "htpasswd"
            path.write_text(f"{htpasswd[0]}:{hashed}\n")
            config += ["auth:", "  htpasswd:", "    realm: capsa-test", f"    path: {path}"]
        if token:
            config += ["auth:", "  token:", f"    realm: {token['realm']}", "    service: capsa-registry",
                       "    issuer: capsa-test-issuer", f"    rootcertbundle: {token['cert']}"]
        (base / "config.yml").write_text("\n".join(config) + "\n")
        self.log = open(base / "registry.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen([REGISTRY, "serve", str(base / "config.yml")], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"docker-registry exited: {(self.base / 'registry.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("docker-registry did not start listening")

    def blob_path(self, digest: str) -> str:
        hexdigest = digest.partition(":")[2]
        return os.path.join(self.data, "docker", "registry", "v2", "blobs", "sha256", hexdigest[:2], hexdigest, "data")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def registries(tmp_path):
    started: list[Registry] = []

    def start(name: str = "registry", **options) -> Registry:
        registry = Registry(tmp_path / name, **options)
        started.append(registry)
        return registry

    yield start
    for registry in started:
        registry.stop()


class Ctl:
    def __init__(self, base):
        self.root = str(base / "graph")
        self.runroot = str(base / "run")

    def __call__(self, *args: str, check: bool = True, timeout: int = 180,
                 input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([CAPSACTL, "--root", self.root, "--runroot", self.runroot, *args],
                                capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"capsactl {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def store(self):
        from capsa.manager.images import ImageStore
        from capsa.manager.paths import Paths
        from capsa.manager.store import Store

        return ImageStore(Store(Paths.default(self.root, self.runroot)))

    def assert_empty_store(self) -> None:
        import contextlib
        import sqlite3

        with contextlib.closing(sqlite3.connect(os.path.join(self.root, "db.sqlite"))) as db:
            assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
            assert db.execute("SELECT COUNT(*) FROM layers").fetchone()[0] == 0
        for parts in (("layers",), ("layers", "l"), ("blobs", "sha256"), ("tmp",)):
            path = os.path.join(self.root, *parts)
            assert not os.path.isdir(path) or os.listdir(path) in ([], ["l"]), parts


@pytest.fixture
def capsactl(tmp_path):
    yield Ctl(tmp_path / "capsactl")


@pytest.fixture
def podman(tmp_path):
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    base = tmp_path / "podman"
    runroot = tempfile.mkdtemp(prefix="cpr-", dir="/tmp")  # podman wants a short run root
    command = ["podman", "--root", str(base / "root"), "--runroot", runroot, "--storage-driver", "vfs"]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=180)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    yield run
    subprocess.run([*command, "system", "reset", "--force"], capture_output=True, timeout=120)
    shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture
def rootfs_tar(tmp_path, rootfs_template):
    path = str(tmp_path / "rootfs.tar")
    subprocess.run(["tar", "-C", rootfs_template, "-cf", path, "."], check=True)
    return path


def check_rootfs(ctl: Ctl, image_id: str) -> None:
    """The pulled image as a container's rootfs: mounted by capsa.manager.storage, busybox in it runs."""
    from capsa.manager.storage import RootfsStorage

    images = ctl.store()
    storage = RootfsStorage(images.paths, images)
    container = "f" * 64
    storage.create(container)
    try:
        merged = storage.mount(container, images.get(image_id).layers)
        out = subprocess.run(["chroot", merged, "/bin/busybox", "echo", "pulled and running"], capture_output=True,
                             text=True, check=True)
        assert out.stdout == "pulled and running\n"
    finally:
        storage.remove(container)
    assert not os.path.exists(images.paths.container(container))


def test_pull_run_push_over_http(registries, capsactl, podman, rootfs_tar, tmp_path):
    registry = registries()
    podman("import", "-c", 'CMD ["sh"]', rootfs_tar, "localhost/bb:1")
    podman_id = podman("image", "inspect", "--format", "{{.Id}}", "localhost/bb:1").stdout.strip()
    podman("push", "--tls-verify=false", "localhost/bb:1", f"{registry.host}/test/bb:1")

    # Plain HTTP needs --tls-verify=false, as with podman.
    refused = capsactl("pull", f"{registry.host}/test/bb:1", check=False)
    assert refused.returncode == 125 and "--tls-verify=false" in refused.stderr
    out = capsactl("pull", "--tls-verify=false", f"{registry.host}/test/bb:1")
    assert out.stdout == f"{podman_id}\n"
    assert f"Trying to pull {registry.host}/test/bb:1" in out.stderr
    assert "Copying blob sha256:" in out.stderr  # plain lines when stderr is not a terminal
    check_rootfs(capsactl, podman_id)
    inspect = json.loads(capsactl("image", "inspect", podman_id).stdout)[0]
    assert inspect["RepoTags"] == [f"{registry.host}/test/bb:1"]
    assert inspect["RepoDigests"] == [f"{registry.host}/test/bb@{inspect['Digest']}"]

    # Pushed back under another name (the blobs as pulled: the same manifest digest) ...
    capsactl("push", "--tls-verify=false", podman_id, f"{registry.host}/again/bb:2")
    # ... and an image made here (an uncompressed layer), pulled back by digest into a fresh store.
    own_id = capsactl("import", "-q", "-c", "CMD [\"true\"]", rootfs_tar, "own").stdout.strip()
    digest_file = str(tmp_path / "digest")
    capsactl("push", "--tls-verify=false", "--digestfile", digest_file, "own", f"{registry.host}/own/img:v1")
    digest = open(digest_file).read()
    podman("rmi", "localhost/bb:1")
    assert podman("pull", "--tls-verify=false", f"{registry.host}/again/bb:2").stdout.strip() == podman_id
    assert podman("pull", "--tls-verify=false", f"{registry.host}/own/img:v1").stdout.strip() == own_id

    fresh = Ctl(tmp_path / "fresh")
    assert fresh("pull", "--tls-verify=false", f"{registry.host}/own/img@{digest}").stdout == f"{own_id}\n"
    assert fresh("images", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}").stdout == f"<none> <none> {digest}\n"
    check_rootfs(fresh, own_id)
    # Pulling what is there reads no layer again.
    again = fresh("pull", "--tls-verify=false", f"{registry.host}/own/img:v1")
    assert "skipped: already exists" in again.stderr


def test_push_in_chunks(registries, capsactl, rootfs_tar, tmp_path):
    from capsa.manager import registry as registry_module

    registry = registries()
    image_id = capsactl("import", "-q", rootfs_tar, "chunky").stdout.strip()
    images = capsactl.store()
    # 100 kB chunks: the 2 MB layer goes up in PATCHes with Content-Range, then one PUT.
    registry_module.push(images, images.get(image_id), f"{registry.host}/chunked/img:1", tls_verify=False,
                         chunk_size=100_000)
    images.store.close()
    fresh = Ctl(tmp_path / "fresh")
    assert fresh("pull", "--tls-verify=false", f"{registry.host}/chunked/img:1").stdout == f"{image_id}\n"


def _image_archive(config: dict, layer: bytes, name: str) -> bytes:
    """A docker-archive of one image (`config` gets the layer's diff id)."""
    import hashlib

    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {**config, "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for member, data in ((config_name, config_bytes), ("layer.tar", layer),
                             ("manifest.json", json.dumps([{"Config": config_name, "RepoTags": [name],
                                                            "Layers": ["layer.tar"]}]).encode())):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _layer(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_manifest_list_chooses_this_platform(registries, capsactl, tmp_path):
    from capsa.manager import registry as registry_module
    from capsa.manager.images import OCI_INDEX, go_arch

    registry = registries()
    digests = {}
    for arch in (go_arch(), "s390x"):
        archive = tmp_path / f"{arch}.tar"
        archive.write_bytes(_image_archive({"architecture": arch, "os": "linux", "config": {}},
                                           _layer({"arch": arch.encode()}), f"localhost/multi:{arch}"))
        capsactl("load", "-q", "-i", str(archive))
        capsactl("push", "--tls-verify=false", f"localhost/multi:{arch}", f"{registry.host}/multi/img:{arch}")
        manifest = registry_module.Client(registry.host, tls_verify=False).manifest("multi/img", arch)[0]
        digests[arch] = ("sha256:" + __import__("hashlib").sha256(manifest).hexdigest(), len(manifest))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digests[arch][0],
         "size": digests[arch][1], "platform": {"os": "linux", "architecture": arch}}
        for arch in ("s390x", go_arch())]}
    registry_module.Client(registry.host, tls_verify=False).put_manifest(
        "multi/img", "list", json.dumps(index).encode(), OCI_INDEX)

    fresh = Ctl(tmp_path / "fresh")
    image_id = fresh("pull", "--tls-verify=false", f"{registry.host}/multi/img:list").stdout.strip()
    inspect = json.loads(fresh("image", "inspect", image_id).stdout)[0]
    assert inspect["Architecture"] == go_arch() and inspect["Digest"] == digests[go_arch()][0]
    other = fresh("pull", "--tls-verify=false", "--platform", "linux/s390x", f"{registry.host}/multi/img:list")
    assert json.loads(fresh("image", "inspect", other.stdout.strip()).stdout)[0]["Architecture"] == "s390x"
    missing = fresh("pull", "--tls-verify=false", "--platform", "linux/mips", f"{registry.host}/multi/img:list",
                    check=False)
    assert missing.returncode == 125 and "no image for linux/mips" in missing.stderr
    assert "linux/s390x" in missing.stderr


def test_basic_auth(registries, capsactl, rootfs_tar):
    registry = registries(htpasswd=("alice", "s3cret"))
    capsactl("import", "-q", rootfs_tar, "mine")
    anonymous = capsactl("push", "--tls-verify=false", "mine", f"{registry.host}/auth/img:1", check=False)
    assert anonymous.returncode == 125 and "--creds" in anonymous.stderr
    wrong = capsactl("push", "--tls-verify=false", "--creds", "alice:nope", "mine", f"{registry.host}/auth/img:1",
                     check=False)
    assert wrong.returncode == 125 and "wrong credentials" in wrong.stderr
    capsactl("push", "--tls-verify=false", "--creds", "alice:s3cret", "mine", f"{registry.host}/auth/img:1")
    capsactl("rmi", "mine")
    assert capsactl("pull", "--tls-verify=false", f"{registry.host}/auth/img:1", check=False).returncode == 125
    capsactl("pull", "--tls-verify=false", "--creds", "alice:s3cret", f"{registry.host}/auth/img:1")


def test_login_stores_credentials_that_pull_and_push_use_and_logout_forgets(registries, capsactl, rootfs_tar,
                                                                              tmp_path):
    registry = registries(htpasswd=("alice", "s3cret"))
    authfile = str(tmp_path / "auth.json")
    capsactl("import", "-q", rootfs_tar, "mine")
    wrong = capsactl("login", "--tls-verify=false", "--authfile", authfile, "-u", "alice", "-p", "nope",
                     registry.host, check=False)
    assert wrong.returncode == 125 and "refuses the credentials" in wrong.stderr
    assert not os.path.exists(authfile)  # nothing stored for a refused login
    ok = capsactl("login", "--tls-verify=false", "--authfile", authfile, "-u", "alice", "-p", "s3cret", registry.host)
    assert ok.stdout == "Login Succeeded!\n"
    assert os.stat(authfile).st_mode & 0o077 == 0
    assert capsactl("login", "--get-login", "--authfile", authfile, registry.host).stdout == "alice\n"
    capsactl("push", "--tls-verify=false", "--authfile", authfile, "mine", f"{registry.host}/auth/img:1")
    capsactl("rmi", "mine")
    # REGISTRY_AUTH_FILE, as podman: the file is found without --authfile
    env = {**os.environ, "REGISTRY_AUTH_FILE": authfile}
    pulled = subprocess.run([CAPSACTL, "--root", capsactl.root, "--runroot", capsactl.runroot, "pull", "-q",
                             "--tls-verify=false", f"{registry.host}/auth/img:1"], env=env, capture_output=True,
                            text=True, timeout=180)
    assert pulled.returncode == 0, pulled.stderr
    assert capsactl("logout", "--authfile", authfile, registry.host).stdout == f"Removed login credentials for " \
                                                                             f"{registry.host}\n"
    again = capsactl("logout", "--authfile", authfile, registry.host, check=False)
    assert again.returncode == 125 and f"not logged into {registry.host}" in again.stderr
    capsactl("rmi", f"{registry.host}/auth/img:1")
    refused = capsactl("pull", "--tls-verify=false", "--authfile", authfile, f"{registry.host}/auth/img:1",
                       check=False)
    assert refused.returncode == 125 and "capsactl login" in refused.stderr


def test_https_with_a_self_signed_certificate(registries, capsactl, rootfs_tar, tmp_path):
    registry = registries(tls=True)
    capsactl("import", "-q", rootfs_tar, "mine")
    unverified = capsactl("push", "mine", f"{registry.host}/tls/img:1", check=False)
    assert unverified.returncode == 125 and "CERTIFICATE_VERIFY_FAILED" in unverified.stderr
    capsactl("push", "--tls-verify=false", "mine", f"{registry.host}/tls/img:1")
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(registry.cert, certs / "ca.crt")
    capsactl("rmi", "mine")
    capsactl("pull", "--cert-dir", str(certs), f"{registry.host}/tls/img:1")


class TokenServer:
    """docker's token protocol: GET realm?service=&scope= with basic auth answers a JWT (RS256,
    signed by openssl with a key whose certificate the registry trusts, in its x5c header)."""

    def __init__(self, base, user: tuple[str, str]):
        import http.server

        self.key, self.cert = str(base / "token.key"), str(base / "token.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=capsa-token", "-keyout", self.key, "-out", self.cert], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.user = user
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                import urllib.parse

                server.requests.append(self.path)
                expected = "Basic " + base64.b64encode(f"{server.user[0]}:{server.user[1]}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                body = json.dumps({"token": server.token(query.get("service", [""])[0],
                                                         query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def token(self, service: str, scopes: list[str]) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": "capsa-test-issuer", "sub": self.user[0], "aud": service, "exp": now + 600,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(),
                                   capture_output=True, check=True).stdout
        return f"{signing_input}.{b64(signature)}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_bearer_token_auth(registries, capsactl, rootfs_tar, tmp_path):
    tokens = TokenServer(tmp_path, ("bob", "hunter2"))
    try:
        registry = registries(token={"realm": tokens.realm, "cert": tokens.cert})
        image_id = capsactl("import", "-q", rootfs_tar, "mine").stdout.strip()
        refused = capsactl("push", "--tls-verify=false", "mine", f"{registry.host}/tok/img:1", check=False)
        assert refused.returncode == 125 and "token server" in refused.stderr and "--creds" in refused.stderr
        capsactl("push", "--tls-verify=false", "--creds", "bob:hunter2", "mine", f"{registry.host}/tok/img:1")
        assert any("scope=repository%3Atok%2Fimg%3Apull%2Cpush" in r for r in tokens.requests), tokens.requests
        capsactl("rmi", "mine")
        out = capsactl("pull", "--tls-verify=false", "--creds", "bob:hunter2", f"{registry.host}/tok/img:1")
        assert out.stdout == f"{image_id}\n"
        authfile = str(tmp_path / "auth.json")  # login checks the credentials through the token server too
        bad = capsactl("login", "--tls-verify=false", "--authfile", authfile, "-u", "bob", "-p", "x", registry.host,
                       check=False)
        assert bad.returncode == 125 and "token server" in bad.stderr
        capsactl("login", "--tls-verify=false", "--authfile", authfile, "-u", "bob", "--password-stdin",
                 registry.host, input="hunter2\n")
        capsactl("rmi", f"{registry.host}/tok/img:1")
        out = capsactl("pull", "--tls-verify=false", "--authfile", authfile, f"{registry.host}/tok/img:1")
        assert out.stdout == f"{image_id}\n"
    finally:
        tokens.stop()


def test_digest_mismatch_is_detected_and_nothing_stored(registries, capsactl, rootfs_tar, tmp_path):
    registry = registries()
    capsactl("import", "-q", rootfs_tar, "mine")
    digest_file = str(tmp_path / "digest")
    capsactl("push", "--tls-verify=false", "--digestfile", digest_file, "mine", f"{registry.host}/bad/img:1")
    capsactl("rmi", "mine")
    manifest = json.loads(open(registry.blob_path(open(digest_file).read()), "rb").read())
    layer = manifest["layers"][0]["digest"]
    # One byte of busybox changed: still a valid tar of the same size, another digest.
    path = registry.blob_path(layer)
    data = bytearray(open(path, "rb").read())
    offset = data.index(b"BusyBox")
    data[offset] ^= 0x20
    with open(path, "wb") as f:
        f.write(data)
    out = capsactl("pull", "--tls-verify=false", f"{registry.host}/bad/img:1", check=False)
    assert out.returncode == 125
    assert f"layer blob digest mismatch: expected {layer}" in out.stderr
    capsactl.assert_empty_store()


def test_gzip_layer_of_podman_with_a_corrupt_blob(registries, capsactl, podman, rootfs_tar):
    registry = registries()
    podman("import", rootfs_tar, "localhost/bb:1")
    podman("push", "--tls-verify=false", "localhost/bb:1", f"{registry.host}/gz/img:1")
    manifest = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                          f"docker://{registry.host}/gz/img:1"], capture_output=True, check=True,
                                         text=True).stdout) if shutil.which("skopeo") else None
    if manifest is None:
        pytest.skip("skopeo is not installed")
    path = registry.blob_path(manifest["layers"][0]["digest"])
    data = gzip.decompress(open(path, "rb").read())
    with open(path, "wb") as f:  # another gzip stream of another size
        f.write(gzip.compress(data[: len(data) // 2]))
    out = capsactl("pull", "--tls-verify=false", f"{registry.host}/gz/img:1", check=False)
    assert out.returncode == 125
    assert "truncated" in out.stderr, out.stderr
    capsactl.assert_empty_store()


# --- bad registries, full disks, kill -9 ------------------------------------------------------

class FakeServer:
    """A server on 127.0.0.1 whose `handle(path) -> (status, headers, body)` decides each answer;
    a body that is a list is sent piece by piece, a threading.Event among the pieces waited on."""

    def __init__(self, handle):
        import http.server

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, head: bool):
                status, headers, body = server.handle(self.command, self.path)
                pieces = body if isinstance(body, list) else [body]
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(sum(len(p) for p in pieces if isinstance(p, bytes))))
                self.end_headers()
                if head:
                    return
                for piece in pieces:
                    if isinstance(piece, threading.Event):
                        piece.wait(60)
                    else:
                        self.wfile.write(piece)
                        self.wfile.flush()

            def do_GET(self):  # noqa: N802
                self._answer(False)

            def do_HEAD(self):  # noqa: N802
                self._answer(True)

            def log_message(self, *args):
                pass

        self.handle = handle
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_registry_down_or_answering_garbage(capsactl, tmp_path):
    down = capsactl("pull", "--tls-verify=false", f"127.0.0.1:{free_port()}/x/y:1", check=False)
    assert down.returncode == 125 and "cannot reach the registry" in down.stderr

    # Not HTTP at all: a line of noise and the connection closed.
    noise = socket.socket()
    noise.bind(("127.0.0.1", 0))
    noise.listen(8)

    def serve_noise():
        while True:
            try:
                connection, _ = noise.accept()
            except OSError:
                return
            connection.sendall(b"garbage garbage\r\n\r\n")
            connection.close()

    threading.Thread(target=serve_noise, daemon=True).start()
    try:
        out = capsactl("pull", "--tls-verify=false", f"127.0.0.1:{noise.getsockname()[1]}/x/y:1", check=False)
        assert out.returncode == 125 and "does not answer HTTP" in out.stderr, out.stderr
    finally:
        noise.close()

    answers = {
        "/v2/notjson/manifests/1": (200, {"Content-Type": "application/json"}, b"<html>hello</html>"),
        "/v2/nolayers/manifests/1": (200, {}, b'{"schemaVersion": 2}'),
        "/v2/badconfig/manifests/1": (200, {}, json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": "sha256:" + "a" * 64, "size": 5}, "layers": []}).encode()),
        "/v2/badconfig/blobs/sha256:" + "a" * 64: (200, {}, b"hello"),
        "/v2/error/manifests/1": (500, {}, b'{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}'),
    }
    fake = FakeServer(lambda method, path: answers.get(path, (200, {}, b"{}") if path == "/v2/" else (404, {}, b"")))
    try:
        for repository, message in (("notjson", "not JSON"), ("nolayers", "has no config or layers"),
                                    ("badconfig", "blob digest mismatch"), ("error", "500 Internal Server Error: "
                                                                            "UNKNOWN: disk on fire"),
                                    ("missing", "not found in the registry")):
            out = capsactl("pull", "--tls-verify=false", f"{fake.host}/{repository}:1", check=False)
            assert out.returncode == 125 and message in out.stderr, (repository, out.stderr)
            assert "Traceback" not in out.stderr
    finally:
        fake.stop()
    capsactl.assert_empty_store()


def test_full_disk_during_pull(registries, capsactl, rootfs_tar, tmp_path):
    registry = registries()
    pusher = Ctl(tmp_path / "pusher")
    pusher("import", "-q", rootfs_tar, "mine")
    pusher("push", "--tls-verify=false", "mine", f"{registry.host}/big/img:1")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        full = Ctl(small)
        full.runroot = str(tmp_path / "run")
        out = full("pull", "--tls-verify=false", f"{registry.host}/big/img:1", check=False)
        assert out.returncode == 125
        assert "no space left" in out.stderr and "Traceback" not in out.stderr, out.stderr
        full.assert_empty_store()
        assert full("images", "-q").stdout == ""
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_kill_9_in_the_middle_of_a_pull(registries, capsactl, rootfs_tar, tmp_path):
    """capsactl killed while a layer streams in (a proxy holds the blob's second half back): the
    next call finds no image, no layer and, once it cleaned tmp/, no scratch file; the pull works."""
    import http.client

    registry = registries()
    pusher = Ctl(tmp_path / "pusher")
    image_id = pusher("import", "-q", rootfs_tar, "mine").stdout.strip()
    pusher("push", "--tls-verify=false", "mine", f"{registry.host}/slow/img:1")
    halfway, release = threading.Event(), threading.Event()

    def forward(method, path):
        connection = http.client.HTTPConnection(registry.host, timeout=30)
        connection.request(method, path, headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                                  "application/vnd.docker.distribution.manifest.v2+json"})
        response = connection.getresponse()
        body = response.read()
        headers = {k: v for k, v in response.getheaders() if k in ("Content-Type", "Docker-Content-Digest")}
        headers["Content-Length"] = str(len(body))
        if "/blobs/" in path and len(body) > 1 << 20 and method == "GET":
            halfway.set()
            return response.status, headers, [body[: len(body) // 2], release, body[len(body) // 2:]]
        return response.status, headers, body

    proxy = FakeServer(forward)
    try:
        process = subprocess.Popen([CAPSACTL, "--root", capsactl.root, "--runroot", capsactl.runroot, "pull",
                                    "--tls-verify=false", f"{proxy.host}/slow/img:1"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert halfway.wait(60), "the pull never reached the layer"
        tmp = os.path.join(capsactl.root, "tmp")
        deadline = time.monotonic() + 30
        while not any(os.path.exists(os.path.join(tmp, e, "blob")) and os.path.getsize(os.path.join(tmp, e, "blob"))
                      for e in os.listdir(tmp)):
            assert time.monotonic() < deadline, "no partial layer appeared in tmp/"
            time.sleep(0.01)
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
        release.set()
        assert capsactl("images", "-q").stdout == ""
        assert os.listdir(os.path.join(capsactl.root, "layers")) in ([], ["l"])
        out = capsactl("pull", "--tls-verify=false", f"{proxy.host}/slow/img:1")
        assert out.stdout == f"{image_id}\n"
        assert os.listdir(tmp) == []
        check_rootfs(capsactl, image_id)
    finally:
        release.set()
        proxy.stop()


def test_pull_if_missing_pulls_once(registries, capsactl, rootfs_tar, tmp_path):
    """What run and create call: the first time it pulls, then the store answers (the registry
    is gone by then)."""
    from capsa.manager.registry import pull_if_missing

    registry = registries()
    pusher = Ctl(tmp_path / "pusher")
    image_id = pusher("import", "-q", rootfs_tar, "mine").stdout.strip()
    pusher("push", "--tls-verify=false", "mine", f"{registry.host}/lazy/img:1")
    images = capsactl.store()
    try:
        assert pull_if_missing(images, f"{registry.host}/lazy/img:1", tls_verify=False).id == image_id
        registry.stop()
        assert pull_if_missing(images.store, f"{registry.host}/lazy/img:1", tls_verify=False).id == image_id
        with pytest.raises(Exception, match="cannot reach the registry"):
            pull_if_missing(images, f"{registry.host}/lazy/other:1", tls_verify=False)
    finally:
        images.store.close()
