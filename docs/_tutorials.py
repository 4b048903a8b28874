"""The tutorials as the docs show them: ``tutorials/NN_*.ipynb`` executed, with their outputs,
stored in ``docs/tutorials/``. The docs build renders these stored outputs instead of running
the notebooks (executing all of them takes minutes on a 2-core machine, too slow for every
docs build in CI; ``tests/test_tutorials.py`` executes them fresh anyway).

    python docs/_tutorials.py           # (re)executes every tutorial into docs/tutorials/ (make docs-tutorials)
    python docs/_tutorials.py --check   # fails if a stored copy's cells differ from its tutorial
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
TUTORIALS = HERE.parent / "tutorials"
STORED = HERE / "tutorials"
CELL_TIMEOUT_S = 600


def tutorials() -> list[Path]:
    return sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def stale() -> list[str]:
    """Tutorials whose stored executed copy is missing, differs from the tutorial in any
    cell's source, lacks outputs, or has no longer a tutorial."""
    out = []
    for path in tutorials():
        stored = STORED / path.name
        if not stored.exists():
            out.append(path.name)
            continue
        nb = nbformat.read(stored, as_version=4)
        ran = all(cell.get("execution_count") for cell in nb.cells if cell.cell_type == "code")
        if not ran or _cells(nb) != _cells(nbformat.read(path, as_version=4)):
            out.append(path.name)
    names = {path.name for path in tutorials()}
    out += [p.name for p in sorted(STORED.glob("*.ipynb")) if p.name not in names]
    return out


def execute(path: Path) -> nbformat.NotebookNode:
    """Runs one tutorial in a fresh kernel, in a scratch directory, on CPU with one thread
    (as the tutorial test does); returns it with its outputs."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as scratch:
        NotebookClient(
            nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", record_timing=False,
            resources={"metadata": {"path": scratch}},
        ).execute()
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, run nothing")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        if names:
            print(f"stored tutorials out of date: {names}; run: make docs-tutorials",
                  file=sys.stderr)
            return 1
        return 0
    # the kernel inherits these: one thread and no GPU (as the tutorial test runs them), no
    # TorchRL INFO lines and no tqdm note about missing notebook widgets in the stored outputs
    os.environ.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", RL_LOGGING_LEVEL="WARNING",
                      PYTHONWARNINGS="ignore:IProgress not found")
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend draws the plots
    STORED.mkdir(exist_ok=True)
    for stored in STORED.glob("*.ipynb"):
        if stored.name not in {path.name for path in tutorials()}:
            stored.unlink()
    for path in tutorials():
        start = time.perf_counter()
        nbformat.write(execute(path), STORED / path.name)
        print(f"executed {path.name} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
