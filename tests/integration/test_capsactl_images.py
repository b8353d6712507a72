"""capsactl's images: import, load and save against podman's archives, tag/untag/rmi, inspect,
history, exists, prune, images --format/--filter, and bad archives leaving nothing stored."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile

import pytest

CAPSACTL = os.path.join(os.path.dirname(sys.executable), "capsactl")


class Ctl:
    """capsactl with a store of its own under tmp_path."""

    def __init__(self, base):
        self.root = str(base / "graph")
        self.runroot = str(base / "run")

    def __call__(self, *args: str, check: bool = True, input: bytes | None = None, text: bool = True,
                 timeout: int = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([CAPSACTL, "--root", self.root, "--runroot", self.runroot, *args],
                                capture_output=True, input=input, text=text if input is None else False,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"capsactl {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def db(self):
        """A connection that commits and closes at the end of the `with`."""
        import contextlib

        @contextlib.contextmanager
        def connection():
            db = sqlite3.connect(os.path.join(self.root, "db.sqlite"))
            try:
                with db:
                    yield db
            finally:
                db.close()

        return connection()

    def count(self, table: str) -> int:
        with self.db() as db:
            return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def listing(self, *parts: str) -> list[str]:
        path = os.path.join(self.root, *parts)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    def assert_empty_store(self) -> None:
        """No image, layer, blob or scratch file: what a failed load or pull must leave."""
        assert self.count("images") == 0
        assert self.count("layers") == 0
        assert self.listing("layers") in ([], ["l"]) and self.listing("layers", "l") == []
        assert self.listing("blobs", "sha256") == []
        assert self.listing("tmp") == []


@pytest.fixture
def capsactl(tmp_path):
    ctl = Ctl(tmp_path / "capsactl")
    yield ctl
    shutil.rmtree(tmp_path / "capsactl", ignore_errors=True)


@pytest.fixture
def podman(tmp_path):
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    import tempfile

    base = tmp_path / "podman"
    runroot = tempfile.mkdtemp(prefix="cpi-", dir="/tmp")  # podman wants a run root of 50 characters at most
    command = ["podman", "--root", str(base / "root"), "--runroot", runroot, "--storage-driver", "vfs"]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=180)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    yield run
    subprocess.run([*command, "system", "reset", "--force"], capture_output=True, timeout=120)
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture
def rootfs_tar(tmp_path, rootfs_template):
    path = str(tmp_path / "rootfs.tar")
    subprocess.run(["tar", "-C", rootfs_template, "-cf", path, "."], check=True)
    return path


def podman_image_id(podman, name: str) -> str:
    return podman("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()


def test_podman_archives_load_and_save_both_ways(capsactl, podman, rootfs_tar, tmp_path):
    podman("import", "-c", 'CMD ["sh"]', rootfs_tar, "localhost/bb:1")
    image_id = podman_image_id(podman, "localhost/bb:1")
    docker_archive, oci_archive = str(tmp_path / "bb-docker.tar"), str(tmp_path / "bb-oci.tar")
    podman("save", "-o", docker_archive, "localhost/bb:1")
    podman("save", "--format", "oci-archive", "-o", oci_archive, "localhost/bb:1")

    out = capsactl("load", "-i", docker_archive)
    assert out.stdout == "Loaded image: localhost/bb:1\n"
    assert "Copying blob" in out.stderr
    assert capsactl("images", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}").stdout == \
        f"{image_id[:12]} localhost/bb:1\n"
    inspect = json.loads(capsactl("image", "inspect", "bb:1").stdout)[0]
    assert inspect["Id"] == image_id
    assert inspect["Config"] == {"Cmd": ["sh"]}
    assert os.path.exists(os.path.join(inspect["GraphDriver"]["Data"]["UpperDir"], "bin", "busybox"))

    # The OCI archive of the same image: its layer is already stored, its manifest digest is taken.
    capsactl("rmi", "bb:1")
    capsactl.assert_empty_store()
    out = capsactl("load", "-i", oci_archive)
    assert out.stdout == "Loaded image: localhost/bb:1\n"
    with tarfile.open(oci_archive) as tar:
        index = json.load(tar.extractfile("index.json"))
    assert json.loads(capsactl("image", "inspect", "localhost/bb:1").stdout)[0]["Digest"] == \
        index["manifests"][0]["digest"]

    # Saved by capsactl, loaded by podman (after podman forgot its own copy): the same image id.
    podman("rmi", "localhost/bb:1")
    for fmt, name in (("docker-archive", "out-docker.tar"), ("oci-archive", "out-oci.tar")):
        path = str(tmp_path / name)
        capsactl("save", "--format", fmt, "-o", path, "localhost/bb:1")
        assert "Loaded image: localhost/bb:1" in podman("load", "-i", path).stdout
        assert podman_image_id(podman, "localhost/bb:1") == image_id
        podman("rmi", "localhost/bb:1")

    # To stdout, and back through stdin.
    saved = subprocess.run([CAPSACTL, "--root", capsactl.root, "--runroot", capsactl.runroot, "save", "bb:1"],
                           capture_output=True, check=True).stdout
    capsactl("rmi", "bb:1")
    assert capsactl("load", input=saved).stdout == b"Loaded image: localhost/bb:1\n"
    assert capsactl("image", "exists", image_id[:12]).returncode == 0


def test_import_tag_untag_rmi(capsactl, rootfs_template):
    image_id = capsactl("import", "-q", rootfs_template, "busy").stdout.strip()
    capsactl("tag", "busy", "other:2", "quay.io/x/y:z")
    names = json.loads(capsactl("image", "inspect", image_id).stdout)[0]["RepoTags"]
    assert sorted(names) == ["localhost/busy:latest", "localhost/other:2", "quay.io/x/y:z"]

    capsactl("untag", image_id, "other:2")
    assert capsactl("image", "exists", "other:2", check=False).returncode == 1
    # rmi of one name of several only removes that name (podman's Untagged:).
    out = capsactl("rmi", "quay.io/x/y:z")
    assert out.stdout == "Untagged: quay.io/x/y:z\n"
    assert capsactl("image", "exists", image_id).returncode == 0
    # untag of every name: the image stays, dangling.
    capsactl("untag", image_id)
    assert capsactl("images", "--filter", "dangling=true", "-q").stdout == f"{image_id[:12]}\n"
    assert capsactl("images", "--format", "{{.Repository}} {{.Tag}}").stdout == "<none> <none>\n"

    out = capsactl("rmi", image_id[:8])
    assert out.stdout == f"Deleted: {image_id}\n"
    capsactl.assert_empty_store()
    missing = capsactl("rmi", "busy", check=False)
    assert missing.returncode == 1 and "image not known" in missing.stderr
    assert capsactl("rmi", "-f", "busy", check=False).returncode == 0


def test_rmi_refuses_an_image_a_container_uses(capsactl, rootfs_template):
    image_id = capsactl("import", "-q", rootfs_template, "busy").stdout.strip()
    with capsactl.db() as db:  # a container record as containers.py writes it
        db.execute("INSERT INTO containers (id, name, image_id, status, config, state, created) "
                   "VALUES (?, 'user1', ?, 'created', '{}', '{}', '2026-01-01T00:00:00Z')", ("c" * 64, image_id))
    out = capsactl("rmi", "busy", check=False)
    assert out.returncode == 2
    assert "in use by container(s) user1" in out.stderr
    assert capsactl("image", "exists", "busy").returncode == 0
    assert capsactl("images", "--filter", "containers=true", "-q").stdout == f"{image_id[:12]}\n"
    out = capsactl("image", "prune", "-a", "-f")
    assert out.stdout == ""
    with capsactl.db() as db:
        db.execute("DELETE FROM containers")
    assert capsactl("image", "prune", "-a", "-f").stdout == f"{image_id}\n"
    capsactl.assert_empty_store()


def test_inspect_keys_history_and_listing_as_podman(capsactl, podman, rootfs_tar, tmp_path):
    podman("import", "-c", 'CMD ["sh"]', "-c", "LABEL a=b", "-m", "my message", rootfs_tar, "localhost/bb:1")
    archive = str(tmp_path / "bb.tar")
    podman("save", "--format", "oci-archive", "-o", archive, "localhost/bb:1")
    capsactl("load", "-q", "-i", archive)

    ours = json.loads(capsactl("image", "inspect", "bb:1").stdout)[0]
    theirs = json.loads(podman("image", "inspect", "localhost/bb:1").stdout)[0]
    assert set(ours) == set(theirs)
    for key in ("Id", "RepoTags", "Created", "Config", "Architecture", "Os", "RootFS", "Labels", "History",
                "Comment", "User"):
        assert ours[key] == theirs[key], key
    assert ours["Size"] == theirs["Size"] or abs(ours["Size"] - theirs["Size"]) < 2048  # podman adds the config

    ours_list = json.loads(capsactl("images", "--format", "json").stdout)
    theirs_list = json.loads(podman("images", "--format", "json").stdout)
    assert set(ours_list[0]) == set(theirs_list[0])
    assert ours_list[0]["Id"] == theirs_list[0]["Id"]

    ours_history = json.loads(capsactl("history", "--format", "json", "bb:1").stdout)
    theirs_history = json.loads(podman("history", "--format", "json", "localhost/bb:1").stdout)
    assert [(h["id"], h["CreatedBy"], h["comment"]) for h in ours_history] == \
        [(h["id"], h["CreatedBy"], h["comment"]) for h in theirs_history]
    table = capsactl("history", "bb:1").stdout.splitlines()
    assert table[0].split() == ["ID", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert table[1].startswith(ours["Id"][:12]) and "my message" in table[1]

    listing = capsactl("images", "--digests").stdout.splitlines()
    assert listing[0].split() == ["REPOSITORY", "TAG", "DIGEST", "IMAGE", "ID", "CREATED", "SIZE"]
    assert listing[1].split()[:4] == ["localhost/bb", "1", ours["Digest"], ours["Id"][:12]]
    assert capsactl("images", "--filter", "label=a=b", "-q").stdout == f"{ours['Id'][:12]}\n"
    assert capsactl("images", "--filter", "label=a=c", "-q").stdout == ""
    assert capsactl("images", "--filter", "reference=bb", "-q").stdout == f"{ours['Id'][:12]}\n"
    assert capsactl("images", "--filter", "reference=localhost/bb:2", "-q").stdout == ""
    assert capsactl("images", "-q", "--no-trunc").stdout == f"{ours['Id']}\n"
    table = capsactl("images", "--format", "table {{.ID}}\t{{.Repository}}").stdout.splitlines()
    assert table[0].split() == ["IMAGE", "ID", "REPOSITORY"] and table[1].split() == [ours["Id"][:12], "localhost/bb"]
    bad = capsactl("images", "--filter", "colour=red", check=False)
    assert bad.returncode == 125 and "invalid image filter" in bad.stderr


def _tar_with(path: str, members: dict[str, bytes]) -> None:
    import io

    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bad_archives_leave_nothing(capsactl, podman, rootfs_tar, tmp_path):
    not_tar = tmp_path / "not.tar"
    not_tar.write_bytes(b"this is not a tar archive\n" * 100)
    out = capsactl("load", "-i", str(not_tar), check=False)
    assert out.returncode == 125 and "is not an image archive" in out.stderr

    other = str(tmp_path / "other.tar")
    _tar_with(other, {"hello.txt": b"hello"})
    out = capsactl("load", "-i", other, check=False)
    assert out.returncode == 125 and "neither manifest.json" in out.stderr

    garbage = str(tmp_path / "garbage.tar")
    _tar_with(garbage, {"manifest.json": b"{not json"})
    out = capsactl("load", "-i", garbage, check=False)
    assert out.returncode == 125 and "manifest.json is not JSON" in out.stderr

    # A real archive whose layer is cut short: the layer tar ends in the middle of busybox.
    podman("import", rootfs_tar, "localhost/bb:1")
    good = str(tmp_path / "good.tar")
    podman("save", "-o", good, "localhost/bb:1")
    truncated = str(tmp_path / "truncated.tar")
    with tarfile.open(good) as source, tarfile.open(truncated, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isreg() else None
            if member.isreg() and member.name.endswith(".tar"):
                data = data[: len(data) // 2]
                member.size = len(data)
            import io

            target.addfile(member, io.BytesIO(data) if data is not None else None)
    out = capsactl("load", "-i", truncated, check=False)
    assert out.returncode == 125, out.stderr
    assert "truncated" in out.stderr
    capsactl.assert_empty_store()

    # A layer whose content is not what the config's diff_ids say.
    mismatched = str(tmp_path / "mismatch.tar")
    with tarfile.open(good) as source, tarfile.open(mismatched, "w") as target:
        import io

        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isreg() else None
            if member.isreg() and member.name.endswith(".tar"):
                buffer = io.BytesIO()
                with tarfile.open(fileobj=buffer, mode="w") as layer:
                    info = tarfile.TarInfo("evil")
                    info.size = 4
                    layer.addfile(info, io.BytesIO(b"evil"))
                data = buffer.getvalue()
                member.size = len(data)
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    out = capsactl("load", "-i", mismatched, check=False)
    assert out.returncode == 125 and "layer digest mismatch" in out.stderr
    capsactl.assert_empty_store()
    assert capsactl("images", "-q").stdout == ""
