"""Fixtures of the paper reward tests (helpers live in reward_helpers.py, a uniquely named module)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

# Remote-code modules (the jina-clip test) are copied here instead of the user's HF cache (effective when
# transformers is first imported after this file, as in `pytest tests/rewards`).
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="miro-test-hf-modules-"))


@pytest.fixture(autouse=True)
def one_thread():
    """The models here are tiny: one torch thread avoids oversubscribing the shared cores (about 5x faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def registry():
    from miro_core.plugins import build_registry

    return build_registry()
