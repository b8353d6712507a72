"""The Kubernetes path: containerd's CRI plugin, with capsa as a runtime handler, driven as kubelet drives it.

The test starts its own containerd (unix sockets, root and state under a temp dir) with the CRI plugin on and a
runtime handler "capsa" (io.containerd.runc.v2, options.BinaryName = capsa): the config a Kubernetes node gets, and
what a RuntimeClass with `handler: capsa` selects. No crictl in Debian 12: cri/client.py makes the CRI calls over
gRPC (Debian's python3-grpcio) from the subset of the CRI protobuf in cri/cri_subset.proto.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time

import pytest
from conftest import capsa_command

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEM_PYTHON = "/usr/bin/python3"
IMAGE = "localhost/capsa-busybox:test"


def _missing() -> str | None:
    for tool in ("containerd", "ctr", "containerd-shim-runc-v2", "protoc"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import grpc, google.protobuf"], capture_output=True)
    if probe.returncode != 0:
        return "python3-grpcio and python3-protobuf (the CRI client) are not installed"
    return None


if _missing():
    pytest.skip(_missing(), allow_module_level=True)


def _oci_archive(rootfs: str, path: str) -> None:
    """An OCI image layout tar of rootfs, named IMAGE, whose default command keeps a pod sandbox alive."""
    layer = subprocess.run(["tar", "-C", rootfs, "-c", "."], capture_output=True, check=True).stdout
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sleep", "100000"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
    }).encode()
    manifest_descriptor = _descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
    manifest_descriptor["annotations"] = {"io.containerd.image.name": IMAGE}
    manifest_descriptor["platform"] = {"architecture": "amd64", "os": "linux"}
    index = json.dumps({"schemaVersion": 2, "manifests": [manifest_descriptor]}).encode()
    with tarfile.open(path, "w") as archive:
        for name, data in (("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), ("index.json", index),
                           *((f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob)
                             for blob in (layer, config, manifest))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _descriptor(media_type: str, blob: bytes) -> dict:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(blob).hexdigest(), "size": len(blob)}


@pytest.fixture(scope="module")
def cri(tmp_path_factory, rootfs_template):
    base = tmp_path_factory.mktemp("cri")
    socket = base / "containerd.sock"
    runtime = capsa_command()[0]
    (base / "config.toml").write_text(f"""version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  # Never load an AppArmor profile into the host's kernel from a test.
  disable_apparmor = true
  stream_server_port = "0"
  # This VM gives root no CAP_SYS_RESOURCE: the sandbox's oomScoreAdj (-998) could not go below containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{base}/cni/bin"
    conf_dir = "{base}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    # The default handler stays runc, as on a node: pods get capsa only by asking for its handler.
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.capsa]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.capsa.options]
        BinaryName = "{runtime}"
        # capsa's state root (the shim adds the namespace, k8s.io), apart from /run/containerd/runc.
        Root = "{base}/capsa-state"
""")
    _fake_cni(base / "cni")
    pb_dir = base / "pb"
    pb_dir.mkdir()
    subprocess.run(["protoc", f"--python_out={pb_dir}", "-I", os.path.join(HERE, "cri"), "cri_subset.proto"],
                   check=True)
    _oci_archive(rootfs_template, str(base / "image.tar"))
    log = open(base / "containerd.log", "w")
    daemon = subprocess.Popen(["containerd", "--config", str(base / "config.toml")], stdout=subprocess.DEVNULL,
                              stderr=log)

    def call(method: str, request: dict, check: bool = True) -> dict:
        result = subprocess.run([SYSTEM_PYTHON, "-I", os.path.join(HERE, "cri", "client.py"), str(socket),
                                 str(pb_dir), method, json.dumps(request)],
                                capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"CRI {method} failed: {result.stderr}\n{(base / 'containerd.log').read_text()[-3000:]}")
        return json.loads(result.stdout) if result.returncode == 0 else {}

    deadline = time.monotonic() + 30
    while not socket.exists():
        assert time.monotonic() < deadline and daemon.poll() is None, (base / "containerd.log").read_text()
        time.sleep(0.05)
    subprocess.run(["ctr", "-a", str(socket), "-n", "k8s.io", "images", "import", "--snapshotter", "native",
                    str(base / "image.tar")], check=True, capture_output=True, timeout=120)
    call.base = base
    call.state_root = str(base / "capsa-state" / "k8s.io")
    call.cgroup_parent = f"/capsa-cri-test.{os.getpid()}"
    yield call
    # Whatever a failed test left: shims outlive containerd, so their tasks go first.
    ctr = ["ctr", "-a", str(socket), "-n", "k8s.io"]
    for task in subprocess.run(ctr + ["task", "ls", "-q"], capture_output=True, text=True).stdout.split():
        subprocess.run(ctr + ["task", "kill", "--all", "-s", "SIGKILL", task], capture_output=True)
        subprocess.run(ctr + ["task", "delete", "--force", task], capture_output=True, timeout=60)
    daemon.terminate()
    daemon.wait(timeout=30)
    log.close()
    for mount in reversed([line.split()[1] for line in open("/proc/self/mounts") if f" {base}/" in line]):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    for controller in os.listdir("/sys/fs/cgroup"):
        path = os.path.join("/sys/fs/cgroup", controller, call.cgroup_parent.lstrip("/"))
        if os.path.isdir(path) and not os.path.islink(os.path.dirname(path)):
            os.rmdir(path)


# A CNI plugin that configures nothing but the loopback: containerd makes the pod's network namespace and
# asks for an address; the test needs the namespace (and 127.0.0.1 in it), not a route to the host.
FAKE_CNI = """#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}' ;;
ADD) nsenter --net="$CNI_NETNS" ip link set lo up
     if [ "$(basename "$0")" = loopback ]; then name=lo address=127.0.0.1/8; else name=eth0 address=10.254.77.2/24; fi
     printf '{"cniVersion":"0.4.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[{"version":"4","address":"%s","interface":0}]}' \\
         "$name" "$CNI_NETNS" "$address" ;;
