"""A hierarchy in TorchRL's Ray collector (``torchrl.collectors.distributed.RayCollector``).

One local Ray cluster (2 CPUs) serves the module. Each test runs a hierarchy in 2 Ray workers
and checks, in the driver: that the workers' batches are exactly those of the same env and
policy in a local ``Collector`` and satisfy the hierarchy invariants (each level's τ tile every
episode, its discounted return adds up to the episode's), that updated weights reach the
workers, that a worker's error reaches the driver with the user's message, and that
``collector=ray`` trains end to end in the Hydra trainer.
"""

from __future__ import annotations

import functools
import sys

import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import Unbounded
from torchrl.envs import TransformedEnv

from torchrl_hier import Hierarchy, Level, LevelStep, ReturnControlRule, Timeout
from torchrl_hier.envs import GridMaze

ray = pytest.importorskip("ray")

from torchrl.collectors.distributed import RayCollector  # noqa: E402

from torchrl_hier.experiment.ray_collector import make_ray_collector  # noqa: E402

# The workers unpickle this module's policies, rules and env factories by value: they cannot
# import a test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_ENVS = 4  # per worker
STEPS = 30  # per worker and batch
WORKERS = 2
FRAMES_PER_BATCH = WORKERS * N_ENVS * STEPS


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class Greedy(nn.Module):
    """A linear layer whose argmax is the action (deterministic, so runs can be compared)."""

    def __init__(self, in_features: int, n_actions: int):
        super().__init__()
        self.linear = nn.Linear(in_features, n_actions)

    def forward(self, observation: torch.Tensor, parent_action: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([observation, parent_action], -1)).argmax(-1)


def hierarchy(control: ReturnControlRule | None = None) -> Hierarchy:
    torch.manual_seed(0)
    levels = [
        Level(
            "skill",
            TensorDictModule(nn.Linear(4, 3), ["observation"], ["action"]),
            Unbounded(3),
            gamma=0.9,
        ),
        Level(
            "move",
            TensorDictModule(Greedy(4 + 3, 4), ["observation", "parent_action"], ["action"]),
            control=control or Timeout(3),
            gamma=0.8,
        ),
    ]
    return Hierarchy(levels, GridMaze(batch_size=[N_ENVS], max_steps=8, seed=0))


def make_env(seed: int, transform) -> TransformedEnv:
    return TransformedEnv(GridMaze(batch_size=[N_ENVS], max_steps=8, seed=seed), transform)


def ray_collector(hier: Hierarchy, batches: int) -> RayCollector:
    """The trainer's Ray collector (attached to this module's cluster)."""
    factories = [functools.partial(make_env, 100 + i, hier.transform) for i in range(WORKERS)]
    return make_ray_collector(
        OmegaConf.create({"address": "auto"}),
        factories,
        hier.policy,
        frames_per_batch=FRAMES_PER_BATCH,
        total_frames=batches * FRAMES_PER_BATCH,
        device="cpu",
    )


def assert_invariants(hier: Hierarchy, batch: TensorDictBase) -> int:
    """Per level and episode that starts and ends inside ``batch`` (``[instances, time]``):
    the τ of the level's transitions sum to the episode length and their returns, each
    discounted by where its transition started, add up to the episode's discounted return.
    Returns the number of such episodes."""
    done = batch.get(("next", "done")).squeeze(-1)
    reward = batch.get(("next", "reward")).squeeze(-1).double()
    completed = batch.get(("next", "hier", "completed"))
    steps = batch.get(("next", "hier", "steps"))
    returns = batch.get(("next", "hier", "return")).double()
    checked = 0
    for b in range(done.shape[0]):
        ends = done[b].nonzero().squeeze(-1).tolist()
        for first, last in zip([e + 1 for e in ends], ends[1:]):
            checked += 1
            for i, level in enumerate(hier.levels):
                at = [t for t in range(first, last + 1) if completed[b, t, i]]
                assert at and at[-1] == last, (level.name, b, first, last)
                tau = [int(steps[b, t, i]) for t in at]
                assert sum(tau) == last - first + 1, (level.name, b, first, last, tau)
                level_return = sum(
                    level.gamma ** (t - k + 1 - first) * returns[b, t, i] for t, k in zip(at, tau)
                )
                env_return = sum(
                    level.gamma ** (t - first) * reward[b, t] for t in range(first, last + 1)
                )
                assert torch.isclose(level_return, env_return, atol=1e-6), (level.name, b)
    return checked


