"""A managed container's OCI config.json: its image's config plus `create`/`run`'s flags, as
podman's specgen makes it.

The spec is built at create (so that `inspect` shows it and a bad flag fails before anything
exists) and finished at start (`finish`): the user's name looked up in the rootfs's /etc/passwd,
which exists only once the rootfs is mounted.

Choices that follow podman 4.3 (containers.conf's defaults): its default capabilities, its
default seccomp profile (/usr/share/containers/seccomp.json, converted as podman converts it),
tmpfs on /tmp, /var/tmp and /run with --read-only, RLIMIT_NOFILE at the kernel's nr_open
(podman's 1048576 where allowed), ociVersion "1.0.2-dev" (crun 1.8 refuses newer ones).
"""

from __future__ import annotations

import os

from capsa.manager.errors import ManagerError

OCI_VERSION = "1.0.2-dev"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# containers.conf default_capabilities (podman 4.3)
DEFAULT_CAPABILITIES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
                        "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID",
                        "CAP_SYS_CHROOT"]
SECCOMP_PROFILE = "/usr/share/containers/seccomp.json"
INIT_BINARY = "/usr/bin/catatonit"
INIT_PATH = "/run/capsa-init"  # podman's /run/podman-init
CGROUP_PARENT = "/capsactl"


class SpecError(ManagerError):
    """A flag that cannot become a spec: names the flag and what is wrong."""


# --- small parsers (unit-tested) ---------------------------------------------------------------

def parse_size(text: str, flag: str) -> int:
    """podman's sizes: 512, 512b, 64k, 256m, 1g (binary units)."""
    units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    value = text.strip().lower()
    if value.endswith("b") and len(value) > 1 and value[-2] in units:
        value = value[:-1]
    multiplier = 1
    if value and value[-1] in units:
        multiplier, value = units[value[-1]], value[:-1]
    try:
        number = float(value)
    except ValueError:
        raise SpecError(f"{flag} {text!r}: not a size (such as 512m or 1g)") from None
    if number <= 0:
        raise SpecError(f"{flag} {text!r}: must be more than 0")
    return int(number * multiplier)


def parse_signal(text: str | int, flag: str = "--stop-signal") -> int:
    """SIGTERM, TERM, term or 15."""
    import signal

    if isinstance(text, int):
        return text
    name = text.strip().upper()
    if name.isdigit():
        number = int(name)
        if 0 < number < signal.NSIG:
            return number
        raise SpecError(f"{flag} {text!r}: no such signal")
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        if name.startswith("SIGRTMIN") or name.startswith("SIGRTMAX"):
            base = signal.SIGRTMIN if name.startswith("SIGRTMIN") else signal.SIGRTMAX
            offset = name[8:]
            try:
                return int(base) + int(offset or 0)
            except ValueError:
                pass
        raise SpecError(f"{flag} {text!r}: no such signal") from None


def signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def capability_name(text: str, flag: str) -> str:
    from capsa.spec import CAPABILITIES

    name = text.strip().upper()
    if name == "ALL":
        return name
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in CAPABILITIES:
        raise SpecError(f"{flag} {text!r}: unknown capability")
    return name


def capabilities(cap_add: list[str], cap_drop: list[str], privileged_user: bool = True) -> list[str]:
    """podman's: the defaults, minus --cap-drop, plus --cap-add (ALL for every one)."""
    from capsa.spec import CAPABILITIES

    added = [capability_name(c, "--cap-add") for c in cap_add]
    dropped = [capability_name(c, "--cap-drop") for c in cap_drop]
    caps = list(DEFAULT_CAPABILITIES) if privileged_user else []
    if "ALL" in dropped:
        caps = []
    else:
        caps = [c for c in caps if c not in dropped]
    if "ALL" in added:
        caps = sorted(set(CAPABILITIES) - set(dropped), key=CAPABILITIES.get)
    else:
        caps += [c for c in added if c not in caps]
    return caps


