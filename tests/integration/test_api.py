"""capsa's Python API (capsa.run, capsa.Sandbox): real sandboxes, adversarial programs.

Each scenario runs in a Python program of its own: the API makes its caller a subreaper, which
must not stay with the test process. Every run has a timeout; nothing asserts timing.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from api_leftovers import STATE_ROOT, leftovers

from capsa.bundle import make_rootfs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the API's sandboxes are made as root")


PRELUDE = """
import json, os, sys
import capsa
ROOTFS = sys.argv[1]

def show(r):
    print(json.dumps({k: (v.decode(errors="replace") if isinstance(v, bytes) else v) for k, v in vars(r).items()}))

def mine_left():  # this program's containers in the API's state root (a closed pool deleted its own)
    from capsa.api.zygote import zygote
    zygote().settle()  # the zygote deletes an ended run's container after reporting its end
    return sorted(n for n in os.listdir("/run/capsa-api/state") if n.startswith(f"api-{os.getpid()}-"))
"""


@pytest.fixture(scope="module")
def rootfs():
    # Not under pytest's basetemp: another pytest session on the machine makes
    # /tmp/pytest-of-root private again (0700) at its start, out of the sandbox's reach.
    import shutil
    import tempfile

    top = tempfile.mkdtemp(prefix="capsa-api-test-")
    os.chmod(top, 0o755)
    path = os.path.join(top, "rootfs")
    make_rootfs(path)
    searchable(path)
    yield path
    shutil.rmtree(top, ignore_errors=True)


def searchable(path) -> None:
    """The sandbox's root (an unprivileged host uid) must reach the rootfs."""
    path = str(path)
    while path != "/":
        os.chmod(path, os.stat(path).st_mode | 0o055)
        path = os.path.dirname(path)


def scenario(rootfs: str, code: str, timeout: float = 120) -> list:
    """Run code after PRELUDE in a program of its own; each line it prints is JSON."""
    result = subprocess.run([sys.executable, "-c", PRELUDE + code, rootfs], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def one(rootfs: str, call: str, timeout: float = 120) -> dict:
    return scenario(rootfs, f"show({call})", timeout)[0]




def api_path() -> str:
    from capsa.api import PATH

    return PATH


def processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


# -- output and exit codes ----------------------------------------------------------------------
def test_output_exit_code_and_accounting(rootfs):
    r = one(rootfs, "capsa.run(['sh', '-c', 'echo out; echo err >&2; exit 3'], rootfs=ROOTFS, timeout=30)")
    assert (r["stdout"], r["stderr"], r["exit_code"], r["signal"]) == ("out\n", "err\n", 3, None)
    assert not (r["timed_out"] or r["oom_killed"] or r["output_truncated"])
    assert r["cpu_time"] > 0 and r["peak_memory"] > 0


def test_nothing_of_a_run_is_left_once_the_zygote_has_finished_it(rootfs):
    # The zygote reports a run's end (with its cgroup's usage), then deletes its container while
    # run() returns; the next request (here settle()) is served after that delete: the run's state
    # and cgroups are gone then.
    out = scenario(rootfs, f"""
import glob
from capsa.api.zygote import zygote
r = capsa.run(['sh', '-c', 'echo hi'], rootfs=ROOTFS, timeout=30)
zygote().settle()
mine = f"api-{{os.getpid()}}-"
left = [n for n in os.listdir({STATE_ROOT!r}) if n.startswith(mine)]
left += [p for h in ('memory', 'pids', 'freezer', '') for p in glob.glob(f'/sys/fs/cgroup/{{h}}/**/{{mine}}*', recursive=True)]
print(json.dumps([r.stdout.decode(), r.cpu_time > 0, r.peak_memory > 0, left]))
""")
    assert out == [["hi\n", True, True, []]]


def test_a_run_has_the_callers_cpu_affinity_and_the_zygote_keeps_its_own(rootfs):
    # The launch may move the zygote to another CPU while the init starts (launch._leave_cpu_to);
    # neither the runs nor the zygote keep anything of it.
    out = scenario(rootfs, """
from capsa.api.zygote import zygote
def allowed(status):
    return next(line.split()[1] for line in status.splitlines() if line.startswith('Cpus_allowed_list'))
mine = allowed(open('/proc/self/status').read())
seen = {allowed(capsa.run(['cat', '/proc/self/status'], rootfs=ROOTFS, timeout=30).stdout.decode()) for _ in range(12)}
print(json.dumps([mine, sorted(seen), allowed(open(f'/proc/{zygote().pid}/status').read())]))
""")
    mine, seen, zygote = out[0]
    assert seen == [mine] and zygote == mine


def test_stdin_env_and_cwd_are_the_callers_choice_and_nothing_of_the_host_leaks(rootfs):
    r = one(rootfs, "capsa.run(['sh', '-c', 'cat; pwd; env | sort'], rootfs=ROOTFS, timeout=30, stdin=b'in\\n', "
                    "cwd='/tmp', env={'A': 'b'})")
    lines = r["stdout"].splitlines()
    assert lines[:2] == ["in", "/tmp"]
    names = {line.split("=", 1)[0] for line in lines[2:]}
    assert {"A", "PATH"} <= names and not names & {"USER", "LOGNAME", "SSH_AUTH_SOCK", "PYTHONPATH", "VIRTUAL_ENV"}


def test_host_python_runs_in_the_host_tools_view(rootfs):
    r = one(rootfs, "capsa.run(['python3', '-c', 'import sys; print(sys.version_info[0])'], "
                    "rootfs=capsa.HostTools(), timeout=60)")
    assert (r["stdout"], r["exit_code"]) == ("3\n", 0), r["stderr"]


def test_an_oci_bundle_is_a_rootfs(rootfs, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"root": {"path": rootfs}}))
    searchable(bundle)
    r = one(str(bundle), "capsa.run(['echo', 'bundled'], rootfs=ROOTFS, timeout=30)")
    assert r["stdout"] == "bundled\n"


