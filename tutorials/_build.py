"""Builds the tutorial notebooks from their sources in ``tutorials/_src/`` (percent format).

A source is a plain Python file cut into cells by ``# %%`` lines (code) and
``# %% [markdown]`` lines (markdown, every line commented with ``# ``), as jupytext writes
them, so a tutorial can be edited, diffed and run as a script. Notebooks are written without
outputs; ``tests/test_tutorials.py`` executes them fresh.

    python tutorials/_build.py            # (re)writes every tutorials/NN_name.ipynb
    python tutorials/_build.py --check    # fails if a notebook differs from its source
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "_src"
_MARKER = re.compile(r"^# %%(?P<markdown> \[markdown\])?[ \t]*$")


def parse(text: str) -> list[tuple[str, str]]:
    """``[(kind, source), ...]`` cells of a percent-format file (``kind``: code|markdown)."""
    cells: list[tuple[str, list[str]]] = []
    for number, line in enumerate(text.splitlines(), 1):
        marker = _MARKER.match(line)
        if marker:
            cells.append(("markdown" if marker["markdown"] else "code", []))
        elif not cells:
            if line.strip():
                raise ValueError(
                    f"line {number}: text before the first '# %%' cell marker: {line!r}"
                )
        else:
            cells[-1][1].append(line)
    out = []
    for kind, lines in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if kind == "markdown":
            bad = [line for line in lines if line and not line.startswith("#")]
            if bad:
                raise ValueError(f"markdown cell lines must start with '#': {bad[0]!r}")
            lines = [re.sub(r"^# ?", "", line) for line in lines]
        if lines:
            out.append((kind, "\n".join(lines)))
    return out


def notebook(source: Path) -> nbformat.NotebookNode:
    """The notebook (no outputs) built from one percent-format source."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for index, (kind, text) in enumerate(parse(source.read_text())):
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        cell = make(text)
        cell["id"] = f"{source.stem[:2]}-{index:03d}"  # stable ids: rebuilding changes nothing
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def target(source: Path) -> Path:
    return HERE / f"{source.stem}.ipynb"


def sources() -> list[Path]:
    return sorted(SOURCES.glob("[0-9][0-9]_*.py"))


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def stale() -> list[str]:
    """Notebooks that are missing or differ from what their source builds."""
    out = []
    for source in sources():
        path = target(source)
        if not path.exists() or path.read_text() != render(notebook(source)):
            out.append(path.name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        if names:
            print(f"out of date: {names}; run python tutorials/_build.py", file=sys.stderr)
            return 1
        return 0
    for source in sources():
        target(source).write_text(render(notebook(source)))
        print(f"wrote {target(source).relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