def parse_env_file(path: str) -> list[str]:
    """docker's --env-file: KEY=VALUE lines, # comments; KEY alone takes the caller's value."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise SpecError(f"--env-file {path}: {err.strerror}") from None
    env = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            env += parse_env([line])
        except SpecError as err:
            raise SpecError(f"--env-file {path} line {number}: {err}") from None
    return env


def parse_env(items: list[str]) -> list[str]:
    """-e KEY=VALUE, or -e KEY (the caller's value; left out when unset, as podman)."""
    env = []
    for item in items:
        key, eq, value = item.partition("=")
        if not key or any(c.isspace() for c in key):
            raise SpecError(f"-e {item!r}: a variable's name may not be empty or hold spaces")
        if eq:
            env.append(f"{key}={value}")
        elif key in os.environ:
            env.append(f"{key}={os.environ[key]}")
    return env


def merge_env(*lists: list[str]) -> list[str]:
    """Later lists win, in order of first appearance."""
    merged: dict[str, str] = {}
    for items in lists:
        for item in items:
            key, _, value = item.partition("=")
            merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def parse_labels(items: list[str], flag: str = "--label") -> dict[str, str]:
    labels = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise SpecError(f"{flag} {item!r}: a label needs a name")
        labels[key] = value
    return labels


def command_of(image_config: dict, command: list[str], entrypoint: str | None) -> list[str]:
    """The process's args: the entrypoint (--entrypoint, a JSON array or one word; "" clears
    it) and then the command (the given one, else the image's Cmd unless --entrypoint is set)."""
    import json

    if entrypoint is None:
        entry = list(image_config.get("Entrypoint") or [])
        cmd = list(command) or list(image_config.get("Cmd") or [])
    else:
        if entrypoint.startswith("["):
            try:
                entry = json.loads(entrypoint)
            except ValueError:
                raise SpecError(f"--entrypoint {entrypoint!r}: not a JSON array") from None
            if not isinstance(entry, list) or not all(isinstance(a, str) for a in entry):
                raise SpecError(f"--entrypoint {entrypoint!r}: must be an array of strings")
        else:
            entry = [entrypoint] if entrypoint else []
        cmd = list(command)
    args = entry + cmd
    if not args:
        raise SpecError("no command or entrypoint given, and the image has none")
    return args


def parse_tmpfs(item: str) -> dict:
    destination, _, options = item.partition(":")
    if not destination.startswith("/"):
        raise SpecError(f"--tmpfs {item!r}: the destination must be an absolute path")
    opts = ["rw", "noexec", "nosuid", "nodev"]
    for option in filter(None, options.split(",")):
        opts = [o for o in opts if o != _opposite(option)]
        if option not in opts:
            opts.append(option)
    return {"destination": destination, "type": "tmpfs", "source": "tmpfs", "options": opts}


def _opposite(option: str) -> str:
    pairs = {"rw": "ro", "ro": "rw", "exec": "noexec", "noexec": "exec", "suid": "nosuid", "nosuid": "suid",
             "dev": "nodev", "nodev": "dev"}
    return pairs.get(option, "")


def parse_volume(item: str) -> dict:
    """-v HOST:CTR[:OPTS], -v NAME:CTR[:OPTS] (a named volume) or -v CTR (an anonymous one)."""
    parts = item.split(":")
    if len(parts) == 1:
        source, destination, options = "", parts[0], ""
    elif len(parts) == 2:
        if parts[1] and not parts[1].startswith("/") and parts[0].startswith("/"):
            source, destination, options = "", parts[0], parts[1]  # -v /ctr:ro
        else:
            source, destination, options = parts[0], parts[1], ""
    elif len(parts) == 3:
        source, destination, options = parts
    else:
        raise SpecError(f"-v {item!r}: give HOST-DIR:CONTAINER-DIR[:OPTIONS] or NAME:CONTAINER-DIR[:OPTIONS]")
    if not destination.startswith("/"):
        raise SpecError(f"-v {item!r}: the container path {destination!r} must be absolute")
    opts = []
    for option in filter(None, options.split(",")):
        if option in ("z", "Z", "O", "U"):
            if option in ("O", "U"):
                raise SpecError(f"-v {item!r}: option {option!r} is not supported")
            continue  # SELinux relabelling: no SELinux here
        if option not in ("ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "rprivate", "private",
                          "rshared", "shared", "rslave", "slave", "bind", "rbind", "norbind"):
            raise SpecError(f"-v {item!r}: unknown option {option!r}")
        opts.append(option)
    if not source:
        kind = "volume"  # anonymous
    elif source.startswith("/") or source.startswith("."):
        kind = "bind"
    else:
        kind = "volume"
        if not all(c.isalnum() or c in "_.-" for c in source):
            raise SpecError(f"-v {item!r}: {source!r} is neither an absolute path nor a volume name")
    return {"type": kind, "source": source, "destination": os.path.normpath(destination), "options": opts}


def parse_security_opts(items: list[str]) -> dict:
    """--security-opt seccomp=unconfined|PATH, no-new-privileges[=true|false], label=..., apparmor=..."""
    result: dict = {}
    for item in items:
        key, sep, value = item.replace(":", "=", 1).partition("=") if "=" in item or ":" in item else (item, "", "")
        if key == "no-new-privileges":
            if value not in ("", "true", "false"):
                raise SpecError(f"--security-opt {item!r}: no-new-privileges takes true or false")
            result["no_new_privileges"] = value != "false"
        elif key == "seccomp" and sep:
            if value != "unconfined" and not os.path.isfile(value):
                raise SpecError(f"--security-opt {item!r}: no such seccomp profile file")
            result["seccomp"] = value
        elif key == "label" and sep:
            # SELinux: disable, or user:/role:/type:/level: parts of the process label
            result.setdefault("label", []).append(value)
        elif key == "apparmor" and sep:
            result["apparmor"] = value
        elif key in ("mask", "unmask") and sep:
            result.setdefault(key, []).extend(p for p in value.split(":") if p)
        else:
            raise SpecError(f"--security-opt {item!r}: unknown option (seccomp=, no-new-privileges, label=, "
                            "apparmor=, mask=, unmask=)")
    return result


def parse_user(user: str) -> tuple[str, str]:
    name, _, group = user.partition(":")
    return name, group


# --- seccomp: podman's profile format to the OCI one ---------------------------------------------

def load_seccomp_profile(path: str, capabilities_held: list[str]) -> dict:
    """containers-common's (docker's) profile format -> an OCI linux.seccomp: rules for other
    architectures, for capabilities the container lacks or for newer kernels are left out."""
    import json

    try:
        with open(path) as f:
            profile = json.load(f)
    except (OSError, ValueError) as err:
        raise SpecError(f"seccomp profile {path}: {getattr(err, 'strerror', None) or err}") from None
    if "archMap" not in profile and "architectures" in profile:
        return profile  # already OCI
    from capsa.manager.images import go_arch

    arch = go_arch()
    scmp_native = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "386": "SCMP_ARCH_X86",
                   "arm": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X",
                   "riscv64": "SCMP_ARCH_RISCV64"}.get(arch)
    architectures = []
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == scmp_native:
            architectures = [scmp_native, *(entry.get("subArchitectures") or [])]
    kernel = _kernel_version()
    syscalls = []
    seen = set()
    for rule in profile.get("syscalls") or []:
        if not _applies(rule.get("includes") or {}, rule.get("excludes") or {}, arch, capabilities_held, kernel):
            continue
        oci = {"names": rule["names"], "action": rule["action"]}
        if rule.get("args"):
            oci["args"] = rule["args"]
        errno = rule.get("errnoRet")
        if errno is not None:
            oci["errnoRet"] = errno
        # The profile repeats some rules (socket's, for two capability cases): libseccomp refuses
        # a rule it has (EEXIST), so each is given once.
        key = json.dumps(oci, sort_keys=True)
        if key not in seen:
            seen.add(key)
            syscalls.append(oci)
    seccomp = {"defaultAction": profile.get("defaultAction", "SCMP_ACT_ALLOW"), "architectures": architectures,
               "syscalls": syscalls}
    if profile.get("defaultErrnoRet") is not None:
        seccomp["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return seccomp


def _applies(includes: dict, excludes: dict, arch: str, caps: list[str], kernel: tuple[int, ...]) -> bool:
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if includes.get("caps") and not all(c in caps for c in includes["caps"]):
        return False
    if includes.get("minKernel"):
        wanted = tuple(int(p) for p in includes["minKernel"].split(".")[:2] if p.isdigit())
        if kernel < wanted:
            return False
    if excludes.get("arches") and arch in excludes["arches"]:
        return False
    return not (excludes.get("caps") and any(c in caps for c in excludes["caps"]))


def _kernel_version() -> tuple[int, ...]:
    release = os.uname().release
    parts = []
    for piece in release.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit()) or "0"
        parts.append(int(digits))
    return tuple(parts)


