"""Benchmark of capsa's Python API: a cold capsa.run(["/bin/true"]) against bubblewrap, runc and crun.

    sudo .venv/bin/python bench/bench_api.py [--runs 100] [--throughput 1000]

Every contender is timed from this one Python program, call to result, in turns (round-robin, so
that the machine's drift hits them alike), the cold ones first and then the pooled ones (no pool
alive while the cold ones run: a pool refills in the background): capsa.run; `bwrap --unshare-all --ro-bind /
/ true`, `runc run` and `crun run` (busybox bundle, /bin/true, runc's default config) spawned with
subprocess; the same in a capsa.Pool of 4 warm sandboxes (pool.run: each sandbox's agent
prepares the next run's process meanwhile). Also `python3 -c 'print(1)'` in capsa.HostTools() against bwrap over the host's root (with a
/dev of its own: the host's /dev/null is not writable from bwrap's user namespace).
Prints median and p99 in milliseconds, the CPU time of a cold run's processes (cpu_ms), and the memory an idle pooled sandbox holds. As bench_runtime.py, crun 1.8 needs this host's hybrid cgroup
layout hidden: the bench re-runs itself in a private mount namespace with /sys/fs/cgroup/unified
unmounted. Not a test: nothing fails on a timing.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from hostns import rerun_without_unified_cgroup2


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def make_bundle(directory: str, args: list[str]) -> str:
    from capsa import jsonfast
    from capsa.bundle import make_bundle as build

    bundle = build(os.path.join(directory, "bundle"), args)
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        spec = jsonfast.loads(f.read())
    spec["process"]["terminal"] = False
    spec["ociVersion"] = "1.0.2"  # crun 1.8 refuses 1.3.0
    with open(path, "w") as f:
        f.write(jsonfast.dumps_indent(spec))
    return bundle


def cold_contenders(bundle: str, state: str) -> dict:
    """A fresh sandbox each: capsa.run, and the tools spawned with subprocess."""
    import capsa

    rootfs = os.path.join(bundle, "rootfs")
    counter = iter(range(10**9))
    found = {
        "capsa.run /bin/true": lambda: capsa.run(["/bin/true"], rootfs=rootfs),
        # The same with cgroup limits set (memory, pids, CPU quota): what the cold run says.
        "capsa.run /bin/true, limits": lambda: capsa.run(["/bin/true"], rootfs=rootfs, memory="256M", pids=64,
                                                          cpus=1.0),
        "capsa.run python3 (HostTools)": lambda: capsa.run(["python3", "-c", "print(1)"], rootfs=capsa.HostTools()),
        # The host's true (coreutils, dynamic), as bwrap's row runs it.
        "capsa.run true (HostTools)": lambda: capsa.run(["true"], rootfs=capsa.HostTools()),
    }
    devnull = subprocess.DEVNULL
    if shutil.which("bwrap"):
        found["bwrap --unshare-all true"] = lambda: subprocess.run(
            ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"], stdout=devnull, check=True)
        # capsa.run's payload in the busybox rootfs: busybox's static true, ~0.3 ms cheaper to
        # exec than the host's dynamic one (no ld.so, no libc to map and relocate).
        found["bwrap --unshare-all busybox true"] = lambda: subprocess.run(
            ["bwrap", "--unshare-all", "--ro-bind", "/", "/", os.path.join(rootfs, "bin", "busybox"), "true"],
            stdout=devnull, check=True)
        found["bwrap --unshare-all python3"] = lambda: subprocess.run(
            ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "/usr/bin/python3", "-c", "print(1)"],
            stdout=devnull, check=True)
    for runtime in ("runc", "crun"):
        if shutil.which(runtime):
            root = os.path.join(state, runtime)
            found[f"{runtime} run /bin/true"] = (
                lambda runtime=runtime, root=root: subprocess.run(
                    [runtime, "--root", root, "run", "--bundle", bundle, f"b{next(counter)}"], stdout=devnull,
                    stderr=devnull, check=True))
    return found


def pooled_contenders(bundle: str, pools: list) -> dict:
    """Runs in a capsa.Pool of 4 warm sandboxes: measured after the cold ones, with no pool
    alive while those run (a pool refills its sandboxes in the background after each run, which
    would take CPU from whatever is timed next on this 2-core machine)."""
    import capsa

    rootfs = os.path.join(bundle, "rootfs")
    pool = capsa.Pool(4, rootfs=rootfs)
    host_pool = capsa.Pool(4, rootfs=capsa.HostTools())
    pools += [pool, host_pool]
    return {
        "Pool(4).run /bin/true": lambda: pool.run(["/bin/true"]),
        "Pool(4).run python3 (HostTools)": lambda: host_pool.run(["python3", "-c", "print(1)"]),
    }


def timed(calls: dict, runs: int, cpu: dict[str, float] | None = None) -> dict[str, list[float]]:
    """Each call `runs` times, in turns (round-robin, so that the machine's drift hits them
    alike), after one warm-up call each (page cache, the HostTools skeleton); milliseconds.
    `cpu`, if given, gets each call's CPU time per run (see cpu_ms)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    spent = dict.fromkeys(calls, 0.0)
    for call in calls.values():
        call()
    for _ in range(runs):
        for name, call in calls.items():
            used = cpu_ms()
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000)
            settle(name)
            spent[name] += cpu_ms() - used
    if cpu is not None:
        # Not bwrap's: its pid 1 is not waited for by the bwrap we wait for, so its time reaches
        # no counter of ours (measured: 1.7 ms of CPU for a 16 ms python3 -c 'print(1)').
        cpu.update((name, total / runs) for name, total in spent.items() if not name.startswith("bwrap"))
    return times


