"""The package as its users get it: ``python -m build`` makes a wheel that installs into a fresh
virtual env outside the repository and trains there, by ``python -m torchrl_hier.train`` and
by the ``torchrl-hier-train`` console script.

How the fresh env gets the pinned stack without downloading it: reinstalling torch from an
index would fetch a build of several GB, so the test gives the new env (``venv`` without
system site packages, so nothing leaks in) exactly the distributions that the wheel's declared
requirements name, followed transitively through each one's own ``Requires-Dist`` (markers
evaluated, extras followed), and no other: each of their installed files (their ``RECORD``)
is linked from this env's site-packages into the new one. Then pip installs the wheel with no
index and no other source (``--no-index``, no config files, no find-links): it resolves the
wheel's requirements against those linked distributions and fails on any the closure lacks,
``pip check`` verifies the whole env, and the runs below would fail on an import of a package
the wheel does not declare (this repository's own env has many more: pytest, nbclient, ...).

``python -m build --no-isolation`` uses the build backend installed here (setuptools, a
requirement of the dev env) instead of downloading one into an isolated build env; ``build``
still checks that ``[build-system] requires`` is satisfied. It builds the sdist and then the
wheel from the unpacked sdist, so the wheel also shows the sdist is complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import torchrl_hier

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ARGS = [
    "hierarchy=flat", "task.n_envs=4", "collector.frames_per_batch=64", "total_frames=128",
    "eval.episodes=2", "eval.every_frames=0", "checkpoint.every_frames=0",
    "task.kwargs.max_steps=20", "progress=false",
]


def _requirement_closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions these requirements need, transitively (by normalised
    name, with the extras they are asked for); fails naming a requirement this env lacks."""
    found: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    todo = [(Requirement(r), "torchrl_hier") for r in requirements]
    todo = [(r, by) for r, by in todo if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        req, wanted_by = todo.pop()
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{wanted_by} requires {req}, which is not installed in this env")
        assert req.specifier.contains(dist.version, prereleases=True), (
            f"{wanted_by} requires {req}, but {dist.version} is installed"
        )
        name = dist.metadata["Name"]
        found[name.lower().replace("_", "-")] = dist
        for extra in {"", *req.extras}:
            if (name, extra) in done:
                continue
            done.add((name, extra))
            for line in dist.requires or []:
                sub = Requirement(line)
                if sub.marker is None or sub.marker.evaluate({"extra": extra}):
                    todo.append((sub, name))
    return found


def _link_distributions(dists: dict[str, metadata.Distribution], site: Path) -> int:
    """Links every installed file of ``dists`` that lies in site-packages into ``site``."""
    linked = 0
    for dist in dists.values():
        base = Path(dist.locate_file("")).resolve()
        for file in dist.files or []:
            source = (base / file).resolve()
            if base not in source.parents or not source.exists():
                continue  # console scripts in bin/, files pip recorded but never wrote
            target = site / source.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(source)
                linked += 1
    return linked


def _run(cmd: list[str | Path], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull  # no index, find-links or constraints from config
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env=env)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow  # ~40 s: build, a fresh env, two tiny training runs
def test_wheel_installs_and_trains_in_a_fresh_env(tmp_path):
    dist_dir = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist_dir, ROOT], tmp_path)
    (wheel,) = dist_dir.glob("torchrl_hier-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(archive.read(meta_name).decode())
        entry_points = archive.read(meta_name.replace("METADATA", "entry_points.txt")).decode()
    assert meta["Version"] == torchrl_hier.__version__  # the one version string
    assert {"torchrl_hier/py.typed", "torchrl_hier/conf/config.yaml"} <= names
    assert not any(n.startswith(("tests/", "benchmarks/", "tutorials/")) for n in names)
    for script in ("torchrl-hier-train", "torchrl-hier-evaluate", "torchrl-hier-report"):
        assert f"{script} = torchrl_hier." in entry_points

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     tmp_path).stdout.strip())
    stack = _requirement_closure(meta.get_all("Requires-Dist") or [])
    assert {"torch", "torchrl", "tensordict", "hydra-core"} <= set(stack)
    assert "pytest" not in stack and "torchrl-hier" not in stack
    assert _link_distributions(stack, site) > 1000
    pip = [sys.executable, "-m", "pip", "--python", python]
    _run([*pip, "install", "--no-index", "--no-cache-dir", wheel], tmp_path)
    _run([*pip, "check"], tmp_path)

    work = tmp_path / "elsewhere"  # outside the repository: nothing imports from the checkout
    work.mkdir()
    where = _run([python, "-c", "import torchrl_hier, pathlib; "
                  "print(pathlib.Path(torchrl_hier.__file__).parent)"], work).stdout.strip()
    assert Path(where).is_relative_to(site) and (Path(where) / "py.typed").exists()
    for name, cmd in (("module", [python, "-m", "torchrl_hier.train"]),
                      ("script", [venv / "bin" / "torchrl-hier-train"])):
        run_dir = work / name
        _run([*cmd, *TRAIN_ARGS, f"run_dir={run_dir}"], work)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["frames"] == 128 and (run_dir / "checkpoints" / "last.pt").exists()