# --- the spec --------------------------------------------------------------------------------------

def build(container_id: str, image_config: dict, options: dict, *, rootfs: str, userdata: str,
          mounts: list[dict], netns_path: str | None = None) -> dict:
    """The config.json of a new container. `options` are create's flags (see ctl.containers:
    command, entrypoint, env, env_file, workdir, user, hostname, read_only, memory, cpus,
    pids_limit, cap_add, cap_drop, security_opt, init, tmpfs, network, tty, interactive);
    `mounts` the resolved -v mounts (host source paths); `userdata` the directory of the files
    bound in (/etc/hostname, /etc/hosts, /etc/resolv.conf); `netns_path` the network namespace
    a bridged container joins (capsa.manager.network.for_run makes it at start)."""
    from capsa.specgen import default_spec

    process_defaults = image_config.get("config") or {}
    network = options.get("network") or "none"
    spec = default_spec(cgroup_namespace=os.path.exists("/sys/fs/cgroup/cgroup.controllers"))
    spec["ociVersion"] = OCI_VERSION
    security = parse_security_opts(options.get("security_opt") or [])
    user = options.get("user") or process_defaults.get("User") or ""
    user_name, _ = parse_user(user)
    privileged_user = user_name in ("", "0", "root")
    caps = capabilities(options.get("cap_add") or [], options.get("cap_drop") or [])

    args = command_of(process_defaults, options.get("command") or [], options.get("entrypoint"))
    if options.get("init"):
        args = [INIT_PATH, "--", *args]
    hostname = options.get("hostname") or (os.uname().nodename if network == "host" else container_id[:12])
    env = merge_env([DEFAULT_PATH], process_defaults.get("Env") or [],
                    ["TERM=xterm"] if options.get("tty") else [], [f"HOSTNAME={hostname}"],
                    *(parse_env_file(p) for p in options.get("env_file") or []),
                    parse_env(options.get("env") or []))
    process = spec["process"]
    process.update(terminal=bool(options.get("tty")), args=args, env=env,
                   cwd=options.get("workdir") or process_defaults.get("WorkingDir") or "/",
                   user={"uid": 0, "gid": 0}, noNewPrivileges=bool(security.get("no_new_privileges")),
                   rlimits=[{"type": "RLIMIT_NOFILE", "hard": _nofile(), "soft": _nofile()}],
                   capabilities={"bounding": list(caps), "effective": list(caps) if privileged_user else [],
                                 "permitted": list(caps) if privileged_user else [], "inheritable": [],
                                 "ambient": []})
    if not process["cwd"].startswith("/"):
        raise SpecError(f"-w {process['cwd']!r}: the working directory must be an absolute path")
    if security.get("apparmor") and security["apparmor"] != "unconfined":
        process["apparmorProfile"] = security["apparmor"]
    labels = [v for v in security.get("label") or [] if v != "disable"]
    if labels:
        process["selinuxLabel"] = ":".join(v.partition(":")[2] for v in labels)
    spec["hostname"] = hostname
    spec["root"] = {"path": rootfs, "readonly": bool(options.get("read_only"))}
    spec["annotations"] = {"io.container.manager": "capsactl",
                           "org.opencontainers.image.stopSignal": str(options.get("stop_signal_number", 15))}

    linux = spec["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if not (network == "host" and ns["type"] == "network")]
    if netns_path is not None:  # a bridge or a namespace of its own: joined, not made
        for ns in linux["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = netns_path
    linux["cgroupsPath"] = f"{CGROUP_PARENT}/{container_id}"
    linux["resources"] = _resources(options)
    masked = set(linux["maskedPaths"]) - set(security.get("unmask") or [])
    linux["maskedPaths"] = sorted(masked | set(security.get("mask") or []))
    if security.get("seccomp") != "unconfined":
        path = security.get("seccomp") or (SECCOMP_PROFILE if os.path.exists(SECCOMP_PROFILE) else None)
        if path is not None:
            linux["seccomp"] = load_seccomp_profile(path, caps)
    spec["mounts"] = _mounts(spec["mounts"], options, mounts, userdata, network)
    if os.geteuid() != 0:
        _make_rootless(spec, options)
    return spec


def _make_rootless(spec: dict, options: dict) -> None:
    """An unprivileged caller's container (podman rootless without subuids): a user namespace
    mapping the caller to root, /sys bound from the host (sysfs needs the network namespace's
    owner), no uid=/gid= mount options (those ids are not mapped), and no cgroup: limits need
    root here (no cgroup of its own to delegate), so asking for one is an error."""
    for flag, key in (("--memory", "memory"), ("--cpus", "cpus"), ("--pids-limit", "pids_limit")):
        if options.get(key) is not None:
            raise SpecError(f"{flag}: resource limits need root (a rootless container has no cgroup here)")
    linux = spec["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] not in ("user", "cgroup")]
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    linux.pop("resources", None)
    linux.pop("cgroupsPath", None)
    mounts = []
    for mount in spec["mounts"]:
        if mount["destination"] == "/sys":
            mount = {"destination": "/sys", "type": "none", "source": "/sys",
                     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
        elif mount["destination"] == "/sys/fs/cgroup":
            continue
        elif "options" in mount:
            mount = dict(mount, options=[o for o in mount["options"] if not o.startswith(("uid=", "gid="))])
        mounts.append(mount)
    spec["mounts"] = mounts


def _nofile() -> int:
    """podman's 1048576, or the caller's hard limit when it may not raise its own (no
    CAP_SYS_RESOURCE where capsactl runs: a container, a user namespace)."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            ceiling = min(1048576, int(f.read()))
    except (OSError, ValueError):
        ceiling = 1048576
    if hard != resource.RLIM_INFINITY and hard < ceiling and not _has_sys_resource():
        return hard
    return ceiling


def _has_sys_resource() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 24))  # CAP_SYS_RESOURCE
    except OSError:
        pass
    return False


def _resources(options: dict) -> dict:
    resources: dict = {"devices": [{"allow": False, "access": "rwm"}]}
    if options.get("memory"):
        resources["memory"] = {"limit": parse_size(str(options["memory"]), "--memory")}
    if options.get("cpus") is not None:
        try:
            cpus = float(options["cpus"])
        except ValueError:
            raise SpecError(f"--cpus {options['cpus']!r}: not a number") from None
        if cpus <= 0 or cpus > (os.cpu_count() or 1):
            raise SpecError(f"--cpus {options['cpus']!r}: must be more than 0 and at most the machine's "
                            f"{os.cpu_count()} CPUs")
        resources["cpu"] = {"quota": int(cpus * 100_000), "period": 100_000}
    if options.get("pids_limit") is not None:
        limit = int(options["pids_limit"])
        if limit == 0 or limit < -1:
            raise SpecError(f"--pids-limit {limit}: give a positive number, or -1 for no limit")
        resources["pids"] = {"limit": limit}
    return resources


def _mounts(defaults: list[dict], options: dict, volumes: list[dict], userdata: str, network: str) -> list[dict]:
    mounts = [dict(m) for m in defaults]
    for name in ("hostname", "hosts", "resolv.conf"):
        mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": os.path.join(userdata, name),
                       "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev"]})
    if options.get("read_only"):
        # podman's read-only-tmpfs (without its tmpcopyup, which capsa does not do: the
        # image's files under these directories are not copied in)
        for destination, mode in (("/tmp", "1777"), ("/var/tmp", "1777"), ("/run", "755")):
            mounts.append({"destination": destination, "type": "tmpfs", "source": "tmpfs",
                           "options": ["rw", "rprivate", "nosuid", "nodev", f"mode={mode}"]})
    if options.get("init"):
        mounts.append({"destination": INIT_PATH, "type": "bind", "source": INIT_BINARY,
                       "options": ["bind", "ro", "nosuid", "nodev"]})
    for item in options.get("tmpfs") or []:
        mounts.append(parse_tmpfs(item))
    for volume in volumes:
        opts = ["rbind"] if "norbind" not in volume["options"] else ["bind"]
        opts += [o for o in volume["options"] if o not in ("bind", "rbind", "norbind")]
        if not any(o in ("rprivate", "private", "rshared", "shared", "rslave", "slave") for o in opts):
            opts.append("rprivate")
        mounts.append({"destination": volume["destination"], "type": "bind", "source": volume["host_path"],
                       "options": opts})
    # A later mount on the same destination replaces an earlier one (a --tmpfs /tmp, a -v on /etc/hosts).
    by_destination: dict[str, dict] = {}
    for mount in mounts:
        by_destination.pop(os.path.normpath(mount["destination"]), None)
        by_destination[os.path.normpath(mount["destination"])] = mount
    return list(by_destination.values())


def write_userdata_files(userdata: str, hostname: str, network: str, network_info: dict | None = None,
                         name: str = "") -> None:
    """/etc/hostname, /etc/hosts and /etc/resolv.conf for the container (podman's userdata); a
    bridged container's from its network's addresses and DNS (capsa.manager.network)."""
    os.makedirs(userdata, mode=0o700, exist_ok=True)
    with open(os.path.join(userdata, "hostname"), "w") as f:
        f.write(hostname + "\n")
    hosts = "127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost localhost.localdomain\n"
    if network != "host":
        hosts += f"127.0.1.1\t{hostname}\n"
    else:
        try:
            with open("/etc/hosts") as f:
                hosts = f.read()
        except OSError:
            pass
    bridged = bool(network_info and network_info.get("mode") == "bridge")
    if bridged:
        from capsa.manager import network as networks

        hosts += networks.hosts_entries(network_info, hostname, name)
    with open(os.path.join(userdata, "hosts"), "w") as f:
        f.write(hosts)
    if bridged:
        resolv = networks.resolv_conf(network_info)
    else:
        try:
            with open("/etc/resolv.conf") as f:
                resolv = f.read()
        except OSError:
            resolv = ""
    with open(os.path.join(userdata, "resolv.conf"), "w") as f:
        f.write(resolv)
    for name in ("hostname", "hosts", "resolv.conf"):
        os.chmod(os.path.join(userdata, name), 0o644)


# --- at start: the user, from the rootfs ------------------------------------------------------------

def resolve_user(rootfs: str, user: str) -> dict:
    """-u NAME|UID[:GROUP|GID] against the rootfs's /etc/passwd and /etc/group (read inside the
    rootfs: a symlink there cannot reach the host's)."""
    name, group = parse_user(user)
    if not name:
        return {"uid": 0, "gid": 0}
    passwd = _read_in_root(rootfs, "/etc/passwd")
    uid = gid = None
    home_entry = None
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) < 4:
            continue
        if fields[0] == name or (name.isdigit() and fields[2] == name):
            home_entry = fields
            break
    if home_entry is not None:
        uid, gid = int(home_entry[2]), int(home_entry[3])
    elif name.isdigit():
        uid, gid = int(name), 0
    else:
        raise SpecError(f"-u {user!r}: no user {name!r} in the image's /etc/passwd")
    additional = []
    groups = _read_in_root(rootfs, "/etc/group")
    user_name = home_entry[0] if home_entry else None
    for line in groups.splitlines():
        fields = line.split(":")
        if len(fields) < 4:
            continue
        if group and (fields[0] == group or (group.isdigit() and fields[2] == group)):
            gid = int(fields[2])
        if user_name and user_name in fields[3].split(",") and fields[2].isdigit():
            additional.append(int(fields[2]))
    if group and not any((line.split(":") + ["", "", ""])[0] == group for line in groups.splitlines()):
        if not group.isdigit():
            raise SpecError(f"-u {user!r}: no group {group!r} in the image's /etc/group")
        gid = int(group)
    result = {"uid": uid, "gid": gid}
    extra = sorted(set(additional) - {gid})
    if extra:
        result["additionalGids"] = extra
    return result


def _read_in_root(rootfs: str, path: str) -> str:
    from capsa import linux

    try:
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        fd = linux.openat2(root_fd, path.lstrip("/"), os.O_RDONLY, linux.RESOLVE_IN_ROOT)
    except OSError:
        return ""
    finally:
        os.close(root_fd)
    with os.fdopen(fd) as f:
        return f.read()
