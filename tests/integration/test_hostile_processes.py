"""Hostile and malformed process.json files for `capsa exec --process`, and raw bytes as the file:
each ends in a clear error or a working exec, never a traceback or a hang, and leaves no process
behind in the container or on the host.

More examples: CAPSA_EXEC_CORPUS_EXAMPLES=3000 ./test.sh tests/integration/test_hostile_processes.py
"""

from __future__ import annotations

import os
import subprocess

from corpus import json_values, mutated_processes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsa import jsonfast

EXAMPLES = int(os.environ.get("CAPSA_EXEC_CORPUS_EXAMPLES", "300"))


def _settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))


def _running(bundle) -> int:
    if not os.path.exists(os.path.join(bundle.root, "c1")):
        bundle.set_args("sleep", "3600")
        bundle.create("c1")
        bundle.capsa("start", "c1")
    return jsonfast.loads(bundle.capsa("state", "c1").stdout)["pid"]


def _host_children_of_capsa(root: str) -> list[int]:
    """capsa processes still alive for this state root (an exec's intermediate child, say)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if root.encode() in cmdline and b"exec" in cmdline.split(b"\0"):
            found.append(int(name))
    return found


def _exec_file(bundle, path: str) -> None:
    init = _running(bundle)
    result = bundle.capsa("exec", "--process", path, "c1", check=False, timeout=30, stdin=subprocess.DEVNULL)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    if result.returncode != 0 and "corpus-ok" not in result.stdout:
        # Either capsa's own error (one line, level=error) or the program's own failure.
        assert "level=error" in result.stderr or result.returncode in (1, 2, 126, 127, 128 + 9) or result.stdout, result
    assert jsonfast.loads(bundle.capsa("ps", "--format", "json", "c1").stdout) == [init]
    assert _host_children_of_capsa(bundle.root) == []


@_settings(EXAMPLES)
@given(doc=mutated_processes())
def test_exec_survives_hostile_process_files(bundle, tmp_path, doc):
    path = tmp_path / "process.json"
    path.write_text(jsonfast.dumps(doc))
    _exec_file(bundle, str(path))


@_settings(max(EXAMPLES // 6, 10))
@given(doc=json_values)
def test_exec_survives_arbitrary_json(bundle, tmp_path, doc):
    path = tmp_path / "process.json"
    path.write_text(jsonfast.dumps(doc))
    _exec_file(bundle, str(path))


@_settings(max(EXAMPLES // 6, 10))
@given(raw=st.binary(max_size=200))
def test_exec_survives_arbitrary_bytes(bundle, tmp_path, raw):
    path = tmp_path / "process.json"
    path.write_bytes(raw)
    _exec_file(bundle, str(path))
