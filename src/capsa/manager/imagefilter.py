"""`images --filter` as podman's: KEY=VALUE pairs; values of one key are alternatives (any may
match), different keys must all match.

    reference=PATTERN   a name matches the glob (with or without its registry, library/ or tag)
    before=IMAGE        built before IMAGE        since=IMAGE   built after IMAGE
    dangling=BOOL       without a name            containers=BOOL  used by a container
    label=KEY[=VALUE]   id=PREFIX                 until=TIME    built before TIME (RFC 3339,
                                                                Unix seconds or a duration ago: 10m, 2h)
    readonly=BOOL       (images here are never read-only)
"""

from __future__ import annotations

import calendar
import fnmatch
import time

from capsa.manager.errors import ManagerError

KEYS = ("reference", "before", "since", "dangling", "label", "id", "containers", "until", "readonly", "intermediate")


def parse(filters: list[str]) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for item in filters:
        key, eq, value = item.partition("=")
        if not eq or key not in KEYS:
            raise ManagerError(f"invalid image filter {item!r}: use one of {', '.join(k + '=' for k in KEYS)}")
        parsed.setdefault(key, []).append(value)
    return parsed


def to_bool(key: str, value: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise ManagerError(f"invalid image filter {key}={value!r}: true or false")


def timestamp(text: str) -> float:
    """An RFC 3339 time, Unix seconds, or a duration before now (10m, 2h, 1h30m, 45s)."""
    try:
        return float(text)
    except ValueError:
        pass
    for pattern, text_part in (("%Y-%m-%dT%H:%M:%S", text[:19]), ("%Y-%m-%d", text)):
        try:
            return calendar.timegm(time.strptime(text_part, pattern))
        except ValueError:
            continue
    total, number = 0.0, ""
    units = {"s": 1, "m": 60, "h": 3600}
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total += float(number) * units[char]
            number = ""
        else:
            raise ManagerError(f"invalid time {text!r} in an image filter: RFC 3339, Unix seconds or 10m/2h")
    if number or not text:
        raise ManagerError(f"invalid time {text!r} in an image filter: RFC 3339, Unix seconds or 10m/2h")
    return time.time() - total


def created_at(image) -> float:
    try:
        return calendar.timegm(time.strptime(image.config_created[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0


def reference_matches(pattern: str, names: list[str]) -> bool:
    if "/" not in pattern and ":" not in pattern.rpartition("/")[2] and not pattern.startswith("sha256"):
        pattern_tag = None
    else:
        pattern_tag = pattern.rpartition(":")[2] if ":" in pattern.rpartition("/")[2] else None
    for name in names:
        repo, _, tag = name.rpartition(":")
        short_repo = repo.partition("/")[2]  # without the registry
        forms = [repo, short_repo, short_repo.removeprefix("library/")]
        if pattern_tag is not None:
            base = pattern[: -(len(pattern_tag) + 1)]
            if any(fnmatch.fnmatchcase(form, base) for form in forms) and fnmatch.fnmatchcase(tag, pattern_tag):
                return True
        elif any(fnmatch.fnmatchcase(form, pattern) for form in forms) or fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def apply(images, listed: list, filters: list[str]) -> list:
    """`listed` (images.Image) that pass `filters`; `images` (ImageStore) resolves before=/since=."""
    parsed = parse(filters)
    if not parsed:
        return listed
    reference_times: dict[str, float] = {}
    for key in ("before", "since"):
        for text in parsed.get(key, []):
            reference_times[text] = created_at(images.resolve(text))
    users = None
    if "containers" in parsed:
        users = {r["image_id"] for r in images.store.query("SELECT DISTINCT image_id FROM containers")}

    def passes(image) -> bool:
        checks = {
            "reference": lambda v: reference_matches(v, image.names),
            "before": lambda v: created_at(image) < reference_times[v],
            "since": lambda v: created_at(image) > reference_times[v],
            "dangling": lambda v: (not image.names) == to_bool("dangling", v),
            "label": lambda v: _label_matches(v, image.process_defaults.get("Labels") or {}),
            "id": lambda v: image.id.startswith(v.removeprefix("sha256:")),
            "containers": lambda v: (image.id in users) == to_bool("containers", v),
            "until": lambda v: created_at(image) < timestamp(v),
            "readonly": lambda v: not to_bool("readonly", v),
            "intermediate": lambda v: not to_bool("intermediate", v),
        }
        return all(any(checks[key](value) for value in values) for key, values in parsed.items())

    return [image for image in listed if passes(image)]


def _label_matches(spec: str, labels: dict) -> bool:
    key, eq, value = spec.partition("=")
    if key not in labels:
        return False
    return not eq or labels[key] == value
