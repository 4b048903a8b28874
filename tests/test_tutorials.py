"""Every tutorial notebook (``tutorials/*.ipynb``) runs from a fresh kernel on CPU, without
errors and with its plots; the notebooks built from ``tutorials/_src`` match their sources."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 240  # per cell; a whole notebook should take well under a minute


def _load_builder():
    spec = importlib.util.spec_from_file_location("tutorials_build", TUTORIALS / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tutorials_are_found():
    """The parametrized test below would silently run nothing if the glob found nothing."""
    names = {path.stem for path in NOTEBOOKS}
    expected = {
        "01_first_hierarchy",
        "02_training_levels",
        "03_layeredrl_api",
        "04_subgoals_and_hindsight",
    }
    assert expected <= names, f"missing tutorials: {sorted(expected - names)}"


def test_notebooks_match_their_sources():
    """Notebooks with a source in tutorials/_src are rebuilt from it, so edit the source and
    run ``python tutorials/_build.py``: an edited notebook or source alone fails here."""
    builder = _load_builder()
    assert builder.sources(), "tutorials/_src has no sources"
    assert builder.stale() == [], "run: python tutorials/_build.py"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_tutorial_runs(path: Path, tmp_path, monkeypatch):
    """Executes the notebook top to bottom in a fresh kernel (this interpreter), in a scratch
    directory, on CPU; every notebook must draw at least one plot."""
    nb = nbformat.read(path, as_version=4)
    # The kernel inherits the environment: one intra-op thread (small networks on a shared
    # machine only contend), no GPU, a headless matplotlib (the inline backend still renders).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}", pytrace=False)
    images = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert images, f"{path.name} drew no plot (no image/png output)"
