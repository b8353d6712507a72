"""Time capsa side by side with runc and crun, as managers call them.

    sudo .venv/bin/python bench/bench_runtime.py [--runs N] [--batch-rounds N] [--capsa PATH] [--no-podman]

Measured, medians over rounds, with ratios to runc:
- `run` of /bin/true (create + start + wait + delete in one call);
- the manager cycle: create, start, state, delete (four calls, as podman/conmon and containerd's
  shim make them), with runc's default config.json and again with the one podman writes (its
  seccomp profile included);
- `state` of a running container; `exec` of /bin/true into it;
- `podman run --rm --network none IMG true` with each runtime as podman's --runtime;
- 100 containers created, started and deleted in sequence, and 20 at once (wall time of the batch);
- peak RSS of each kind of call (GNU time's %M, in a separate pass: a child of the Python bench
  would start from the bench's own high-water mark).

Every runtime runs the same bundle (busybox-static rootfs, process /bin/true, no terminal), in
rounds that take each runtime in turn so that drift of the machine hits all of them alike. crun
1.8 refuses this host's hybrid cgroup layout, so the whole benchmark runs in a private mount
namespace with /sys/fs/cgroup/unified unmounted (the same for every runtime).

Not a test: nothing fails on a timing.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from hostns import rerun_without_unified_cgroup2

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGE = "localhost/capsa-bench-busybox:latest"


def find_capsa(given: str | None) -> str:
    for candidate in (given, os.path.join(os.path.dirname(sys.executable), "capsa"), shutil.which("capsa")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("capsa not found: run ./setup.sh first or pass --capsa PATH")


def make_bundle(directory: str) -> str:
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
    from capsa import jsonfast
    from capsa.bundle import make_bundle as build

    bundle = os.path.join(directory, "bundle")
    build(bundle, ["/bin/true"])
    # crun 1.8 refuses ociVersion 1.3.0 ("unknown version specified"): give every runtime 1.0.2.
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        spec = jsonfast.loads(f.read())
    spec["ociVersion"] = "1.0.2"
    with open(path, "w") as f:
        f.write(jsonfast.dumps_indent(spec))
    return bundle


def make_sleeper_bundle(bundle: str) -> str:
    """A second bundle on the same rootfs whose process sleeps: a running container to query."""
    from capsa import jsonfast

    with open(os.path.join(bundle, "config.json")) as f:
        spec = jsonfast.loads(f.read())
    spec["root"]["path"] = os.path.join(bundle, "rootfs")
    spec["process"]["args"] = ["sleep", "1000000"]
    sleeper = bundle + "-sleeper"
    os.makedirs(sleeper)
    with open(os.path.join(sleeper, "config.json"), "w") as f:
        f.write(jsonfast.dumps_indent(spec))
    return sleeper


class Runtime:
    """One runtime binary with its own state root; every call records time and peak RSS."""

    def __init__(self, name: str, path: str, root: str, bundle: str):
        self.name, self.path, self.root, self.bundle = name, path, root, bundle
        self.rss_kb: dict[str, list[int]] = {}

    def call(self, *args: str, check: bool = True) -> float:
        """Run `runtime --root ROOT args...`; return its wall time in seconds."""
        # stderr goes to a file, not a pipe: the container's init inherits the runtime's stdio
        # (create, run -d) and would hold a pipe open long after the call returns.
        with tempfile.TemporaryFile() as stderr:
            start = time.perf_counter()
            proc = subprocess.run([self.path, "--root", self.root, *args],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
            elapsed = time.perf_counter() - start
            if check and proc.returncode != 0:
                stderr.seek(0)
                message = stderr.read().decode(errors="replace")
                raise RuntimeError(f"{self.name} {' '.join(args)} exited {proc.returncode}: {message}")
        return elapsed

    def peak_rss_kb(self, *args: str) -> int:
        """The peak RSS of one call, measured by GNU time: a small process must fork the runtime,
        since a child of this Python process starts with its parent's high-water mark."""
        with tempfile.NamedTemporaryFile("r") as out:
            subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name, self.path, "--root", self.root, *args],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=True)
            kb = int(out.read().split()[-1])
        self.rss_kb.setdefault(args[0], []).append(kb)
        return kb

    def measure_rss(self) -> None:
        """Every kind of call once, each under GNU time."""
        cid = "bench-rss"
        self.peak_rss_kb("run", "--bundle", self.bundle, cid)
        self.peak_rss_kb("create", "--bundle", self.bundle, cid)
        self.peak_rss_kb("start", cid)
        self.peak_rss_kb("state", "bench-long")
        self.peak_rss_kb("exec", "bench-long", "/bin/true")
        self.peak_rss_kb("delete", "--force", cid)

    def run(self, n: int) -> float:
        return self.call("run", "--bundle", self.bundle, f"bench-run-{n}")

    def cycle(self, n: int, bundle: str | None = None, tag: str = "cycle") -> float:
        cid = f"bench-{tag}-{n}"
        return (self.call("create", "--bundle", bundle or self.bundle, cid) + self.call("start", cid)
                + self.call("state", cid) + self.call("delete", "--force", cid))

    def create_start_delete(self, cid: str) -> None:
        self.call("create", "--bundle", self.bundle, cid)
        self.call("start", cid)
        self.call("delete", "--force", cid)

    def available(self) -> bool:
        try:
            self.run(0)
            return True
        except (RuntimeError, OSError):
            return False


