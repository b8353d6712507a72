"""Rootless containers: capsa run by a real unprivileged user that the tests create.

The tests run as root, create a user (with /etc/subuid and /etc/subgid ranges), give it a
bundle and an XDG_RUNTIME_DIR of its own, and run capsa as that user through setpriv. At the
end the user is removed and the account files are put back byte for byte.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import subprocess
import tempfile

import pytest
from conftest import capsa_command_for

from capsa import jsonfast

ACCOUNT_FILES = [f"/etc/{name}{suffix}" for name in ("passwd", "group", "shadow", "gshadow", "subuid", "subgid")
                 for suffix in ("", "-")]
SUB_COUNT = 65536
SETPRIV = shutil.which("setpriv") or "setpriv"  # by its path: some tests give capsa an empty PATH

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("useradd", "userdel", "setpriv", "newuidmap", "newgidmap")),
    reason="needs useradd, userdel, setpriv and newuidmap/newgidmap (Debian packages passwd, util-linux, uidmap)",
)


class User:
    """The test user, its workspace (owned by it) and a way to run capsa as it."""

    def __init__(self, name: str, workspace: str, command: list[str], env_extra: dict[str, str]):
        import pwd

        entry = pwd.getpwnam(name)
        self.name, self.uid, self.gid = name, entry.pw_uid, entry.pw_gid
        self.workspace = workspace
        self.runtime_dir = os.path.join(workspace, "run")
        self.command = command
        self.env_extra = env_extra
        self.subuid = _granted("/etc/subuid", name)
        self.subgid = _granted("/etc/subgid", name)

    def env(self, **overrides: str | None) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": self.workspace, "USER": self.name,
               "XDG_RUNTIME_DIR": self.runtime_dir, **self.env_extra}
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def run(self, *args: str, env: dict[str, str] | None = None, check: bool = False) -> subprocess.CompletedProcess:
        # Output through files, not pipes: a detached container's process keeps its stdio open.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            result = subprocess.run(
                [SETPRIV, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--", *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=60, env=env or self.env(), cwd=self.workspace,
            )
            out.seek(0)
            err.seek(0)
            result.stdout, result.stderr = out.read(), err.read()
        if check and result.returncode != 0:
            raise AssertionError(f"{args} failed ({result.returncode}): {result.stderr}")
        return result

    def capsa(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run(*self.command, *args, **kwargs)


def _granted(path: str, name: str) -> int | None:
    with open(path) as f:
        for line in f:
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[0] == name and int(fields[2]) >= SUB_COUNT:
                return int(fields[1])
    return None


def _save(paths: list[str]) -> dict[str, tuple[bytes, os.stat_result] | None]:
    saved = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                saved[path] = (f.read(), os.stat(path))
        except FileNotFoundError:
            saved[path] = None
    return saved


def _restore(saved: dict[str, tuple[bytes, os.stat_result] | None], name: str) -> None:
    """Put the account files back as they were. Should something else have changed one of them
    meanwhile (a package adding a system user), keep that change and drop only our user's lines."""
    ours = f"{name}:".encode()
    for path, value in saved.items():
        if value is None:
            if os.path.exists(path):
                os.unlink(path)
            continue
        data, info = value
        with open(path, "rb") as f:
            current = f.read()
        cleaned = b"".join(line for line in current.splitlines(keepends=True) if not line.startswith(ours))
        exact = path.endswith("-") or cleaned == data
        with open(path, "wb") as f:
            f.write(data if exact else cleaned)  # else: not byte for byte, the rest is not ours to undo
        os.chown(path, info.st_uid, info.st_gid)
        os.chmod(path, stat.S_IMODE(info.st_mode))
        if exact:
            os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


