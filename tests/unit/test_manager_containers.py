"""capsactl's containers, pure logic: flags to spec (ocispec), Go templates (ctl.format), volume
parsing, exit codes of failed starts, the seccomp profile conversion."""

from __future__ import annotations

import json

import pytest

from capsa.ctl import format as fmt
from capsa.manager import ocispec
from capsa.manager.containers import start_error_code
from capsa.manager.errors import ManagerError

IMAGE = {"config": {"Entrypoint": ["/entry"], "Cmd": ["default"], "Env": ["PATH=/image/bin", "A=image"],
                    "WorkingDir": "/work", "User": "", "Labels": {"l": "1"}}}


def build(**options):
    return ocispec.build("a" * 64, IMAGE, options, rootfs="/r", userdata="/u", mounts=[])


# --- ocispec -------------------------------------------------------------------------------------------

def test_sizes_and_signals():
    assert ocispec.parse_size("512", "--memory") == 512
    assert ocispec.parse_size("64m", "--memory") == 64 * 1024**2
    assert ocispec.parse_size("1g", "--memory") == 1024**3
    assert ocispec.parse_size("2kb", "--memory") == 2048
    for bad in ("lots", "-1m", "0"):
        with pytest.raises(ocispec.SpecError, match="--memory"):
            ocispec.parse_size(bad, "--memory")
    assert ocispec.parse_signal("SIGTERM") == 15
    assert ocispec.parse_signal("kill") == 9
    assert ocispec.parse_signal("10") == 10
    assert ocispec.parse_signal("RTMIN+1") > ocispec.parse_signal("RTMIN")
    with pytest.raises(ocispec.SpecError, match="no such signal"):
        ocispec.parse_signal("SIGNOPE")


def test_command_from_image_and_flags():
    config = IMAGE["config"]
    assert ocispec.command_of(config, [], None) == ["/entry", "default"]
    assert ocispec.command_of(config, ["x"], None) == ["/entry", "x"]
    assert ocispec.command_of(config, ["x"], "") == ["x"]  # --entrypoint "" clears it
    assert ocispec.command_of(config, [], "/other") == ["/other"]  # --entrypoint drops the image's Cmd
    assert ocispec.command_of(config, ["a"], '["/bin/sh", "-c"]') == ["/bin/sh", "-c", "a"]
    with pytest.raises(ocispec.SpecError, match="no command"):
        ocispec.command_of({}, [], None)
    with pytest.raises(ocispec.SpecError, match="JSON array"):
        ocispec.command_of({}, [], "[bad")


def test_environment_order_and_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_HOST", "h")
    env_file = tmp_path / "env"
    env_file.write_text("# c\nA=file\nB=file\n\nFROM_HOST\n")
    spec = build(env_file=[str(env_file)], env=["B=flag", "FROM_HOST", "UNSET_ONE"])
    env = spec["process"]["env"]
    assert env[0] == "PATH=/image/bin"
    assert "A=file" in env and "B=flag" in env and "FROM_HOST=h" in env
    assert not any(e.startswith("UNSET_ONE") for e in env)
    with pytest.raises(ocispec.SpecError, match="line 1"):
        env_file.write_text("=novalue\n")
        build(env_file=[str(env_file)])
    with pytest.raises(ocispec.SpecError, match="--env-file"):
        build(env_file=[str(tmp_path / "missing")])


def test_spec_fields_from_flags():
    spec = build(workdir="/tmp", hostname="h", read_only=True, memory="1m", cpus="1", pids_limit=10,
                 tmpfs=["/t:size=1m,exec"], init=True, network="host", stop_signal_number=10,
                 security_opt=["no-new-privileges", "seccomp=unconfined", "label=disable", "apparmor=p",
                               "mask=/secret", "unmask=/proc/kcore"])
    process, linux = spec["process"], spec["linux"]
    assert spec["ociVersion"] == "1.0.2-dev"
    assert process["cwd"] == "/tmp" and spec["hostname"] == "h" and spec["root"]["readonly"]
    assert process["args"][:2] == [ocispec.INIT_PATH, "--"]
    assert process["noNewPrivileges"] and process["apparmorProfile"] == "p"
    assert "seccomp" not in linux
    assert linux["resources"]["memory"] == {"limit": 1024**2}
    assert linux["resources"]["cpu"] == {"quota": 100000, "period": 100000}
    assert linux["resources"]["pids"] == {"limit": 10}
    assert not any(ns["type"] == "network" for ns in linux["namespaces"])
    assert "/secret" in linux["maskedPaths"] and "/proc/kcore" not in linux["maskedPaths"]
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert mounts["/t"]["options"] == ["rw", "nosuid", "nodev", "size=1m", "exec"]
    assert mounts["/tmp"]["type"] == "tmpfs"  # --read-only's tmpfs
    assert mounts[ocispec.INIT_PATH]["source"] == ocispec.INIT_BINARY
    assert mounts["/etc/hosts"]["source"] == "/u/hosts"
    assert spec["annotations"]["org.opencontainers.image.stopSignal"] == "10"


