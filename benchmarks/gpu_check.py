"""The GPU check in one command: cuda tests, throughput, learner steps and a short training run.

    python benchmarks/gpu_check.py [--budget-s 480]      (or: make gpu-check)

Each part runs as its own process with a time limit (the whole check fits in ``--budget-s``,
8 minutes by default); what each printed is kept, and a summary is saved to
``results/gpu_check.json`` and printed as markdown for ``benchmarks/README.md``. Without a CUDA
device it says so and exits with status 2: nothing is measured or faked on the CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
PYTHON = sys.executable


@dataclass
class Part:
    """One part of the check: a command and the share of the budget it may use."""

    name: str
    command: list[str]
    share: float


def parts(run_dir: Path) -> list[Part]:
    return [
        Part("cuda tests", [PYTHON, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"], 0.25),
        Part(
            "throughput (cuda, 1-16384 instances)",
            [
                PYTHON, "benchmarks/throughput.py", "--device", "cuda", "--rounds", "2",
                "--sizes", "1", "16", "256", "1024", "4096", "16384",
                "--out", str(RESULTS / "throughput_cuda.json"),
            ],
            0.25,
        ),
        Part(
            "learner gradient steps (cuda, CUDA graphs where they work)",
            [
                PYTHON, "benchmarks/learner.py", "--device", "cuda", "--cuda-graphs",
                "--rounds", "3", "--steps", "200", "--out", str(RESULTS / "learner_cuda.json"),
            ],
            0.25,
        ),
        Part(
            "short training run (cuda)",
            [
                PYTHON, "-m", "torchrl_hier.train", "device=cuda", "total_frames=20000",
                "eval.episodes=20", "eval.every_frames=0", "progress=false",
                f"run_dir={run_dir}",
            ],
            0.25,
        ),
    ]


def run(part: Part, limit_s: float) -> dict:
    start = time.perf_counter()
    try:
        done = subprocess.run(
            part.command, cwd=ROOT, capture_output=True, text=True, timeout=limit_s
        )
        status, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        status, output = "timeout", _text(err.stdout) + _text(err.stderr)
    elapsed = time.perf_counter() - start
    tail = "\n".join(output.strip().splitlines()[-25:])
    print(f"\n## {part.name}: status {status}, {elapsed:.0f} s\n{tail}", flush=True)
    return {"part": asdict(part), "status": status, "seconds": elapsed, "output_tail": tail}


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=480.0, help="time for the whole check")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing "
            "checked. Run it on a machine with a GPU.",
            file=sys.stderr,
        )
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + args.budget_s
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts(Path(tmp) / "run"):
            left = deadline - time.perf_counter()
            results.append(run(part, max(10.0, min(left, part.share * args.budget_s * 1.5))))
        summary_file = Path(tmp) / "run" / "summary.json"
        training = json.loads(summary_file.read_text()) if summary_file.exists() else None
    summary = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "parts": results,
        "training_summary": training,
    }
    out = RESULTS / "gpu_check.json"
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(f"\n| part | status | seconds |\n| --- | --- | ---: |")
    for result in results:
        print(f"| {result['part']['name']} | {result['status']} | {result['seconds']:.0f} |")
    print(f"\nsaved {out}")
    return 0 if all(result["status"] == 0 for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
