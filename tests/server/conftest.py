"""Fixtures of the server tests: the tiny checkpoint loaded once, to run the model directly
and compare with what the server answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store.checkpoint import Checkpoint, load


@pytest.fixture(scope="session")
def reference(tiny_checkpoint: Path) -> Checkpoint:
    """The same checkpoint the test servers load, for running the model directly."""
    return load(tiny_checkpoint, "cpu")
