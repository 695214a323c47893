"""Shared fixtures: backend availability (a missing framework skips with its reason, never errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

import backends

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def backend_or_skip(name: str):
    """Load backend ``name`` or skip the test with the reason it cannot run here."""
    reason = backends.unavailable_reason(name)
    if reason:
        pytest.skip(reason)
    return backends.load(name)


@pytest.fixture
def torch_backend():
    return backend_or_skip("torch")