def test_defaults_are_podmans():
    spec = build()
    caps = spec["process"]["capabilities"]
    assert caps["bounding"] == ocispec.DEFAULT_CAPABILITIES == caps["effective"]
    assert spec["process"]["cwd"] == "/work" and not spec["process"]["noNewPrivileges"]
    assert spec["hostname"] == "a" * 12
    assert any(ns["type"] == "network" for ns in spec["linux"]["namespaces"])
    assert spec["linux"]["cgroupsPath"] == "/capsactl/" + "a" * 64


def test_bad_flags_name_themselves():
    for options, message in (({"cpus": "0"}, "--cpus"),
                             ({"cpus": "x"}, "--cpus"), ({"pids_limit": 0}, "--pids-limit"),
                             ({"workdir": "relative"}, "-w"), ({"security_opt": ["nope"]}, "nope"),
                             ({"security_opt": ["seccomp=/no/such/file"]}, "seccomp"),
                             ({"cap_add": ["CAP_NOPE"]}, "CAP_NOPE"), ({"tmpfs": ["rel"]}, "--tmpfs")):
        with pytest.raises(ocispec.SpecError, match=message.replace("-", r"\-")):
            build(**options)


def test_capabilities_arithmetic():
    assert ocispec.capabilities([], ["ALL"]) == []
    assert ocispec.capabilities(["NET_RAW"], ["ALL"]) == ["CAP_NET_RAW"]
    assert "CAP_CHOWN" not in ocispec.capabilities([], ["chown"])
    everything = ocispec.capabilities(["ALL"], ["CAP_SYS_ADMIN"])
    assert "CAP_SYS_ADMIN" not in everything and "CAP_SYS_MODULE" in everything
    spec = build(user="1000")
    assert spec["process"]["capabilities"]["effective"] == []
    assert spec["process"]["capabilities"]["bounding"] == ocispec.DEFAULT_CAPABILITIES


def test_volume_parsing():
    assert ocispec.parse_volume("/h:/c") == {"type": "bind", "source": "/h", "destination": "/c", "options": []}
    assert ocispec.parse_volume("/h:/c:ro,z")["options"] == ["ro"]
    assert ocispec.parse_volume("name:/c")["type"] == "volume"
    anonymous = ocispec.parse_volume("/c")
    assert anonymous["type"] == "volume" and anonymous["source"] == "" and anonymous["destination"] == "/c"
    assert ocispec.parse_volume("/c:ro")["options"] == ["ro"]
    for bad, message in (("name:rel", "absolute"), ("/h:rel", "unknown option"), ("/h:/c:bogus", "bogus"), ("a:b:c:d", "give"),
                         ("bad name:/c", "neither")):
        with pytest.raises(ocispec.SpecError, match=message):
            ocispec.parse_volume(bad)


