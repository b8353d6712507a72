"""The default seccomp profile of capsa's Python API: Docker's default profile (moby's
profiles/seccomp/default.json, which podman's containers-common follows) as it applies to a
process with no capabilities, written here as data. An allowlist: a syscall not named below fails
with EPERM, so a syscall the kernel adds later is refused until it is listed.

What the capability-gated rules of Docker's profile give a process without capabilities is what
is written here: mount, umount, pivot_root, unshare, setns, chroot, bpf, perf_event_open,
fanotify_init, quotactl, lookup_dcookie, open_by_handle_at, module loading, clock and time
setting, iopl/ioperm, acct, syslog, vhangup, kcmp, process_madvise and pidfd_getfd are refused;
clone may not make a namespace; clone3 fails with ENOSYS so that libc falls back to clone, whose
flags the filter can see. Beside those, never allowed by Docker's profile: the keyring (keyctl,
add_key, request_key), kexec, userfaultfd, the NUMA policy calls, vm86, swapon/swapoff, reboot,
io_uring (removed from Docker's default in 25.0).

Where this profile is stricter than Docker's (documented in docs/api.md):
- ptrace, process_vm_readv and process_vm_writev are refused (Docker allows them on kernels from
  4.8): a sandbox has nothing to debug, and refusing them keeps a run from reading a sibling
  process's memory even where the kernel's ptrace checks would let it.
- name_to_handle_at and clock_adjtime are refused, as Docker's documentation lists them.
- socket() of AF_VSOCK is refused (as Docker's current profile does): vsock is not namespaced
  and reaches the hypervisor of a VM host.
- vmsplice and io_pgetevents are refused, as podman's profile refuses them.
- Only the machine's own system call ABI is allowed: a 32-bit (or x32) system call kills the
  thread that makes it (see ARCHITECTURES).
The last line of ALLOWED holds old 32-bit calls podman's profile allows (readdir, sigaction, …).
"""

from __future__ import annotations

EPERM, EINVAL, ENOSYS = 1, 22, 38

# Allowed whatever their arguments (names a libseccomp or an architecture does not know are
# skipped when the filter is compiled).
ALLOWED = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64 close
close_range connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat
faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32
fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64
fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake
futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups
getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresgid32
getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid
gettimeofday getuid getuid32 getxattr getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch
io_cancel ioctl io_destroy io_getevents ioprio_get ioprio_set io_setup
io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr
link linkat listen listmount listxattr listxattrat llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64
madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall munmap nanosleep
newfstatat _newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6
pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg
recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename renameat renameat2 restart_syscall
rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity
sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32
setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid setresgid32
setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area
set_tid_address setuid setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd
signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statmount statx symlink
symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64
timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat uretprobe
utime utimensat utimensat_time64 utimes vfork wait4 waitid waitpid write writev
readdir sigaction signal sigpending sigsuspend timerfd
""".split()

# Allowed on one architecture family only (by os.uname().machine).
ALLOWED_ON = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "i686": ("modify_ldt",),
    "aarch64": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"),
    "armv7l": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"),
}

# The architectures of the filter: the machine's own only, stricter than Docker's archMap, which
# adds the 32-bit ABIs the kernel also runs (x86 and x32 on x86_64, arm on aarch64). A system
# call of another ABI (int 0x80, an x32 call, a 32-bit program) kills the thread that makes it
# (libseccomp's bad-architecture action): those ABIs are an attack surface of their own, and
# their socketcall() would pass socket()'s arguments in memory, out of the filter's sight. It
# also makes the filter a third of the size, and so a third of the cost to load (0.49 -> 0.24 ms
# per run here).
ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64"],
    "i686": ["SCMP_ARCH_X86"],
    "aarch64": ["SCMP_ARCH_AARCH64"],
    "armv7l": ["SCMP_ARCH_ARM"],
}

# personality(2) personas a program may ask for: PER_LINUX, PER_LINUX_32BIT, UNAME26,
# UNAME26|PER_LINUX_32BIT, and 0xffffffff (a query). Not ADDR_NO_RANDOMIZE and the like.
PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
# CLONE_NEWNET: clone() with none of them is allowed.
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
AF_VSOCK = 40


def profile(machine: str | None = None) -> dict:
    """The OCI linux.seccomp object: default EPERM; ALLOWED; the conditional rules."""
    if machine is None:
        import os

        machine = os.uname().machine
    clone_argument = 1 if machine.startswith("s390") else 0  # s390 swaps clone's first two arguments
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": list(ARCHITECTURES.get(machine, [])),
        "syscalls": [
            {"names": ALLOWED + list(ALLOWED_ON.get(machine, ())), "action": "SCMP_ACT_ALLOW"},
            *({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]} for persona in PERSONAS),
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": clone_argument, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                       "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]},
        ],
    }