@pytest.fixture(scope="module")
def user(rootfs_template):
    name = f"capsarl{os.getpid() % 100000}"
    saved = _save(ACCOUNT_FILES)
    workspace = tempfile.mkdtemp(prefix="capsa-rootless-")
    try:
        subprocess.run(["useradd", "--no-create-home", "--home-dir", workspace, "--shell", "/usr/sbin/nologin",
                        "--user-group", name], check=True, capture_output=True)
        if _granted("/etc/subuid", name) is None or _granted("/etc/subgid", name) is None:
            # login.defs without SUB_UID_*: grant a range by hand, far above the usual ones.
            start = 1_000_000_000 + (os.getpid() % 1000) * SUB_COUNT
            subprocess.run(["usermod", "--add-subuids", f"{start}-{start + SUB_COUNT - 1}",
                            "--add-subgids", f"{start}-{start + SUB_COUNT - 1}", name], check=True, capture_output=True)
        os.chmod(workspace, 0o755)
        os.makedirs(os.path.join(workspace, "run"), mode=0o700)
        subprocess.run(["cp", "-a", rootfs_template, os.path.join(workspace, "rootfs")], check=True)
        subprocess.run(["chown", "-R", f"{name}:{name}", workspace], check=True)
        command, env_extra = capsa_command_for(name, workspace)
        test_user = User(name, workspace, command, env_extra)
        probe = test_user.run("unshare", "--user", "--map-root-user", "--mount", "true")
        if probe.returncode != 0:
            pytest.skip(f"this host forbids unprivileged user namespaces: unshare --user as {name}: {probe.stderr.strip()}")
        yield test_user
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", name], capture_output=True)
        _restore(saved, name)
        shutil.rmtree(workspace, ignore_errors=True)


_numbers = iter(range(1, 10_000))


