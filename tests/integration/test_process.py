"""Processes the library can wait on: Container.wait and the init's Process handle (pidfd), the
exit status recorded in state.json, OOM kills, and creating containers from a threaded program.

The library's scenarios run in a Python program of their own: becoming a subreaper and setting
signal handlers would otherwise stay with the test process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from capsa import jsonfast

OCI_STATE_KEYS = {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}

PRELUDE = """
import os, sys, time
from capsa import process
from capsa.container import Container
root, bundle = sys.argv[1], sys.argv[2]

def wait_for_file(path, timeout=20):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
"""


def library(bundle, script: str, timeout: float = 60) -> list[str]:
    """Run `script` (after PRELUDE: root, bundle, Container, process) in a Python program; its
    stdout's lines."""
    bundle.write()
    # Files, not pipes: a container that outlives a failing program keeps its stdio open.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        result = subprocess.run([sys.executable, "-c", PRELUDE + script, bundle.root, bundle.path],
                                stdout=out, stderr=err, timeout=timeout)
        out.seek(0)
        err.seek(0)
        assert result.returncode == 0, err.read().decode(errors="replace")
        return out.read().decode().splitlines()


def record(bundle, cid: str = "c1") -> dict:
    with open(os.path.join(bundle.root, cid, "state.json")) as f:
        return jsonfast.loads(f.read())


def test_wait_gives_the_exit_code_and_records_it(bundle):
    bundle.set_args("sh", "-c", "exit 7")
    out = library(bundle, """
process.become_subreaper()
c = Container.create(root, "c1", bundle)
c.start()
status = c.wait(timeout=30)
print(status.code, status.signal, status.exit_code)
print(Container.load(root, "c1").wait())  # a later waiter gets the recorded status
""")
    assert out == ["7 None 7", "ExitStatus(code=7)"]
    kept = record(bundle)
    assert (kept["status"], kept["exitCode"], kept["oomKilled"]) == ("stopped", 7, False)
    assert "exitSignal" not in kept and kept["finishedAt"].endswith("Z")
    # `capsa state` stays the OCI state, as runc's: the exit status is in the record only.
    state = jsonfast.loads(bundle.capsa("state", "c1").stdout)
    assert set(state) == OCI_STATE_KEYS and state["status"] == "stopped"
    bundle.capsa("delete", "c1")


def test_signals_reach_the_init_through_its_handle(bundle):
    bundle.config["root"]["readonly"] = False
    bundle.set_args("sh", "-c", "trap 'exit 5' TERM; touch /ready; while true; do sleep 0.1; done")
    out = library(bundle, """
import signal
process.become_subreaper()
c = Container.create(root, "c1", bundle)
c.start()
wait_for_file(os.path.join(c.record["rootfs"], "ready"))
init = c.init_process()
assert init.poll() is None
try:
    c.wait(timeout=0.1)
except TimeoutError:
    print("still running")
init.send_signal(signal.SIGTERM)
print(c.wait(timeout=30).exit_code)
""")
    assert out == ["still running", "5"]
    assert record(bundle)["exitCode"] == 5


def test_a_container_killed_by_sigkill_exits_with_signal_9(bundle):
    bundle.set_args("sleep", "60")
    out = library(bundle, """
import signal
process.become_subreaper()
c = Container.create(root, "c1", bundle)
c.start()
c.kill(signal.SIGKILL)
status = c.wait(timeout=30)
print(status.signal, status.exit_code)
""")
    assert out == ["9 137"]
    kept = record(bundle)
    assert (kept["exitCode"], kept["exitSignal"], kept["oomKilled"]) == (137, 9, False)


def test_oom_kill_is_recorded(bundle):
    bundle.config["linux"]["resources"] = {"memory": {"limit": 16 * 1024 * 1024}}
    # dd's 32 MiB buffer does not fit under the 16 MiB limit: the kernel kills it, the init.
    bundle.set_args("dd", "if=/dev/zero", "of=/dev/null", "bs=32M", "count=1")
    out = library(bundle, """
process.become_subreaper()
c = Container.create(root, "c1", bundle)
c.start()
print(c.wait(timeout=30).signal)
""")
    assert out == ["9"]
    kept = record(bundle)
    assert (kept["exitSignal"], kept["oomKilled"]) == (9, True)


