"""The same hierarchy runs unchanged under every TorchRL runner and gives the same transitions.

Runners: ``env.rollout``, ``Collector`` (ex-``SyncDataCollector``), ``MultiSyncCollector``
(ex-``MultiSyncDataCollector``), ``SerialEnv`` and ``ParallelEnv`` (with the hierarchy
transform in the main process or inside the workers). Policies are seeded MLPs read
deterministically and rules are ``Timeout``s, so every runner must produce exactly the same
per-level SMDP transitions for the same env seeds; transitions are sorted canonically before
comparing, since runners lay batches out differently.
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.data import Categorical, LazyTensorStorage, TensorDictReplayBuffer, Unbounded
from torchrl.data.replay_buffers import SamplerWithoutReplacement
from torchrl.envs import Compose, EnvBase, ParallelEnv, SerialEnv, StepCounter, TransformedEnv
from torchrl.envs.utils import check_env_specs
from torchrl.modules import MLP, QValueActor

from torchrl_hier import Hierarchy, Level, Timeout
from torchrl_hier.envs import GridMaze
from torchrl_hier.levels import LevelEpisodes

SEEDS = (3, 11)
# Different episode lengths per worker, so the instances run out of step with each other.
MAX_STEPS = (7, 11)


def deterministic_levels(n_levels: int, device: str = "cpu") -> list[Level]:
    """2 or 3 levels with seeded MLP policies over GridMaze (obs dim 4, 4 moves).

    The upper levels emit a 2-d subgoal (tanh MLP), the lowest picks the argmax of a Q-net
    over the 4 moves; Timeout rules make every completion deterministic.
    """
    if n_levels not in (2, 3):
        raise ValueError(f"n_levels must be 2 or 3, got {n_levels}.")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(1234)
    try:

        def subgoal_net(in_features: int) -> MLP:
            return MLP(
                in_features=in_features,
                out_features=2,
                num_cells=[16],
                activation_class=nn.Tanh,
                activate_last_layer=True,
            )

        top = Level(
            "top",
            TensorDictModule(subgoal_net(4), in_keys=["observation"], out_keys=["action"]),
            action_spec=Unbounded(2),
            gamma=0.9,
        )
        mid = Level(
            "mid",
            TensorDictModule(
                subgoal_net(6), in_keys=["observation", "parent_action"], out_keys=["action"]
            ),
            action_spec=Unbounded(2),
            control=Timeout(2),
            gamma=0.95,
        )
        q_net = MLP(in_features=6, out_features=4, num_cells=[16])
        with torch.no_grad():  # sharper Q-values: the moves change with the subgoal
            q_net[-1].weight.mul_(5.0)
        low = Level(
            "low",
            QValueActor(q_net, in_keys=["observation", "parent_action"], spec=Categorical(4)),
            control=Timeout(3),
            gamma=0.99,
        )
    finally:
        torch.random.set_rng_state(generator_state)
    levels = [top, mid, low] if n_levels == 3 else [top, low]
    for level in levels:
        level.policy.to(device)
    return levels


def make_maze(seed: int, max_steps: int, batch: int = 1, device: str = "cpu") -> GridMaze:
    return GridMaze(batch_size=[batch], max_steps=max_steps, seed=seed, device=device)


# Module-level (picklable) env factories for the multi-process runners.
def make_env_0() -> GridMaze:
    return make_maze(SEEDS[0], MAX_STEPS[0])


def make_env_1() -> GridMaze:
    return make_maze(SEEDS[1], MAX_STEPS[1])


def _with_hierarchy(env: EnvBase) -> TransformedEnv:
    """The env transformed by its own (freshly built, identical) 3-level hierarchy."""
    return TransformedEnv(env, Hierarchy(deterministic_levels(3), env).transform)


def make_hier_env_0() -> TransformedEnv:
    return _with_hierarchy(make_env_0())


def make_hier_env_1() -> TransformedEnv:
    return _with_hierarchy(make_env_1())


def canonical(data: TensorDictBase) -> TensorDictBase:
    """``data`` (flat) with its rows in a canonical order: a lexicographic sort over all its
    leaves, so transitions from runners with different batch layouts can be compared.

    The sort key rounds floats to 1e-4: a policy's float outputs may differ in the last bits
    between batch layouts (BLAS picks kernels by shape) or devices.
    """
    if data.batch_dims != 1:
        raise ValueError(f"canonical expects a flat TensorDict, got batch {data.batch_size}.")
    keys = sorted(data.keys(True, True), key=str)
    table = torch.cat([data.get(key).reshape(len(data), -1).double() for key in keys], -1)
    table = (table * 1e4).round()
    order = torch.arange(len(data))
    for column in reversed(range(table.shape[1])):  # stable sorts, last key first
        order = order[torch.sort(table[order, column], stable=True).indices]
    return data[order]


def assert_same_transitions(
    got: dict[str, TensorDictBase], expected: dict[str, TensorDictBase]
) -> None:
    """Same levels, same keys, same transitions up to row order (floats up to float32
    rounding, integers and flags exactly)."""
    assert list(got) == list(expected)
    for name in expected:
        a, b = canonical(got[name].cpu()), canonical(expected[name].cpu())
        assert set(a.keys(True, True)) == set(b.keys(True, True)), name
        assert a.batch_size == b.batch_size, (name, a.batch_size, b.batch_size)
        for key in b.keys(True, True):
            torch.testing.assert_close(a.get(key), b.get(key), msg=lambda m: f"{name} {key}: {m}")


def cat_transitions(parts: list[dict[str, TensorDictBase]]) -> dict[str, TensorDictBase]:
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


def collect(collector, n_batches: int) -> list[TensorDictBase]:
    batches = []
    try:
        for i, batch in enumerate(collector):
            batches.append(batch.clone())
            if i + 1 == n_batches:
                break
    finally:
        collector.shutdown()
    assert len(batches) == n_batches
    return batches


@pytest.mark.parametrize("n_levels", [2, 3])
def test_transformed_env_specs(n_levels):
    env = make_maze(0, max_steps=5, batch=3)
    hierarchy = Hierarchy(deterministic_levels(n_levels), env)
    check_env_specs(TransformedEnv(env, hierarchy.transform), seed=0)


def test_transformed_serial_env_specs():
    """Specs also hold on a batched env whose batch shape is [workers, 1]."""
    env = SerialEnv(2, [make_env_0, make_env_1])
    hierarchy = Hierarchy(deterministic_levels(3), env)
    check_env_specs(TransformedEnv(env, hierarchy.transform))


@pytest.mark.parametrize("n_levels", [2, 3])
def test_rollout_and_collector_give_same_transitions(n_levels):
    """A Collector cutting the run into batches of 8 steps gives the transitions of one
    24-step rollout on an env with the same seed (including auto-resets in between)."""
    n_envs, steps = 3, 24
    rollout_env = make_maze(5, max_steps=9, batch=n_envs)
    hierarchy = Hierarchy(deterministic_levels(n_levels), rollout_env)
    rollout = TransformedEnv(rollout_env, hierarchy.transform).rollout(
        steps, hierarchy.policy, break_when_any_done=False
    )
    expected = hierarchy.transitions(rollout)
    assert all(len(data) > 0 for data in expected.values())
    # The rollout must have exercised both completion causes on the top level.
    assert rollout["next", "truncated"].any() and rollout["next", "hier", "completed"][..., 0].any()

    collector = Collector(
        TransformedEnv(make_maze(5, max_steps=9, batch=n_envs), hierarchy.transform),
        hierarchy.policy,
        frames_per_batch=n_envs * 8,
        total_frames=n_envs * steps,
        auto_register_policy_transforms=False,
    )
    batches = collect(collector, 3)
    assert all(batch.batch_size == (n_envs, 8) for batch in batches)
    got = cat_transitions([hierarchy.transitions(batch) for batch in batches])
    assert_same_transitions(got, expected)


def test_a_step_limit_after_the_hierarchy_transform_still_completes_every_level():
    """A step limit the backward pass does not see (a ``StepCounter`` appended after the
    hierarchy's transform, as ``Collector(max_frames_per_traj=...)`` does) ends the upper
    levels' transitions too: the same transitions as with the limit before the transform."""
    n_envs, steps, limit = 3, 24, 5
    hierarchy = Hierarchy(deterministic_levels(3), make_maze(5, max_steps=100, batch=n_envs))
    before = TransformedEnv(
        make_maze(5, max_steps=100, batch=n_envs), Compose(StepCounter(limit), hierarchy.transform)
    )
    ends = before.rollout(steps, hierarchy.policy, break_when_any_done=False)
    expected = hierarchy.transitions(ends)
    assert len(expected["top"]) >= n_envs * (steps // limit)  # every episode ends the top's

    after = TransformedEnv(make_maze(5, max_steps=100, batch=n_envs), hierarchy.transform)
    after.append_transform(StepCounter(limit))
    rollout = after.rollout(steps, hierarchy.policy, break_when_any_done=False)
    assert_same_transitions(hierarchy.transitions(rollout), expected)
    # Whole episodes per level (hindsight relabelling's input) cut at the same ends.
    assert_same_transitions(LevelEpisodes(hierarchy).add(rollout), LevelEpisodes(hierarchy).add(ends))

    collector = Collector(
        TransformedEnv(make_maze(5, max_steps=100, batch=n_envs), hierarchy.transform),
        hierarchy.policy,
        frames_per_batch=n_envs * 8,
        total_frames=n_envs * steps,
        max_frames_per_traj=limit,
        auto_register_policy_transforms=False,
    )
    got = cat_transitions([hierarchy.transitions(batch) for batch in collect(collector, 3)])
    assert_same_transitions(got, expected)


def _per_instance_transitions(hierarchy: Hierarchy, steps: int) -> dict[str, TensorDictBase]:
    """The transitions of the two seeded instances, each run alone."""
    return cat_transitions(
        [
            hierarchy.transitions(
                TransformedEnv(factory(), hierarchy.transform).rollout(
                    steps, hierarchy.policy, break_when_any_done=False
                )
            )
            for factory in (make_env_0, make_env_1)
        ]
    )


def _batched_rollout(env: EnvBase, hierarchy: Hierarchy, steps: int) -> TensorDictBase:
    try:
        rollout = env.rollout(steps, hierarchy.policy, break_when_any_done=False)
    finally:
        env.close()
    assert rollout.batch_size == (2, 1, steps)
    return rollout


@pytest.mark.slow  # spawns worker processes (~10-25 s on 2 cores)
def test_serial_and_parallel_env_match_separate_instances():
    """SerialEnv and ParallelEnv (hierarchy transform on the batched env) give the transitions
    of the two instances run one at a time; the instances have different episode lengths, so
    they run out of step with each other."""
    steps = 20
    hierarchy = Hierarchy(deterministic_levels(3), make_env_0())
    expected = _per_instance_transitions(hierarchy, steps)
    assert len(expected["top"]) >= 4  # several top-level transitions per instance
    for env in (
        SerialEnv(2, [make_env_0, make_env_1]),
        ParallelEnv(2, [make_env_0, make_env_1], mp_start_method="spawn"),
    ):
        rollout = _batched_rollout(TransformedEnv(env, hierarchy.transform), hierarchy, steps)
        assert_same_transitions(hierarchy.transitions(rollout), expected)


def test_serial_env_with_transform_in_sub_envs():
    """The transform may also sit inside each sub-env (each with its own Hierarchy object)."""
    steps = 20
    hierarchy = Hierarchy(deterministic_levels(3), make_env_0())
    env = SerialEnv(2, [make_hier_env_0, make_hier_env_1])
    rollout = _batched_rollout(env, hierarchy, steps)
    assert_same_transitions(hierarchy.transitions(rollout), _per_instance_transitions(hierarchy, steps))


@pytest.mark.slow  # spawns worker processes (~10-25 s on 2 cores)
def test_parallel_env_with_transform_in_workers():
    steps = 20
    hierarchy = Hierarchy(deterministic_levels(3), make_env_0())
    env = ParallelEnv(2, [make_hier_env_0, make_hier_env_1], mp_start_method="spawn")
    rollout = _batched_rollout(env, hierarchy, steps)
    assert_same_transitions(hierarchy.transitions(rollout), _per_instance_transitions(hierarchy, steps))


@pytest.mark.slow  # spawns worker processes (~10-25 s on 2 cores)
def test_multisync_collector_matches_single_collectors():
    """MultiSyncCollector over 2 workers gives, per worker, the transitions of a Collector on
    that worker's env (same seeds), with the hierarchy transform inside each worker."""
    per_worker, n_batches = 10, 2
    hierarchy = Hierarchy(deterministic_levels(3), make_env_0())
    expected = []
    for factory in (make_hier_env_0, make_hier_env_1):
        collector = Collector(
            factory,
            hierarchy.policy,
            frames_per_batch=per_worker,
            total_frames=per_worker * n_batches,
            auto_register_policy_transforms=False,
        )
        expected += [hierarchy.transitions(b) for b in collect(collector, n_batches)]

    collector = MultiSyncCollector(
        [make_hier_env_0, make_hier_env_1],
        hierarchy.policy,
        frames_per_batch=2 * per_worker,
        total_frames=2 * per_worker * n_batches,
        auto_register_policy_transforms=False,
    )
    batches = collect(collector, n_batches)
    assert all(batch.numel() == 2 * per_worker for batch in batches)
    got = cat_transitions([hierarchy.transitions(b) for b in batches])
    assert_same_transitions(got, cat_transitions(expected))


def test_transitions_feed_a_replay_buffer():
    """Each level's transitions go into a stock TensorDictReplayBuffer and come back with
    ``steps_to_next_obs`` (τ) and the SMDP reward intact."""
    env = make_maze(2, max_steps=9, batch=4)
    hierarchy = Hierarchy(deterministic_levels(3), env)
    rollout = TransformedEnv(env, hierarchy.transform).rollout(
        30, hierarchy.policy, break_when_any_done=False
    )
    for name, data in hierarchy.transitions(rollout).items():
        buffer = TensorDictReplayBuffer(
            storage=LazyTensorStorage(1000),
            sampler=SamplerWithoutReplacement(),
            batch_size=len(data),
        )
        buffer.extend(data)
        assert len(buffer) == len(data)
        sample = buffer.sample()
        assert sample["steps_to_next_obs"].shape == (len(data), 1)
        assert sample["steps_to_next_obs"].dtype == torch.int64
        assert (sample["steps_to_next_obs"] >= 1).all()
        assert sample["next", "reward"].shape == (len(data), 1)
        # Without replacement, a full-size sample is a permutation of what went in.
        assert_same_transitions({name: sample.exclude("index")}, {name: data})
