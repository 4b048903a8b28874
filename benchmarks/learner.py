"""Gradient steps/s of a LevelLearner (eager and compiled) against the same update in plain PyTorch.

For DQN, SAC and TD3 (``torchrl.objectives`` ``DQNLoss``/``SACLoss``/``TD3Loss``, built by the
ready-made heads of ``torchrl_hier.levels``), three updates of the same networks on the same
replay data run side by side in one process, in interleaved rounds (median ms/step reported):

- ``eager``: ``LevelLearner.update`` with ``compile=False``;
- ``compiled``: ``LevelLearner.update`` with ``compile=True``; its first step, which compiles,
  is timed apart (``warm-up``);
- ``plain``: hand-written PyTorch of the same math (sample indices with ``torch.randint``, the
  networks as ``nn.Module`` s, Adam, gradient clipping, a ``_foreach_lerp_`` Polyak update).

The ready-made TD3 actor is a ``TanhDelta`` with ``safe=False``: TorchRL 0.14.1 refuses to
compile its default ``safe=True``.

Defaults are those of the default configs: DQN as the option-conditioned primitive level of
``make run`` (128x128, batch 128, 4 options, 4 actions, GridMaze observation), SAC and TD3 as
the goal-conditioned continuous levels (64x64, batch 256, 2-d actions). One CPU thread.

    python benchmarks/learner.py [--rounds 7] [--steps 300] [--kinds dqn sac td3] [--fresh-cache]
        [--device cuda [--cuda-graphs]]

On ``cuda`` the replay buffers, networks and plain update live on the GPU, timings synchronise
the device, and ``--cuda-graphs`` compiles with ``mode="reduce-overhead"`` (CUDA graphs).

``--fresh-cache`` points inductor at an empty cache directory, so the warm-up is the first
compile on a machine (otherwise kernels already cached on disk make it shorter).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
OBS, OPTIONS, N_ACTIONS, ACT_DIM = 4, 4, 4, 2
GAMMA, TAU, LR, MAX_GRAD_NORM = 0.9, 0.01, 1e-3, 10.0
SETUPS = {
    "dqn": ((128, 128), 128),
    "sac": ((64, 64), 256),
    "td3": ((64, 64), 256),
}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300, help="gradient steps per round")
    parser.add_argument("--buffer", type=int, default=20_000, help="transitions in the buffer")
    parser.add_argument("--fresh-cache", action="store_true", help="empty inductor cache")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cuda-graphs", action="store_true", help="compile mode reduce-overhead")
    parser.add_argument("--out", type=Path, default=None, help="default results/learner_<device>.json")
    return parser.parse_args()


ARGS = parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.fresh_cache:  # before torch is imported
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")

import torch  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torchrl.data import Bounded, Categorical  # noqa: E402

from torchrl_hier.learning import LevelLearner  # noqa: E402
from torchrl_hier.levels.parts import actor_critic_head, dqn_head  # noqa: E402


# ----------------------------------------------------------------------------- data
def transitions(kind: str, n: int, seed: int = 0) -> TensorDict:
    """Random SMDP transitions in the layout ``hierarchy.transitions`` writes (tau in 1..4)."""
    g = torch.Generator().manual_seed(seed)

    def option() -> Tensor:
        return F.one_hot(torch.randint(OPTIONS, (n,), generator=g), OPTIONS).float()

    if kind == "dqn":
        action = torch.randint(N_ACTIONS, (n,), generator=g)
    else:
        action = torch.rand(n, ACT_DIM, generator=g) * 2 - 1
    terminated = torch.rand(n, 1, generator=g) < 0.05
    return TensorDict(
        {
            "observation": torch.rand(n, OBS, generator=g),
            "parent_action": option(),
            "action": action,
            "steps_to_next_obs": torch.randint(1, 5, (n, 1), generator=g),
            "next": {
                "observation": torch.rand(n, OBS, generator=g),
                "parent_action": option(),
                "reward": (torch.rand(n, 1, generator=g) < 0.1).float(),
                "done": terminated.clone(),
                "terminated": terminated,
                "truncated": torch.zeros(n, 1, dtype=torch.bool),
            },
        },
        batch_size=[n],
    )


def make_loss(kind: str, hidden: tuple[int, ...]):
    """The loss the ready-made option-conditioned level builds for ``kind``."""
    if kind == "dqn":
        _, _, loss = dqn_head(
            OBS, Categorical(N_ACTIONS), parent_dim=OPTIONS, hidden=hidden, gamma=GAMMA
        )
        return loss
    _, _, loss = actor_critic_head(
        OBS, Bounded(-1.0, 1.0, (ACT_DIM,)), algorithm=kind, parent_dim=OPTIONS,
        hidden=hidden, gamma=GAMMA,
    )
    return loss


# ----------------------------------------------------------------------------- plain PyTorch
def mlp(i: int, o: int, hidden: tuple[int, ...]) -> nn.Sequential:
    sizes = [i, *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], o))


class PlainUpdate:
    """The same update written by hand: uniform indices, module calls, Adam, clipping,
    ``_foreach_lerp_`` Polyak averaging. ``step()`` is one gradient step."""

    def __init__(self, kind: str, hidden: tuple[int, ...], data: TensorDict, batch_size: int):
        self.kind, self.batch_size = kind, batch_size
        self.data = {key: data.get(key) for key in data.keys(True, True)}
        self.n = data.shape[0]
        self.device = data.device
        x = OBS + OPTIONS
        if kind == "dqn":
            self.online = nn.ModuleList([mlp(x, N_ACTIONS, hidden)])
        else:
            out = ACT_DIM * (2 if kind == "sac" else 1)
            self.online = nn.ModuleList(
                [mlp(x, out, hidden), mlp(x + ACT_DIM, 1, hidden), mlp(x + ACT_DIM, 1, hidden)]
            )
        self.online.to(self.device)
        sources = self.online if kind != "sac" else self.online[1:]  # SAC: no target actor
        self.target = copy.deepcopy(nn.ModuleList(list(sources)))
        self.target.requires_grad_(False)
        params = list(self.online.parameters())
        self.log_alpha = None
        if kind == "sac":
            self.log_alpha = nn.Parameter(torch.zeros((), device=self.device))
            params.append(self.log_alpha)
        self.params = params
        self.optimizer = torch.optim.Adam(params, lr=LR)
        self.sources = [p.data for p in sources.parameters()]
        self.targets = [p.data for p in self.target.parameters()]

    def batch(self) -> dict[str, Tensor]:
        index = torch.randint(self.n, (self.batch_size,), device=self.device)
        return {key: value[index] for key, value in self.data.items()}

    def loss(self, b: dict[str, Tensor]) -> Tensor:
        s = torch.cat([b["observation"], b["parent_action"]], -1)
        s2 = torch.cat([b[("next", "observation")], b[("next", "parent_action")]], -1)
        reward = b[("next", "reward")].squeeze(-1)
        live = (~b[("next", "terminated")]).squeeze(-1).float()
        discount = GAMMA ** b["steps_to_next_obs"].squeeze(-1).float() * live
        if self.kind == "dqn":  # double DQN, l2
            q = self.online[0](s).gather(-1, b["action"].unsqueeze(-1)).squeeze(-1)
            with torch.no_grad():
                greedy = self.online[0](s2).argmax(-1, keepdim=True)
                target = reward + discount * self.target[0](s2).gather(-1, greedy).squeeze(-1)
            return (q - target).pow(2).mean()
        actor, q1, q2 = self.online
        action = b["action"]
        sa = torch.cat([s, action], -1)
        if self.kind == "td3":
            with torch.no_grad():
                noise = (torch.randn_like(action) * 0.2).clamp(-0.5, 0.5)
                a2 = (torch.tanh(self.target[0](s2)) + noise).clamp(-1.0, 1.0)
                s2a2 = torch.cat([s2, a2], -1)
                v2 = torch.min(self.target[1](s2a2), self.target[2](s2a2)).squeeze(-1)
                target = reward + discount * v2
            q_loss = sum(F.smooth_l1_loss(q(sa).squeeze(-1), target) for q in (q1, q2))
            pa = torch.cat([s, torch.tanh(actor(s))], -1)
            frozen = [p.detach() for p in q1.parameters()]
            q_pi = torch.func.functional_call(q1, dict(zip(dict(q1.named_parameters()), frozen)), (pa,))
            return q_loss - q_pi.mean()
        alpha = self.log_alpha.exp().detach()

        def policy(x: Tensor) -> tuple[Tensor, Tensor]:
            loc, raw = actor(x).chunk(2, -1)
            scale = F.softplus(raw + 0.5413) + 1e-4
            u = loc + scale * torch.randn_like(loc)
            a = torch.tanh(u)
            log_prob = (
                -((u - loc) ** 2) / (2 * scale**2) - scale.log() - 0.5 * math.log(2 * math.pi)
                - torch.log1p(-a.pow(2) + 1e-6)
            ).sum(-1)
            return a, log_prob

        with torch.no_grad():
            a2, logp2 = policy(s2)
            s2a2 = torch.cat([s2, a2], -1)
            v2 = torch.min(self.target[0](s2a2), self.target[1](s2a2)).squeeze(-1)
            target = reward + discount * (v2 - alpha * logp2)
        q_loss = sum(F.smooth_l1_loss(q(sa).squeeze(-1), target) for q in (q1, q2))
        a, logp = policy(s)
        pa = torch.cat([s, a], -1)
        q_pi = torch.min(*[
            torch.func.functional_call(q, {k: v.detach() for k, v in q.named_parameters()}, (pa,))
            for q in (q1, q2)
        ]).squeeze(-1)
        actor_loss = (alpha * logp - q_pi).mean()
        alpha_loss = -(self.log_alpha * (logp.detach() - ACT_DIM)).mean()
        return q_loss + actor_loss + alpha_loss

    def step(self) -> None:
        loss = self.loss(self.batch())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM)
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.targets, self.sources, TAU)


# ----------------------------------------------------------------------------- timing
def learner(kind: str, hidden, batch_size: int, data: TensorDict, compile) -> LevelLearner:
    out = LevelLearner(
        make_loss(kind, hidden).to(data.device), gamma=GAMMA, lr=LR, batch_size=batch_size,
        warmup=0, update_ratio=1.0, tau=TAU, max_grad_norm=MAX_GRAD_NORM, compile=compile,
        buffer_size=data.shape[0], device=data.device,
    )
    out.extend(data)
    return out


def learner_steps(learn: LevelLearner) -> Callable[[int], None]:
    def run(n: int) -> None:
        learn.n_updates = learn.n_transitions - n  # owe exactly n steps
        learn.update()

    return run


def plain_steps(plain: PlainUpdate) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            plain.step()

    return run


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(kind: str, rounds: int, steps: int, n_data: int, device: torch.device, compile) -> dict:
    hidden, batch_size = SETUPS[kind]
    torch.manual_seed(0)
    data = transitions(kind, n_data).to(device)
    runners = {
        "eager": learner_steps(learner(kind, hidden, batch_size, data, compile=False)),
        "plain": plain_steps(PlainUpdate(kind, hidden, data, batch_size)),
    }
    compiled = learner(kind, hidden, batch_size, data, compile=compile)
    t0 = time.perf_counter()
    learner_steps(compiled)(1)
    sync(device)
    warmup = time.perf_counter() - t0
    fell_back = compiled.compile_options is None
    runners["compiled"] = learner_steps(compiled)
    for run in runners.values():  # one untimed round each: caches, allocator
        run(20)
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            sync(device)
            t = time.perf_counter()
            runners[name](steps)
            sync(device)
            times[name].append((time.perf_counter() - t) / steps * 1e3)
    ms = {name: statistics.median(v) for name, v in times.items()}
    return {
        "hidden": list(hidden), "batch_size": batch_size, "ms_per_step": ms,
        "ms_per_step_rounds": times, "compile_warmup_s": warmup,
        "compile_fell_back_to_eager": fell_back,
        "eager_over_plain": ms["eager"] / ms["plain"],
        "compiled_over_plain": ms["compiled"] / ms["plain"],
        "steps_to_repay_warmup": (
            warmup / ((ms["eager"] - ms["compiled"]) / 1e3) if ms["eager"] > ms["compiled"] else None
        ),
    }


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("learner.py: --device cuda but torch.cuda.is_available() is False.")
    compile = {"mode": "reduce-overhead"} if args.cuda_graphs else True
    results = {}
    for kind in args.kinds:
        results[kind] = bench(kind, args.rounds, args.steps, args.buffer, device, compile)
        r = results[kind]
        print(f"{kind}: {r['ms_per_step']} warm-up {r['compile_warmup_s']:.1f} s", flush=True)
    print(
        "\n| loss | hidden | batch | eager ms/step | compiled ms/step | plain PyTorch ms/step "
        "| eager / plain | compiled / plain | compile warm-up s |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, r in results.items():
        ms = r["ms_per_step"]
        print(
            f"| {kind} | {'x'.join(map(str, r['hidden']))} | {r['batch_size']} | "
            f"{ms['eager']:.2f} | {ms['compiled']:.2f} | {ms['plain']:.2f} | "
            f"{r['eager_over_plain']:.2f} | {r['compiled_over_plain']:.2f} | "
            f"{r['compile_warmup_s']:.1f}"
            f"{' (compile failed: eager)' if r['compile_fell_back_to_eager'] else ''} |"
        )
    out = {
        "date": str(date.today()),
        "machine": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "cuda_graphs": bool(args.cuda_graphs),
        "fresh_inductor_cache": bool(args.fresh_cache),
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "results": results,
    }
    path = args.out or RESULTS / f"learner_{device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"saved {path}")


if __name__ == "__main__":
    main(ARGS)
