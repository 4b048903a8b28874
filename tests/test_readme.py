"""Every ```python block of the README runs, in order, in one namespace (as a reader would),
and adds no log lines: torchrl's logger gets no INFO records from it."""

from __future__ import annotations

import logging
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_code_blocks_run(tmp_path, monkeypatch, torchrl_records):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no ```python blocks to test"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for index, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {index}", "exec"), namespace)
    assert [r.getMessage() for r in torchrl_records if r.levelno < logging.WARNING] == []