def test_ray_batches_match_a_local_collector_and_keep_the_invariants():
    hier = hierarchy()
    collector = ray_collector(hier, batches=2)
    try:
        got = [batch for batch in collector]  # list() would ask len(), which RayCollector lacks
    finally:
        collector.shutdown()
    assert len(got) == 2 and got[0].shape == (WORKERS, N_ENVS, STEPS)
    checked = 0
    for worker in range(WORKERS):
        local = Collector(
            make_env(100 + worker, hier.transform),
            hier.policy,
            frames_per_batch=N_ENVS * STEPS,
            total_frames=2 * N_ENVS * STEPS,
            auto_register_policy_transforms=False,
        )
        for ray_batch, local_batch in zip(got, local):
            ray_batch = ray_batch[worker]
            keys = set(local_batch.keys(True, True))
            assert keys == set(ray_batch.keys(True, True))
            for key in keys:
                torch.testing.assert_close(
                    ray_batch.get(key), local_batch.get(key), rtol=0, atol=0, msg=str(key)
                )
            checked += assert_invariants(hier, ray_batch)
        local.shutdown()
    assert checked > 10  # enough whole episodes inside the batches to mean something


def test_updated_weights_reach_the_workers():
    hier = hierarchy()
    collector = ray_collector(hier, batches=3)
    move = hier.levels[-1].policy.module.linear

    def driver_actions(batch: TensorDictBase) -> torch.Tensor:
        with torch.no_grad():
            return hier.policy(batch.exclude("next", "action").clone()).get("action")

    try:
        batches = iter(collector)
        first = next(batches)
        assert torch.equal(first.get("action"), driver_actions(first))
        # A new lowest level: always the move the old one chose least.
        new_move = int(torch.bincount(first.get("action").flatten(), minlength=4).argmin())
        with torch.no_grad():
            move.weight.zero_()
            move.bias.copy_(torch.nn.functional.one_hot(torch.tensor(new_move), 4).float())
        stale = next(batches)  # collected before the update reached the workers
        assert not (stale.get("action") == new_move).all()
        collector.update_policy_weights_()
        fresh = next(batches)
    finally:
        collector.shutdown()
    assert (fresh.get("action") == new_move).all()
    assert torch.equal(fresh.get("action"), driver_actions(fresh))


class ExplodingRule(ReturnControlRule):
    """Hands control back as ``Timeout(3)`` does, until an instance reaches the goal."""

    def __call__(self, step: LevelStep) -> torch.Tensor:
        if bool(step.next.get("is_success").any()):
            raise ArithmeticError("the user's rule broke on a success")
        return step.count >= 3


def test_a_worker_error_reaches_the_driver_with_the_users_message():
    hier = hierarchy()
    hier.levels[-1].policy.module.linear.bias.data[:] = torch.tensor([0.0, 1.0, 0.0, 1.0])
    failing = Hierarchy(
        [hier.levels[0], Level("move", hier.levels[1].policy, control=ExplodingRule(), gamma=0.8)],
        GridMaze(batch_size=[N_ENVS], max_steps=8, seed=0),
    )
    collector = ray_collector(failing, batches=40)
    with pytest.raises(ArithmeticError, match="the user's rule broke on a success") as info:
        try:
            for _ in collector:
                pass
        finally:
            collector.shutdown()
    # The worker's traceback comes along, down to the line of the user's rule that raised.
    assert 'raise ArithmeticError("the user\'s rule broke on a success")' in str(info.value)


@pytest.mark.parametrize("overrides", [["hierarchy=options"], ["hierarchy=ham", "task=Taxi-v4"]])
def test_trainer_collector_ray(tmp_path, overrides):
    """Level stacks and HAMs both train with collector=ray (the workers run the HAM's
    machines; its transitions are extracted in the driver)."""
    from test_train import tiny

    from torchrl_hier.train import train

    cfg = tiny([*overrides, "collector=ray", "collector.num_workers=2"], tmp_path)
    summary = train(cfg)
    assert summary["collector"] == "ray"
    assert summary["frames"] >= 256
    levels = summary["levels"].values()
    assert all(level["transitions"] > 0 and level["updates"] > 0 for level in levels)


def test_more_workers_than_cpus_is_a_config_error():
    from torchrl_hier.experiment import ConfigError
    from torchrl_hier.experiment.ray_collector import ray_init_config

    with pytest.raises(ConfigError, match="collector.num_workers=4096 .* needs 4096 CPUs"):
        ray_init_config(OmegaConf.create({"cpus_per_worker": 1}), workers=4096)
    attach = ray_init_config(OmegaConf.create({"address": "10.0.0.1:6379"}), workers=4096)
    assert attach["address"] == "10.0.0.1:6379" and "num_cpus" not in attach
