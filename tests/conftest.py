"""Shared test set-up: makes the helpers in ``tests/`` (e.g. ``scripted_env``) importable
whatever pytest's import mode, keeps hypothesis runs reproducible in CI, and records what
torchrl's logger gets (``torchrl_records``)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator

import pytest
import torch
from hypothesis import Phase, settings

sys.path.insert(0, os.path.dirname(__file__))

# The networks in the tests are tiny: one thread avoids oversubscribing CI's 2 cores.
torch.set_num_threads(1)

# CI runs the same examples every time; HYPOTHESIS_PROFILE=explore searches afresh, and
# HYPOTHESIS_PROFILE=quick skips shrinking (fast red/green while changing the engine).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.register_profile(
    "quick", derandomize=True, deadline=None, phases=[Phase.explicit, Phase.generate]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class _Records(logging.Handler):
    """Keeps the records of the logger it is attached to."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def torchrl_records(monkeypatch) -> Iterator[list[logging.LogRecord]]:
    """The records the ``torchrl`` logger gets, with the logger as torchrl sets it up at import
    when RL_LOGGING_LEVEL is not set (level INFO), whatever this process's environment."""
    logger = logging.getLogger("torchrl")
    level, records = logger.level, _Records()
    monkeypatch.delenv("RL_LOGGING_LEVEL", raising=False)
    logger.setLevel(logging.INFO)
    logger.addHandler(records)
    yield records.records
    logger.removeHandler(records)
    logger.setLevel(level)