class RootlessBundle:
    """A bundle owned by the test user: `capsa spec --rootless` as that user, then adjusted."""

    def __init__(self, user: User):
        self.user = user
        self.path = os.path.join(user.workspace, f"bundle{next(_numbers)}")
        self.id = os.path.basename(self.path)
        user.run("mkdir", self.path, check=True)
        user.capsa("spec", "--rootless", "--bundle", self.path, check=True)
        with open(os.path.join(self.path, "config.json")) as f:
            self.config = jsonfast.loads(f.read())
        self.config["root"]["path"] = os.path.join(user.workspace, "rootfs")
        self.config["process"]["terminal"] = False

    def write(self) -> None:
        data = jsonfast.dumps_indent(self.config)
        path = os.path.join(self.path, "config.json")
        with open(path, "w") as f:
            f.write(data)
        os.chown(path, self.user.uid, self.user.gid)

    def capsa(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        self.write()
        return self.user.capsa(*args, **kwargs)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        self.config["process"]["args"] = list(args)
        return self.capsa("run", "--bundle", self.path, self.id, check=check)

    def map_subordinate_ids(self) -> None:
        """Container ids 1..65536 to the user's subordinate ids, 0 to the user itself."""
        linux = self.config["linux"]
        linux["uidMappings"] = [{"containerID": 0, "hostID": self.user.uid, "size": 1},
                                {"containerID": 1, "hostID": self.user.subuid, "size": SUB_COUNT}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": self.user.gid, "size": 1},
                                {"containerID": 1, "hostID": self.user.subgid, "size": SUB_COUNT}]


@pytest.fixture
def rbundle(user):
    bundle = RootlessBundle(user)
    yield bundle
    user.capsa("delete", "--force", bundle.id)


# -- spec ------------------------------------------------------------------------------------------
def test_spec_rootless_maps_the_caller_as_runc_does(user, rbundle):
    spec = rbundle.config
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": user.uid, "size": 1}]
    assert spec["linux"]["gidMappings"] == [{"containerID": 0, "hostID": user.gid, "size": 1}]
    if shutil.which("runc"):
        runc_dir = os.path.join(user.workspace, "runc-spec")
        user.run("mkdir", runc_dir, check=True)
        user.run("runc", "spec", "--rootless", "--bundle", runc_dir, check=True)
        with open(os.path.join(runc_dir, "config.json")) as f:
            runc = json.load(f)
        with open(os.path.join(rbundle.path, "config.json")) as f:
            ours = json.load(f)
        for spec_ in (runc, ours):
            spec_.pop("ociVersion")
            spec_.pop("hostname")
        assert ours == runc


# -- lifecycle -------------------------------------------------------------------------------------
def test_create_start_exec_kill_delete(user, rbundle):
    rbundle.config["process"]["args"] = ["sleep", "600"]
    rbundle.capsa("create", "--bundle", rbundle.path, rbundle.id, check=True)
    state_dir = os.path.join(user.runtime_dir, "capsa", rbundle.id)
    assert os.path.isfile(os.path.join(state_dir, "state.json"))
    assert os.stat(state_dir).st_uid == user.uid
    assert os.stat(os.path.dirname(state_dir)).st_mode & stat.S_ISVTX  # runc's sticky XDG root
    state = json.loads(user.capsa("state", rbundle.id, check=True).stdout)
    assert state["status"] == "created"
    with open(os.path.join(state_dir, "state.json")) as f:
        assert json.load(f)["cgroupPaths"] == {}  # no cgroup it may create: the caller's own
    assert os.stat(f"/proc/{state['pid']}").st_uid == user.uid

    user.capsa("start", rbundle.id, check=True)
    assert json.loads(user.capsa("state", rbundle.id, check=True).stdout)["status"] == "running"
    out = user.capsa("exec", rbundle.id, "sh", "-c", "id -u; id -g; cat /proc/self/uid_map", check=True).stdout.split()
    assert out == ["0", "0", "0", str(user.uid), "1"]

    user.capsa("kill", rbundle.id, "KILL", check=True)
    for _ in range(500):
        if json.loads(user.capsa("state", rbundle.id, check=True).stdout)["status"] == "stopped":
            break
    else:
        raise AssertionError("the container did not stop")
    user.capsa("delete", rbundle.id, check=True)
    assert not os.path.exists(state_dir)


def test_shell_sees_itself_as_root(user, rbundle):
    out = rbundle.run("sh", "-c", "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; "
                      "ls -ln /dev/null; echo hello > /dev/null && echo null-works; "
                      "if [ -d /sys/fs/cgroup/pids ]; then grep -x 1 /sys/fs/cgroup/pids/cgroup.procs && echo in-callers-cgroup; fi; "
                      "true").stdout.split("\n")
    assert out[0:2] == ["0", "0"]
    assert out[2].split() == ["0", str(user.uid), "1"] and out[3].split() == ["0", str(user.gid), "1"]
    assert out[4] == "deny"  # the kernel's price for an unprivileged gid_map
    assert out[5].split()[4:6] == ["1,", "3"]  # the host's /dev/null, bind-mounted
    assert "null-works" in out
    if os.path.isdir("/sys/fs/cgroup/pids"):
        assert "in-callers-cgroup" in out  # no cgroup of its own: it is shown the caller's, as runc does


def test_subordinate_ids_through_newuidmap(user, rbundle):
    if user.subuid is None:
        pytest.skip("no subordinate ids granted")
    rbundle.map_subordinate_ids()
    rbundle.config["root"]["readonly"] = False
    for kind in ("bounding", "effective", "permitted"):
        rbundle.config["process"]["capabilities"][kind].append("CAP_CHOWN")
    out = rbundle.run("sh", "-c", "cat /proc/self/uid_map; touch /sub-owned; chown 1000:1000 /sub-owned; "
                      "stat -c %u:%g /sub-owned").stdout.split("\n")
    assert out[0].split() == ["0", str(user.uid), "1"]
    assert out[1].split() == ["1", str(user.subuid), str(SUB_COUNT)]
    assert out[2] == "1000:1000"
    host = os.stat(os.path.join(user.workspace, "rootfs", "sub-owned"))
    assert (host.st_uid, host.st_gid) == (user.subuid + 999, user.subgid + 999)
    os.unlink(os.path.join(user.workspace, "rootfs", "sub-owned"))

    rbundle.config["process"]["args"] = ["sleep", "600"]
    rbundle.capsa("run", "--detach", "--bundle", rbundle.path, rbundle.id, check=True)
    out = user.capsa("exec", "--user", "1000:1000", "--additional-gids", "2000", rbundle.id, "id", check=True).stdout
    assert "uid=1000" in out and "gid=1000" in out and "2000" in out


def test_state_root_default(user, rbundle):
    user.capsa("list", check=True)
    assert os.path.isdir(os.path.join(user.runtime_dir, "capsa"))
    # runc's rule without XDG_RUNTIME_DIR: /run/capsa, which an unprivileged user cannot write.
    created = rbundle.capsa("create", "--bundle", rbundle.path, rbundle.id, env=user.env(XDG_RUNTIME_DIR=None))
    assert created.returncode == 1 and "/run/capsa: Permission denied" in created.stderr and "set XDG_RUNTIME_DIR" in created.stderr


# -- what rootless cannot do: clear errors -------------------------------------------------------
def test_device_nodes(user, rbundle):
    rbundle.config["root"]["readonly"] = False
    out = rbundle.run("sh", "-c", "mknod /dev/x c 1 3 2>&1; echo rc=$?").stdout
    assert "Operation not permitted" in out and "rc=1" in out
    rbundle.config["linux"]["devices"] = [{"path": "/dev/capsa-no-such-device", "type": "c", "major": 1, "minor": 3}]
    failed = rbundle.run("true", check=False)
    assert failed.returncode == 1
    assert "linux.devices /dev/capsa-no-such-device" in failed.stderr and "cannot be created" in failed.stderr
    rbundle.config["linux"]["devices"] = [{"path": "/dev/null", "type": "c", "major": 1, "minor": 5}]
    failed = rbundle.run("true", check=False)
    assert failed.returncode == 1 and "is 1:3, not 1:5" in failed.stderr
    assert os.listdir(os.path.join(user.runtime_dir, "capsa")) == []  # a failed create leaves nothing
    rbundle.config["linux"]["devices"] = [{"path": "/dev/zero", "type": "c", "major": 1, "minor": 5}]
    assert rbundle.run("sh", "-c", "head -c 3 /dev/zero | od -An -tx1").stdout.split() == ["00", "00", "00"]


def test_unmapped_ids(user, rbundle):
    rbundle.config["process"]["user"] = {"uid": 1000, "gid": 0}
    failed = rbundle.run("true", check=False)
    assert failed.returncode == 1 and "uid 1000 is not mapped" in failed.stderr
    rbundle.config["process"]["user"] = {"uid": 0, "gid": 0, "additionalGids": [5]}
    failed = rbundle.run("true", check=False)
    assert failed.returncode == 1 and "additional groups" in failed.stderr
    rbundle.config["process"]["user"] = {"uid": 0, "gid": 0}
    rbundle.config["linux"]["uidMappings"].append({"containerID": 1, "hostID": 4_000_000_000, "size": 10})
    failed = rbundle.run("true", check=False)
    assert failed.returncode == 1 and "not granted to user" in failed.stderr and "/etc/subuid" in failed.stderr


def test_missing_newuidmap(user, rbundle):
    if user.subuid is None:
        pytest.skip("no subordinate ids granted")
    rbundle.map_subordinate_ids()
    rbundle.config["process"]["args"] = ["true"]
    empty = os.path.join(user.workspace, "empty-path")
    os.makedirs(empty, exist_ok=True)
    rbundle.write()
    failed = user.capsa("run", "--bundle", rbundle.path, rbundle.id, env=user.env(PATH=empty))
    assert failed.returncode == 1 and "needs newuidmap (Debian package uidmap)" in failed.stderr


def test_cgroups_rootless(user, rbundle):
    rbundle.config["linux"]["resources"] = {"pids": {"limit": 10}}
    failed = rbundle.run("true", check=False)
    assert failed.returncode == 1 and "cannot set pids limit: container could not join or create cgroup" in failed.stderr
    del rbundle.config["linux"]["resources"]
    rbundle.config["linux"]["cgroupsPath"] = "/capsa-rootless-denied"
    failed = rbundle.run("true", check=False)
    assert failed.returncode == 1 and "cannot create cgroup" in failed.stderr and "delegated" in failed.stderr
    del rbundle.config["linux"]["cgroupsPath"]
    rbundle.write()
    # --rootless=false: the cgroup is required, as runc.
    failed = user.capsa("--rootless=false", "run", "--bundle", rbundle.path, rbundle.id)
    assert failed.returncode == 1 and "cannot create cgroup" in failed.stderr
    failed = user.capsa("--rootless=maybe", "list")
    assert failed.returncode == 1 and "--rootless" in failed.stderr
    # pause needs the freezer cgroup the container does not have.
    rbundle.config["process"]["args"] = ["sleep", "600"]
    rbundle.capsa("run", "--detach", "--bundle", rbundle.path, rbundle.id, check=True)
    failed = user.capsa("pause", rbundle.id)
    assert failed.returncode == 1 and "no freezer cgroup" in failed.stderr and "rootless" in failed.stderr
    failed = user.capsa("ps", rbundle.id)
    assert failed.returncode == 1 and "no cgroup to find its processes in" in failed.stderr


@pytest.fixture
def delegated_cgroup(user):
    """A cgroup in every hierarchy handed to the test user, as systemd delegates one: the
    directory and its files are the user's. Returns its path below each mount point."""
    from capsa.cgroups import hierarchies

    name = f"/capsa-rootless-delegated.{os.getpid()}"
    made = []
    try:
        for point, controllers in hierarchies().items():
            directory = point + name
            os.mkdir(directory)
            made.append(directory)
            if "cpuset" in controllers.split(","):
                for file in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(point, file)) as f, open(os.path.join(directory, file), "w") as g:
                        g.write(f.read().strip())
            for entry in [directory] + [os.path.join(directory, f) for f in os.listdir(directory)]:
                os.chown(entry, user.uid, user.gid)
        yield name
    finally:
        for directory in made:  # a container a failed test left behind
            for procs in glob.glob(os.path.join(directory, "*", "cgroup.procs")):
                with open(procs) as f:
                    for pid in f.read().split():
                        subprocess.run(["kill", "-KILL", pid], capture_output=True)
        for directory in reversed(made):
            for sub in sorted((e.path for e in os.scandir(directory) if e.is_dir()), reverse=True):
                _rmdir_cgroup(sub)
            _rmdir_cgroup(directory)