# -- isolation ----------------------------------------------------------------------------------
def test_root_inside_is_an_unprivileged_host_id_without_capabilities_and_with_seccomp(rootfs):
    r = one(rootfs, "capsa.run(['sh', '-c', 'cat /proc/self/uid_map; grep -E \"^(CapEff|CapBnd|NoNewPrivs|Seccomp):\" "
                    "/proc/self/status; id -u'], rootfs=ROOTFS, timeout=30)")
    lines = r["stdout"].split("\n")
    inside, host, _ = lines[0].split()
    assert inside == "0" and int(host) >= 65536
    fields = dict(line.split(":\t") for line in lines[1:5])
    assert fields == {"CapEff": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"}
    assert lines[5] == "0"


def test_namespace_creation_and_mount_are_refused(rootfs):
    r = one(rootfs, "capsa.run(['sh', '-c', 'unshare -U true && echo unshared; mount -t tmpfs t /tmp && echo mounted; "
                    "echo done'], rootfs=ROOTFS, timeout=30)")
    assert r["stdout"] == "done\n"


# syscall(2) numbers of x86_64, the errno each call gets: Docker's default profile as an allowlist.
SYSCALL_PROBE = """
import ctypes, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
def call(*args):
    result = libc.syscall(*[ctypes.c_long(a) for a in args])
    return errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()) if result == -1 else "ok"
print(" ".join([
    call(250, 0, 0, 0, 0, 0),                     # keyctl: not in the allowlist
    call(248, 0, 0, 0, 0, 0),                     # add_key
    call(425, 1, 0),                              # io_uring_setup: not in Docker's list since 25.0
    call(272, 0x10000000),                        # unshare(CLONE_NEWUSER)
    call(165, 0, 0, 0, 0, 0),                     # mount
    call(101, 16, 1, 0, 0),                       # ptrace(PTRACE_ATTACH, 1): stricter than Docker
    call(1000),                                   # a syscall no kernel has (yet): the default action
    call(41, 40, 1, 0),                           # socket(AF_VSOCK)
    call(56, 0x10000000 | 17, 0, 0, 0, 0),        # clone(CLONE_NEWUSER | SIGCHLD)
    call(435, 0, 0),                              # clone3: ENOSYS, libc falls back to clone
    call(135, 0x0040000),                         # personality(ADDR_NO_RANDOMIZE)
    call(135, 0xffffffff),                        # personality(query): allowed
    "ok" if socket.socket(socket.AF_UNIX) else "no",  # socket(AF_UNIX): allowed
]))
"""
EXPECTED_ERRNOS = "EPERM EPERM EPERM EPERM EPERM EPERM EPERM EPERM EPERM ENOSYS EPERM ok ok"


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 syscall numbers")
def test_the_default_seccomp_profile_is_an_allowlist_cold_and_pooled(rootfs):
    out = scenario(rootfs, f"""
code = {SYSCALL_PROBE!r}
show(capsa.run(['python3', '-c', code], rootfs=capsa.HostTools(), timeout=60))
with capsa.Pool(1, rootfs=capsa.HostTools()) as pool:
    show(pool.run(['python3', '-c', code], timeout=60))
    show(pool.run(['sh', '-c', 'echo $((6 * 7)) | cat; ls /work; true'], timeout=60))
show(capsa.run(['sh', '-c', 'echo busybox | tr a-z A-Z'], rootfs=ROOTFS, timeout=60))
""")
    for r in out[:2]:
        assert r["stdout"].split() == EXPECTED_ERRNOS.split(), r["stderr"]
    assert out[2]["stdout"] == "42\n" and out[2]["exit_code"] == 0
    assert out[3]["stdout"] == "BUSYBOX\n" and out[3]["exit_code"] == 0


# Python code that makes one 32-bit system call, getpid through int 0x80 (eax 20), from an
# executable page, and prints what it returns: a 64-bit process may, where the kernel runs the
# i386 ABI.
INT80_GETPID = """
import ctypes, mmap
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3]))  # mov eax, 20; int 0x80; ret
call = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
print("returned", call(), flush=True)
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the i386 ABI of an x86_64 kernel")
def test_a_32_bit_system_call_kills_the_thread_cold_and_pooled(rootfs):
    """The filter is the machine's own ABI only: int 0x80 is not a way around it."""
    if subprocess.run(["python3", "-c", INT80_GETPID], capture_output=True).returncode != 0:
        pytest.skip("this kernel does not run the i386 ABI (ia32_emulation off): nothing to refuse")
    out = scenario(rootfs, f"""
code = {INT80_GETPID!r}
show(capsa.run(['python3', '-c', code], rootfs=capsa.HostTools(), timeout=60))
with capsa.Pool(1, rootfs=capsa.HostTools()) as pool:
    show(pool.run(['python3', '-c', code], timeout=60))
""")
    for r in out:
        assert r["stdout"] == "" and r["signal"] == signal.SIGSYS, r


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/memory"), reason="cgroup v1 hierarchies (a v2 host has one)")
def test_a_sandbox_is_in_the_v1_hierarchies_it_uses_only(rootfs):
    """A run: memory, pids, cpuacct and devices, cpu only with a CPU quota (its pid namespace
    needs no freezer); not cpuset, blkio, name=systemd, unified. A pooled sandbox: those, cpu and
    the freezer."""
    out = scenario(rootfs, """
show(capsa.run(['cat', '/proc/self/cgroup'], rootfs=ROOTFS, timeout=30))
show(capsa.run(['cat', '/proc/self/cgroup'], rootfs=ROOTFS, timeout=30, cpus=0.5))
with capsa.Pool(1, rootfs=ROOTFS, timeout=30) as pool:
    show(pool.run(['cat', '/proc/self/cgroup']))
""")
    own = [sorted(line.split(":")[1] for line in r["stdout"].splitlines() if "/api-" in line.split(":", 2)[2]) for r in out]
    assert own[0] == sorted(["memory", "pids", "cpuacct", "devices"]), out[0]["stdout"]
    assert own[1] == sorted(["memory", "pids", "cpu", "cpuacct", "devices"]), out[1]["stdout"]
    assert own[2] == sorted(["memory", "pids", "cpu", "cpuacct", "freezer", "devices"]), out[2]["stdout"]


def test_writes_to_the_rootfs_are_refused(rootfs):
    """/dev too: as root, every sandbox binds one /dev made once, read-only (capsa.api.spec.dev_template)."""
    out = scenario(rootfs, """
for _ in range(2):  # the first run of a program makes the /dev template: both must refuse
    show(capsa.run(['sh', '-c', 'for f in /bin/planted /etc/planted /planted /dev/planted /dev/null; do '
                                'rm -f $f 2>/dev/null; echo x > $f && echo $f; done; echo done'], rootfs=ROOTFS, timeout=30))
""")
    for r in out:
        assert r["stdout"] == "/dev/null\ndone\n", r
    assert not any(os.path.exists(os.path.join(rootfs, p)) for p in ("bin/planted", "etc/planted", "planted"))
    assert not os.path.exists("/run/capsa-api/dev/planted") and os.path.exists("/run/capsa-api/dev/null")


def test_network_is_loopback_only(rootfs):
    r = one(rootfs, "capsa.run(['sh', '-c', 'tail -n +3 /proc/net/dev | cut -d: -f1; nc -w 2 1.1.1.1 80 </dev/null "
                    "&& echo connected; echo done'], rootfs=ROOTFS, timeout=30)")
    assert r["stdout"].split() == ["lo", "done"]


def test_network_true_is_the_hosts_network_namespace_with_its_resolv_conf(rootfs):
    out = scenario(rootfs, """
import socket, threading
listener = socket.socket()
listener.bind(('127.0.0.1', 0))
listener.listen(8)
port = listener.getsockname()[1]
got = []
def serve():
    for _ in range(2):
        connection, _ = listener.accept()
        got.append(connection.recv(100).decode())
        connection.close()
threading.Thread(target=serve, daemon=True).start()
code = ("import os, socket; print(os.readlink('/proc/self/ns/net')); print(open('/etc/resolv.conf').read() == "
        "open('/etc/resolv.conf').read()); socket.create_connection(('127.0.0.1', %d)).sendall(b'%s')")
show(capsa.run(['python3', '-c', code % (port, 'cold')], rootfs=capsa.HostTools(), network=True, timeout=60))
with capsa.Pool(1, rootfs=capsa.HostTools(), network=True, timeout=60) as pool:
    show(pool.run(['python3', '-c', code % (port, 'pooled')]))
    show(pool.run(['cat', '/etc/resolv.conf']))
listener.close()
print(json.dumps(sorted(got)))
print(json.dumps(os.readlink('/proc/self/ns/net')))
""")
    cold, pooled, resolv, got, host_net = out
    for r in (cold, pooled):
        assert r["exit_code"] == 0, r["stderr"]
        assert r["stdout"].split()[0] == host_net
    with open("/etc/resolv.conf") as f:
        assert resolv["stdout"] == f.read()
    assert got == ["cold", "pooled"]


def test_host_files_outside_the_rootfs_are_unreachable(rootfs, tmp_path):
    secret = tmp_path / f"secret-{uuid.uuid4().hex}"
    secret.write_text("host secret")
    searchable(tmp_path)  # only the sandbox stands between the run and the file
    r = one(rootfs, f"capsa.run(['sh', '-c', 'cat {secret} /etc/shadow /proc/1/root/etc/shadow; "
                    f"cat /tmp/{secret.name}; echo done'], rootfs=capsa.HostTools(), timeout=30)")
    assert "host secret" not in r["stdout"] and "root:" not in r["stdout"]
    assert r["stdout"].endswith("done\n")


# -- limits -------------------------------------------------------------------------------------
def test_timeout_kills_a_process_tree_that_ignores_sigterm(rootfs):
    marker = str(900000 + os.getpid() % 90000)
    r = one(rootfs, f"capsa.run(['sh', '-c', 'trap \"\" TERM; (trap \"\" TERM; exec sleep {marker}) & "
                    f"setsid sleep {marker} & sleep {marker}'], rootfs=ROOTFS, timeout=1)")
    assert r["timed_out"] and r["signal"] == 9 and r["exit_code"] == 137
    assert processes_with(f"sleep\0{marker}") == []


def test_memory_hog_is_oom_killed(rootfs):
    # dd's 64 MiB buffer does not fit under 16 MiB: the kernel's OOM killer ends it.
    r = one(rootfs, "capsa.run(['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1'], rootfs=ROOTFS, "
                    "memory='16M', timeout=30)")
    assert r["oom_killed"] and r["signal"] == 9 and not r["timed_out"]


def test_fork_bomb_is_contained_by_the_pids_limit(rootfs):
    code = "i=0; while [ $i -lt 200 ]; do sleep 30 & echo started; i=$((i+1)); done"
    r = one(rootfs, f"capsa.run(['sh', '-c', {code!r}], rootfs=ROOTFS, pids=16, timeout=20)")
    assert 0 < r["stdout"].count("started") < 16 and "can't fork" in r["stderr"]
    # A real fork bomb ends at the timeout, and the host still forks.
    r, pid = scenario(rootfs, "show(capsa.run(['sh', '-c', 'b() { b | b & }; b; sleep 30'], rootfs=ROOTFS, pids=32, "
                              "timeout=2)); print(json.dumps(os.getpid()))")
    assert r["timed_out"] or r["exit_code"] != 0
    assert subprocess.run(["true"], timeout=10).returncode == 0
    assert leftovers(pid) == []


def test_huge_output_is_truncated_at_the_cap_and_reported(rootfs):
    r = one(rootfs, "capsa.run(['yes'], rootfs=ROOTFS, output_limit='64K', timeout=20)")
    assert r["output_truncated"] and len(r["stdout"]) == 64 * 1024 and not r["timed_out"]
    r = one(rootfs, "capsa.run(['sh', '-c', 'echo small'], rootfs=ROOTFS, output_limit='64K', timeout=20)")
    assert not r["output_truncated"]


def test_file_size_limit(rootfs):
    r = one(rootfs, "capsa.run(['sh', '-c', 'dd if=/dev/zero of=/work/big bs=1k count=100 2>/dev/null; "
                    "wc -c < /work/big'], rootfs=ROOTFS, file_size='10K', timeout=20)")
    assert int(r["stdout"]) <= 10 * 1024


# -- scratch and sandboxes ----------------------------------------------------------------------
def test_a_run_cannot_see_what_an_earlier_run_left(rootfs):
    out = scenario(rootfs, """
show(capsa.run(['sh', '-c', 'echo a > /work/left; echo b > /tmp/left; echo c > /dev/shm/left; sleep 60 &'], rootfs=ROOTFS, timeout=30))
show(capsa.run(['sh', '-c', 'ls /work /tmp /dev/shm; pidof sleep || echo no sleep'], rootfs=ROOTFS, timeout=30))
with capsa.Sandbox(rootfs=ROOTFS, timeout=30) as sb:
    show(sb.run(['sh', '-c', 'echo a > /work/kept; echo b > /tmp/left; echo c > /dev/shm/left']))
    show(sb.run(['sh', '-c', 'ls /work /tmp /dev/shm']))
""")
    assert out[1]["stdout"].split() == ["/dev/shm:", "/tmp:", "/work:", "no", "sleep"]
    assert out[3]["stdout"].split() == ["/dev/shm:", "/tmp:", "/work:", "kept"]


def test_sandbox_files_in_and_out(rootfs):
    out = scenario(rootfs, """
with capsa.Sandbox(rootfs=capsa.HostTools(), memory='256M', pids=64) as sb:
    sb.write_file('/work/main.py', "import json; json.dump({'n': int(input()) * 2}, open('/work/out.json', 'w'))")
    show(sb.run(['python3', '/work/main.py'], stdin=b'21', timeout=60))
    print(json.dumps(sb.read_file('/work/out.json').decode()))
""")
    assert out[0]["exit_code"] == 0, out[0]["stderr"]
    assert json.loads(out[1]) == {"n": 42}


def test_read_file_cannot_follow_a_planted_symlink_out(rootfs):
    out = scenario(rootfs, """
with capsa.Sandbox(rootfs=ROOTFS, timeout=30) as sb:
    sb.run(['sh', '-c', 'ln -s /etc/shadow /work/abs; ln -s ../../../../../../etc/shadow /work/rel'])
    for name in ('abs', 'rel'):
        try:
            print(json.dumps(sb.read_file('/work/' + name).decode(errors='replace')))
        except capsa.SandboxError as err:
            print(json.dumps(type(err).__name__))
""")
    assert out == ["SandboxError", "SandboxError"]


# -- errors -------------------------------------------------------------------------------------
def test_bad_arguments_raise_typed_errors_and_leave_nothing(rootfs):
    out = scenario(rootfs, """
calls = [
    lambda: capsa.run([], rootfs=ROOTFS),
    lambda: capsa.run('echo hi', rootfs=ROOTFS),
    lambda: capsa.run(['true'], rootfs=ROOTFS, memory='lots'),
    lambda: capsa.run(['true'], rootfs=ROOTFS, timeout=-1),
    lambda: capsa.run(['true'], rootfs='/nonexistent/rootfs'),
    lambda: capsa.run(['true'], rootfs=ROOTFS, env={'A=B': 'c'}),
    lambda: capsa.run(['true'], rootfs=ROOTFS, cwd='relative'),
    lambda: capsa.run(['/no/such/program'], rootfs=ROOTFS, timeout=10),
    lambda: capsa.Sandbox(rootfs=ROOTFS, pids=0),
]
for call in calls:
    try:
        call()
        print(json.dumps(None))
    except capsa.SandboxError as err:
        print(json.dumps([type(err).__name__, isinstance(err, ValueError), str(err)]))
print(json.dumps(os.getpid()))
""")
    *errors, pid = out
    kinds = [e[0] for e in errors]
    assert kinds[:7] == ["InvalidArgumentError"] * 4 + ["RootfsError"] + ["InvalidArgumentError"] * 2
    assert kinds[7] == "SandboxStartError" and "/no/such/program" in errors[7][2]
    assert kinds[8] == "InvalidArgumentError" and errors[8][2].startswith("pids:")
    assert all(e[1] for e in errors[:7])
    assert "memory" in errors[2][2] and "lots" in errors[2][2]
    assert leftovers(pid) == []
    assert not [n for n in os.listdir("/run/capsa-api/sandboxes") if n.startswith(f"{pid}-")]


def test_concurrent_runs_from_threads_get_their_own_output(rootfs):
    out = scenario(rootfs, """
from concurrent.futures import ThreadPoolExecutor
def one(i):
    r = capsa.run(['sh', '-c', f'echo {i}; echo e{i} >&2'], rootfs=ROOTFS, timeout=60)
    return r.stdout.decode(), r.stderr.decode(), r.exit_code
with ThreadPoolExecutor(8) as pool:
    print(json.dumps(list(pool.map(one, range(24)))))
""", timeout=300)
    assert out[0] == [[f"{i}\n", f"e{i}\n", 0] for i in range(24)]


def test_a_forked_program_gets_a_zygote_of_its_own(rootfs):
    """The zygote's socket is the program's: a fork of the program (multiprocessing) that runs
    sandboxes while its parent does must start its own, or their requests and answers mix."""
    out = scenario(rootfs, """
import os, threading
show(capsa.run(['echo', 'before'], rootfs=ROOTFS, timeout=30))
pid = os.fork()
name = 'child' if pid == 0 else 'parent'
results = [capsa.run(['sh', '-c', f'echo {name}-{i}'], rootfs=ROOTFS, timeout=30) for i in range(20)]
ok = all(r.stdout == f'{name}-{i}\\n'.encode() and r.exit_code == 0 for i, r in enumerate(results))
if pid == 0:
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print(json.dumps({"parent": ok, "child": os.waitstatus_to_exitcode(status) == 0}))
""")
    assert out[0]["stdout"] == "before\n"
    assert out[1] == {"parent": True, "child": True}


def test_the_zygote_outlives_the_thread_that_started_it(rootfs):
    """PR_SET_PDEATHSIG follows the thread that forked the zygote: started by a worker thread that
    then ends, it lives on, and so do the pooled sandboxes made through it."""
    out = scenario(rootfs, """
import threading, time
from capsa.api.zygote import zygote
pools = []
def first():
    pools.append(capsa.Pool(1, rootfs=ROOTFS))
    capsa.run(['true'], rootfs=ROOTFS, timeout=30)
worker = threading.Thread(target=first)
worker.start()
worker.join()
pid = zygote().pid
time.sleep(0.3)
alive = zygote()._process.poll() is None
pooled = pools[0].run(['echo', 'pooled'], timeout=30)
cold = capsa.run(['echo', 'cold'], rootfs=ROOTFS, timeout=30)
print(json.dumps([alive, zygote().pid == pid, pooled.stdout.decode(), cold.stdout.decode()]))
pools[0].close()
""")
    assert out == [[True, True, "pooled\n", "cold\n"]]


def test_a_run_outlives_its_zygote_as_an_unknown_end_and_the_next_run_works(rootfs):
    """The zygote, the init's parent, killed mid-run: the run's end is not known (exit_code -1),
    its container is deleted, and the next run starts a new zygote."""
    out = scenario(rootfs, """
import threading, time
from capsa.api.zygote import zygote
capsa.run(['true'], rootfs=ROOTFS, timeout=30)
killer = threading.Timer(0.5, lambda: os.kill(zygote().pid, 9))
killer.start()
show(capsa.run(['sleep', '3'], rootfs=ROOTFS, timeout=30))
show(capsa.run(['echo', 'again'], rootfs=ROOTFS, timeout=30))
print(json.dumps(mine_left()))
""")
    assert out[0]["exit_code"] == -1 and not out[0]["timed_out"]
    assert out[1]["stdout"] == "again\n" and out[1]["exit_code"] == 0
    assert out[2] == []


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the zygote's template makes the agents on x86-64 only")
def test_a_pool_made_after_the_zygotes_template_died_still_gets_its_agents(rootfs):
    out = scenario(rootfs, """
import signal, time
from capsa.api.zygote import zygote
with capsa.Pool(1, rootfs=ROOTFS, timeout=30) as pool:
    show(pool.run(['echo', 'one']))
zygote_pid = zygote().pid
def parent_of(pid):
    try:
        return int(open(f'/proc/{pid}/stat').read().rpartition(')')[2].split()[1])
    except (OSError, ValueError):
        return 0
templates = [int(p) for p in os.listdir('/proc') if p.isdigit() and parent_of(p) == zygote_pid
             and b'capsa.api.zygote' in open(f'/proc/{p}/cmdline', 'rb').read()]
for pid in templates:
    os.kill(pid, signal.SIGKILL)
time.sleep(0.2)
with capsa.Pool(2, rootfs=ROOTFS, timeout=30) as pool:
    show(pool.run(['echo', 'two']))
    show(pool.run(['echo', 'three']))
print(json.dumps(len(templates)))
""")
    assert [r["stdout"] for r in out[:3]] == ["one\n", "two\n", "three\n"]
    assert out[3] == 1


def test_stream_gives_output_as_it_comes_then_the_result(rootfs):
    out = scenario(rootfs, """
with capsa.Sandbox(rootfs=ROOTFS, timeout=30) as sb:
    stream = sb.stream(['sh', '-c', 'echo one; echo two >&2; read line; echo got $line'], stdin=b'three\\n')
    chunks = [[name, data.decode()] for name, data in stream]
    print(json.dumps(chunks))
    show(stream.result)
""")
    chunks, result = out
    assert "".join(d for n, d in chunks if n == "stdout") == "one\ngot three\n"
    assert [d for n, d in chunks if n == "stderr"] == ["two\n"]
    assert result["stdout"] == "one\ngot three\n" and result["exit_code"] == 0


def test_a_running_runs_record_and_config_are_written_while_it_runs_and_gone_once_settled(rootfs):
    # The zygote writes a run-once container's config and committed record while its planned
    # init sets itself up (create._record_launch), and deletes both after the run's end.
    out = scenario(rootfs, """
from capsa.api.zygote import zygote
with capsa.Sandbox(rootfs=ROOTFS, timeout=30) as sb:
    with sb.stream(['sh', '-c', 'echo started; exec sleep 30']) as stream:  # closed early: killed
        next(iter(stream))
        mine = [n for n in os.listdir('/run/capsa-api/state') if n.startswith(f'api-{os.getpid()}-')]
        seen = []
        for name in mine:
            record = json.load(open(f'/run/capsa-api/state/{name}/state.json'))
            config = json.load(open(f'/run/capsa-api/state/{name}/config.json'))
            alive = os.path.exists(f"/proc/{record['pid']}")
            seen.append([record['status'], alive, config['process']['args']])
        print(json.dumps(seen))
    print(json.dumps(mine_left()))
""")
    assert out[0] == [["created", True, ["sh", "-c", "echo started; exec sleep 30"]]]
    assert out[1] == []


def test_leaving_a_stream_early_kills_the_run(rootfs):
    marker = str(800000 + os.getpid() % 90000)
    out = scenario(rootfs, f"""
with capsa.Sandbox(rootfs=ROOTFS, timeout=60) as sb:
    with sb.stream(['sh', '-c', 'echo started; exec sleep {marker}']) as stream:
        for name, data in stream:
            break
    print(json.dumps(os.getpid()))
""")
    assert processes_with(f"sleep\0{marker}") == []
    assert leftovers(out[0]) == []


def test_arun_runs_many_at_once_from_asyncio(rootfs):
    out = scenario(rootfs, """
import asyncio
async def main():
    results = await asyncio.gather(*(capsa.arun(['sh', '-c', f'echo {i}'], rootfs=ROOTFS, timeout=60) for i in range(50)))
    print(json.dumps([r.stdout.decode() for r in results]))
asyncio.run(main())
""", timeout=300)
    assert out[0] == [f"{i}\n" for i in range(50)]


# -- pools --------------------------------------------------------------------------------------
def test_pool_runs_and_a_run_never_meets_an_earlier_ones_leftovers(rootfs):
    out = scenario(rootfs, """
with capsa.Pool(2, rootfs=ROOTFS, memory='64M', pids=32, timeout=30) as pool:
    show(pool.run(['sh', '-c', 'echo out; echo err >&2; cat; pwd; env'], stdin=b'in\\n', env={'A': "it's"}, cwd='/tmp'))
    show(pool.run(['sh', '-c', 'exit 5']))
    show(pool.run(['sh', '-c', 'echo a > /work/left; echo b > /tmp/left; echo c > /dev/shm/left; sleep 60 &']))
    for _ in range(3):
        show(pool.run(['sh', '-c', 'ls /work /tmp /dev/shm; pidof sleep | wc -w']))
    print(json.dumps(os.getpid()))
""")
    *results, pid = out
    lines = results[0]["stdout"].splitlines()
    assert lines[:3] == ["out", "in", "/tmp"] and results[0]["stderr"] == "err\n"
    assert {"A=it's", api_path()} <= set(lines[3:]) and not {"USER", "LOGNAME"} & {v.split("=")[0] for v in lines[3:]}
    assert results[1]["exit_code"] == 5
    for r in results[3:]:
        assert r["stdout"].split() == ["/dev/shm:", "/tmp:", "/work:", "0"], r
    assert leftovers(pid) == []


def test_a_pooled_runs_scratch_is_its_root_users_own(rootfs):
    # The slot mounts /tmp, /work and /dev/shm with its agent's credentials: the agent must be
    # the sandbox's root (the run's uid 0), not a host uid the sandbox does not map ("nobody").
    r = one(rootfs, "capsa.Pool(1, rootfs=ROOTFS).run(['sh', '-c', "
                    "'stat -c \"%U %G\" /tmp /work /dev/shm; chmod 700 /work && echo chmod'], timeout=30)")
    assert r["stdout"].splitlines() == ["root root"] * 3 + ["chmod"], r


def test_pool_limits_hold_and_the_pool_survives_runs_that_break_their_sandbox(rootfs):
    marker = str(700000 + os.getpid() % 90000)
    out = scenario(rootfs, f"""
with capsa.Pool(1, rootfs=ROOTFS, memory='16M', pids=16) as pool:
    show(pool.run(['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1'], timeout=30))
    show(pool.run(['sh', '-c', 'trap "" TERM; sleep {marker} & sleep {marker}'], timeout=1))
    show(pool.run(['sh', '-c', 'b() {{ b | b & }}; b; sleep 30'], timeout=2))
    try:
        pool.run(['/no/such/program'], timeout=10)
    except capsa.SandboxError as err:
        print(json.dumps({{"error": type(err).__name__, "names": "/no/such/program" in str(err)}}))
    show(pool.run(['echo', 'still here'], timeout=30))
    print(json.dumps(os.getpid()))
""", timeout=300)
    oom, timeout, bomb, error, after, pid = out
    assert oom["oom_killed"] and oom["signal"] == 9
    assert timeout["timed_out"] and processes_with(f"sleep\0{marker}") == []
    assert bomb["timed_out"] or bomb["exit_code"] != 0
    assert error == {"error": "SandboxStartError", "names": True}  # as capsa.run says it
    assert after["stdout"] == "still here\n"
    assert leftovers(pid) == []


# One sandbox serves every run of a Pool(1) in turn: what a run leaves must not reach the next.
LEAVE_BEHIND = r"""
import ctypes, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
for path in ('/tmp/left', '/work/left', '/dev/shm/left'):
    open(path, 'w').write('left')
for path in ('/dev/left', '/left', '/proc/left'):
    try:
        open(path, 'w').write('left')
        print('wrote', path)
    except OSError:
        pass
print('shm', libc.shmget(4242, 4096, 0o1000 | 0o666))           # IPC_CREAT: a SysV segment, key 4242
print('msg', libc.msgget(4242, 0o1000 | 0o666))                 # and a message queue
rt = ctypes.CDLL('librt.so.1', use_errno=True)
print('mq', rt.mq_open(b'/capsa-left', os.O_CREAT | os.O_RDWR, 0o666, None))
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(b'\0capsa-left')                                  # an abstract unix socket
listener.listen(1)
os.set_inheritable(listener.fileno(), True)
if os.fork() == 0:                                               # a sleeper that keeps all of it
    os.setsid()
    os.execv('/bin/sleep', ['sleep', sys.argv[1]])
print('left', flush=True)
"""

LOOK = r"""
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
rt = ctypes.CDLL('librt.so.1', use_errno=True)
seen = {}
seen['files'] = sorted(p for p in ('/tmp/left', '/work/left', '/dev/shm/left', '/dev/left', '/left', '/proc/left')
                       if os.path.exists(p))
seen['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
seen['shm'] = libc.shmget(4242, 0, 0)
seen['msg'] = libc.msgget(4242, 0)
seen['mq'] = rt.mq_open(b'/capsa-left', os.O_RDWR, 0, None)
seen['mqueue'] = os.listdir('/dev/mqueue')
try:
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(b'\0capsa-left')
    seen['socket'] = 'connected'
except OSError as err:
    seen['socket'] = err.errno
seen['env'] = sorted(k for k in os.environ if k not in ('PATH', 'HOME', 'LC_CTYPE'))
print(repr(seen))
"""


def test_a_pooled_sandbox_serves_runs_that_never_see_each_others_leftovers(rootfs):
    marker = str(800000 + os.getpid() % 90000)
    out = scenario(rootfs, f"""
with capsa.Pool(1, rootfs=capsa.HostTools(), timeout=60) as pool:
    before = sorted(n for n in os.listdir({STATE_ROOT!r}) if n.startswith(f"api-{{os.getpid()}}-"))
    show(pool.run(['python3', '-c', {LEAVE_BEHIND!r}, '{marker}'], env={{'SECRET': 'of the first run'}}))
    show(pool.run(['python3', '-c', {LOOK!r}]))
    after = sorted(n for n in os.listdir({STATE_ROOT!r}) if n.startswith(f"api-{{os.getpid()}}-"))
    print(json.dumps(before == after))
    print(json.dumps(os.getpid()))
""", timeout=300)
    first, second, same_sandbox, pid = out
    assert first["stdout"].splitlines()[-1] == "left", first
    assert "wrote" not in first["stdout"]  # /dev, the root and /proc are read-only
    assert all(int(line.split()[1]) >= 0 for line in first["stdout"].splitlines()[:3]), first  # all made
    seen = ast.literal_eval(second["stdout"])
    assert seen["files"] == [] and seen["mqueue"] == []
    assert seen["pids"] == [1]  # the run's own pid namespace: no sleeper, no agent, no earlier run
    assert (seen["shm"], seen["msg"], seen["mq"]) == (-1, -1, -1)
    assert seen["socket"] in (111, 2)  # ECONNREFUSED or ENOENT: no listener of the first run
    assert seen["env"] == []
    assert same_sandbox  # the same sandbox (its agent) served both runs
    assert processes_with(f"sleep\0{marker}") == []  # the first run's sleeper died with it
    assert leftovers(pid) == []


def test_a_pooled_run_cannot_reach_its_agent_and_the_pool_survives_a_run_that_kills_all_it_can(rootfs):
    # ptrace and kill every pid that exists or could (1 .. 400), then kill(-1): the run is alone
    # in its pid namespace, so none of it reaches the agent (nor anything outside).
    attack = ("import ctypes, os, signal; libc = ctypes.CDLL(None, use_errno=True); "
              "traced = [p for p in range(1, 400) if libc.ptrace(16, p, 0, 0) == 0]; "
              "killed = [] \n"
              "for p in range(2, 400):\n"
              "    try:\n"
              "        os.kill(p, signal.SIGKILL); killed.append(p)\n"
              "    except OSError: pass\n"
              "print(traced, killed, flush=True) \n"
              "for p in (-1, 1):\n"
              "    try:\n"
              "        os.kill(p, signal.SIGKILL)\n"
              "    except OSError: pass\n")
    out = scenario(rootfs, f"""
with capsa.Pool(1, rootfs=capsa.HostTools(), pids=64, timeout=60) as pool:
    before = sorted(n for n in os.listdir({STATE_ROOT!r}) if n.startswith(f"api-{{os.getpid()}}-"))
    show(pool.run(['python3', '-c', {attack!r}]))
    show(pool.run(['sh', '-c', 'b() {{ b | b & }}; b; sleep 30'], timeout=3))
    show(pool.run(['echo', 'still here']))
    print(json.dumps(before == sorted(n for n in os.listdir({STATE_ROOT!r}) if n.startswith(f"api-{{os.getpid()}}-"))))
    print(json.dumps(os.getpid()))
""", timeout=300)
    attack_result, bomb, after, same_sandbox, pid = out
    assert attack_result["stdout"] == "[] []\n", attack_result  # nothing to trace, nothing to kill
    assert bomb["timed_out"] or bomb["exit_code"] != 0
    assert after["stdout"] == "still here\n"
    assert same_sandbox  # its agent lived through both
    assert leftovers(pid) == []


def test_pool_arun_50_at_once_on_the_event_loop_with_unmixed_outputs_and_no_thread_per_run(rootfs):
    marker = str(500000 + os.getpid() % 90000)
    out = scenario(rootfs, f"""
import asyncio, threading
async def main():
    with capsa.Pool(4, rootfs=ROOTFS, timeout=60) as pool:
        before = threading.active_count()
        runs = [pool.arun(['sh', '-c', f'head -c {{i * 1000}} /dev/zero | tr "\\\\0" {{chr(97 + i % 26)}}; echo; '
                           f'echo err{{i}} >&2; cat; exit {{i % 5}}'], stdin=f'in{{i}}') for i in range(50)]
        threads = []
        async def count_threads():
            while True:
                threads.append(threading.active_count())
                await asyncio.sleep(0.001)
        counting = asyncio.create_task(count_threads())
        results = await asyncio.gather(*runs)
        counting.cancel()
        print(json.dumps([before, max(threads)]))
        print(json.dumps([[r.stdout.decode(), r.stderr.decode(), r.exit_code] for r in results]))
        # A task cancelled while its run goes on: the run is killed (its sandbox with it), the pool serves on
        try:
            await asyncio.wait_for(pool.arun(['sleep', '{marker}']), 0.5)
        except TimeoutError:
            print(json.dumps('cancelled'))
        show(await pool.arun(['echo', 'after']))
        print(json.dumps(os.getpid()))
    print(json.dumps(mine_left()))
asyncio.run(main())
""", timeout=300)
    (before, most), results, cancelled, after, pid, left_at_close = out
    assert most == before  # waits on the event loop: no thread was started for the runs
    assert results == [[chr(97 + i % 26) * (i * 1000) + "\n" + f"in{i}", f"err{i}\n", i % 5] for i in range(50)]
    assert cancelled == "cancelled" and after["stdout"] == "after\n"
    # close() deleted every sandbox of the pool (not the guard, once the program is gone)
    assert left_at_close == []
    assert processes_with(f"sleep\0{marker}") == [] and leftovers(pid) == []


def test_pool_stream_gives_output_while_the_run_goes_on(rootfs):
    marker = str(400000 + os.getpid() % 90000)
    out = scenario(rootfs, f"""
with capsa.Pool(1, rootfs=ROOTFS, timeout=60) as pool:
    stream = pool.stream(['sh', '-c', 'echo one; echo two >&2; exec sleep {marker}'])
    seen = []
    for name, data in stream:
        seen.append([name, data.decode()])
        if ''.join(d for _, d in seen).count('\\n') == 2:
            break
    # the run still goes on (its sleep comes, however long it takes): its output came as written
    def sleeping():
        for p in os.listdir('/proc'):
            try:
                if p.isdigit() and open(f'/proc/{{p}}/cmdline', 'rb').read() == b'sleep\\x00{marker}\\x00':
                    return 1
            except OSError:
                pass
        return 0
    import time
    deadline = time.monotonic() + 30
    while not sleeping() and time.monotonic() < deadline:
        time.sleep(0.01)
    print(json.dumps([seen, sleeping()]))
    stream.close()  # kills it
    show(stream.result or pool.run(['echo', 'after']))
    with pool.stream(['sh', '-c', 'echo a; echo b >&2; exit 4']) as whole:
        chunks = [[name, data.decode()] for name, data in whole]
    print(json.dumps(chunks))
    show(whole.result)
    print(json.dumps(os.getpid()))
""")
    (seen, running), after, chunks, result, pid = out
    assert sorted(seen) == [["stderr", "two\n"], ["stdout", "one\n"]] and running == 1
    assert after["stdout"] == "after\n"
    assert sorted(chunks) == [["stderr", "b\n"], ["stdout", "a\n"]]
    assert result["stdout"] == "a\n" and result["stderr"] == "b\n" and result["exit_code"] == 4
    assert processes_with(f"sleep\0{marker}") == [] and leftovers(pid) == []


def test_pool_arun_many_at_once_and_the_callers_stdout_stays_its_own(rootfs):
    out = subprocess.run([sys.executable, "-c", PRELUDE + """
import asyncio, threading
stop = threading.Event()
def noise():
    while not stop.is_set():
        print('noise', flush=True)
noisy = threading.Thread(target=noise, daemon=True)
noisy.start()
async def main():
    with capsa.Pool(4, rootfs=ROOTFS, timeout=60) as pool:
        results = await asyncio.gather(*(pool.arun(['sh', '-c', f'echo {i}']) for i in range(40)))
    stop.set()
    noisy.join()
    print('RESULTS ' + json.dumps([r.stdout.decode() for r in results]), flush=True)
    print('LEFT ' + json.dumps(mine_left()), flush=True)
asyncio.run(main())
""", rootfs], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    results = json.loads(next(line for line in lines if line.startswith("RESULTS "))[len("RESULTS "):])
    assert results == [f"{i}\n" for i in range(40)]
    assert next(line for line in lines if line.startswith("LEFT ")) == "LEFT []"  # close() deleted them all
    assert "noise" in lines


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("PPid:")).split()[1])


