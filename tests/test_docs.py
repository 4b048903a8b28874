"""The docs (``docs/``, ``make docs``) build without a single warning, so a broken docstring
reference or malformed reST fails here; the reference checks of ``docs/conf.py`` link, keep
as code and refuse what they should; the stored tutorial outputs match the tutorials."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _build(source: Path, out: Path, pythonpath: Sequence[Path] = ()) -> tuple[int, str]:
    """Builds HTML with warnings as errors (all reported); returns the status and warnings.

    Runs Sphinx in its own interpreter, as ``make docs`` does: autodoc imports the package, and
    what earlier tests did to this process (e.g. Ray turning a class into an actor) must not
    change the pages."""
    warnings = out / "warnings.txt"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), env.get("PYTHONPATH", "")])
    status = subprocess.run(
        [
            sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
            "-d", str(out / "doctrees"), "-w", str(warnings), str(source), str(out / "html"),
        ],
        env=env, capture_output=True, text=True,
    ).returncode
    return status, warnings.read_text() if warnings.exists() else ""


def test_docs_build_without_warnings(tmp_path):
    """The whole site (~15-30 s): guide, tutorials with their outputs, API reference."""
    status, warnings = _build(DOCS, tmp_path)
    assert status == 0, f"the docs build warned (make docs shows the same):\n{warnings}"
    html = tmp_path / "html"
    assert "Semi-MDP transitions" in (html / "guide.html").read_text()  # the README's concepts
    tutorial = (html / "tutorials" / "01_first_hierarchy.html").read_text()
    assert "<img" in tutorial and "check_env_specs" in tutorial  # outputs rendered, not only code
    api = (html / "api" / "torchrl_hier.html").read_text()
    assert 'id="torchrl_hier.Hierarchy"' in api and 'id="torchrl_hier.Level"' in api


MINI_PACKAGE = {
    "__init__.py": '''"""A package to check the reference rules on."""
from mini_pkg._impl import Thing, helper

__all__ = ["Thing", "use"]


def use(thing: Thing) -> None:
    """Takes a :class:`Thing`, calls :func:`helper`, returns :class:`torch.Tensor`; see
    :meth:`Thing.go` and :func:`~mini_pkg._impl.helper`. BROKEN"""
''',
    "_impl.py": '''class Thing:
    """A thing."""

    def go(self) -> None:
        """Goes."""


def helper() -> None:
    """Not public: no page of its own."""
''',
}


def test_reference_rules(tmp_path):
    """A tiny project with the docs' configuration: references to documented objects link,
    references to things that exist elsewhere render as code, and one to nothing fails."""
    package = tmp_path / "src" / "mini_pkg"
    package.mkdir(parents=True)
    for name, text in MINI_PACKAGE.items():
        (package / name).write_text(text)
    project = tmp_path / "project"
    project.mkdir()
    (project / "conf.py").write_text(
        "from conf import *  # the docs' settings and reference checks\n"
        "api_reference_package = 'mini_pkg'\n"
    )
    (project / "index.rst").write_text("Mini\n====\n\n.. toctree::\n\n   api/index\n")
    init = package / "__init__.py"
    for broken in (True, False):
        text = MINI_PACKAGE["__init__.py"]
        init.write_text(text.replace("BROKEN", ":func:`no_such_function`" if broken else ""))
        status, warnings = _build(project, tmp_path / f"out{broken}", [tmp_path / "src", DOCS])
        lines = [line for line in warnings.splitlines() if "WARNING" in line or "ERROR" in line]
        if broken:
            assert status != 0 and len(lines) == 1 and "no_such_function" in lines[0], warnings
        else:
            assert status == 0, warnings
    page = (tmp_path / "outFalse" / "html" / "api" / "mini_pkg.html").read_text()
    assert 'href="#mini_pkg.Thing"' in page and 'href="#mini_pkg.Thing.go"' in page
    assert page.count('href="#mini_pkg.Thing') >= 3  # the signature's annotation links too


def test_stored_tutorial_outputs_match_the_tutorials():
    """The docs show executed copies of tutorials/*.ipynb; edit a tutorial and this fails
    until ``make docs-tutorials`` runs it again."""
    spec = importlib.util.spec_from_file_location("docs_tutorials", DOCS / "_tutorials.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.tutorials(), "no tutorials found"
    assert module.stale() == [], "run: make docs-tutorials"