def _rmdir_cgroup(directory: str) -> None:
    import time

    for _ in range(200):  # EBUSY while a killed task is still being torn down
        try:
            os.rmdir(directory)
            return
        except OSError as err:
            if err.errno != 16:
                raise
            time.sleep(0.01)
    os.rmdir(directory)


def test_delegated_cgroup(user, delegated_cgroup, rbundle):  # rbundle's teardown (delete) runs first
    """With a cgroup it owns, a rootless container gets its own cgroup below it and its limits;
    device rules, which need CAP_SYS_ADMIN, are skipped as runc skips them."""
    from capsa.cgroups import hierarchies

    unified = next((p for p, c in hierarchies().items() if c == ""), None)
    rbundle.config["linux"]["cgroupsPath"] = f"{delegated_cgroup}/{rbundle.id}"
    rbundle.config["linux"]["resources"] = {"pids": {"limit": 10}, "devices": [{"allow": False, "access": "rwm"}]}
    rbundle.config["process"]["args"] = ["sh", "-c", "cat /proc/self/cgroup; cat /sys/fs/cgroup/pids/pids.max"]
    rbundle.write()
    # As under systemd, the user's own processes live in its delegated subtree: cgroup2 lets a
    # process move only below the common ancestor it may write to.
    join = f"echo $$ > {unified}{delegated_cgroup}/cgroup.procs; " if unified else ""

    def capsa_in_delegated_cgroup(*args: str) -> subprocess.CompletedProcess:
        command = " ".join([SETPRIV, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--",
                            *user.command, *args])
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            result = subprocess.run(["sh", "-c", join + "exec " + command], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, timeout=60, env=user.env(), cwd=user.workspace)
            out.seek(0)
            err.seek(0)
            result.stdout, result.stderr = out.read(), err.read()
        assert result.returncode == 0, result.stderr
        return result

    lines = capsa_in_delegated_cgroup("run", "--bundle", rbundle.path, rbundle.id).stdout.split()
    assert lines[-1] == "10"
    assert f"pids:{delegated_cgroup}/{rbundle.id}" in "\n".join(lines)

    # The freezer and cgroup.procs are the container's own: pause, resume and ps work.
    rbundle.config["process"]["args"] = ["sleep", "600"]
    rbundle.write()
    capsa_in_delegated_cgroup("run", "--detach", "--bundle", rbundle.path, rbundle.id)
    user.capsa("pause", rbundle.id, check=True)
    assert json.loads(user.capsa("state", rbundle.id, check=True).stdout)["status"] == "paused"
    user.capsa("resume", rbundle.id, check=True)
    pid = json.loads(user.capsa("state", rbundle.id, check=True).stdout)["pid"]
    assert json.loads(user.capsa("ps", "--format", "json", rbundle.id, check=True).stdout) == [pid]
    user.capsa("delete", "--force", rbundle.id, check=True)


