"""Time capsa side by side with runc and crun: `run` of /bin/true and the manager cycle.

    sudo .venv/bin/python bench/bench_runtime.py [--runs N] [--capsa PATH]

Every runtime runs the same bundle (busybox-static rootfs, process /bin/true, no terminal), in
rounds that take each runtime in turn so that drift of the machine hits all of them alike. The
report gives medians and ratios to runc. crun 1.8 refuses this host's hybrid cgroup layout, so
the whole benchmark runs in a private mount namespace with /sys/fs/cgroup/unified unmounted
(the same for every runtime).

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

HERE = os.path.dirname(os.path.abspath(__file__))


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


def timed(argv: list[str], **kwargs) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - start


def run_once(runtime: str, root: str, bundle: str, n: int) -> float:
    return timed([runtime, "--root", root, "run", "--bundle", bundle, f"bench-run-{n}"])


def cycle_once(runtime: str, root: str, bundle: str, n: int) -> float:
    cid = f"bench-cycle-{n}"
    base = [runtime, "--root", root]
    start = time.perf_counter()
    for args in (["create", "--bundle", bundle, cid], ["start", cid], ["state", cid], ["delete", "--force", cid]):
        subprocess.run(base + args, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def state_once(runtime: str, root: str, bundle: str, n: int) -> float:
    return timed([runtime, "--root", root, "state", "bench-state"])


def available(runtime: str, root: str, bundle: str) -> bool:
    try:
        run_once(runtime, root, bundle, 0)
        return True
    except (subprocess.CalledProcessError, FileNotFoundError):
        return False


def main() -> int:
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 30
    capsa = find_capsa(sys.argv[sys.argv.index("--capsa") + 1] if "--capsa" in sys.argv else None)
    if os.environ.get("CAPSA_BENCH_NS") != "1" and os.path.ismount("/sys/fs/cgroup/unified"):
        env = dict(os.environ, CAPSA_BENCH_NS="1")
        script = f"umount /sys/fs/cgroup/unified && exec {sys.executable} {' '.join(sys.argv)}"
        return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env).returncode
    work = tempfile.mkdtemp(prefix="capsa-bench-")
    state_base = tempfile.mkdtemp(prefix="capsa-bench-", dir="/run")
    try:
        bundle = make_bundle(work)
        runtimes = {"capsa": capsa, "runc": shutil.which("runc"), "crun": shutil.which("crun")}
        # State roots on tmpfs, where runtimes keep them in production (/run).
        roots = {name: os.path.join(state_base, name) for name in runtimes}
        runtimes = {n: p for n, p in runtimes.items() if p and available(p, roots[n], bundle)}
        for name, path in runtimes.items():  # a long-lived container for `state`
            subprocess.run([path, "--root", roots[name], "run", "-d", "--bundle", bundle, "bench-state"],
                           check=False, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        results: dict[str, dict[str, list[float]]] = {n: {"run": [], "cycle": [], "state": []} for n in runtimes}
        for n in range(1, runs + 1):
            for name, path in runtimes.items():
                results[name]["run"].append(run_once(path, roots[name], bundle, n))
                results[name]["cycle"].append(cycle_once(path, roots[name], bundle, n))
                results[name]["state"].append(state_once(path, roots[name], bundle, n))
        for name, path in runtimes.items():
            subprocess.run([path, "--root", roots[name], "delete", "--force", "bench-state"], check=False)
        print(report(results, runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(state_base, ignore_errors=True)
    return 0


def report(results: dict[str, dict[str, list[float]]], runs: int) -> str:
    medians = {n: {k: statistics.median(v) * 1000 for k, v in r.items()} for n, r in results.items()}
    base = medians.get("runc")
    lines = [f"median of {runs} runs, milliseconds (ratio to runc)", "",
             "| runtime | run /bin/true | create+start+state+delete | state |", "|---|---|---|---|"]
    for name, m in medians.items():
        cells = []
        for key in ("run", "cycle", "state"):
            ratio = f" ({m[key] / base[key]:.2f}x)" if base else ""
            cells.append(f"{m[key]:.1f}{ratio}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
