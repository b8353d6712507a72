"""OCI hooks directories (oci-hooks(5), podman's pkg/hooks): hook definitions in JSON files that
the manager merges into a container's config.json when their conditions match.

    /usr/share/containers/oci/hooks.d/*.json    the default directory
    /etc/containers/oci/hooks.d/*.json          the administrator's: a file of the same name
                                                masks the default directory's

Schema 1.0.0:
    {"version": "1.0.0",
     "hook": {"path": "/abs/path", "args": [...], "env": [...], "timeout": N},   an OCI hook
     "when": {"always": true, "annotations": {KEY_RE: VALUE_RE}, "commands": [RE],
              "hasBindMounts": true},                                            at least one
     "stages": ["prestart", "createRuntime", ...]}                               at least one

`when`: every condition given must hold (1.0.0's rule): always true; for each annotation
pattern pair, some annotation whose key and value match (regular expressions, searched, as Go's
MatchString); some pattern of `commands` matches process.args[0]; the container has a bind
mount (capsactl passes whether it has -v volumes, as libpod does). Hooks are added after the config's own, in file-name order. A file that is not valid is
reported (its name and why) and skipped: one bad file does not stop containers from starting.
"""

from __future__ import annotations

import json
import os
import re

DEFAULT_DIRS = ("/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d")  # lowest precedence first
STAGES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


class InvalidHook(ValueError):
    pass


class HookDefinition:
    __slots__ = ("name", "hook", "when", "stages")

    def __init__(self, name: str, hook: dict, when: dict, stages: list[str]):
        self.name, self.hook, self.when, self.stages = name, hook, when, stages

    def matches(self, spec: dict, annotations: dict[str, str], has_bind_mounts: bool) -> bool:
        when = self.when
        if "always" in when and not when["always"]:
            return False
        if "hasBindMounts" in when and when["hasBindMounts"] and not has_bind_mounts:
            return False
        for key_pattern, value_pattern in when.get("annotations", {}).items():
            if not any(re.search(key_pattern, key) and re.search(value_pattern, value)
                       for key, value in annotations.items()):
                return False
        commands = when.get("commands")
        if commands:
            args = (spec.get("process") or {}).get("args") or []
            if not args or not any(re.search(pattern, args[0]) for pattern in commands):
                return False
        return True


def parse(name: str, text: str) -> HookDefinition:
    """One hook file's definition; InvalidHook says what is wrong with it."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise InvalidHook(f"not JSON: {err}") from None
    if not isinstance(data, dict):
        raise InvalidHook("not a JSON object")
    if data.get("version") != "1.0.0":
        raise InvalidHook(f"unsupported version {data.get('version')!r} (capsactl reads 1.0.0)")
    hook, when, stages = data.get("hook"), data.get("when"), data.get("stages")
    if not isinstance(hook, dict) or not isinstance(hook.get("path"), str) or not hook["path"].startswith("/"):
        raise InvalidHook("hook.path must be an absolute path")
    for key, kind in (("args", list), ("env", list), ("timeout", int)):
        if key in hook and not isinstance(hook[key], kind):
            raise InvalidHook(f"hook.{key} must be a {kind.__name__}")
    if "timeout" in hook and hook["timeout"] <= 0:
        raise InvalidHook("hook.timeout must be positive")
    if not isinstance(when, dict) or not when:
        raise InvalidHook("when must name at least one condition")
    unknown = set(when) - {"always", "annotations", "commands", "hasBindMounts"}
    if unknown:
        raise InvalidHook(f"unknown when condition(s): {', '.join(sorted(unknown))}")
    for key in ("always", "hasBindMounts"):
        if key in when and not isinstance(when[key], bool):
            raise InvalidHook(f"when.{key} must be true or false")
    annotations = when.get("annotations", {})
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise InvalidHook("when.annotations must map patterns to patterns")
    commands = when.get("commands", [])
    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        raise InvalidHook("when.commands must be a list of patterns")
    for pattern in [*annotations, *annotations.values(), *commands]:
        try:
            re.compile(pattern)
        except re.error as err:
            raise InvalidHook(f"invalid pattern {pattern!r}: {err}") from None
    if not isinstance(stages, list) or not stages:
        raise InvalidHook("stages must list at least one stage")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise InvalidHook(f"unknown stage(s) {', '.join(map(str, bad))}: use {', '.join(STAGES)}")
    return HookDefinition(name, hook, when, stages)


def load(directories: list[str] | tuple[str, ...] = DEFAULT_DIRS, warn=None) -> list[HookDefinition]:
    """The hook definitions of `directories` (lowest precedence first), by file name; invalid
    files are passed to `warn(message)` and skipped. A missing directory has no hooks."""
    files: dict[str, str] = {}
    for directory in directories:
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if name.endswith(".json"):
                files[name] = os.path.join(directory, name)  # a later directory masks an earlier one
    definitions = []
    for name in sorted(files, key=lambda n: n.casefold()):
        path = files[name]
        try:
            with open(path, encoding="utf-8") as f:
                definitions.append(parse(name, f.read()))
            if not os.path.isfile(definitions[-1].hook["path"]):
                raise InvalidHook(f"hook.path {definitions[-1].hook['path']} does not exist")
        except (InvalidHook, OSError, UnicodeDecodeError) as err:
            if definitions and definitions[-1].name == name:
                definitions.pop()
            if warn is not None:
                warn(f"skipping the OCI hook file {path}: {err}")
    return definitions


def has_bind_mounts(spec: dict) -> bool:
    return any(m.get("type") == "bind" or "bind" in (m.get("options") or []) or "rbind" in (m.get("options") or [])
               for m in spec.get("mounts") or [])


def merge(spec: dict, definitions: list[HookDefinition], bind_mounts: bool | None = None) -> list[str]:
    """Add the matching definitions' hooks to spec["hooks"], after the config's own; return the
    names of the files that matched (for inspect and debugging). `bind_mounts`: what
    hasBindMounts tests, when the caller knows better than the spec's mounts (capsactl: the
    user's -v volumes, as libpod's len(UserVolumes) > 0; its own /etc/hosts binds do not count)."""
    annotations = spec.get("annotations") or {}
    bind = has_bind_mounts(spec) if bind_mounts is None else bind_mounts
    matched = []
    for definition in definitions:
        if not definition.matches(spec, annotations, bind):
            continue
        matched.append(definition.name)
        hooks = spec.setdefault("hooks", {})
        for stage in definition.stages:
            hooks.setdefault(stage, []).append(dict(definition.hook))
    return matched