esac
"""


def _fake_cni(directory) -> None:
    (directory / "bin").mkdir(parents=True)
    (directory / "conf").mkdir()
    for name in ("loopback", "capsa-fake-net"):
        (directory / "bin" / name).write_text(FAKE_CNI)
        (directory / "bin" / name).chmod(0o755)
    (directory / "conf" / "10-capsa-test.conflist").write_text(json.dumps(
        {"cniVersion": "0.4.0", "name": "capsa-test", "plugins": [{"type": "capsa-fake-net"}]}))


def _capsa_state(cri, container_id: str) -> dict:
    result = subprocess.run(capsa_command() + ["--root", cri.state_root, "state", container_id],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _exec(cri, container_id: str, *cmd: str) -> tuple[int, str]:
    reply = cri("ExecSync", {"container_id": container_id, "cmd": list(cmd), "timeout": 30})
    return reply["exit_code"], base64.b64decode(reply["stdout"]).decode()


def test_pod_sandbox_with_runtime_handler(cri):
    sandbox_config = {
        "metadata": {"name": "capsa-pod", "uid": "uid-1", "namespace": "default"},
        "log_directory": str(cri.base / "pod-logs"),
        # The node's network namespace: a pod network would need CNI to change the host's interfaces.
        "linux": {"cgroup_parent": cri.cgroup_parent,
                  "security_context": {"namespace_options": {"network": "NODE", "pid": "POD"}}},
    }
    pod = cri("RunPodSandbox", {"config": sandbox_config, "runtime_handler": "capsa"})["pod_sandbox_id"]
    try:
        status = cri("PodSandboxStatus", {"pod_sandbox_id": pod, "verbose": True})
        assert status["status"]["state"] == "SANDBOX_READY" and status["status"]["runtime_handler"] == "capsa"
        # The sandbox (pause) container is capsa's: its state is in capsa's root, with the pid CRI reports.
        sandbox_pid = json.loads(status["info"]["info"])["pid"]
        assert _capsa_state(cri, pod)["pid"] == sandbox_pid and _capsa_state(cri, pod)["status"] == "running"

        container = cri("CreateContainer", {
            "pod_sandbox_id": pod, "sandbox_config": sandbox_config,
            "config": {"metadata": {"name": "app"}, "image": {"image": IMAGE}, "log_path": "app.log",
                       "command": ["sh", "-c", "echo started; exec sleep 1000"], "envs": [{"key": "X", "value": "1"}]},
        })["container_id"]
        cri("StartContainer", {"container_id": container})
        assert cri("ContainerStatus", {"container_id": container})["status"]["state"] == "CONTAINER_RUNNING"
        assert _capsa_state(cri, container)["status"] == "running"

        # Exec (what kubelet's exec probes use). The pod's ipc namespace (the sandbox's); the node's uts and network
        # namespaces, as kubelet asks for a hostNetwork pod (with no hostname: runc and capsa refuse a hostname
        # without a uts namespace); the pod's pid namespace (shareProcessNamespace), whose pid 1 is the sandbox's
        # process; the container's environment.
        code, out = _exec(cri, container, "sh", "-c", "for ns in ipc uts net; do readlink /proc/self/ns/$ns; done; "
                                                      "tr '\\0' ' ' < /proc/1/cmdline; echo; echo $X")
        lines = out.splitlines()
        assert code == 0 and lines[-2:] == ["/bin/sleep 100000 ", "1"], out
        assert lines[:3] == [os.readlink(f"/proc/{sandbox_pid}/ns/ipc"), os.readlink("/proc/self/ns/uts"),
                             os.readlink("/proc/self/ns/net")], out
        assert lines[0] != os.readlink("/proc/self/ns/ipc")
        assert _exec(cri, container, "sh", "-c", "exit 3")[0] == 3

        # StopContainer: SIGTERM (the sleep is not pid 1 in the pod's pid namespace, so it dies of it); the shim
        # then runs `kill --all ID 9` on the stopped container for what the init left in the shared namespace.
        cri("StopContainer", {"container_id": container, "timeout": 10})
        stopped = cri("ContainerStatus", {"container_id": container})["status"]
        assert stopped["state"] == "CONTAINER_EXITED" and stopped["exit_code"] == 128 + 15, stopped
        assert "stdout F started" in (cri.base / "pod-logs" / "app.log").read_text()
        cri("RemoveContainer", {"container_id": container})
    finally:
        cri("StopPodSandbox", {"pod_sandbox_id": pod}, check=False)
        cri("RemovePodSandbox", {"pod_sandbox_id": pod}, check=False)
    assert not os.path.exists(os.path.join(cri.state_root, pod))


def _ns(pid: int, kind: str) -> tuple[int, int]:
    info = os.stat(f"/proc/{pid}/ns/{kind}")
    return info.st_dev, info.st_ino


def test_pod_containers_share_the_sandbox(cri):
    """Two containers in one pod with its own network namespace (made by containerd, joined by path): they talk
    over 127.0.0.1, share the hostname and the IPC namespace, keep their own mount namespace and rootfs, nest
    their cgroups in the pod's; StopPodSandbox and RemovePodSandbox leave nothing in capsa's root or the cgroups."""
    sandbox_config = {
        "metadata": {"name": "capsa-pod2", "uid": "uid-2", "namespace": "default"},
        "hostname": "capsa-pod2",
        "log_directory": str(cri.base / "pod2-logs"),
        "linux": {"cgroup_parent": cri.cgroup_parent,
                  "security_context": {"namespace_options": {"network": "POD", "pid": "CONTAINER", "ipc": "POD"}}},
    }
    pod = cri("RunPodSandbox", {"config": sandbox_config, "runtime_handler": "capsa"})["pod_sandbox_id"]
    members = []
    try:
        holder = _capsa_state(cri, pod)["pid"]
        sandbox = json.loads(subprocess.run(capsa_command() + ["--root", cri.state_root, "sandbox", "state", pod],
                                            capture_output=True, text=True, check=True).stdout)
        assert sandbox["state"] == "running" and sandbox["cgroupParent"] == cri.cgroup_parent
        # The server's stdin never at EOF: busybox nc ends on it, at times before the client's line came.
        for name, command in (("server", "sleep 1000 | nc -l -p 8080 > /got; exec sleep 1000"),
                              ("client", "exec sleep 1000")):
            members.append(cri("CreateContainer", {
                "pod_sandbox_id": pod, "sandbox_config": sandbox_config,
                "config": {"metadata": {"name": name}, "image": {"image": IMAGE}, "log_path": f"{name}.log",
                           "command": ["sh", "-c", command]},
            })["container_id"])
            cri("StartContainer", {"container_id": members[-1]})
        server, client = members
        pids = [_capsa_state(cri, cid)["pid"] for cid in members]
        # From the host: the pod's network, IPC and UTS namespaces (the holder's, by inode); a mount namespace each.
        for kind in ("net", "ipc", "uts"):
            assert _ns(pids[0], kind) == _ns(pids[1], kind) == _ns(holder, kind) != _ns(os.getpid(), kind), kind
        assert len({_ns(p, "mnt") for p in [holder, *pids]}) == 3
        assert sorted(m["id"] for m in sandbox_members(cri, pod)) == sorted(members)
        # From inside: 127.0.0.1 reaches the other container; the pod's hostname; its own rootfs.
        assert _exec(cri, client, "sh", "-c", "echo hello-pod | nc 127.0.0.1 8080")[0] == 0
        deadline = time.monotonic() + 10
        while _exec(cri, server, "cat", "/got")[1] != "hello-pod\n":
            assert time.monotonic() < deadline, _exec(cri, server, "cat", "/got")
            time.sleep(0.05)
        assert _exec(cri, client, "cat", "/got")[0] != 0
        assert _exec(cri, client, "hostname")[1].strip() == _exec(cri, server, "hostname")[1].strip() == "capsa-pod2"
        assert _exec(cri, client, "readlink", "/proc/self/ns/ipc")[1] == _exec(cri, server, "readlink", "/proc/self/ns/ipc")[1]
        for cid in [pod, *members]:
            assert os.path.isdir(f"/sys/fs/cgroup/pids{cri.cgroup_parent}/{cid}")
    finally:
        cri("StopPodSandbox", {"pod_sandbox_id": pod}, check=False)
        cri("RemovePodSandbox", {"pod_sandbox_id": pod}, check=False)
    leftovers = [n for n in os.listdir(cri.state_root) if n != "@sandbox"]
    assert leftovers == [] and os.listdir(os.path.join(cri.state_root, "@sandbox")) == []
    assert [h for h in os.listdir("/sys/fs/cgroup") if os.path.isdir(f"/sys/fs/cgroup/{h}{cri.cgroup_parent}")] == []


def sandbox_members(cri, pod: str) -> list[dict]:
    result = subprocess.run(capsa_command() + ["--root", cri.state_root, "sandbox", "state", pod],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)["members"]
