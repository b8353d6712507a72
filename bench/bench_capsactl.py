"""capsactl against podman, side by side in one run (issue 17's performance part).

    capsactl run --rm --network none IMAGE true    (capsa's library in process, its own monitor)
    capsactl --runtime runc|crun run --rm --network none IMAGE true
    podman --runtime capsa|runc|crun run --rm --network none IMAGE true    (conmon)
    capsactl ps -a / podman ps -a, each with 100 containers created

Same image (the busybox rootfs, imported into both with their `import`), same storage driver
(overlay), each tool with its own --root/--runroot under a temporary directory; rounds are
interleaved (one of each per round) so that the machine's load falls on all alike. Medians in
milliseconds, ratios to podman with crun.

    python bench/bench_capsactl.py [--runs N] [--ps-runs N] [--containers N]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
IMAGE = "localhost/busybox:latest"

from hostns import rerun_without_unified_cgroup2  # noqa: E402


def arg(argv: list[str], name: str, default: int) -> int:
    return int(argv[argv.index(name) + 1]) if name in argv else default


def timed(command: list[str], env: dict | None = None) -> float:
    with tempfile.TemporaryFile() as stderr:  # a file: conmon may hold a pipe open
        start = time.perf_counter()
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {stderr.read().decode()[-2000:]}")
    return elapsed


class Capsactl:
    def __init__(self, base: str, rootfs: str):
        launcher = os.path.join(os.path.dirname(sys.executable), "capsactl")
        if not os.access(launcher, os.X_OK):
            raise SystemExit("capsactl not found next to this interpreter: run ./setup.sh first")
        self.command = [launcher, "--root", f"{base}/capsactl/root", "--runroot", f"{base}/capsactl/run"]
        subprocess.run([*self.command, "import", "-q", rootfs, "busybox"], check=True, capture_output=True)

    def run(self, runtime: str | None) -> float:
        flags = ["--runtime", runtime] if runtime else []
        return timed([*self.command, *flags, "run", "--rm", "--network", "none", IMAGE, "true"])

    def create(self, count: int) -> None:
        for i in range(count):
            subprocess.run([*self.command, "create", "--name", f"ps{i}", IMAGE, "true"], check=True,
                           capture_output=True)

    def ps(self) -> float:
        return timed([*self.command, "ps", "-a"])

    def close(self) -> None:
        subprocess.run([*self.command, "rm", "-a", "-f", "-t", "0"], capture_output=True)


class Podman:
    def __init__(self, base: str, rootfs: str, capsa: str):
        directory = f"{base}/podman"
        os.makedirs(directory)
        conf = os.path.join(directory, "containers.conf")
        # The host's hard limits are below podman's default ulimits (1048576), which no runtime
        # could set here: its default_ulimits are the host's, as in bench_runtime.
        with open(conf, "w") as f:
            f.write('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
                    '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=conf)
        self.command = ["podman", "--root", f"{directory}/root", "--runroot", f"{directory}/run",
                        "--tmpdir", f"{directory}/tmp"]
        self.runtimes = {"capsa": capsa, "runc": shutil.which("runc"), "crun": shutil.which("crun")}
        self.state = f"{directory}/state"
        archive = os.path.join(directory, "rootfs.tar")
        subprocess.run(["tar", "-C", rootfs, "-cf", archive, "."], check=True)
        subprocess.run([*self.command, "import", archive, IMAGE], check=True, capture_output=True, env=self.env)

    def run(self, runtime: str) -> float:
        path = self.runtimes[runtime]
        return timed([*self.command, "--runtime", path, "--runtime-flag", f"root={self.state}-{runtime}",
                      "run", "--rm", "--network", "none", IMAGE, "true"], self.env)

    def create(self, count: int) -> None:
        for i in range(count):
            subprocess.run([*self.command, "create", "--name", f"ps{i}", "--network", "none", IMAGE, "true"],
                           check=True, capture_output=True, env=self.env)

    def ps(self) -> float:
        return timed([*self.command, "ps", "-a"], self.env)

    def close(self) -> None:
        subprocess.run([*self.command, "rm", "-a", "-f", "-t", "0"], capture_output=True, env=self.env)
        subprocess.run(["umount", "-R", f"{self.command[2]}"], capture_output=True)


def main() -> int:
    argv = sys.argv
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    rerun = rerun_without_unified_cgroup2(argv)
    if rerun is not None:
        return rerun
    runs, ps_runs, containers = arg(argv, "--runs", 20), arg(argv, "--ps-runs", 10), arg(argv, "--containers", 100)
    capsa = os.path.join(os.path.dirname(sys.executable), "capsa")
    base = tempfile.mkdtemp(prefix="capsactl-bench-")
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
    from capsa.bundle import make_rootfs

    rootfs = os.path.join(base, "rootfs")
    make_rootfs(rootfs)
    ctl = pod = None
    try:
        ctl = Capsactl(base, rootfs)
        pod = Podman(base, rootfs, capsa)
        cases = {
            "capsactl (capsa library)": lambda: ctl.run(None),
            "capsactl --runtime runc": lambda: ctl.run(shutil.which("runc")),
            "capsactl --runtime crun": lambda: ctl.run(shutil.which("crun")),
            "podman --runtime capsa": lambda: pod.run("capsa"),
            "podman --runtime runc": lambda: pod.run("runc"),
            "podman --runtime crun": lambda: pod.run("crun"),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for case in cases.values():  # one warm-up each (page cache, first-use files)
            case()
        for _ in range(runs):
            for name, case in cases.items():
                times[name].append(case())
                if os.environ.get("BENCH_VERBOSE"):
                    print(f"{name}: {times[name][-1] * 1000:.1f} ms", file=sys.stderr)
        ctl.create(containers)
        pod.create(containers)
        ps_times: dict[str, list[float]] = {"capsactl ps -a": [], "podman ps -a": []}
        ctl.ps()
        pod.ps()
        for _ in range(ps_runs):
            ps_times["capsactl ps -a"].append(ctl.ps())
            ps_times["podman ps -a"].append(pod.ps())
    finally:
        if ctl:
            ctl.close()
        if pod:
            pod.close()
        subprocess.run(["umount", "-R", base], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    print(report(times, ps_times, runs, ps_runs, containers))
    return 0


def report(times: dict, ps_times: dict, runs: int, ps_runs: int, containers: int) -> str:
    medians = {name: statistics.median(v) * 1000 for name, v in times.items()}
    base = medians["podman --runtime crun"]
    lines = [f"`run --rm IMAGE true`: median of {runs} interleaved rounds, milliseconds (ratio to podman "
             "with crun)", "", "| command | median ms | ratio |", "|---|---|---|"]
    lines += [f"| {name} | {m:.1f} | {m / base:.2f} |" for name, m in medians.items()]
    ps_medians = {name: statistics.median(v) * 1000 for name, v in ps_times.items()}
    lines += ["", f"`ps -a` with {containers} containers created: median of {ps_runs} rounds, milliseconds", "",
              "| command | median ms | ratio |", "|---|---|---|"]
    ps_base = ps_medians["podman ps -a"]
    lines += [f"| {name} | {m:.1f} | {m / ps_base:.2f} |" for name, m in ps_medians.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
