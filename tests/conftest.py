"""Shared fixtures: backend availability (a missing framework skips with its reason, never errors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import backends

# The property tests assert what holds, not how fast: on a loaded machine (a sweep beside the tests)
# Hypothesis's 200 ms deadline and its slow-generation health check failed tests whose properties held.
settings.register_profile("properties", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("properties")

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
