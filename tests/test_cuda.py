"""The built-in tasks and the same hierarchy on cuda, under ``env.rollout`` and ``Collector``;
skipped without a GPU. One seed gives the same episodes on cuda as on cpu, so the cuda
transitions equal the cpu ones."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import Categorical, Unbounded
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs
from torchrl.modules import MLP, QValueActor

from torchrl_hier import Hierarchy, Level, Timeout
from torchrl_hier.envs import GridMaze, PointMaze

DEVICE = "cuda"

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def levels_on(device: str) -> list[Level]:
    """Three levels with seeded MLP policies (the same weights on every device) and Timeout
    rules: subgoal -> subgoal -> argmax over the 4 moves."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(1234)
    try:

        def subgoal(in_features: int) -> TensorDictModule:
            net = MLP(in_features=in_features, out_features=2, num_cells=[16], activation_class=nn.Tanh, activate_last_layer=True)
            in_keys = ["observation"] if in_features == 4 else ["observation", "parent_action"]
            return TensorDictModule(net, in_keys=in_keys, out_keys=["action"])

        q_net = MLP(in_features=6, out_features=4, num_cells=[16])
        with torch.no_grad():
            q_net[-1].weight.mul_(5.0)
        levels = [
            Level("top", subgoal(4), action_spec=Unbounded(2), gamma=0.9),
            Level("mid", subgoal(6), action_spec=Unbounded(2), control=Timeout(2), gamma=0.95),
            Level(
                "low",
                QValueActor(q_net, in_keys=["observation", "parent_action"], spec=Categorical(4)),
                control=Timeout(3),
            ),
        ]
    finally:
        torch.random.set_rng_state(generator_state)
    for level in levels:
        level.policy.to(device)
    return levels


def make_env(device: str, seed: int = 7, n_envs: int = 4) -> GridMaze:
    return GridMaze(batch_size=[n_envs], max_steps=9, seed=seed, device=device)


def run_rollout(device: str, steps: int = 30) -> tuple[Hierarchy, TensorDictBase]:
    env = make_env(device)
    hierarchy = Hierarchy(levels_on(device), env)
    with torch.no_grad():
        rollout = TransformedEnv(env, hierarchy.transform).rollout(
            steps, hierarchy.policy, break_when_any_done=False
        )
    return hierarchy, rollout


def assert_transitions_close(got: dict[str, TensorDictBase], expected: dict[str, TensorDictBase]) -> None:
    """Same levels, rows and keys; floats up to float32 rounding (cpu and cuda kernels sum in
    different orders), integers and flags exactly."""
    assert list(got) == list(expected)
    for name, data in expected.items():
        other = got[name].cpu()
        data = data.cpu()
        assert other.batch_size == data.batch_size, name
        assert set(other.keys(True, True)) == set(data.keys(True, True)), name
        for key in data.keys(True, True):
            torch.testing.assert_close(other.get(key), data.get(key), atol=1e-5, rtol=1e-5, msg=lambda m: f"{name} {key}: {m}")


@pytest.mark.parametrize("cls", [GridMaze, PointMaze])
def test_one_seed_gives_the_same_episodes_on_cpu_and_cuda(cls):
    """Starts and goals through full and partial resets, and a moved env, equal the cpu ones
    bit for bit (the draws are integer hashes, not a device's generator)."""
    envs = [cls(batch_size=[64], layout="Large", seed=3, device=d) for d in ("cpu", DEVICE)]
    envs.append(cls(batch_size=[64], layout="Large", seed=3).to(DEVICE))
    masks = torch.Generator().manual_seed(0)
    for step in range(6):
        mask = None if step == 0 else torch.rand(64, 1, generator=masks) < 0.5
        for env in envs:
            env.reset(None if mask is None else TensorDict({"_reset": mask}, [64], device=env.device))
        cpu = envs[0]
        for env in envs[1:]:
            assert env.position.is_cuda
            assert torch.equal(env.position.cpu(), cpu.position), step
            assert torch.equal(env.goal.cpu(), cpu.goal), step
            assert torch.equal(env.draws.episodes.cpu(), cpu.draws.episodes)


def test_specs_on_cuda():
    env = make_env(DEVICE)
    check_env_specs(TransformedEnv(env, Hierarchy(levels_on(DEVICE), env).transform), seed=0)


def test_rollout_on_cuda():
    hierarchy, rollout = run_rollout(DEVICE)
    assert rollout.device.type == "cuda"
    assert rollout["next", "hier", "completed"].is_cuda
    transitions = hierarchy.transitions(rollout)
    for name, data in transitions.items():
        assert len(data) > 0, name
        assert data["steps_to_next_obs"].is_cuda and data["next", "reward"].is_cuda
    # Every level's τ tile the run: completed transitions plus the ones still running at the end.
    last = rollout["next", "hier"][:, -1]
    running = last["steps"].masked_fill(last["completed"], 0).sum(0)
    for i, data in enumerate(transitions.values()):
        assert int(data["steps_to_next_obs"].sum() + running[i]) == rollout.numel()
    assert len(transitions["low"]) == rollout.numel()


def test_collector_on_cuda_matches_rollout():
    """A Collector on the cuda env, in batches of 10 steps, gives the rollout's transitions."""
    hierarchy, rollout = run_rollout(DEVICE, steps=30)
    env = make_env(DEVICE)
    collector = Collector(
        TransformedEnv(env, hierarchy.transform),
        hierarchy.policy,
        frames_per_batch=env.batch_size.numel() * 10,
        total_frames=env.batch_size.numel() * 30,
        device=DEVICE,
        auto_register_policy_transforms=False,
    )
    try:
        batches = [batch.clone() for batch in collector]
    finally:
        collector.shutdown()
    assert len(batches) == 3 and all(batch.device.type == "cuda" for batch in batches)
    # Transitions of batch k are in time order within the batch: re-interleave them as one
    # [envs, time] run by concatenating along time before extracting.
    got = hierarchy.transitions(torch.cat(batches, dim=1))
    assert_transitions_close(got, hierarchy.transitions(rollout))


def test_cuda_transitions_equal_cpu_transitions():
    cpu_hierarchy, cpu_rollout = run_rollout("cpu")
    cuda_hierarchy, cuda_rollout = run_rollout(DEVICE)
    torch.testing.assert_close(cuda_rollout["next", "observation"].cpu(), cpu_rollout["next", "observation"])
    assert_transitions_close(cuda_hierarchy.transitions(cuda_rollout), cpu_hierarchy.transitions(cpu_rollout))
