from __future__ import annotations

import os
import sys

import pytest

# Run from a checkout without installing: tests import capsa from src/.
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)


@pytest.fixture
def kernel(monkeypatch):
    """Every kernel call of capsa.linux replaced by a recording fake (tests/unit/fake_kernel.py).

    Here rather than in a tests/unit/conftest.py: the integration tests import their helpers with
    `from conftest import ...`, which a second conftest module would shadow."""
    from fake_kernel import FakeKernel

    fake = FakeKernel(monkeypatch)
    yield fake
    fake.close()
