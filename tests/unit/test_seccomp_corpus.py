"""A generated corpus of malformed linux.seccomp profiles: validate_profile() and building the
filter (libseccomp, in the init) end in a CapsaError naming the field, or in a filter.

More examples: CAPSA_SECCOMP_CORPUS_EXAMPLES=20000 ./test.sh tests/unit/test_seccomp_corpus.py
"""

from __future__ import annotations

import os

import pytest
from corpus import mutated_seccomp
from hypothesis import HealthCheck, given, settings

from capsa.errors import CapsaError

seccomp = pytest.importorskip("capsa.seccomp")
EXAMPLES = int(os.environ.get("CAPSA_SECCOMP_CORPUS_EXAMPLES", "1000"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_seccomp())
def test_mutated_profiles_are_built_or_named(profile):
    try:
        seccomp.validate_profile(profile)
        seccomp.Filter(profile)
    except CapsaError as err:
        assert "linux.seccomp" in str(err)
