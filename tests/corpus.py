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