def test_only_the_inits_parent_learns_its_exit_code(bundle):
    """Not a subreaper, a single-threaded caller still learns the exit code: the init is born in
    its namespaces as our own child (launch._born_namespaces), with a pid namespace or without.
    (A threaded caller's init is forked by a child that exits, and is re-parented away from it:
    test_a_threaded_callers_init_is_reparented_away.)"""
    bundle.set_args("sh", "-c", "exit 3")
    bundle.write()
    out = library(bundle, """
import copy
from capsa.spec import load_bundle
c = Container.create(root, "c1", bundle)
c.start()
status = c.wait(timeout=30)
print(status.known, status.exit_code)
spec = load_bundle(bundle)
spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "pid"]
spec["linux"]["cgroupsPath"] += ".2"
c2 = Container.create(root, "c2", bundle, spec=spec)
c2.start()
print(c2.wait(timeout=30).exit_code)
""")
    assert out == ["True 3", "3"]
    kept = record(bundle)
    assert kept["status"] == "stopped" and "finishedAt" in kept and kept["exitCode"] == 3
    assert record(bundle, "c2")["exitCode"] == 3


def test_delete_reaps_an_init_nobody_waited_for(bundle):
    """The init is our child (born in its namespaces): ended and deleted without a wait, it must
    not stay a zombie of ours."""
    bundle.set_args("true")
    out = library(bundle, """
import os, time
c = Container.create(root, "c1", bundle)
pid = c.pid
c.start()
while open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0] != "Z":
    time.sleep(0.01)
c.delete()
print(os.path.exists(f"/proc/{pid}"))
""")
    assert out == ["False"]


def test_a_threaded_callers_init_is_reparented_away(bundle):
    """With another thread running, the init is forked by a child that exits (no raw clone3 in
    a threaded process): not a subreaper, wait learns that it ended, not how."""
    bundle.set_args("sh", "-c", "exit 3")
    bundle.write()
    out = library(bundle, """
import threading
stop = threading.Event()
threading.Thread(target=stop.wait).start()
c = Container.create(root, "c1", bundle)
c.start()
status = c.wait(timeout=30)
stop.set()
print(status.known, status.exit_code)
""")
    assert out == ["False None"]
    kept = record(bundle)
    assert kept["status"] == "stopped" and "finishedAt" in kept and "exitCode" not in kept


def test_asyncio_waits_on_the_pidfd(bundle):
    bundle.set_args("sh", "-c", "sleep 0.3; exit 4")
    out = library(bundle, """
import asyncio

async def main():
    c = Container.create(root, "c1", bundle)
    c.start()
    init = c.init_process()
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    loop.add_reader(init.fileno(), ended.set_result, None)
    await asyncio.wait_for(ended, 30)
    loop.remove_reader(init.fileno())
    print(init.poll().exit_code)

process.become_subreaper()
asyncio.run(main())
""")
    assert out == ["4"]


# -- creating from a threaded program ---------------------------------------------------------
BUSY_THREADS = """
import io, logging, posix, socket, sqlite3, threading
stop = threading.Event()
log = logging.getLogger("busy")
log.addHandler(logging.StreamHandler(io.StringIO()))
log.setLevel(logging.INFO)

def resolve():  # NSS: malloc and its locks, the GIL released
    while not stop.is_set():
        socket.getaddrinfo("localhost", 80)

def list_dirs():  # opendir/closedir: malloc and free, the GIL released
    while not stop.is_set():
        posix.listdir("/usr/lib")

def log_lines():  # logging's locks
    while not stop.is_set():
        log.info("busy %s", "x" * 100)

def query():  # sqlite: malloc-heavy, the GIL released
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute("create table t (a, b)")
    while not stop.is_set():
        db.executemany("insert into t values (?, ?)", ((i, "y" * 300) for i in range(200)))
        db.execute("select count(*) from t group by a % 7").fetchall()
        db.execute("delete from t")

busy = [threading.Thread(target=f, daemon=True) for f in (resolve, resolve, resolve, resolve, list_dirs,
                                                           list_dirs, log_lines, query)]
for thread in busy:
    thread.start()
"""


