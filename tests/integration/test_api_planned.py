"""The planned init (capsa.plannedinit) against the Python init (capsa.init), through capsa's
Python API: what a run sees from inside, the errors, a cached plan whose rootfs changed, and
escapes the plan must still stop.

Each variant runs in a Python program of its own: its zygote reads CAPSA_PLANNED_INIT when it
starts (CAPSA_PLANNED_INIT=0: every init in Python). Nothing asserts timing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest
from api_leftovers import leftovers

from capsa import plannedinit
from capsa.bundle import make_rootfs

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="the API's sandboxes are made as root"),
              pytest.mark.skipif(not plannedinit.supported(), reason="the planned init is x86-64 machine code")]


PRELUDE = """
import json, os, sys
import capsa
ROOTFS = sys.argv[1]

def attempt(argv, **kw):
    try:
        r = capsa.run(argv, timeout=30, **kw)
        return {"stdout": r.stdout.decode(errors="replace"), "stderr": r.stderr.decode(errors="replace"),
                "exit_code": r.exit_code}
    except capsa.SandboxError as err:
        return {"error": type(err).__name__, "message": str(err)}

def mine_left():
    from capsa.api.zygote import zygote
    zygote().settle()  # the zygote deletes an ended run's container after reporting its end
    return sorted(n for n in os.listdir("/run/capsa-api/state") if n.startswith(f"api-{os.getpid()}-"))

def zygotes_children():  # its template (a fork kept idle), and the inits of runs under way
    from capsa.api.zygote import zygote
    pid = zygote().pid
    return [c for t in os.listdir(f"/proc/{pid}/task") for c in open(f"/proc/{pid}/task/{t}/children").read().split()]
"""


def searchable(path) -> None:
    """The sandbox's root (an unprivileged host uid) must reach the rootfs."""
    path = str(path)
    while path != "/":
        os.chmod(path, os.stat(path).st_mode | 0o055)
        path = os.path.dirname(path)


@pytest.fixture(scope="module")
def rootfs():
    # Not under pytest's basetemp (another session makes it private again): see test_api.py.
    top = tempfile.mkdtemp(prefix="capsa-planned-test-")
    path = os.path.join(top, "rootfs")
    make_rootfs(path)
    os.mkdir(os.path.join(path, "work"))
    searchable(path)
    yield path
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def rootfs_copy(rootfs):
    """A rootfs of the test's own, to change."""
    top = tempfile.mkdtemp(prefix="capsa-planned-copy-")
    path = os.path.join(top, "rootfs")
    shutil.copytree(rootfs, path, symlinks=True)
    searchable(path)
    yield path
    shutil.rmtree(top, ignore_errors=True)


