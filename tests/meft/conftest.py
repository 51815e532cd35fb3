"""Shared fixtures of the meft tests."""

import pytest

import meft.reversible


@pytest.fixture
def function_calls(monkeypatch):
    """How many couplings each call of the reversible Function ran (one entry per call)."""
    calls = []
    original = meft.reversible.reversible

    def counting(couplings, *args, **kwargs):
        calls.append(len(couplings))
        return original(couplings, *args, **kwargs)

    monkeypatch.setattr(meft.reversible, "reversible", counting)
    return calls