def test_resolve_user_reads_the_rootfs(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nalice:x:1000:1001::/home:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\nstaff:x:50:alice\nalice:x:1001:\n")
    assert ocispec.resolve_user(str(tmp_path), "") == {"uid": 0, "gid": 0}
    assert ocispec.resolve_user(str(tmp_path), "alice") == {"uid": 1000, "gid": 1001, "additionalGids": [50]}
    assert ocispec.resolve_user(str(tmp_path), "alice:staff")["gid"] == 50
    assert ocispec.resolve_user(str(tmp_path), "2000:3000") == {"uid": 2000, "gid": 3000}
    with pytest.raises(ocispec.SpecError, match="bob"):
        ocispec.resolve_user(str(tmp_path), "bob")
    with pytest.raises(ocispec.SpecError, match="nogroup"):
        ocispec.resolve_user(str(tmp_path), "alice:nogroup")
    # /etc/passwd as a symlink to the host's is read inside the rootfs
    (tmp_path / "etc" / "passwd").unlink()
    (tmp_path / "etc" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(ocispec.SpecError):
        ocispec.resolve_user(str(tmp_path), "root")


def test_seccomp_profile_conversion(tmp_path):
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {}, "excludes": {}},
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {}, "excludes": {}},
            {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["chown"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_CHOWN"]}},
            {"names": ["arch_only"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
            {"names": ["future"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
        ],
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    from capsa.manager.images import go_arch

    converted = ocispec.load_seccomp_profile(str(path), ["CAP_CHOWN"])
    names = [rule["names"] for rule in converted["syscalls"]]
    assert names == [["read"]]  # the duplicate once; the others do not apply
    assert converted["defaultErrnoRet"] == 38
    if go_arch() == "amd64":
        assert converted["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    with_admin = ocispec.load_seccomp_profile(str(path), ["CAP_SYS_ADMIN"])
    assert [r["names"] for r in with_admin["syscalls"]] == [["read"], ["bpf"], ["chown"]]


def test_start_error_codes():
    assert start_error_code('exec: "x": executable file not found in $PATH') == 127
    assert start_error_code("exec /bin/x: no such file or directory") == 127
    assert start_error_code("exec /etc: permission denied") == 126
    assert start_error_code("cgroup trouble") == 125


# --- Go templates -----------------------------------------------------------------------------------------

ITEMS = [{"ID": "abc", "Names": "web", "State": {"Status": "running", "Pid": 7}, "Labels": {"a": "1", "b": "2"},
          "Ports": [], "Mounts": ["/x", "/y"], "Running": True, "Nothing": None}]


def test_fields_functions_and_pipelines():
    assert fmt.render("{{.ID}} {{.State.Status}}", ITEMS) == "abc running\n"
    assert fmt.render("{{json .State}}", ITEMS) == '{"Status": "running", "Pid": 7}\n'
    assert fmt.render("{{.Labels | json}}", ITEMS) == '{"a": "1", "b": "2"}\n'
    assert fmt.render("{{index .Labels \"b\"}}", ITEMS) == "2\n"
    assert fmt.render("{{upper .Names}} {{len .Mounts}} {{join .Mounts \",\"}}", ITEMS) == "WEB 2 /x,/y\n"
    assert fmt.render("{{.Labels}} {{.Mounts}} {{.Running}} {{.Nothing}}", ITEMS) == \
        "map[a:1 b:2] [/x /y] true <no value>\n"
    assert fmt.render('{{printf "%s=%d" .Names .State.Pid}}', ITEMS) == "web=7\n"
    assert fmt.render("{{range .Mounts}}[{{.}}]{{end}}", ITEMS) == "[/x][/y]\n"
    assert fmt.render("{{if .Running}}up{{else}}down{{end}}", ITEMS) == "up\n"
    assert fmt.render("{{if .Ports}}p{{else}}none{{end}}", ITEMS) == "none\n"
    assert fmt.render("{{.id}}", ITEMS) == "abc\n"  # podman matches field names loosely too
    assert fmt.render("{{.ID}}\\t{{.Names}}", ITEMS) == "abc\tweb\n"  # a typed \t is a tab (aligned in tables)


def test_table_headers_and_alignment():
    items = [{"ID": "a", "Names": "long-name"}, {"ID": "bbbbbb", "Names": "n"}]
    out = fmt.render("table {{.ID}}\t{{.Names}}", items, {"ID": "CONTAINER ID"})
    assert out.splitlines() == ["CONTAINER ID  NAMES", "a             long-name", "bbbbbb        n"]
    out = fmt.render("table {{.Names}}\t{{.ID}}", items)
    assert out.splitlines()[0] == "NAMES       ID"  # at least 12 wide, as podman's tabwriter
    assert fmt.header_of("{{.CreatedAt}}\t{{.State.Status}}") == "CREATED AT\tSTATUS"


def test_template_errors_are_clear():
    for template, message in (("{{.Nope}}", "Nope"), ("{{.ID", "unclosed"), ("{{range .Mounts}}", "end"),
                              ("{{nosuchfn .ID}}", "nosuchfn"), ("{{end}}", "end"), ("{{}}", "empty")):
        with pytest.raises(ManagerError, match=message):
            fmt.render(template, ITEMS)


class _Names:
    """The store's containers table, for free_name: which names are taken."""

    def __init__(self, taken: set[str]):
        self.taken = taken

    def one(self, query: str, args: tuple):
        return {"id": "0123456789abcdef"} if args[0] in self.taken else None


def test_a_made_up_name_that_is_taken_is_made_up_again_and_a_given_one_is_an_error(monkeypatch):
    from capsa.manager import containers
    from capsa.manager.errors import NameInUse

    names = iter(["fancy_finch249", "calm_wren7"])
    monkeypatch.setattr(containers, "random_name", lambda: next(names))
    db = _Names({"fancy_finch249", "keen_moth3"})
    assert containers.free_name(db, "keen_moth3", generated=True) == "calm_wren7"  # two taken in a row
    assert containers.free_name(db, "quiet_swan1", generated=True) == "quiet_swan1"
    with pytest.raises(NameInUse, match="keen_moth3"):
        containers.free_name(db, "keen_moth3", generated=False)