def sequence(runtime: Runtime, count: int, tag: str) -> float:
    start = time.perf_counter()
    for i in range(count):
        runtime.create_start_delete(f"bench-seq-{tag}-{i}")
    return time.perf_counter() - start


def parallel(runtime: Runtime, count: int, tag: str) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(runtime.create_start_delete, [f"bench-par-{tag}-{i}" for i in range(count)]))
    return time.perf_counter() - start


class Podman:
    """podman with its own storage and config (vfs, cgroupfs), a busybox image imported once."""

    def __init__(self, work: str, rootfs: str):
        self.base = os.path.join(work, "podman")
        os.makedirs(self.base)
        conf = os.path.join(self.base, "containers.conf")
        with open(conf, "w") as f:
            f.write('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
                    '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=conf)
        self.command = ["podman", "--root", f"{self.base}/root", "--runroot", f"{self.base}/run",
                        "--storage-driver", "vfs", "--tmpdir", f"{self.base}/tmp"]
        archive = os.path.join(self.base, "rootfs.tar")
        subprocess.run(["tar", "-C", rootfs, "-cf", archive, "."], check=True)
        self._podman("import", archive, IMAGE)

    def _podman(self, *args: str) -> None:
        with tempfile.TemporaryFile() as stderr:  # a file: conmon may keep a pipe open
            done = subprocess.run(self.command + list(args), env=self.env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=stderr)
            if done.returncode != 0:
                stderr.seek(0)
                raise RuntimeError(f"podman {' '.join(args)} exited {done.returncode}: {stderr.read().decode()}")

    def run(self, runtime: Runtime) -> float:
        start = time.perf_counter()
        self._podman("--runtime", runtime.path, "--runtime-flag", f"root={runtime.root}-podman",
                     "run", "--rm", "--network", "none", IMAGE, "true")
        return time.perf_counter() - start

    def config_bundle(self, runtime: Runtime, rootfs: str, directory: str) -> str:
        """A bundle with the config.json podman writes for `podman create IMG true` (its seccomp
        profile, capabilities, masked paths, mounts, rlimits): the config a manager's cycle runs.
        The bind mounts of podman's own files and its cgroup path are left out."""
        from capsa import jsonfast

        flags = ["--runtime", runtime.path, "--runtime-flag", f"root={runtime.root}-podman"]
        self._podman(*flags, "create", "--name", "bench-config", "--network", "none", IMAGE, "true")
        self._podman(*flags, "init", "bench-config")
        found = subprocess.run(self.command + ["inspect", "--format", "{{.Id}}", "bench-config"], env=self.env,
                               capture_output=True, text=True, check=True).stdout.strip()
        with open(f"{self.base}/root/vfs-containers/{found}/userdata/config.json") as f:
            spec = jsonfast.loads(f.read())
        self._podman(*flags, "rm", "--force", "bench-config")  # the same runtime and root, or its init stays
        spec["root"] = {"path": rootfs}
        spec["mounts"] = [m for m in spec["mounts"] if m.get("type") != "bind"]
        spec["linux"].pop("cgroupsPath", None)
        spec["ociVersion"] = "1.0.2"
        bundle = os.path.join(directory, "bundle-podman-config")
        os.makedirs(bundle)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            f.write(jsonfast.dumps_indent(spec))
        return bundle

    def close(self) -> None:
        subprocess.run(self.command + ["rm", "--all", "--force"], env=self.env, capture_output=True)
        subprocess.run(["umount", "-R", f"{self.base}/root"], capture_output=True)


def main() -> int:
    argv = sys.argv
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else 30
    batch_rounds = int(argv[argv.index("--batch-rounds") + 1]) if "--batch-rounds" in argv else 3
    capsa = find_capsa(argv[argv.index("--capsa") + 1] if "--capsa" in argv else None)
    rerun = rerun_without_unified_cgroup2(argv)
    if rerun is not None:
        return rerun
    work = tempfile.mkdtemp(prefix="capsa-bench-")
    state_base = tempfile.mkdtemp(prefix="capsa-bench-", dir="/run")
    podman = None
    try:
        bundle = make_bundle(work)
        # State roots on tmpfs, where runtimes keep them in production (/run).
        candidates = [Runtime(name, path, os.path.join(state_base, name), bundle)
                      for name, path in (("capsa", capsa), ("runc", shutil.which("runc")), ("crun", shutil.which("crun")))
                      if path]
        runtimes = [r for r in candidates if r.available()]
        if "--no-podman" not in argv and shutil.which("podman"):
            podman = Podman(work, os.path.join(bundle, "rootfs"))
        results: dict[str, dict[str, list[float]]] = {r.name: {} for r in runtimes}

        def record(runtime: Runtime, key: str, seconds: float) -> None:
            results[runtime.name].setdefault(key, []).append(seconds)

        sleeper = make_sleeper_bundle(bundle)
        # The cycle again with the config podman writes (seccomp profile and all), made by podman
        # with capsa as its runtime (the config does not depend on the runtime).
        podman_config = podman.config_bundle(runtimes[0], os.path.join(bundle, "rootfs"), work) if podman else None
        for r in runtimes:  # a long-lived container for `state` and `exec`
            r.call("run", "-d", "--bundle", sleeper, "bench-long")
        for n in range(1, runs + 1):
            for r in runtimes:
                record(r, "run", r.run(n))
                record(r, "cycle", r.cycle(n))
                if podman_config:
                    record(r, "cycle, podman's config", r.cycle(n, podman_config, "pcycle"))
                record(r, "state", r.call("state", "bench-long"))
                record(r, "exec", r.call("exec", "bench-long", "/bin/true"))
                if podman:
                    record(r, "podman run", podman.run(r))
        for n in range(1, batch_rounds + 1):
            for r in runtimes:
                record(r, "100 in sequence", sequence(r, 100, str(n)))
                record(r, "20 in parallel", parallel(r, 20, str(n)))
        print(report(results, runs, batch_rounds))
        if os.access("/usr/bin/time", os.X_OK):  # GNU time (Debian package "time")
            for r in runtimes:
                r.measure_rss()
            print()
            print(rss_report(runtimes))
    finally:
        if podman:
            podman.close()
        for r in candidates if "candidates" in locals() else []:
            subprocess.run([r.path, "--root", r.root, "delete", "--force", "bench-long"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(state_base, ignore_errors=True)
    return 0


def report(results: dict[str, dict[str, list[float]]], runs: int, batch_rounds: int) -> str:
    medians = {n: {k: statistics.median(v) * 1000 for k, v in r.items()} for n, r in results.items()}
    keys = list(next(iter(results.values())).keys())
    base = medians.get("runc")
    lines = [f"median of {runs} rounds ({batch_rounds} for the batches), milliseconds (ratio to runc)", "",
             "| runtime | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, m in medians.items():
        cells = []
        for key in keys:
            ratio = f" ({m[key] / base[key]:.2f}x)" if base and key in base else ""
            cells.append(f"{m[key]:.1f}{ratio}" if key in m else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rss_report(runtimes: list[Runtime]) -> str:
    calls = ["create", "start", "state", "delete", "run", "exec"]
    lines = ["peak RSS of the runtime's own process per call (GNU time %M), MB", "",
             "| runtime | " + " | ".join(calls) + " |", "|---" * (len(calls) + 1) + "|"]
    for r in runtimes:
        cells = [f"{max(r.rss_kb[c]) / 1024:.1f}" if c in r.rss_kb else "-" for c in calls]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
