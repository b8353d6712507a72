"""A generated corpus of malformed and hostile config.json documents: each one is either accepted
or rejected with a ConfigError naming a field, never any other exception.

More examples: CAPSA_CORPUS_EXAMPLES=20000 ./test.sh tests/unit/test_spec_corpus.py
"""

from __future__ import annotations

import os

from corpus import json_values, mutated_specs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsa import spec
from capsa.errors import CapsaError, ConfigError

EXAMPLES = int(os.environ.get("CAPSA_CORPUS_EXAMPLES", "1500"))

@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_mutated_configs_are_accepted_or_named(doc):
    try:
        spec.validate(doc)
    except ConfigError as err:
        assert str(err).startswith("invalid config")


@settings(max_examples=EXAMPLES // 3, deadline=None)
@given(json_values)
def test_arbitrary_documents(doc):
    try:
        spec.validate(doc)
    except ConfigError:
        pass


@settings(max_examples=EXAMPLES // 3, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_config_file(tmp_path_factory, raw):
    bundle = tmp_path_factory.mktemp("b")
    (bundle / "config.json").write_bytes(raw)
    try:
        spec.load_bundle(str(bundle))
    except CapsaError:
        pass
