"""The command line as runc users and managers call it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from capsa import jsonfast


def test_version_and_help(bundle):
    version = bundle.capsa("--version").stdout
    assert version.startswith("capsa version ") and "spec: 1." in version
    assert "create" in bundle.capsa("help").stdout
    assert "--bundle" in bundle.capsa("create", "--help").stdout


def test_spec_writes_runc_default(bundle, tmp_path):
    target = tmp_path / "new"
    target.mkdir()
    bundle.capsa("spec", "--bundle", str(target))
    config = jsonfast.loads((target / "config.json").read_text())
    assert config["process"]["args"] == ["sh"]
    again = bundle.capsa("spec", "-b", str(target), check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    rootless = tmp_path / "rootless"
    rootless.mkdir()
    bundle.capsa("spec", "--rootless", "--bundle", str(rootless))
    assert "uidMappings" in jsonfast.loads((rootless / "config.json").read_text())["linux"]


@pytest.mark.skipif(not shutil.which("runc") or not shutil.which("unshare"), reason="needs runc and unshare")
@pytest.mark.parametrize("cgroup2", [False, True], ids=["this-host", "cgroup2-mounted"])
def test_spec_is_runcs_spec(tmp_path, cgroup2):
    """`capsa spec` and `spec --rootless` write the document runc writes, on this host's cgroup
    layout and with cgroup2 mounted on /sys/fs/cgroup (runc then adds a cgroup namespace)."""
    from conftest import capsa_command

    commands = []
    for tool, command in (("runc", ["runc"]), ("capsa", capsa_command())):
        for flags in ([], ["--rootless"]):
            directory = tmp_path / f"{tool}{''.join(flags)}"
            directory.mkdir()
            commands.append(" ".join(command + ["spec", *flags, "--bundle", str(directory)]))
    mount = "mount -t cgroup2 none /sys/fs/cgroup && " if cgroup2 else ""
    script = mount + " && ".join(commands)
    subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], check=True, timeout=60)
    for flags in ("", "--rootless"):
        runc, ours = (jsonfast.loads((tmp_path / f"{tool}{flags}" / "config.json").read_text()) for tool in ("runc", "capsa"))
        for document in (runc, ours):
            document.pop("ociVersion")
            document.pop("hostname")
        assert ours == runc, flags
        assert ("cgroup" in [ns["type"] for ns in ours["linux"]["namespaces"]]) == (
            cgroup2 or os.path.exists("/sys/fs/cgroup/cgroup.controllers"))


def test_features_document(bundle):
    features = jsonfast.loads(bundle.capsa("features").stdout)
    assert features["ociVersionMin"] == "1.0.0" and features["ociVersionMax"].startswith("1.")
    assert "createContainer" in features["hooks"]
    assert "rbind" in features["mountOptions"]
    from capsa import lsm

    assert features["linux"]["apparmor"]["enabled"] is lsm.apparmor_enabled()  # detected, not pretended
    assert "CAP_SYS_ADMIN" in features["linux"]["capabilities"]


def test_single_dash_flags(bundle):
    bundle.set_args("true")
    bundle.capsa("-root", bundle.root, "run", "-bundle", bundle.path, "dash")
    assert bundle.capsa("list", "-q").stdout == ""


def test_unknown_flag_and_command(bundle):
    result = bundle.capsa("create", "--bogus", check=False)
    assert result.returncode == 1 and "flag provided but not defined: -bogus" in result.stderr
    result = bundle.capsa("frobnicate", check=False)
    assert result.returncode == 1
    # podman probes `checkpoint --help` and takes exit 0 to mean "supported".
    result = bundle.capsa("checkpoint", "--help", check=False)
    assert result.returncode == 0 and "--leave-running" in result.stdout


def test_no_pivot(bundle):
    bundle.set_args("sh", "-c", "cat /proc/self/mountinfo | head -1; ls /")
    out = bundle.capsa("run", "--no-pivot", "--bundle", bundle.path, "np").stdout
    assert "bin" in out.split()


def test_rootfs_propagation_and_recursive_readonly(bundle, tmp_path):
    source = tmp_path / "src"
    (source / "inner").mkdir(parents=True)
    # rshared, not rslave: this host's / is private, and a slave of a private mount stays private.
    bundle.config["linux"]["rootfsPropagation"] = "rshared"
    bundle.config["mounts"].append(
        {"destination": "/mnt", "type": "bind", "source": str(source), "options": ["rbind", "rro", "rprivate"]}
    )
    out = bundle.sh("touch /mnt/inner/x 2>/dev/null && echo writable || echo readonly; awk '$5 == \"/\"' /proc/self/mountinfo").stdout
    assert out.splitlines()[0] == "readonly"
    assert "shared:" in out.splitlines()[1]


@pytest.mark.parametrize("propagation", ["unbindable", "runbindable"])
def test_rootfs_propagation_unbindable(bundle, propagation):
    # runtime-tools' linux_rootfs_propagation: the rootfs bind must not come from an unbindable mount.
    bundle.config["linux"]["rootfsPropagation"] = propagation
    out = bundle.sh("awk '$5 == \"/\"' /proc/self/mountinfo").stdout
    assert "unbindable" in out.split(" - ")[0]


def test_failed_create_leaves_no_process(bundle):
    bundle.config["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}
    bundle.set_args("true")
    result = bundle.capsa("create", "--bundle", bundle.path, "gone", check=False)
    assert result.returncode == 1
    rootfs = os.path.realpath(bundle.rootfs)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            assert os.readlink(f"/proc/{pid}/root") != rootfs, f"process {pid} is left in the rootfs"
        except OSError:
            continue
    assert os.listdir(bundle.root) == []


def test_unprivileged_user_gets_a_clear_error(bundle):
    """A config made for root (no user namespace), run by an unprivileged user: a clear error
    (tests/integration/test_rootless.py covers what works rootless)."""
    import shutil
    import subprocess
    import tempfile

    from conftest import capsa_command_for

    readable = tempfile.mkdtemp(prefix="capsa-nobody-")
    try:
        os.chmod(readable, 0o755)
        shutil.copy(os.path.join(bundle.path, "config.json"), readable)
        os.chmod(os.path.join(readable, "config.json"), 0o644)
        os.mkdir(os.path.join(readable, "rootfs"))
        command, env = capsa_command_for("65534", readable)
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command,
             "--root", os.path.join(readable, "nobody-state"), "run", "--bundle", readable, "x"],
            capture_output=True, text=True, timeout=60, env=dict(os.environ, **env),
        )
    finally:
        shutil.rmtree(readable)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "rootless container requires user namespaces" in result.stderr


@pytest.mark.parametrize("log", ["missing-dir", "directory", "format"])
def test_bad_log_flags_fail_every_subcommand_at_once(bundle, tmp_path, log):
    """As runc: --log that cannot be opened, or an unknown --log-format, is an error before the
    subcommand does anything (before, `list`, `spec` and `features` went on and logged nowhere)."""
    from capsa.cli import COMMANDS

    flags = {"missing-dir": ["--log", str(tmp_path / "no" / "such" / "log")],
             "directory": ["--log", str(tmp_path)],
             "format": ["--log-format", "xml"]}[log]
    expected = {"missing-dir": str(tmp_path / "no" / "such" / "log"), "directory": str(tmp_path),
                "format": "'xml'"}[log]
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    for command in COMMANDS:
        result = bundle.capsa(*flags, command, check=False, cwd=str(workdir))
        assert result.returncode == 1, command
        assert expected in result.stderr and ("--log" in result.stderr or "log format" in result.stderr), (command, result.stderr)
        assert result.stdout == "", command
    assert os.listdir(workdir) == []  # `spec` wrote no config.json
