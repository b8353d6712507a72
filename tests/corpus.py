"""Strategies for a generated corpus of malformed and hostile config.json documents (hypothesis)."""

from __future__ import annotations

import copy

from hypothesis import strategies as st

from capsa.specgen import default_spec

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20) | st.sampled_from(["/", "..", "/proc/self/fd/0", "\0", "RLIMIT_NOFILE", "CAP_SYS_ADMIN"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def _paths(value, prefix=()):
    """Every (container, key) place in a document."""
    places = []
    if isinstance(value, dict):
        for key, item in value.items():
            places.append((prefix, key))
            places.extend(_paths(item, prefix + (key,)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            places.append((prefix, index))
            places.extend(_paths(item, prefix + (index,)))
    return places


BASE = default_spec()
PLACES = _paths(BASE)


@st.composite
def mutated_specs(draw):
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        prefix, key = draw(st.sampled_from(PLACES))
        target = doc
        try:
            for step in prefix:
                target = target[step]
            if draw(st.booleans()) and isinstance(target, dict):
                target.pop(key, None)
            else:
                target[key] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed the path
    return doc


# -- process.json for `capsa exec --process` ---------------------------------------------------------
BASE_PROCESS = {
    "terminal": False,
    "user": {"uid": 0, "gid": 0, "additionalGids": [1], "umask": 18},
    "args": ["sh", "-c", "echo corpus-ok"],
    "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
    "cwd": "/",
    "capabilities": {kind: ["CAP_CHOWN", "CAP_KILL"] for kind in ("bounding", "effective", "permitted", "inheritable", "ambient")},
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    "noNewPrivileges": True,
    "oomScoreAdj": 0,
    "consoleSize": {"height": 24, "width": 80},
}
PROCESS_PLACES = _paths(BASE_PROCESS)
# Values chosen to hurt: escapes, huge numbers, NULs, wrong kinds, fields capsa refuses.
HOSTILE_PROCESS_VALUES = st.sampled_from([
    "/proc/self/fd/3", "/proc/self/cwd", "/proc/1/root", "/../../../..", "relative/cwd", "", "\0", "/\0/",
    ["/proc/self/exe"], [""], ["sh", "-c", "exec 9</; echo $((1/0))"], ["\0"], ["/nonexistent"], ["/dev/null"], ["/"],
    2**32, 2**63, -1, -(2**63), 0o7777, True, None, {}, [],
    ["A"], ["=x"], ["PATH="], ["PATH=/proc/self/fd"], ["X=\0"],
    {"uid": 2**32}, {"uid": -1, "gid": -1}, {"uid": 65534, "gid": 65534}, {"username": "nobody"},
    {"uid": 0, "gid": 0, "additionalGids": list(range(70000))},
    ["CAP_NOPE"], ["CAP_SYS_ADMIN", "CAP_SYS_ADMIN"],
    [{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 2}], [{"type": "RLIMIT_NPROC", "hard": 0, "soft": 0}],
    [{"type": "RLIMIT_NOPE", "hard": 1, "soft": 1}], [{"type": "RLIMIT_AS", "hard": 2**64, "soft": 2**64}],
])
EXTRA_PROCESS_FIELDS = st.sampled_from([
    ("apparmorProfile", "unconfined"), ("selinuxLabel", "system_u:system_r:container_t:s0"),
    ("ioPriority", {"class": "IOPRIO_CLASS_RT", "priority": 1}), ("scheduler", {"policy": "SCHED_FIFO"}),
    ("ioPriority", {"class": "IOPRIO_CLASS_IDLE", "priority": 8}), ("scheduler", {"policy": "SCHED_FIFO", "priority": 99}),
    ("scheduler", {"policy": "SCHED_DEADLINE", "runtime": 1024, "deadline": 1024}), ("scheduler", {"policy": "SCHED_ISO"}),
    ("scheduler", {"policy": "SCHED_IDLE", "flags": ["SCHED_FLAG_UTIL_CLAMP_MAX"]}),
    ("execCPUAffinity", {"initial": "0"}), ("terminal", True), ("consoleSize", {"height": -1}),
    ("oomScoreAdj", 1001), ("noNewPrivileges", "yes"), ("user", "root"), ("args", "sh"),
])


@st.composite
def mutated_processes(draw):
    doc = copy.deepcopy(BASE_PROCESS)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        choice = draw(st.integers(min_value=0, max_value=3))
        if choice == 0:
            key, value = draw(EXTRA_PROCESS_FIELDS)
            doc[key] = copy.deepcopy(value)  # sampled_from shares its objects: a later mutation must not change them
            continue
        prefix, key = draw(st.sampled_from(PROCESS_PLACES))
        target = doc
        try:
            for step in prefix:
                target = target[step]
            if choice == 1 and isinstance(target, dict):
                target.pop(key, None)
            else:
                target[key] = copy.deepcopy(draw(HOSTILE_PROCESS_VALUES if choice == 2 else json_values))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed the path
    return doc


# -- linux.seccomp profiles ------------------------------------------------------------------------------
BASE_SECCOMP = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
    "flags": ["SECCOMP_FILTER_FLAG_LOG"],
    "listenerPath": "/run/agent.sock",
    "listenerMetadata": "m",
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
    ],
}
SECCOMP_PLACES = _paths(BASE_SECCOMP)
HOSTILE_SECCOMP_VALUES = st.sampled_from([
    "SCMP_ACT_NOTIFY", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRACE", "SCMP_CMP_MASKED_EQ", "SCMP_ARCH_AARCH64",
    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "write", "sendmsg", "no_such_syscall", 6, 7, -1, 2**64, 2**16, ["write"], [None], [{}], {"index": 9}, None,
])


@st.composite
def mutated_seccomp(draw):
    doc = copy.deepcopy(BASE_SECCOMP)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        prefix, key = draw(st.sampled_from(SECCOMP_PLACES))
        target = doc
        try:
            for step in prefix:
                target = target[step]
            choice = draw(st.integers(min_value=0, max_value=2))
            if choice == 0 and isinstance(target, dict):
                target.pop(key, None)
            else:
                target[key] = copy.deepcopy(draw(HOSTILE_SECCOMP_VALUES if choice == 1 else json_values))
        except (KeyError, IndexError, TypeError):
            continue
    return doc