def test_sigkill_of_the_calling_program_leaves_nothing_behind(rootfs):
    marker = str(600000 + os.getpid() % 90000)
    program = subprocess.Popen([sys.executable, "-c", PRELUDE + f"""
import threading, time
sandbox = capsa.Sandbox(rootfs=ROOTFS)
pool = capsa.Pool(1, rootfs=ROOTFS)
threading.Thread(target=lambda: capsa.run(['sh', '-c', 'trap "" TERM; sleep {marker}'], rootfs=ROOTFS)).start()
threading.Thread(target=lambda: sandbox.run(['sleep', '{marker}'])).start()
threading.Thread(target=lambda: pool.run(['sleep', '{marker}'])).start()
from capsa.api.zygote import zygote
agent = next(iter(pool._all)).container.pid
print('ready', zygote().pid, agent, flush=True)
time.sleep(600)
""", rootfs], stdout=subprocess.PIPE, text=True)
    try:
        ready, zygote, agent = program.stdout.readline().split()
        assert ready == "ready"
        # The pool's agents are forks of its zygote, a fresh interpreter, not of the program
        assert parent_of(int(agent)) == int(zygote) and parent_of(int(zygote)) == program.pid
        with open(f"/proc/{zygote}/cmdline", "rb") as f:
            assert b"capsa.api.zygote" in f.read()
        deadline = time.monotonic() + 60
        while len(processes_with(f"sleep\0{marker}")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(processes_with(f"sleep\0{marker}")) == 3
    finally:
        program.kill()
        program.wait()
    # The guard cleans once the program is gone: the containers (their processes and cgroups)
    # first, then the Sandbox's /work (slow in a TCG guest: wait for all of it, not the first).
    def scratch_left() -> tuple[list[str], bool]:
        with open("/proc/self/mountinfo") as f:
            mounted = f"/run/capsa-api/sandboxes/{program.pid}-" in f.read()
        return [n for n in os.listdir("/run/capsa-api/sandboxes") if n.startswith(f"{program.pid}-")], mounted

    deadline = time.monotonic() + 60
    while (processes_with(f"sleep\0{marker}") or leftovers(program.pid) or scratch_left() != ([], False)
           or os.path.exists(f"/proc/{zygote}")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(f"sleep\0{marker}") == [] and leftovers(program.pid) == []
    assert not os.path.exists(f"/proc/{zygote}")  # the zygote went with the program
    assert scratch_left() == ([], False)


def test_the_code_runner_example_serves_snippets(rootfs):
    import signal
    import urllib.request

    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "code_runner.py")
    server = subprocess.Popen([sys.executable, example, "--port", "0", "--pool", "2"], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split()[-1]
        answers = []
        for snippet in (b"print(sum(range(10)))", b"while True: pass", b"import os; print(os.listdir('/'))"):
            with urllib.request.urlopen(url, data=snippet, timeout=60) as response:
                answers.append(json.loads(response.read()))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    assert (answers[0]["stdout"], answers[0]["exit_code"]) == ("45\n", 0)
    assert answers[1]["timed_out"]
    # The host-tools skeleton, not the host's root.
    from capsa.api.rootfs import HOST_TOOL_DIRS, SKELETON_DIRS

    listing = set(ast.literal_eval(answers[2]["stdout"]))
    assert "work" in listing and listing <= set(SKELETON_DIRS) | set(HOST_TOOL_DIRS) | {".complete"}
    assert leftovers(server.pid) == []


def container_cgroup(name: str) -> str:
    """Where create makes the cgroup of an API container named `name` (capsa.cgroups: below the
    caller's own cgroup; the scenario's programs are in this process's): its pids hierarchy's
    directory on a v1 or hybrid host, its directory of the unified hierarchy on a v2 host."""
    from capsa.cgroups import CGROUP_ROOT, UNIFIED, hierarchies, layout, own_cgroups

    found, own = hierarchies(), own_cgroups()
    if layout(found) == UNIFIED:
        return f"{CGROUP_ROOT}{own[''].rstrip('/')}/{name}"
    mount_point = next(point for point, controllers in found.items() if "pids" in controllers.split(","))
    return f"{mount_point}{own['pids'].rstrip('/')}/{name}"


def test_the_next_program_cleans_a_container_its_creator_died_making(rootfs):
    # create's steps: state directory, cgroup, then the record; a creator killed in between
    # leaves a directory without a record and a cgroup, which the next program deletes.
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"api-{dead.pid}-0"
    os.makedirs(os.path.join(STATE_ROOT, name))
    cgroup = container_cgroup(name)
    os.mkdir(cgroup)
    try:
        scenario(rootfs, "capsa.run(['true'], rootfs=ROOTFS, timeout=30)")
        assert not os.path.exists(os.path.join(STATE_ROOT, name)) and not os.path.exists(cgroup)
    finally:
        for path in (cgroup, os.path.join(STATE_ROOT, name)):
            if os.path.isdir(path):
                os.rmdir(path)


def test_a_script_whose_interpreter_is_proc_self_exe_runs_nothing_of_the_host(rootfs):
    # CVE-2019-5736 class: the kernel would run the exec'ing process's own binary as the
    # interpreter; capsa execs from a sealed memfd (trampoline, pooled slot's waiter) that refuses.
    script = os.path.join(rootfs, "bin", f"selfexe-{uuid.uuid4().hex[:8]}")
    with open(script, "w") as f:
        f.write("#!/proc/self/exe\n")
    os.chmod(script, 0o755)
    try:
        name = "/bin/" + os.path.basename(script)
        out = scenario(rootfs, f"""
show(capsa.run([{name!r}], rootfs=ROOTFS, timeout=30))
with capsa.Pool(1, rootfs=ROOTFS) as pool:
    show(pool.run([{name!r}], timeout=30))
    show(pool.run(['echo', 'fine'], timeout=30))
""")
    finally:
        os.unlink(script)
    assert [r["exit_code"] for r in out] == [126, 126, 0] and out[2]["stdout"] == "fine\n"


def test_ptrace_is_refused(rootfs):
    code = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
            "print(libc.ptrace(16, 1, 0, 0), ctypes.get_errno(), libc.ptrace(0, 0, 0, 0), ctypes.get_errno())")
    r = one(rootfs, f"capsa.run(['python3', '-c', {code!r}], rootfs=capsa.HostTools(), timeout=60)")
    assert r["stdout"].split() == ["-1", "1", "-1", "1"], r["stderr"]  # PTRACE_ATTACH, PTRACE_TRACEME: EPERM


def test_runs_leak_no_fd_and_no_child_and_a_bad_pool_leaves_nothing(rootfs, tmp_path):
    empty = os.path.join(os.path.dirname(rootfs), "empty")  # reachable (see the rootfs fixture)
    os.makedirs(empty, mode=0o755, exist_ok=True)
    out = scenario(rootfs, f"""
def fds():
    return len(os.listdir('/proc/self/fd'))
capsa.run(['true'], rootfs=ROOTFS, timeout=30)
with capsa.Pool(2, rootfs=ROOTFS) as pool:
    pool.run(['true'])
before = fds()
for _ in range(5):
    capsa.run(['sh', '-c', 'yes | head -c 100000'], rootfs=ROOTFS, timeout=30, output_limit='1K')
    with capsa.Sandbox(rootfs=ROOTFS, timeout=30) as sb:
        sb.write_file('/work/f', 'x')
        list(sb.stream(['cat', '/work/f']))
    with capsa.Pool(2, rootfs=ROOTFS) as pool:
        try:
            pool.run(['/no/such/program'])
        except capsa.SandboxStartError:
            pass
print(json.dumps([before, fds()]))
for bad in (lambda: capsa.Pool(0, rootfs=ROOTFS), lambda: capsa.Pool(2, rootfs={str(empty)!r})):
    try:
        bad()
    except capsa.SandboxError as err:
        print(json.dumps(type(err).__name__))
children = [l.split()[1] for l in os.popen(f'ps -o pid=,stat= --ppid {{os.getpid()}}') if l.split()[1].startswith('Z')]
print(json.dumps(children))
print(json.dumps(os.getpid()))
""", timeout=300)
    (before, after), small, no_shell, zombies, pid = out
    assert after == before
    assert (small, no_shell) == ("InvalidArgumentError", "SandboxStartError")
    assert zombies == []
    assert leftovers(pid) == []


# -- rootless -----------------------------------------------------------------------------------
from test_rootless import user  # noqa: E402, F401 - the unprivileged test user (useradd, subordinate ids)


@pytest.mark.skipif(not all(shutil.which(tool) for tool in ("useradd", "userdel", "setpriv", "newuidmap", "newgidmap")),
                    reason="needs useradd, userdel, setpriv and newuidmap/newgidmap")
def test_an_unprivileged_program_runs_cold_pooled_and_kept_sandboxes(user):  # noqa: F811 - the fixture
    python = user.command[0] if user.env_extra.get("PYTHONPATH") else sys.executable
    rootfs = os.path.join(user.workspace, "rootfs")
    code = PRELUDE + """
show(capsa.run(['sh', '-c', 'id -u; cat /proc/self/uid_map; echo hi > /work/x; cat /work/x; touch /etc/x'],
               rootfs=ROOTFS, timeout=60))
with capsa.Pool(1, rootfs=ROOTFS, timeout=60) as pool:
    show(pool.run(['sh', '-c', 'id -u; grep -c . /proc/self/uid_map; cat'], stdin='in'))
with capsa.Sandbox(rootfs=ROOTFS, timeout=60) as sb:
    sb.write_file('/work/in', 'kept')
    show(sb.run(['sh', '-c', 'cat /work/in; echo more >> /work/in']))
    print(json.dumps(sb.read_file('/work/in').decode()))
try:
    print(json.dumps(capsa.run(['true'], rootfs=ROOTFS, memory='64M', timeout=60).exit_code))
except capsa.InvalidArgumentError as err:
    print(json.dumps(str(err)))
print(json.dumps([os.getpid(), capsa.api.rootfs.API_DIR]))
"""
    result = user.run(python, "-c", code, rootfs, env=user.env(**user.env_extra))
    assert result.returncode == 0, result.stderr
    cold, pooled, kept, content, memory, (pid, api_dir) = [json.loads(line) for line in result.stdout.splitlines()]
    lines = cold["stdout"].split("\n")
    assert lines[0] == "0" and lines[1].split() == ["0", str(user.uid), "1"]  # root inside is the caller
    assert lines[2].split() == ["1", str(user.subuid), "65535"] and lines[3] == "hi"
    assert "Read-only file system" in cold["stderr"]
    assert pooled["stdout"] == "0\n2\nin" and pooled["exit_code"] == 0
    assert kept["stdout"] == "kept" and content == "keptmore\n"
    assert memory == 0 or memory.startswith("memory: a rootless sandbox's memory, cpus and pids limits need")
    assert api_dir == os.path.join(user.runtime_dir, "capsa-api")
    assert not [n for n in os.listdir(os.path.join(api_dir, "state")) if n.startswith(f"api-{pid}-")]
