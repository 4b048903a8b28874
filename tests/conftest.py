"""Shared test set-up: makes the helpers in ``tests/`` (e.g. ``scripted_env``) importable
whatever pytest's import mode, and keeps hypothesis runs reproducible in CI."""

from __future__ import annotations

import os
import sys

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
