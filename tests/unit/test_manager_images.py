"""Pure logic of capsactl's images: references, chain ids, platform choice, filters, templates."""

from __future__ import annotations

import hashlib

import pytest

from capsa.ctl.images import render_template
from capsa.manager import imagefilter
from capsa.manager.archive import choose_platform
from capsa.manager.errors import ImageError, ManagerError
from capsa.manager.images import Reference, chain_ids


@pytest.mark.parametrize("text, default, expected", [
    ("busybox", "docker.io", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io", "docker.io/library/busybox:1.36"),
    ("user/app", "docker.io", "docker.io/user/app:latest"),
    ("bb:1", "localhost", "localhost/bb:1"),
    ("127.0.0.1:5000/test/bb:1", "docker.io", "127.0.0.1:5000/test/bb:1"),
    ("localhost/x", "docker.io", "localhost/x:latest"),
    ("quay.io/a/b/c:v1.2-rc_3", "docker.io", "quay.io/a/b/c:v1.2-rc_3"),
])
def test_reference_names(text, default, expected):
    assert Reference.parse(text, default).name == expected


def test_reference_with_digest():
    digest = "sha256:" + "ab" * 32
    ref = Reference.parse(f"127.0.0.1:5000/x@{digest}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == ("127.0.0.1:5000", "x", None, digest)
    assert str(ref) == f"127.0.0.1:5000/x@{digest}"


@pytest.mark.parametrize("text", ["", "Busybox", "a b", "x:", "x:-tag", "x@sha256:12", "x//y", "/x", "x$"])
def test_bad_references(text):
    with pytest.raises(ImageError):
        Reference.parse(text)


def test_chain_ids_as_the_image_spec():
    a, b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    first, second = chain_ids([a, b])
    assert first == "1" * 64
    assert second == hashlib.sha256(f"sha256:{'1' * 64} {b}".encode()).hexdigest()


def test_choose_platform():
    manifests = [{"digest": "a", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
                 {"digest": "b", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                 {"digest": "c", "platform": {"os": "linux", "architecture": "amd64"}},
                 {"digest": "d", "platform": {"os": "windows", "architecture": "amd64"}}]
    assert choose_platform(manifests, "linux", "amd64")["digest"] == "c"
    assert choose_platform(manifests, "linux", "arm", "v7")["digest"] == "b"
    assert choose_platform(manifests, "windows", "amd64")["digest"] == "d"
    with pytest.raises(ImageError, match="no image for linux/s390x.*linux/amd64, linux/arm, windows/amd64"):
        choose_platform(manifests, "linux", "s390x")


def test_reference_filter():
    names = ["docker.io/library/busybox:latest", "localhost/bb:1"]
    for pattern in ("busybox", "library/busybox", "docker.io/library/busybox", "busybox:latest", "bb", "b*",
                    "localhost/bb:1", "bb:*"):
        assert imagefilter.reference_matches(pattern, names), pattern
    for pattern in ("busybox:1", "bb:2", "other", "localhost/busybox"):
        assert not imagefilter.reference_matches(pattern, names), pattern


def test_filter_parsing_and_times():
    assert imagefilter.parse(["label=a", "label=b=c", "dangling=true"]) == {"label": ["a", "b=c"],
                                                                          "dangling": ["true"]}
    with pytest.raises(ManagerError, match="invalid image filter"):
        imagefilter.parse(["colour=red"])
    with pytest.raises(ManagerError, match="invalid image filter"):
        imagefilter.parse(["label"])
    assert imagefilter.timestamp("1700000000") == 1700000000
    assert imagefilter.timestamp("2023-11-14T22:13:20Z") == 1700000000
    import time

    assert abs(imagefilter.timestamp("1h30m") - (time.time() - 5400)) < 5
    with pytest.raises(ManagerError, match="invalid time"):
        imagefilter.timestamp("yesterday")


def test_templates():
    row = {"ID": "abc", "Repository": "localhost/bb", "Labels": {"a": "b"}, "Names": ["x", "y"], "Missing": None}
    assert render_template("{{.ID}} {{ .Repository }}", row) == "abc localhost/bb"
    assert render_template("{{json .Labels}}", row) == '{"a": "b"}'
    assert render_template("{{.Labels}} {{.Names}}", row) == "map[a:b] [x y]"
    assert render_template("{{.Labels.a}} {{upper .ID}}", row) == "b ABC"
    assert render_template("{{.Missing}}", row) == "<no value>"
    with pytest.raises(ManagerError, match="unsupported template"):
        render_template("{{range .Names}}{{end}}", row)
