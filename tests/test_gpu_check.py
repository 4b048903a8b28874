"""The one-command GPU check refuses to run on a machine without CUDA (nothing measured or faked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check runs for minutes")
def test_gpu_check_says_there_is_no_gpu_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "no CUDA device here" in result.stderr