def test_more_namespaces_and_hooks(user, rbundle):
    """A time namespace with offsets, a network namespace (lo only) and a prestart hook, rootless."""
    marker = os.path.join(user.workspace, "hook-ran")
    rbundle.config["linux"]["namespaces"] += [{"type": "time"}, {"type": "network"}]
    rbundle.config["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365}}
    rbundle.config["hooks"] = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", f"id -u > {marker}"]}]}
    out = rbundle.run("sh", "-c", "cut -d. -f1 /proc/uptime; cat /proc/net/dev | tail -n +3 | cut -d: -f1").stdout.split()
    assert int(out[0]) >= 86400 * 365
    assert out[1:] == ["lo"]
    with open(marker) as f:
        assert f.read().strip() == str(user.uid)  # hooks run as the caller, on the host


@pytest.mark.skipif(not shutil.which("script"), reason="needs script(1) (bsdutils) for a terminal")
def test_exec_with_a_terminal(user, rbundle):
    rbundle.config["process"]["args"] = ["sleep", "600"]
    rbundle.capsa("run", "--detach", "--bundle", rbundle.path, rbundle.id, check=True)
    command = " ".join([SETPRIV, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--",
                        *user.command, "exec", "-t", rbundle.id, "sh", "-c", "'tty; id -u'"])
    result = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=60,
                            env=user.env(), cwd=user.workspace, stdin=subprocess.DEVNULL)
    assert result.stdout.split()[-2:] == ["/dev/pts/0", "0"], result.stdout + result.stderr


def test_root_inside_a_user_namespace(user, rbundle):
    """capsa as uid 0 of a user namespace the user made (as rootlesskit and podman run it):
    rootless cgroups, state under XDG_RUNTIME_DIR (USER is not root), maps written directly."""
    linux = rbundle.config["linux"]
    linux["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1}]
    rbundle.config["process"]["args"] = ["sh", "-c", "id -u; cat /proc/self/uid_map"]
    rbundle.write()
    capsa = " ".join([*user.command, "run", "--bundle", rbundle.path, rbundle.id])
    result = user.run("unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                      f"{capsa} && ls {user.runtime_dir}/capsa && echo done")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "0", "0", "1", "done"]


def test_user_namespaces_forbidden(user, rbundle):
    """Where user namespaces cannot be made the error says so. The limit is set to 0 in a user
    namespace of the test's own (each has its own user.max_user_namespaces): the host's stays."""
    capsa = " ".join([*user.command, "run", "--bundle", rbundle.path, rbundle.id])
    rbundle.write()
    result = user.run("unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                      f"echo 0 > /proc/sys/user/max_user_namespaces && exec {capsa}")
    assert result.returncode == 1
    assert "cannot create a user namespace" in result.stderr and "forbid unprivileged user namespaces" in result.stderr