def settle(name: str) -> None:
    """After a cold capsa run, outside its wall time but inside its CPU: wait for the zygote to
    delete the run's container, which it does after reporting the run's end, while run() returns
    (zygote.Zygote.settle). Else the next contender would start while it does: the next capsa one
    would wait for it, another would share the machine with it."""
    if name.startswith("capsa.run"):
        from capsa.api.zygote import zygote

        zygote().settle()


def back_to_back(calls: dict, runs: int, block: int = 20) -> dict[str, list[float]]:
    """Each call `runs` times, in blocks of `block` runs of one call (alternated between the
    calls, against the machine's drift): a program that runs sandboxes one after another. A cold
    capsa run's delete, which its zygote does after the run has returned, is then in the next
    run's time (the zygote serves the next request after it)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(0, runs, block):
        for name, call in calls.items():
            for _ in range(block):
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1000)
    return times


def cpu_ms() -> float:
    """CPU milliseconds used so far by this program, by the children it waited for (a tool spawned
    with subprocess, with every process it waited for in turn: runc's init, bwrap's child) and by
    capsa's zygote with the inits it reaped (a cold run's processes). Kernel and user time; the
    kernel counts in ticks, so only a sum over many runs means something. Orphans re-parented to
    this program (a subreaper: capsa's API makes it one), bwrap's pid 1 for one, are reaped here,
    so the time of one reaped late counts in the call measured then: an approximate figure,
    best compared between runs of the bench rather than read alone."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    from capsa.api.zygote import zygote

    pid = zygote().pid
    if pid is not None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
        except OSError:
            pass
    return total * 1000


def smaps_rollup(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return {line.split()[0].rstrip(":"): int(line.split()[1]) for line in f if line[0].isupper()}


def unique_pages(pids: list[int]) -> int:
    """KiB of the pages mapped by these processes and by no other: what would be freed if they
    all ended (USS misses the pages they share only with each other: those a process wrote
    before it forked the other). Through /proc/<pid>/pagemap and /proc/kpagecount (root)."""
    import struct

    seen: dict[int, int] = {}
    for pid in pids:
        with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            for line in maps:
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                if line.rstrip().endswith("[vsyscall]"):
                    continue
                pagemap.seek(start // 4096 * 8)
                data = pagemap.read((end - start) // 4096 * 8)
                for (entry,) in struct.iter_unpack("Q", data):
                    if entry >> 63:
                        pfn = entry & ((1 << 55) - 1)
                        seen[pfn] = seen.get(pfn, 0) + 1
    unique = 0
    with open("/proc/kpagecount", "rb") as counts:
        for pfn, mapped_here in seen.items():
            counts.seek(pfn * 8)
            (count,) = struct.unpack("Q", counts.read(8))
            unique += count == mapped_here
    return unique * 4


_ROLES = {"memfd:capsa-hol": "init (holder)", "memfd:capsa-slo": "prepared slot (waiter)"}


def role_of(pid: int) -> str:
    """What a process of an idle pooled sandbox is, by its name: the init (capsa.api.holder), the
    prepared slot (capsa.api.waiter), else the agent (Python)."""
    with open(f"/proc/{pid}/comm") as f:
        return _ROLES.get(f.read().strip(), "agent")


def idle_memory(pool) -> None:
    """What an idle pooled sandbox holds outside any run: its processes (the agent, its prepared
    slot and, on x86-64, the init holding the sandbox; USS: pages only they have; PSS: their
    share of what they share with the zygote they were forked from, and with each other; pages
    of their own: USS and the pages only they share between them), each process's own pages,
    and its memory cgroup's charge; and the pool's zygote and its template (capsa.api.zygote:
    one per program, whatever the number of sandboxes)."""
    time.sleep(1)  # every sandbox idle, its next run's process prepared
    rows = []
    per_role: dict[str, list[int]] = {}
    for sandbox in list(pool._all):
        cgroup = sandbox.container.cgroup()
        uss = pss = 0
        unique = unique_pages(cgroup.pids())
        for pid in cgroup.pids():
            fields = smaps_rollup(pid)
            uss += fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
            pss += fields.get("Pss", 0)
            per_role.setdefault(role_of(pid), []).append(unique_pages([pid]))
        memory = cgroup.path_for("memory")
        usage = "memory.current" if cgroup.cgroup2_dir() == memory else "memory.usage_in_bytes"
        with open(f"{memory}/{usage}") as f:
            charged = int(f.read()) // 1024
        rows.append((uss, pss, unique, charged))
    uss, pss, unique, charged = (statistics.median(column) for column in zip(*rows, strict=True))
    print(f"\nidle pooled sandbox (its agent, prepared process and init), median of {len(rows)}: USS {uss / 1024:.1f} MiB, "
          f"PSS {pss / 1024:.1f} MiB, pages of its own {unique / 1024:.1f} MiB, "
          f"memory cgroup charge {charged / 1024:.1f} MiB ({unique * 1024:,.0f} bytes of its own)")
    print("  pages of its own per process, median: " + ", ".join(
        f"{role} {statistics.median(values):.0f} KiB" for role, values in sorted(per_role.items())))
    try:
        from capsa.api.zygote import zygote

        zygote_pid = zygote().pid
        for name, pid in (("zygote", zygote_pid), *(("zygote's template", child) for child in python_children(zygote_pid))):
            fields = smaps_rollup(pid)
            print(f"the program's {name}: RSS {fields['Rss'] / 1024:.1f} MiB, USS "
                  f"{(fields.get('Private_Clean', 0) + fields.get('Private_Dirty', 0)) / 1024:.1f} MiB, "
                  f"PSS {fields['Pss'] / 1024:.1f} MiB")
    except (ImportError, TypeError, OSError):
        pass  # a version without a zygote


def python_children(pid: int) -> list[int]:
    """The children of `pid` that run Python (the zygote's template; the sandboxes' inits it
    reaps are the holder or, elsewhere than x86-64, agents, which are in no cgroup's list here)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(child) for child in f.read().split()]
    found = []
    for child in children:
        with open(f"/proc/{child}/comm") as f:
            if f.read().startswith("python"):
                found.append(child)
    return found


def throughput(count: int, bundle: str, state: str) -> None:
    """Runs per second for `count` short runs (/bin/true), 4 and 8 at a time: through a
    capsa.Pool of that size, and bwrap, runc and crun spawned from as many threads."""
    from concurrent.futures import ThreadPoolExecutor

    import capsa

    rootfs = os.path.join(bundle, "rootfs")
    print(f"\nthroughput: {count} runs of /bin/true, runs per second")
    spawned = spawned_contenders(bundle, state)
    for width in (4, 8):
        with capsa.Pool(width, rootfs=rootfs) as pool:
            rows = {f"capsa.Pool({width})": lambda pool=pool: pool.run(["/bin/true"]), **spawned}
            for name, call in rows.items():
                start = time.perf_counter()
                with ThreadPoolExecutor(width) as workers:
                    list(workers.map(lambda _, call=call: call(), range(count)))
                print(f"{name + f', {width} at a time':32} {count / (time.perf_counter() - start):8.0f}")


def spawned_contenders(bundle: str, state: str) -> dict:
    counter = iter(range(10**9))
    devnull = subprocess.DEVNULL
    rows = {}
    if shutil.which("bwrap"):
        rows["bwrap --unshare-all"] = lambda: subprocess.run(
            ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"], stdout=devnull, check=True)
    for runtime in ("runc", "crun"):
        if shutil.which(runtime):
            root = os.path.join(state, runtime)
            rows[f"{runtime} run"] = (lambda runtime=runtime, root=root: subprocess.run(
                [runtime, "--root", root, "run", "--bundle", bundle, f"t{next(counter)}"], stdout=devnull,
                stderr=devnull, check=True))
    return rows


def main() -> int:
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 100
    rerun = rerun_without_unified_cgroup2(sys.argv)
    if rerun is not None:
        return rerun
    work = tempfile.mkdtemp(prefix="capsa-bench-api-")
    state = tempfile.mkdtemp(prefix="capsa-bench-api-", dir="/run")
    try:
        bundle = make_bundle(work, ["/bin/true"])
        path = work
        while path != "/":  # the sandbox's root (an unprivileged uid) must reach the rootfs
            os.chmod(path, os.stat(path).st_mode | 0o055)
            path = os.path.dirname(path)
        cpu: dict[str, float] = {}
        cold_calls = cold_contenders(bundle, state)
        times = timed(cold_calls, runs, cpu)
        # Back to back before any pool exists (a pool's sandboxes would share the machine).
        pairs = {name: cold_calls[name] for name in ("capsa.run /bin/true", "bwrap --unshare-all true",
                                                     "bwrap --unshare-all busybox true") if name in cold_calls}
        loop = {name: statistics.median(values) for name, values in back_to_back(pairs, runs).items()} \
            if len(pairs) == 3 else {}
        pools: list = []
        times.update(timed(pooled_contenders(bundle, pools), runs))
        print(f"{runs} runs each, milliseconds, call to result; CPU: per run, all its processes (cold runs only:")
        print("a pooled run's agent is neither waited for nor the zygote; not bwrap's, see timed())")
        print(f"{'contender':32} {'median':>8} {'p99':>8} {'CPU':>8}")
        for name, values in times.items():
            used = f"{cpu[name]:8.1f}" if name in cpu else ""
            print(f"{name:32} {statistics.median(values):8.1f} {percentile(values, 0.99):8.1f} {used}")
        for ours in ("capsa.run /bin/true", "capsa.run /bin/true, limits", "capsa.run true (HostTools)"):
            cold = statistics.median(times[ours])
            for other in ("bwrap --unshare-all true", "bwrap --unshare-all busybox true", "runc run /bin/true",
                          "crun run /bin/true"):
                if other in times:
                    ratio = f", CPU {cpu[ours] / cpu[other]:.2f}x" if other in cpu else ""
                    print(f"{ours} / {other}: {cold / statistics.median(times[other]):.2f}x (medians){ratio}")
        if loop:
            print(f"back to back, {runs} runs each in blocks of 20, medians: " + ", ".join(
                f"{name} {value:.2f} ms" for name, value in loop.items()))
            ours = loop["capsa.run /bin/true"]
            print(f"  capsa.run /bin/true / bwrap --unshare-all true: {ours / loop['bwrap --unshare-all true']:.2f}x; "
                  f"/ bwrap --unshare-all busybox true: {ours / loop['bwrap --unshare-all busybox true']:.2f}x")
        idle_memory(pools[0])
        if "--throughput" in sys.argv:
            throughput(int(sys.argv[sys.argv.index("--throughput") + 1]), bundle, state)
        for pool in pools:
            pool.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
