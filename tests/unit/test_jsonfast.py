from __future__ import annotations

import json

import pytest

from capsa import jsonfast


@pytest.mark.parametrize(
    "text",
    ['{"a": [1, 2.5, "x\\u00e9", true, false, null, {"b": {}}]}', "[]", " 3 ", '"s"', '{"k": -1e5}'],
)
def test_loads_matches_json(text):
    assert jsonfast.loads(text) == json.loads(text)


@pytest.mark.parametrize("bad", ["", "{", '{"a":1} x', "NaN", "[1,]", b"\xff", "[" * 100000])
def test_loads_rejects(bad):
    with pytest.raises(jsonfast.JSONError):
        jsonfast.loads(bad)


def test_dumps_round_trip():
    value = {"a": [1, "é", None, True], "b": {"c": 1.5}}
    assert json.loads(jsonfast.dumps(value)) == value
    assert " " not in jsonfast.dumps(value)


def test_dumps_indent_matches_go_shape():
    value = {"id": "x", "pid": 1, "list": [1, {"k": "v"}], "empty": {}, "none": []}
    assert jsonfast.dumps_indent(value) == json.dumps(value, indent=2, ensure_ascii=False)
