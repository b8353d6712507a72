"""linux.seccomp: the filter is in force in the container's process and in exec'd ones."""

from __future__ import annotations

import pytest

from capsa import jsonfast


def profile(*rules, default="SCMP_ACT_ALLOW", **extra):
    return dict({"defaultAction": default, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                 "syscalls": list(rules)}, **extra)


def test_errno_action_and_filter_in_status(bundle):
    bundle.config["linux"]["seccomp"] = profile({"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13})
    out = bundle.sh("grep '^Seccomp:' /proc/self/status; unshare -n true 2>&1; true").stdout
    assert "Seccomp:\t2" in out
    assert "Permission denied" in out  # errno 13, as errnoRet asked


def test_default_errno_ret(bundle):
    bundle.config["linux"]["seccomp"] = profile(
        {"names": ["unshare"], "action": "SCMP_ACT_ERRNO"}, defaultErrnoRet=1
    )
    assert "Operation not permitted" in bundle.sh("unshare -n true 2>&1; true").stdout


def test_argument_condition(bundle):
    # personality(0xffffffff) queries; any other value is refused.
    bundle.config["linux"]["seccomp"] = profile(
        {"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "args": [{"index": 1, "value": 5, "op": "SCMP_CMP_EQ"}]},
    )
    bundle.process["capabilities"] = {k: ["CAP_SYS_ADMIN"] for k in ("bounding", "effective", "permitted")}
    out = bundle.sh("hostname abcde 2>&1; hostname; hostname abcdef; hostname").stdout.splitlines()
    assert "Operation not permitted" in out[0]  # length 5 matches the condition
    assert out[-1] == "abcdef"  # length 6 does not


def test_kill_process_action(bundle):
    bundle.config["linux"]["seccomp"] = profile({"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"})
    result = bundle.sh("echo $PPID; cat /proc/self/stat >/dev/null", check=False)  # busybox sh calls getppid at start
    assert result.returncode == 128 + 31  # SIGSYS


def test_default_deny_with_allow_list_without_no_new_privs(bundle):
    allowed = ["execve", "exit_group", "exit", "write", "brk", "mmap", "munmap", "arch_prctl", "set_tid_address",
               "rt_sigaction", "rt_sigprocmask", "getuid", "geteuid", "getpid", "getppid", "capset", "capget",
               "prctl", "setgroups", "setresgid", "setresuid", "setgid", "setuid", "umask", "close", "read", "fcntl",
               "ioctl", "getcwd", "stat", "newfstatat", "fstat", "lseek", "uname", "openat", "access", "mprotect"]
    bundle.process["noNewPrivileges"] = False  # the filter must then be loaded before the capabilities drop
    bundle.config["linux"]["seccomp"] = profile({"names": allowed, "action": "SCMP_ACT_ALLOW"},
                                                default="SCMP_ACT_ERRNO")
    out = bundle.run("echo", "allowed").stdout
    assert out == "allowed\n"


def test_exec_gets_the_filter(bundle):
    bundle.config["linux"]["seccomp"] = profile({"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13})
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    out = bundle.capsa("exec", "c1", "sh", "-c", "unshare -n true 2>&1; grep '^Seccomp:' /proc/self/status").stdout
    assert "Permission denied" in out and "Seccomp:\t2" in out


@pytest.mark.parametrize(
    "seccomp,message",
    [
        (profile({"names": ["read"], "action": "SCMP_ACT_NOPE"}), "linux.seccomp.syscalls[0].action"),
        (profile({"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "BAD"}]}),
         "linux.seccomp.syscalls[0].args[0].op"),
        (profile(architectures=None) | {"architectures": ["SCMP_ARCH_VAX"]}, "linux.seccomp.architectures[0]"),
        (profile({"names": ["read"], "action": "SCMP_ACT_NOTIFY"}), "SCMP_ACT_NOTIFY"),
        (profile(flags=["SECCOMP_FILTER_FLAG_NOPE"]), "linux.seccomp.flags"),
    ],
)
def test_bad_profiles_are_clear_errors(bundle, seccomp, message):
    bundle.config["linux"]["seccomp"] = seccomp
    result = bundle.run("true", check=False)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert bundle.capsa("list", "-q").stdout == ""


def test_features_report_seccomp(bundle):
    features = jsonfast.loads(bundle.capsa("features").stdout)
    assert features["linux"]["seccomp"]["enabled"] is True
    assert "SCMP_ACT_ERRNO" in features["linux"]["seccomp"]["actions"]
    assert "SCMP_CMP_MASKED_EQ" in features["linux"]["seccomp"]["operators"]


def test_compiled_program_cache(bundle):
    """Compiled programs are kept under the state root by the hash of their profile: the next
    container with the same profile (every container of a manager) skips libseccomp's compile;
    a damaged file is rebuilt, never loaded."""
    import glob
    import os

    bundle.config["linux"]["seccomp"] = profile({"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13})
    check = "unshare -n true 2>&1; grep '^Seccomp:' /proc/self/status"
    out = bundle.sh(check).stdout
    assert "Permission denied" in out and "Seccomp:\t2" in out
    cache_dir = os.path.join(bundle.root, "@seccomp-bpf")
    [cached] = glob.glob(os.path.join(cache_dir, "*.bpf"))
    assert os.stat(cache_dir).st_mode & 0o777 == 0o700 and os.stat(cached).st_mode & 0o777 == 0o600
    size = os.path.getsize(cached)
    assert size > 0 and size % 8 == 0  # whole BPF instructions
    assert "Permission denied" in bundle.sh(check).stdout  # from the cache
    with open(cached, "wb") as f:
        f.write(b"\0\0\0")  # not a program: ignored and rebuilt
    out = bundle.sh(check).stdout
    assert "Permission denied" in out and "Seccomp:\t2" in out
    assert os.path.getsize(cached) == size
    # Another profile, another entry; `list` does not take the cache for a container.
    bundle.config["linux"]["seccomp"] = profile({"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1})
    assert "Operation not permitted" in bundle.sh("unshare -n true 2>&1; true").stdout
    assert len(glob.glob(os.path.join(cache_dir, "*.bpf"))) == 2
    assert bundle.capsa("list", "-q").stdout == ""