def start(code: str, *args: str, planned: bool) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "CAPSA_PLANNED_INIT"}
    if not planned:
        env["CAPSA_PLANNED_INIT"] = "0"
    return subprocess.Popen([sys.executable, "-c", PRELUDE + code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def output(program: subprocess.Popen, timeout: float = 120) -> list:
    out, err = program.communicate(timeout=timeout)
    assert program.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


def both(code: str, *args: str) -> tuple[list, list]:
    """What `code` prints with the planned init and with the Python init (at once)."""
    planned, python = start(code, *args, planned=True), start(code, *args, planned=False)
    return output(planned), output(python)




def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if line.split()[4].startswith(path)]


# -- the view from inside -------------------------------------------------------------------------
def masked_and_readonly() -> tuple[list[str], list[str]]:
    from capsa.api.arguments import Limits
    from capsa.api.rootfs import Rootfs
    from capsa.api.spec import build_spec

    linux = build_spec(["true"], Rootfs("/"), Limits(network=True), [], "/")["linux"]
    return linux["maskedPaths"], linux["readonlyPaths"]


def probe_script() -> str:
    masked, readonly = masked_and_readonly()
    lines = [
        'cut -d" " -f3- /proc/self/mountinfo',  # without the mount's id and its parent's
        "echo ---; grep -E '^(Cap|NoNewPrivs|Seccomp|Sig)' /proc/self/status",
        "echo ---; id -u; id -g; id -G; hostname; pwd; umask",
        "echo ---; env | sort",
        "echo ---; ulimit -a",
        "echo ---; ls /proc/self/fd",
        "echo ---; cat /proc/self/cgroup",
        "echo ---",
    ]
    for path in masked:
        lines.append(f'if [ -d {path} ]; then echo "{path} dir $(ls -A {path} | wc -l)"; elif [ -e {path} ]; then '
                     f'echo "{path} file $(head -c 64 {path} | wc -c)"; '
                     f'else echo "{path} absent"; fi')
    for path in readonly:  # read-only: mountinfo says
        lines.append(f'[ -e {path} ] && echo "{path} $(ls -A {path} | wc -l)"')
    return "\n".join(lines) + "\ntrue\n"


CONFIGS = {
    "busybox": "rootfs=ROOTFS",
    "busybox, host network": "rootfs=ROOTFS, network=True",
    "busybox, limits, env, cwd": "rootfs=ROOTFS, memory='64M', pids=32, cpus=0.5, cpu_time=5, file_size='1M', "
                                 "env={'A': 'b c', 'PATH': '/bin:/usr/bin'}, cwd='/tmp'",
    "host tools": "rootfs=capsa.HostTools()",
    "host tools, host network, limits": "rootfs=capsa.HostTools(), network=True, memory='128M', pids=64, "
                                        "env={'LANG': 'C'}, cwd='/work'",
}


def normalised(run: dict) -> dict:
    """The container's id, and the device numbers of filesystems without a device (a new
    tmpfs, proc... each run: new numbers), made the same."""
    def same(text: str) -> str:
        return re.sub(r"^0:\d+ ", "0:N ", re.sub(r"api-\d+-\d+", "api-ID", text), flags=re.MULTILINE)

    return {key: same(value) if isinstance(value, str) else value for key, value in run.items()}


def test_a_run_sees_the_same_with_the_planned_init_and_the_python_init(rootfs):
    code = f"""
SCRIPT = {probe_script()!r}
for config in {list(CONFIGS.values())!r}:
    print(json.dumps(eval(f"attempt(['sh', '-c', SCRIPT], {{config}})")))
with capsa.Sandbox(rootfs=ROOTFS, memory='64M') as sb:  # /work: a bind of the sandbox's scratch
    sb.write_file('/work/kept', b'x')
    r = sb.run(['sh', '-c', SCRIPT + 'ls /work'], timeout=30)
    print(json.dumps({{"stdout": r.stdout.decode(), "stderr": r.stderr.decode(), "exit_code": r.exit_code}}))
"""
    planned, python = both(code, rootfs)
    for name, seen, expected in zip([*CONFIGS, "sandbox"], planned, python, strict=True):
        assert seen.get("exit_code") == 0, (name, seen)
        seen, expected = normalised(seen), normalised(expected)
        assert seen["stdout"].splitlines() == expected["stdout"].splitlines(), name
        assert seen == expected, name
    busybox = planned[0]["stdout"]
    assert "NoNewPrivs:\t1" in busybox and "\nsandbox\n" in busybox and " /work " in busybox  # the probe probes
    assert planned[-1]["stdout"].endswith("\nkept\n")


POOLS = {
    "busybox": "rootfs=ROOTFS",
    "busybox, host network, limits": "rootfs=ROOTFS, network=True, memory='64M', pids=32",
    "host tools": "rootfs=capsa.HostTools()",
}


def test_a_pooled_run_sees_the_same_from_a_planned_slot_and_a_python_one(rootfs):
    # A pool's slots (capsa.api.agent) are set up by a plan the zygote made, run by a child of
    # the agent that shares its memory; CAPSA_PLANNED_INIT=0: in Python, as before.
    code = f"""
SCRIPT = {probe_script()!r}
for config in {list(POOLS.values())!r}:
    with eval(f"capsa.Pool(1, {{config}})") as pool:
        for _ in range(2):  # the first slot, and one made after a run
            r = pool.run(['sh', '-c', SCRIPT + 'touch /tmp/x /work/y /dev/shm/z; ls /tmp /work /dev/shm'], timeout=30)
            print(json.dumps({{"stdout": r.stdout.decode(), "stderr": r.stderr.decode(), "exit_code": r.exit_code}}))
"""
    planned, python = both(code, rootfs)
    names = [f"{name}, run {run}" for name in POOLS for run in (1, 2)]
    for name, seen, expected in zip(names, planned, python, strict=True):
        assert seen.get("exit_code") == 0, (name, seen)
        seen, expected = normalised(seen), normalised(expected)
        assert seen["stdout"].splitlines() == expected["stdout"].splitlines(), name
        assert seen == expected, name
    assert "NoNewPrivs:\t1" in planned[1]["stdout"] and "Seccomp:\t2" in planned[1]["stdout"]
    assert planned[1]["stdout"].endswith("/dev/shm:\nz\n\n/tmp:\nx\n\n/work:\ny\n")  # each run's own scratch


def test_a_pools_slots_are_planned(rootfs):
    # The agent holds the slots' plan (from the zygote) at fixed fds, and a slot is a child of the
    # agent born in its namespaces, not a fork of it: it shares no page of the agent's (its
    # /proc/<pid>/maps is the waiter's few mappings).
    code = """
pool = capsa.Pool(1, rootfs=ROOTFS)
pool.run(['true'])
import time
from capsa.api.zygote import zygote
agents = []
for task in os.listdir(f"/proc/{zygote().pid}/task"):
    for child in open(f"/proc/{zygote().pid}/task/{task}/children").read().split():  # the template
        for agent in open(f"/proc/{child}/task/{child}/children").read().split():
            agents.append(agent)
def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # a process that ended meanwhile
        return ""

def slots_of(agent):
    return [read(f"/proc/{c}/comm").strip() for t in os.listdir(f"/proc/{agent}/task")
            for c in read(f"/proc/{agent}/task/{t}/children").split()]

found = []
for agent in agents:
    fds = {}
    for fd in ("7", "8"):
        try:
            fds[fd] = os.readlink(f"/proc/{agent}/fd/{fd}")
        except OSError:
            pass
    for _ in range(1000):  # the next slot is made once the run is reported (slowly in an emulated guest)
        slots = slots_of(agent)
        if slots == ["memfd:capsa-slo"]:  # comm: 15 characters
            break
        time.sleep(0.01)
    found.append({"plan": fds.get("7", ""), "program": fds.get("8", ""), "slot": slots})
print(json.dumps(found))
pool.close()
"""
    planned, python = both(code, rootfs)
    assert planned[0] and all("capsa-slot-plan" in a["plan"] and "capsa-init" in a["program"] for a in planned[0])
    assert all(a["slot"] == ["memfd:capsa-slo"] for a in planned[0]), planned  # its waiter, exec'd by the planned init
    assert python[0] and all("capsa-slot-plan" not in a["plan"] and a["slot"] == ["memfd:capsa-slo"] for a in python[0])


def test_signals_the_caller_ignores_or_blocks_are_reset_in_the_run(rootfs):
    # Both survive the exec of the zygote: its runs' inits are forked with them.
    code = """
import signal
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
from capsa.api.zygote import zygote
run = attempt(['grep', '^Sig[BI]', '/proc/self/status'], rootfs=ROOTFS)
mine = [line for line in open(f'/proc/{zygote().pid}/status') if line.startswith(('SigBlk', 'SigIgn'))]
print(json.dumps([run, mine]))
"""
    planned, python = both(code, rootfs)
    assert planned == python
    run, zygotes = planned[0]
    blocked, ignored = (int(line.split()[1], 16) for line in zygotes)
    assert blocked & (1 << 9) and ignored & 1  # SIGUSR1, SIGHUP: the test tests
    assert run["stdout"] == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"


def spec_of(argv: list[str], rootfs, **arguments) -> dict:
    """The spec capsa.run makes (capsa.api.oneshot.run)."""
    from capsa.api.arguments import Limits, check_cwd, check_env
    from capsa.api.rootfs import resolve
    from capsa.api.spec import build_spec

    limits = Limits.from_arguments(*(arguments.get(k) for k in ("memory", "cpus", "pids", "cpu_time", "file_size",
                                                                 "scratch")), arguments.get("network", False))
    return build_spec(argv, resolve(rootfs), limits, check_env(arguments.get("env")), check_cwd(arguments.get("cwd", "/work")))


def planned_by_the_zygote(spec: dict, container_id: str = "api-plantest-1"):
    """What capsa.launch.start would plan for this run in the zygote (capsa.create.launch_init,
    capsa.launch._planned_init): None where the Python init sets it up."""
    from capsa import cgroups, init, launch
    from capsa.api.zygote import run_once_controllers

    cgroup = cgroups.for_spec(spec, container_id, controllers=run_once_controllers(spec))
    plan = launch.plan_for_container(spec=spec, rootfs=spec["root"]["path"], container_id=container_id, state={},
                                     listen_fd=-1, cgroup=cgroup, stdio=(0, 1, 2), exec_at_once=True)
    if not (plannedinit.eligible(plan) and launch._born_namespaces(plan)) or cgroup.placed_by_manager:
        return None
    joins = cgroup.self_join_files(with_cgroup2=cgroup.cgroup2_dir() is None)
    return plannedinit.build(plan, init.build_seccomp(plan.seccomp), joins)


@pytest.fixture(scope="module")
def dev_template():
    from capsa.api import spec
    from capsa.api.rootfs import API_DIR

    os.makedirs(API_DIR, 0o755, exist_ok=True)
    spec.dev_template()  # capsa.api.session.setup makes it before the first spec


def test_the_runs_compared_take_the_planned_path(rootfs, dev_template):
    import capsa

    configs = {name: eval(f"dict({config})", {"ROOTFS": rootfs, "capsa": capsa}) for name, config in CONFIGS.items()}
    assert plannedinit.enabled()
    for name, arguments in configs.items():
        planned = planned_by_the_zygote(spec_of(["sh", "-c", "true"], **arguments))
        assert planned is not None, name
        assert planned.executable == "sh" and planned.why[-1] == "exec:"
    scratch = tempfile.mkdtemp(prefix="capsa-planned-scratch-")  # a Sandbox's /work (capsa.api.session.make_scratch)
    try:
        searchable(scratch)
        from capsa.api.arguments import Limits
        from capsa.api.rootfs import resolve
        from capsa.api.spec import build_spec

        spec = build_spec(["sh"], resolve(rootfs), Limits(), ["PATH=/bin"], "/work", work_source=scratch)
        assert planned_by_the_zygote(spec) is not None
    finally:
        os.rmdir(scratch)


def test_a_missing_mount_destination_is_left_to_the_python_init(rootfs_copy, dev_template):
    os.rmdir(os.path.join(rootfs_copy, "tmp"))
    assert planned_by_the_zygote(spec_of(["true"], rootfs_copy)) is None


# -- errors ---------------------------------------------------------------------------------------
ERRORS = {
    "absolute path missing": "['/no/such/program'], rootfs=ROOTFS",
    "not in PATH": "['nosuch'], rootfs=ROOTFS",
    "not executable": "['/etc/passwd'], rootfs=ROOTFS",
    "cwd missing": "['true'], rootfs=ROOTFS, cwd='/no/such/dir'",
    "cwd a file": "['true'], rootfs=ROOTFS, cwd='/etc/passwd'",
    "cwd through a symlink out": "['pwd'], rootfs=ROOTFS, cwd='/out/etc'",
    "cwd through a magic link": "['pwd'], rootfs=ROOTFS, cwd='/proc/self/cwd'",
}


def test_errors_are_the_python_inits_and_leave_nothing(rootfs_copy):
    os.symlink("/../../../..", os.path.join(rootfs_copy, "out"))  # resolved in the root: its "/"
    code = f"""
for call in {list(ERRORS.values())!r}:
    print(json.dumps(eval(f"attempt({{call}})")))
print(json.dumps([os.getpid(), mine_left(), len(zygotes_children())]))
"""
    planned, python = both(code, rootfs_copy)
    for name, seen, expected in zip(ERRORS, planned[:-1], python[:-1], strict=True):
        assert seen == expected, name
    errors = dict(zip(ERRORS, planned[:-1], strict=True))
    assert errors["absolute path missing"] == {
        "error": "SandboxStartError",
        "message": 'cannot create the sandbox: exec: "/no/such/program": stat /no/such/program: no such file or directory'}
    assert errors["not in PATH"]["message"].endswith('exec: "nosuch": executable file not found in $PATH')
    assert errors["cwd through a symlink out"]["stdout"] == "/etc\n"  # sh's pwd: the directory's path
    for pid, left, children in (planned[-1], python[-1]):
        assert left == [] and leftovers(pid) == [] and children <= 1
    assert mounts_under(rootfs_copy) == []


def test_a_mount_destination_that_is_a_file_fails_as_with_the_python_init(rootfs_copy):
    tmp = os.path.join(rootfs_copy, "tmp")
    os.rmdir(tmp)
    open(tmp, "w").close()
    planned, python = both("print(json.dumps(attempt(['true'], rootfs=ROOTFS)))", rootfs_copy)
    assert planned == python
    assert planned[0]["message"].endswith("cannot mount tmpfs on /tmp: mount: Not a directory")


# Where the plan's exec candidates (execve's errors, as execvp) and capsa.init.find_executable
# (stat, the first regular file) part ways.
EXEC_ODD_CANDIDATES = {
    "a directory": "['/tmp'], rootfs=ROOTFS",
    "a directory in PATH": "['tmp'], rootfs=ROOTFS, env={'PATH': '/:/bin'}",
    "a file not executable before one in PATH": "['sh', '-c', 'echo ran'], rootfs=ROOTFS, "
                                               "env={'PATH': '/usr/local/bin:/bin'}",
    "an argument too long for execve": "['echo', 'a' * 200_000], rootfs=ROOTFS",
}


@pytest.mark.parametrize("case", list(EXEC_ODD_CANDIDATES))
def test_exec_failures_of_odd_candidates_are_the_python_inits(rootfs_copy, case):
    os.makedirs(os.path.join(rootfs_copy, "usr", "local", "bin"), exist_ok=True)
    with open(os.path.join(rootfs_copy, "usr", "local", "bin", "sh"), "w") as f:
        f.write("not a program\n")
    code = f"print(json.dumps(attempt({EXEC_ODD_CANDIDATES[case]})))"
    planned, python = both(code, rootfs_copy)
    assert planned == python


# -- a cached plan whose rootfs changed -------------------------------------------------------------
def test_a_cached_plan_sees_a_removed_mount_destination_as_the_python_init_does(rootfs_copy):
    tmp = os.path.join(rootfs_copy, "tmp")
    code = f"""
print(json.dumps(attempt(['echo', 'one'], rootfs=ROOTFS)))
os.rmdir({tmp!r})
print(json.dumps(attempt(['echo', 'two'], rootfs=ROOTFS)))
os.mkdir({tmp!r}, 0o1777)
print(json.dumps(attempt(['echo', 'three'], rootfs=ROOTFS)))
print(json.dumps([os.getpid(), mine_left()]))
"""
    first, changed, restored, (pid, left) = output(start(code, rootfs_copy, planned=True))
    os.rmdir(tmp)
    python_changed, (python_pid, _) = output(start(
        "print(json.dumps(attempt(['echo', 'two'], rootfs=ROOTFS)))\nprint(json.dumps([os.getpid(), mine_left()]))",
        rootfs_copy, planned=False))
    os.mkdir(tmp, 0o1777)
    assert first["stdout"] == "one\n" and restored["stdout"] == "three\n"
    assert changed == python_changed and "error" in changed
    assert left == [] and leftovers(pid) == [] and leftovers(python_pid) == []


def test_a_cached_plan_sees_a_cwd_made_a_file_as_the_python_init_does(rootfs_copy):
    code = """
print(json.dumps(attempt(['pwd'], rootfs=ROOTFS, cwd='/etc')))
os.rename(ROOTFS + '/etc', ROOTFS + '/etc.away')
open(ROOTFS + '/etc', 'w').close()
print(json.dumps(attempt(['pwd'], rootfs=ROOTFS, cwd='/etc')))
os.remove(ROOTFS + '/etc')
os.rename(ROOTFS + '/etc.away', ROOTFS + '/etc')
print(json.dumps(attempt(['pwd'], rootfs=ROOTFS, cwd='/etc')))
"""
    first, changed, restored = output(start(code, rootfs_copy, planned=True))
    etc = os.path.join(rootfs_copy, "etc")
    os.rename(etc, etc + ".away")
    open(etc, "w").close()
    python_changed, = output(start("print(json.dumps(attempt(['pwd'], rootfs=ROOTFS, cwd='/etc')))", rootfs_copy,
                                   planned=False))
    assert first["stdout"] == restored["stdout"] == "/etc\n"
    assert changed == python_changed and "error" in changed


def test_a_cached_plan_sees_an_etc_passwd_changed_since(rootfs_copy):
    # HOME comes from the container's /etc/passwd (as runc sets it), read when the plan is made.
    # The remembered plan is checked while its child sets itself up: that child is killed before
    # "go" and the run made with a new plan, leaving no process and no container behind.
    passwd = os.path.join(rootfs_copy, "etc", "passwd")
    code = f"""
print(json.dumps(attempt(['sh', '-c', 'echo $HOME'], rootfs=ROOTFS)))
with open({passwd!r}, 'w') as f:
    f.write('root:x:0:0:root:/home/r:/bin/sh\\n')
print(json.dumps(attempt(['sh', '-c', 'echo $HOME'], rootfs=ROOTFS)))
print(json.dumps([os.getpid(), mine_left(), len(zygotes_children())]))
"""
    first, changed, (pid, left, children) = output(start(code, rootfs_copy, planned=True))
    assert left == [] and leftovers(pid) == [] and children <= 1
    python_changed, = output(start("print(json.dumps(attempt(['sh', '-c', 'echo $HOME'], rootfs=ROOTFS)))",
                                   rootfs_copy, planned=False))
    assert first["stdout"] == "/root\n"
    assert changed == python_changed and changed["stdout"] == "/home/r\n"


def test_a_cached_plan_whose_bind_source_became_unreachable_falls_back(rootfs):
    # A bind source the sandbox's root cannot reach (a 0700 directory above it) is opened by the
    # runtime for the Python init: the cached plan, which opens it in the child, fails there and
    # the launch is made again without a plan. (Under /usr: HostTools binds it, so the extra's
    # mount point is there, reached through the 0700 directory: the Python init stops at it,
    # "openat2: Permission denied"; the plan, at its open of the source, would not say "openat2".)
    top = tempfile.mkdtemp(prefix="capsa-planned-extra-", dir="/usr/local")
    try:
        extra = os.path.join(top, "tools")
        os.makedirs(extra)
        searchable(extra)
        call = f"attempt(['ls', '-d', {extra!r}], rootfs=capsa.HostTools(extra=({extra!r},)))"
        code = f"""
print(json.dumps({call}))
os.chmod({top!r}, 0o700)
print(json.dumps({call}))
print(json.dumps([os.getpid(), mine_left()]))
"""
        first, unreachable, (pid, left) = output(start(code, rootfs, planned=True))
        python_unreachable, = output(start(f"print(json.dumps({call}))", rootfs, planned=False))
    finally:
        shutil.rmtree(top, ignore_errors=True)
    assert first["stdout"] == extra + "\n"
    assert unreachable == python_unreachable
    assert left == [] and leftovers(pid) == []


def test_a_cached_plan_whose_proc_became_a_symlink_stops_at_the_procfs_check(rootfs_copy):
    # /proc a symlink to /sys once the plan is made: the proc mount goes to the root's /sys, the
    # sysfs over it, and /proc, followed, is not a procfs: masked paths must not be made there.
    proc = os.path.join(rootfs_copy, "proc")
    code = f"""
print(json.dumps(attempt(['true'], rootfs=ROOTFS)))
os.rmdir({proc!r})
os.symlink('sys', {proc!r})
print(json.dumps(attempt(['true'], rootfs=ROOTFS)))
print(json.dumps([os.getpid(), mine_left()]))
"""
    first, changed, (pid, left) = output(start(code, rootfs_copy, planned=True))
    python_changed, = output(start("print(json.dumps(attempt(['true'], rootfs=ROOTFS)))", rootfs_copy, planned=False))
    assert first["exit_code"] == 0
    assert changed == python_changed == {
        "error": "SandboxStartError", "message": "cannot create the sandbox: mounts: /proc in the container is not a procfs"}
    assert left == [] and leftovers(pid) == []


# -- escapes ------------------------------------------------------------------------------------------
def test_a_mount_destination_made_a_symlink_to_a_host_path_lands_in_the_rootfs(rootfs_copy):
    # /tmp is a mount destination (a tmpfs): once the plan is cached, it becomes a symlink to the
    # host's /etc. The mount follows it inside the root (its /etc), never onto the host's.
    tmp = os.path.join(rootfs_copy, "tmp")
    script = "ls -A /etc | wc -l; grep -c ' /etc ' /proc/self/mountinfo; cat /etc/hostname"
    host_etc = sorted(os.listdir("/etc"))
    code = f"""
print(json.dumps(attempt(['sh', '-c', {script!r}], rootfs=ROOTFS)))
os.rmdir({tmp!r})
os.symlink('/etc', {tmp!r})
print(json.dumps(attempt(['sh', '-c', {script!r}], rootfs=ROOTFS)))
print(json.dumps([os.getpid(), mine_left()]))
"""
    before, after, (pid, left) = output(start(code, rootfs_copy, planned=True))
    python_after, _ = output(start(f"print(json.dumps(attempt(['sh', '-c', {script!r}], rootfs=ROOTFS)))\n"
                                   "print(json.dumps(None))", rootfs_copy, planned=False))
    assert before["stdout"].split("\n")[1:3] == ["0", "capsa"]
    assert after == python_after
    assert sorted(os.listdir("/etc")) == host_etc and not mounts_under("/etc")
    assert os.path.islink(tmp) and open(os.path.join(rootfs_copy, "etc", "hostname")).read() == "capsa\n"
    assert left == [] and leftovers(pid) == []


def test_a_cwd_made_a_symlink_out_of_the_root_stays_in_it(rootfs_copy):
    # /root is a plain directory when the plan is made, then a symlink up and out: the cached
    # plan resolves it in the root (openat2 RESOLVE_IN_ROOT), as the Python init does.
    home = os.path.join(rootfs_copy, "root")
    script = "pwd; ls -A | wc -l; ls -A /etc | wc -l"
    code = f"""
print(json.dumps(attempt(['sh', '-c', {script!r}], rootfs=ROOTFS, cwd='/root')))
os.rmdir({home!r})
os.symlink('../../../../../../etc', {home!r})
print(json.dumps(attempt(['sh', '-c', {script!r}], rootfs=ROOTFS, cwd='/root')))
"""
    before, after = output(start(code, rootfs_copy, planned=True))
    python_after, = output(start(f"print(json.dumps(attempt(['sh', '-c', {script!r}], rootfs=ROOTFS, cwd='/root')))",
                                 rootfs_copy, planned=False))
    assert before["stdout"] == "/root\n0\n3\n"
    assert after == python_after and after["stdout"] == "/etc\n3\n3\n"  # the rootfs's /etc, not the host's


def test_the_callers_fds_are_not_in_the_run(rootfs, dev_template):
    # The API's zygote holds no inheritable fd but stdio: the launch is driven here directly, as
    # the zygote does, by a caller that holds one (fd 40).
    spec = spec_of(["ls", "/proc/self/fd"], rootfs)
    code = """
from capsa import launch, plannedinit
spec = json.loads(sys.argv[2])
os.dup2(os.open('/etc/hostname', os.O_RDONLY), 40)
null = os.open('/dev/null', os.O_RDONLY | os.O_CLOEXEC)
r, w = os.pipe()
plan = launch.plan_for_container(spec=spec, rootfs=ROOTFS, container_id='plantest-fds', state={}, listen_fd=-1,
                                 cgroup=None, stdio=(null, w, w), exec_at_once=True)
pid = launch.start(plan)
os.close(w)
out = b''.join(iter(lambda: os.read(r, 4096), b''))
print(json.dumps([out.decode(), os.waitpid(pid, 0)[1], [p is not None for p in plannedinit._cache.values()]]))
"""
    planned, python = (output(start(code, rootfs, json.dumps(spec), planned=variant)) for variant in (True, False))
    assert planned == [["0\n1\n2\n3\n", 0, [True]]]  # 3: ls's own directory; planned
    assert python == [["0\n1\n2\n3\n", 0, []]]


def test_the_init_is_in_its_cgroup_in_every_hierarchy_it_has(rootfs):
    # All of the host's hierarchies (not the API's few): on a hybrid host the child is born in
    # the cgroup's directory of the unified one and joins the v1 ones with the files its parent
    # opens once it has made them (after the clone) and sends after "m"; on v1 only the latter,
    # on v2 only the former. Run as the zygote runs it: Container.create, stdio given.
    code = """
from capsa import plannedinit
from capsa.api.rootfs import API_DIR
from capsa.api.session import STATE_ROOT, new_id, setup
from capsa.container import Container
setup()
spec = json.loads(sys.argv[2])
null = os.open('/dev/null', os.O_RDONLY | os.O_CLOEXEC)
r, w = os.pipe()
c = Container.create(STATE_ROOT, new_id(), API_DIR, spec=spec, rootless_cgroups=False, stdio=(null, w, w),
                     exec_at_once=True)
os.close(w)
out = b''.join(iter(lambda: os.read(r, 4096), b'')).decode()
status = os.waitpid(c.pid, 0)[1]
hierarchies = sorted(c.cgroup().paths)
c.delete(force=True)
print(json.dumps([c.id, out, status, hierarchies, [p is not None for p in plannedinit._cache.values()]]))
"""
    spec = spec_of(["cat", "/proc/self/cgroup"], rootfs)
    for variant, cached in ((True, [True]), (False, [])):
        [[container_id, out, status, hierarchies, plans]] = output(start(code, rootfs, json.dumps(spec), planned=variant))
        assert status == 0 and plans == cached, (variant, out)
        joined = {line.split(":")[1] for line in out.split() if line.endswith("/" + container_id)}
        assert joined == set(hierarchies) and len(hierarchies) >= 1, (variant, out, hierarchies)
