from __future__ import annotations

import pytest
from fake_kernel import FakeKernel


@pytest.fixture
def kernel(monkeypatch):
    """Every kernel call of capsa.linux replaced by a recording fake (tests/unit/fake_kernel.py)."""
    fake = FakeKernel(monkeypatch)
    yield fake
    fake.close()