def test_create_from_a_program_with_busy_threads(bundle):
    """A raw clone3 in a threaded program copied locks other threads held (malloc's arenas) into
    the child, which then hung in glibc's fork() of the init (linux.clone_child). Containers
    are created, started and waited for from the main thread and from two more at once, while
    threads hold malloc's, NSS's and logging's locks; each exits with its own code."""
    bundle.set_args("true")
    out = library(bundle, BUSY_THREADS + """
import copy
from capsa.spec import load_bundle
process.become_subreaper()
base = load_bundle(bundle)

def run(cid, code):
    spec = copy.deepcopy(base)
    spec["process"]["args"] = ["sh", "-c", f"exit {code}"]
    spec["linux"]["cgroupsPath"] += "." + cid
    c = Container.create(root, cid, bundle, spec=spec)
    c.start()
    status = c.wait(timeout=30)
    c.delete()
    return status.exit_code

results = {}
def creator(name, count):
    for i in range(count):
        results[f"{name}{i}"] = run(f"{name}{i}", i + 1)

workers = [threading.Thread(target=creator, args=(name, 5)) for name in ("a", "b")]
for worker in workers:
    worker.start()
creator("m", 25)
for worker in workers:
    worker.join(60)
stop.set()
print(sorted(results.items()) == sorted({f"{n}{i}": i + 1 for n, k in (("m", 25), ("a", 5), ("b", 5)) for i in range(k)}.items()))
""", timeout=120)
    assert out == ["True"]
    assert os.listdir(bundle.root) == []


def test_clone_child_refuses_a_threaded_caller():
    """clone3 bypasses glibc's fork(): only a single-threaded process may use it."""
    script = """
import os, threading, time
from capsa import linux
from capsa.cgroups import CGROUP_ROOT, hierarchies, own_cgroups
point = next(p for p, controllers in hierarchies().items() if controllers == "")
fd = os.open(point + own_cgroups()[""], os.O_RDONLY | os.O_DIRECTORY)

def fork():
    pid = linux.clone_child(fd)
    if pid == 0:
        os._exit(0)
    if pid is not None:
        os.waitpid(pid, 0)
    return pid is not None

release = threading.Event()
thread = threading.Thread(target=release.wait)
thread.start()
print(fork())
release.set()
thread.join()
while linux.thread_count() > 1:  # the joined thread's kernel task may outlive its join briefly
    time.sleep(0.01)
print(fork())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


# -- the command line: run, exec through the library's supervision ---------------------------
def test_run_keep_records_the_exit_status(bundle):
    bundle.set_args("sh", "-c", "exit 3")
    assert bundle.capsa("run", "--keep", "--bundle", bundle.path, "c1", check=False).returncode == 3
    kept = record(bundle)
    assert (kept["status"], kept["exitCode"], kept["oomKilled"]) == ("stopped", 3, False)
    assert set(jsonfast.loads(bundle.capsa("state", "c1").stdout)) == OCI_STATE_KEYS


def test_run_and_exec_hold_the_terminal_themselves(bundle):
    """process.terminal without --console-socket: capsa copies the pty to its stdout (capsa.terminal)."""
    bundle.process["terminal"] = True
    result = bundle.run("sh", "-c", "tty; echo hello; exit 4", check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 4
    assert result.stdout.replace("\r", "").split("\n")[:2] == ["/dev/pts/0", "hello"]
    bundle.process["terminal"] = False
    bundle.set_args("sleep", "60")
    bundle.create("c2")
    bundle.capsa("start", "c2")
    result = bundle.capsa("exec", "-t", "c2", "sh", "-c", "tty; exit 6", check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 6 and result.stdout.replace("\r", "").startswith("/dev/pts/")


def test_a_failed_exec_leaves_no_zombie_under_a_subreaper(bundle):
    """An exec whose program cannot run is killed and reaped by the library: under a subreaper
    the failed process is re-parented to the caller when the launch's intermediate exits, and
    must not stay there as a zombie (one per failed exec, for the life of a manager)."""
    bundle.set_args("sleep", "60")
    out = library(bundle, """
from capsa.errors import CapsaError
process.become_subreaper()
c = Container.create(root, "c1", bundle)
c.start()
failures = 0
for _ in range(20):
    try:
        c.exec({"args": ["/no/such/program"], "cwd": "/"} if _ % 2 else {"args": ["true"], "cwd": "/no/such/dir"})
    except CapsaError:
        failures += 1
time.sleep(0.2)
zombies = []
for tid in os.listdir("/proc/self/task"):
    for pid in open(f"/proc/self/task/{tid}/children").read().split():
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            zombies.append(pid)
print(failures, len(zombies))
c.kill(9)
c.wait(timeout=30)
c.delete()
""")
    assert out[-1] == "20 0"
