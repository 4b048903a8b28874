"""Property tests of the hierarchy invariants of DESIGN.md §2.

Hierarchies of 1-4 levels run on :class:`scripted_env.ScriptedEnv`, whose rewards, terminations
and truncations come from hypothesis-drawn tables, with return-control rules drawn from
``Timeout``/``Never``/``Always`` and a table-driven rule. Each level's policy echoes where and
when it chose (``action = (instance, clock, parent's choice clock)``), so every transition says
where it started. The engine's output is checked

- against a plain single-instance re-implementation of the semantics (:func:`simulate`), which
  loops over steps and levels as the spec reads;
- and against the invariants directly, computed from the engine's transitions alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scripted_env import CLOCK, EPISODE, INSTANCE, NONE, STEP, TERMINATE, TRUNCATE, ScriptedEnv
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import Collector
from torchrl.data import Unbounded
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs

from torchrl_hier import Always, Hierarchy, Level, LevelStep, Never, ReturnControlRule, Timeout
from torchrl_hier.layered import Hierarchy as LayeredHierarchy

# ----------------------------------------------------------------------------- set-up

GAMMAS = [1.0, 0.97, 0.9, 0.8, 0.6, 0.5, 0.3]
RULE_KINDS = ["always", "never", "timeout", "table", "table|timeout", "table&timeout"]


def flip(observation: torch.Tensor) -> torch.Tensor:
    """An obs map: the env observation, reversed."""
    return observation.flip(-1)


class EchoPolicy(TensorDictModuleBase):
    """Writes ``action = (instance, clock, parent's choice clock or -1)`` from the observation
    (and the parent action), so a transition's action tells when it and its parent chose.
    ``flipped`` says the level sees the env observation through :func:`flip`."""

    def __init__(self, has_parent: bool, flipped: bool = False):
        super().__init__()
        self.flipped = flipped
        self.in_keys = ["observation", "parent_action"] if has_parent else ["observation"]
        self.out_keys = ["action"]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        obs = tensordict.get("observation")
        obs = flip(obs) if self.flipped else obs
        parent = tensordict.get("parent_action", None)
        if parent is None:
            parent_clock = torch.full_like(obs[..., CLOCK], -1.0)
        else:
            parent_clock = parent[..., CLOCK]
        action = torch.stack([obs[..., INSTANCE], obs[..., CLOCK], parent_clock], -1)
        return tensordict.set("action", action)


class TableRule(ReturnControlRule):
    """Hands control back where ``bits[instance, clock % T, level]`` is set (vectorised)."""

    def __init__(self, bits: torch.Tensor):
        self.bits = bits

    def __call__(self, step: LevelStep) -> torch.Tensor:
        obs = step.root.get("observation")
        instance = obs[..., INSTANCE].long()
        clock = obs[..., CLOCK].long() % self.bits.shape[1]
        return self.bits[instance, clock, step.index]


@dataclass(frozen=True)
class ScaledReward:
    """A level reward: the env reward times ``scale``."""

    scale: float

    def __call__(self, step: LevelStep) -> torch.Tensor:
        return step.env_reward * self.scale


@dataclass
class Scenario:
    """Everything a test run needs, drawn by hypothesis."""

    batch: tuple[int, ...]
    steps: int
    gammas: list[float]
    rules: list[tuple[str, int]]  # (kind, timeout), one per level; the top's is never consulted
    rewards: list[list[float]]  # [instance][T]
    ends: list[list[int]]  # [instance][T]
    bits: list[list[list[bool]]]  # [instance][T][level]
    reward_scales: list[float | None] | None = None  # per level; None: the env reward
    flipped: list[bool] | None = None  # per level: sees the observation through flip()

    def reward_scale(self, level: int) -> float:
        scale = None if self.reward_scales is None else self.reward_scales[level]
        return 1.0 if scale is None else scale

    def is_flipped(self, level: int) -> bool:
        return self.flipped is not None and self.flipped[level]

    @property
    def n_levels(self) -> int:
        return len(self.gammas)

    @property
    def n_instances(self) -> int:
        return math.prod(self.batch)

    @property
    def horizon(self) -> int:
        return len(self.rewards[0])

    def env(self, device: str = "cpu") -> ScriptedEnv:
        rewards = torch.tensor(self.rewards, dtype=torch.float32)
        ends = torch.tensor(self.ends, dtype=torch.long)
        return ScriptedEnv(
            rewards.reshape(*self.batch, -1), ends.reshape(*self.batch, -1), device=device
        )

    def levels(self, device: str | torch.device = "cpu") -> list[Level]:
        bits = torch.tensor(self.bits, dtype=torch.bool, device=device)
        lowest = self.n_levels - 1
        return [
            Level(
                f"L{i}",
                EchoPolicy(has_parent=i > 0, flipped=self.is_flipped(i)),
                action_spec=None if i == lowest else Unbounded(3),
                obs_map=flip if self.is_flipped(i) else None,
                reward=None if self.reward_scale(i) == 1.0 else ScaledReward(self.reward_scale(i)),
                control=_rule(kind, k, bits) if i else Always(),  # the top's is never consulted
                gamma=gamma,
            )
            for i, ((kind, k), gamma) in enumerate(zip(self.rules, self.gammas))
        ]

    def hierarchy(self, env: ScriptedEnv) -> Hierarchy:
        return Hierarchy(self.levels(env.device), env)


def _rule(kind: str, k: int, bits: torch.Tensor) -> ReturnControlRule:
    if kind == "always":
        return Always()
    if kind == "never":
        return Never()
    if kind == "timeout":
        return Timeout(k)
    if kind == "table":
        return TableRule(bits)
    if kind == "table|timeout":
        return TableRule(bits) | Timeout(k)
    if kind == "table&timeout":
        return TableRule(bits) & Timeout(k)
    raise AssertionError(kind)


def _hands_back(kind: str, k: int, count: int, bit: bool) -> bool:
    """The oracle's reading of the same rules."""
    return {
        "always": True,
        "never": False,
        "timeout": count >= k,
        "table": bit,
        "table|timeout": bit or count >= k,
        "table&timeout": bit and count >= k,
    }[kind]


@st.composite
def scenarios(
    draw,
    min_levels: int = 1,
    max_levels: int = 4,
    max_batch: int = 4,
    max_steps: int = 24,
    two_dim: bool = False,
    level_variants: bool = False,
) -> Scenario:
    n = draw(st.integers(min_levels, max_levels))
    if two_dim and draw(st.booleans()):
        batch = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    else:
        batch = (draw(st.integers(1, max_batch)),)
    n_instances = math.prod(batch)
    steps = draw(st.integers(1, max_steps))
    horizon = steps  # tables cover the whole run
    gammas = draw(st.lists(st.sampled_from(GAMMAS), min_size=n, max_size=n, unique=True))
    rules = draw(
        st.lists(
            st.tuples(st.sampled_from(RULE_KINDS), st.integers(1, 4)), min_size=n, max_size=n
        )
    )
    # Episode ends are rarer or denser from example to example.
    end_rate = draw(st.integers(0, 8))
    end_code = st.integers(0, 19).map(
        lambda x: NONE if x < 20 - end_rate else (TERMINATE if x % 2 else TRUNCATE)
    )
    ends = [
        draw(st.lists(end_code, min_size=horizon, max_size=horizon)) for _ in range(n_instances)
    ]
    reward = st.integers(-8, 8).map(lambda x: x / 4)
    rewards = [
        draw(st.lists(reward, min_size=horizon, max_size=horizon)) for _ in range(n_instances)
    ]
    bit_rate = draw(st.integers(1, 4))
    bit = st.integers(0, 4).map(lambda x: x < bit_rate)
    bits = [
        [draw(st.lists(bit, min_size=n, max_size=n)) for _ in range(horizon)]
        for _ in range(n_instances)
    ]
    scenario = Scenario(batch, steps, gammas, rules, rewards, ends, bits)
    if level_variants:  # own rewards and obs maps on some levels
        scale = st.one_of(st.none(), st.sampled_from([2.0, -0.5]))
        scenario.reward_scales = draw(st.lists(scale, min_size=n, max_size=n))
        scenario.flipped = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return scenario


# ----------------------------------------------------------------------------- oracle


@dataclass
class Expected:
    """One instance's expected run: completion flags per step, transitions per level."""

    completed: list[list[bool]] = field(default_factory=list)  # [step][level]
    transitions: list[list[dict]] = field(default_factory=list)  # [level][j]


def simulate(s: Scenario, b: int) -> Expected:
    """Instance ``b`` of the scenario, by the letter of DESIGN.md §2, one step at a time."""
    n, horizon = s.n_levels, s.horizon
    out = Expected(transitions=[[] for _ in range(n)])
    active, step_in_episode, episode = 0, 0, 0
    chose_at = [0] * n  # clock of each level's running choice
    start_step = [0] * n  # its step in the episode
    rewards_since = [[] for _ in range(n)]
    count = [0] * n  # completed transitions since the level took control
    for clock in range(s.steps):
        # Forward pass: every level at or below the active one chooses; its child takes control.
        for i in range(active, n):
            chose_at[i], start_step[i], rewards_since[i] = clock, step_in_episode, []
            if i + 1 < n:
                count[i + 1] = 0
        parent_clock = [-1.0] + [float(chose_at[i - 1]) for i in range(1, n)]
        grand_clock = [-1.0, -1.0] + [float(chose_at[i - 2]) for i in range(2, n)]
        # The env step.
        reward, end = s.rewards[b][clock % horizon], s.ends[b][clock % horizon]
        done = end != NONE
        for i in range(n):
            rewards_since[i].append(reward * s.reward_scale(i))
        # Backward pass: the lowest level completes every step; a level above completes when
        # its child completed and handed control back, or when the episode ended.
        completed = [False] * n
        completed[n - 1] = True
        count[n - 1] += 1
        for i in range(n - 1, 0, -1):
            kind, k = s.rules[i]
            bit = s.bits[b][clock % horizon][i]
            hands_back = completed[i] and _hands_back(kind, k, count[i], bit)
            completed[i - 1] = hands_back or done
            if completed[i - 1]:
                count[i - 1] += 1
        for i in range(n):
            if not completed[i]:
                continue
            order = slice(None, None, -1) if s.is_flipped(i) else slice(None)
            row = {
                "observation": [b, chose_at[i], start_step[i], episode][order],
                "action": [b, chose_at[i], parent_clock[i]],
                "steps_to_next_obs": len(rewards_since[i]),
                "next_observation": [b, clock + 1, step_in_episode + 1, episode][order],
                "reward": sum(s.gammas[i] ** j * r for j, r in enumerate(rewards_since[i])),
                "done": done,
                "terminated": end == TERMINATE,
                "truncated": end == TRUNCATE,
            }
            if i:
                row["parent_action"] = [b, chose_at[i - 1], grand_clock[i]]
            out.transitions[i].append(row)
        out.completed.append(completed)
        if done:
            active, step_in_episode, episode = 0, 0, episode + 1
        else:
            active, step_in_episode = completed.index(True), step_in_episode + 1
    return out


# ----------------------------------------------------------------------------- running


def rollout(s: Scenario, device: str = "cpu") -> tuple[Hierarchy, TensorDictBase]:
    """``env.rollout`` of the scenario, flattened to ``[instances, steps]``, on the cpu."""
    env = s.env(device)
    hier = s.hierarchy(env)
    data = TransformedEnv(env, hier.transform).rollout(
        s.steps, hier.policy, break_when_any_done=False
    )
    return hier, data.reshape(s.n_instances, s.steps).cpu()


def collect(s: Scenario, steps_per_batch: int) -> tuple[Hierarchy, TensorDictBase]:
    """The same run through a ``Collector`` (ex-``SyncDataCollector``) cut into batches of
    ``steps_per_batch`` steps per instance, concatenated and cut back to ``s.steps``."""
    env = s.env()
    hier = s.hierarchy(env)
    n_batches = -(-s.steps // steps_per_batch)
    frames_per_batch = steps_per_batch * s.n_instances
    collector = Collector(
        TransformedEnv(env, hier.transform),
        hier.policy,
        frames_per_batch=frames_per_batch,
        total_frames=frames_per_batch * n_batches,
        auto_register_policy_transforms=False,
    )
    try:
        batches = [batch.clone() for batch in collector]
    finally:
        collector.shutdown()
    assert len(batches) == n_batches
    data = torch.cat(batches, dim=-1)
    assert data.batch_size == (s.n_instances, steps_per_batch * n_batches)
    return hier, data[:, : s.steps]


def sorted_transitions(hier: Hierarchy, data: TensorDictBase) -> dict[str, TensorDictBase]:
    """Each level's transitions, sorted by (instance, time); a level's transitions of one
    instance do not overlap, so the clock at which they chose (in the action) orders them."""
    return {
        name: _sort_by_start(level_data, data.shape[-1])
        for name, level_data in hier.transitions(data).items()
    }


def _table(rows: list[dict], key: str) -> torch.Tensor:
    return torch.tensor([row[key] for row in rows])


def assert_matches_oracle(s: Scenario, hier: Hierarchy, data: TensorDictBase) -> None:
    expected = [simulate(s, b) for b in range(s.n_instances)]
    # Completion masks, per instance and step.
    completed = data.get(("next", "hier", "completed"))
    want = torch.tensor([e.completed for e in expected], dtype=torch.bool)
    assert torch.equal(completed, want), _first_difference(completed, want)
    assert_transitions_match(expected, hier.names, sorted_transitions(hier, data))


def _sort_by_start(level_data: TensorDictBase, n_steps: int) -> TensorDictBase:
    action = level_data.get("action")
    key = action[:, INSTANCE] * (10 * n_steps + 10) + action[:, CLOCK]
    return level_data[key.argsort(stable=True)]


def assert_transitions_match(
    expected: list[Expected], names: list[str], got: dict[str, TensorDictBase]
) -> None:
    """Each level's transitions (sorted by instance and start) equal the simulation's."""
    for i, name in enumerate(names):
        rows = [row for e in expected for row in e.transitions[i]]
        td = got[name]
        assert td.shape == (len(rows),), f"level {name}: {td.shape[0]} transitions, not {len(rows)}"
        if not rows:
            continue
        checks = {
            "observation": td.get("observation"),
            "action": td.get("action"),
            "steps_to_next_obs": td.get("steps_to_next_obs").squeeze(-1),
            "next_observation": td.get(("next", "observation")),
            "done": td.get(("next", "done")).squeeze(-1),
            "terminated": td.get(("next", "terminated")).squeeze(-1),
            "truncated": td.get(("next", "truncated")).squeeze(-1),
        }
        if i:
            checks["parent_action"] = td.get("parent_action")
            assert torch.equal(td.get("parent_action"), td.get(("next", "parent_action")))
        for key, value in checks.items():
            want = _table(rows, key).to(value.dtype)
            assert torch.equal(value, want), f"level {name} {key}: {_first_difference(value, want)}"
        torch.testing.assert_close(
            td.get(("next", "reward")).squeeze(-1),
            _table(rows, "reward").float(),
            rtol=1e-5,
            atol=1e-5,
            msg=lambda m: f"level {name}, reward: {m}",
        )


def _first_difference(got: torch.Tensor, want: torch.Tensor) -> str:
    if got.shape != want.shape:
        return f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    where = (got != want).nonzero()
    return f"first difference at {where[0].tolist()}: got {got[tuple(where[0])]}, want " + (
        f"{want[tuple(where[0])]}"
    )


def episodes(s: Scenario, b: int) -> list[tuple[int, int, int]]:
    """(episode, first clock, last clock) of the episodes of instance ``b`` that end in the run."""
    out, first, episode = [], 0, 0
    for clock in range(s.steps):
        if s.ends[b][clock % s.horizon] != NONE:
            out.append((episode, first, clock))
            first, episode = clock + 1, episode + 1
    return out


# ----------------------------------------------------------------------------- tests


@settings(max_examples=80, deadline=None)
@given(scenarios(two_dim=True, level_variants=True))
def test_engine_matches_reference_simulation(s: Scenario):
    """Invariant 3 and the whole of §2: every instance's completion mask and every level's
    transitions equal a plain per-instance simulation, with instances out of step, levels
    with their own rewards and obs maps, and 1- or 2-dim env batches."""
    hier, data = rollout(s)
    assert_matches_oracle(s, hier, data)


@settings(max_examples=60, deadline=None)
@given(scenarios(level_variants=True))
def test_layered_manual_loop_matches_reference_simulation(s: Scenario):
    """The LayeredRL-style loop (``get_action`` / ``process_transition`` on stacked tensors,
    transitions extracted lazily) gives the simulation's transitions and counts, with partial
    resets of instances out of step."""
    env = s.env()
    layered = LayeredHierarchy(s.levels(), env, keep_params=True)
    td = env.reset()
    layered.reset()
    per_step: dict[str, list[TensorDictBase]] = {name: [] for name in layered.names}
    for _ in range(s.steps):
        td.set("action", layered.get_action(td.get("observation")))
        td, root = env.step_and_maybe_reset(td)
        nxt = td.get("next")
        out = layered.process_transition(
            nxt.get("observation"), nxt.get("reward"), nxt.get("terminated"), nxt.get("truncated")
        )
        for name in layered.names:
            per_step[name].append(out[name])
        td = root
    expected = [simulate(s, b) for b in range(s.n_instances)]
    got = {name: _sort_by_start(torch.cat(parts), s.steps) for name, parts in per_step.items()}
    assert_transitions_match(expected, layered.names, got)
    assert layered.n_transitions == {
        name: sum(len(e.transitions[i]) for e in expected) for i, name in enumerate(layered.names)
    }


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@settings(max_examples=15, deadline=None)
@given(scenarios(two_dim=True, level_variants=True))
def test_engine_matches_reference_simulation_on_cuda(s: Scenario):
    """The same semantics with the env, the hierarchy state and the policies on cuda."""
    hier, data = rollout(s, device="cuda")
    assert_matches_oracle(s, hier, data)


@settings(max_examples=25, deadline=None)
@given(scenarios(min_levels=3, max_levels=3, max_batch=4, max_steps=30))
def test_three_levels_out_of_step_keep_separate_masks(s: Scenario):
    """Invariant 3 for 3 levels, where LayeredRL's indexing breaks: instances that end
    episodes and hand control back at different steps keep their own masks."""
    hier, data = rollout(s)
    assert_matches_oracle(s, hier, data)


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_durations_tile_episodes_and_returns_add_up(s: Scenario):
    """Invariant 1: per instance, level and finished episode, the τ of the level's transitions
    sum to the episode length and ``sum_j gamma**start_j R_j`` is the discounted return."""
    hier, data = rollout(s)
    transitions = hier.transitions(data)
    for level, (name, td) in zip(hier.levels, transitions.items()):
        obs = td.get("observation")
        next_obs = td.get(("next", "observation"))
        tau = td.get("steps_to_next_obs").squeeze(-1)
        # A transition spans τ steps of one episode: from where it chose to where it completed.
        assert torch.equal(obs[:, STEP] + tau, next_obs[:, STEP]), name
        assert torch.equal(obs[:, EPISODE], next_obs[:, EPISODE]), name
        assert (tau >= 1).all(), name
        for b in range(s.n_instances):
            for episode, first, last in episodes(s, b):
                mask = (obs[:, INSTANCE] == b) & (obs[:, EPISODE] == episode)
                assert int(tau[mask].sum()) == last - first + 1, (name, b, episode)
                starts = obs[mask][:, STEP].double()
                level_return = (
                    level.gamma**starts * td.get(("next", "reward"))[mask].squeeze(-1).double()
                ).sum()
                env_return = sum(
                    level.gamma ** (c - first) * s.rewards[b][c % s.horizon]
                    for c in range(first, last + 1)
                )
                assert math.isclose(float(level_return), env_return, rel_tol=1e-5, abs_tol=1e-5), (
                    name, b, episode, float(level_return), env_return
                )


@settings(max_examples=15, deadline=None)
@given(scenarios(max_steps=16), st.data())
def test_batching_does_not_change_transitions(s: Scenario, data):
    """Invariant 2: ``env.rollout`` and a ``Collector`` cut into batches of any size give the
    same transitions, level by level, sorted by (instance, time)."""
    cut_a = data.draw(st.integers(1, s.steps), label="steps_per_batch_a")
    cut_b = data.draw(st.integers(1, s.steps), label="steps_per_batch_b")
    hier, reference = rollout(s)
    want = sorted_transitions(hier, reference)
    for cut in (cut_a, cut_b):
        hier_c, batch = collect(s, cut)
        got = sorted_transitions(hier_c, batch)
        assert got.keys() == want.keys()
        for name in want:
            assert got[name].shape == want[name].shape, (cut, name)
            for key in want[name].keys(True, True):
                torch.testing.assert_close(
                    got[name].get(key), want[name].get(key), rtol=0, atol=0,
                    msg=lambda m: f"steps_per_batch={cut}, level {name}, {key}: {m}",
                )


@settings(max_examples=40, deadline=None)
@given(scenarios(two_dim=True))
def test_top_level_acts_first_after_an_episode_ends(s: Scenario):
    """Invariant 4 (and the forward pass): at the first step of every episode all levels
    count as completed and choose anew; elsewhere a level chooses iff it completed at the
    step before, and otherwise keeps its pending action."""
    hier, data = rollout(s)
    obs = data.get("observation")
    root_completed = data.get(("hier", "completed"))
    next_completed = data.get(("next", "hier", "completed"))
    first = obs[..., STEP] == 0
    assert root_completed[first].all()
    # Mid-episode, the mask the policy sees is the one the last backward pass wrote.
    later = ~first[:, 1:]
    assert torch.equal(root_completed[:, 1:][later], next_completed[:, :-1][later])
    clock = obs[..., CLOCK]
    for i, level in enumerate(hier.levels[:-1]):
        pending = data.get(("hier", f"{level.name}_action"))
        chose_now = pending[..., CLOCK] == clock
        assert torch.equal(chose_now, root_completed[..., i]), level.name
        kept = ~root_completed[:, 1:, i]
        assert torch.equal(pending[:, 1:][kept], pending[:, :-1][kept]), level.name
    # The env action is the lowest level's, fed with its parent's pending action.
    action = data.get("action")
    assert torch.equal(action[..., CLOCK], clock)
    if len(hier.levels) > 1:
        parent = data.get(("hier", f"{hier.levels[-2].name}_action"))
        assert torch.equal(action[..., 2], parent[..., CLOCK])


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_env_ends_reach_every_level_with_their_kind(s: Scenario):
    """Invariant 5: an env truncation yields truncated, not terminated, transitions at every
    level, and a termination terminated ones; no other transition is done."""
    hier, data = rollout(s)
    for name, td in hier.transitions(data).items():
        next_obs = td.get(("next", "observation"))
        instance = next_obs[:, INSTANCE].long()
        clock = next_obs[:, CLOCK].long() - 1  # the clock of the completing step
        ends = torch.tensor(s.ends)[instance, clock % s.horizon]
        done = td.get(("next", "done")).squeeze(-1)
        terminated = td.get(("next", "terminated")).squeeze(-1)
        truncated = td.get(("next", "truncated")).squeeze(-1)
        assert torch.equal(terminated, ends == TERMINATE), name
        assert torch.equal(truncated, ends == TRUNCATE), name
        assert torch.equal(done, ends != NONE), name
        # Every episode end of the run closes exactly one transition of this level.
        for b in range(s.n_instances):
            for _, _, last in episodes(s, b):
                closing = (instance == b) & (clock == last)
                assert int(closing.sum()) == 1, (name, b, last)


@settings(max_examples=10, deadline=None)
@given(scenarios(max_steps=8, two_dim=True))
def test_check_env_specs_on_transformed_env(s: Scenario):
    """Invariant 6: the transformed env's specs match its data, episode ends included."""
    env = s.env()
    hier = s.hierarchy(env)
    check_env_specs(TransformedEnv(env, hier.transform), break_when_any_done="both")


def test_partial_reset_keeps_other_instances():
    """The scripted env and the transform restart only the flagged instances."""
    s = Scenario(
        batch=(2,), steps=3, gammas=[0.9, 0.5], rules=[("always", 1), ("never", 1)],
        rewards=[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], ends=[[0, 0, 0], [0, 0, 0]],
        bits=[[[False, False]] * 3] * 2,
    )
    env = s.env()
    hier = s.hierarchy(env)
    tenv = TransformedEnv(env, hier.transform)
    td = tenv.reset()
    for _ in range(2):
        _, td = tenv.step_and_maybe_reset(hier.policy(td))
    assert td.get(("hier", "completed")).tolist() == [[False, True], [False, True]]
    td.set("_reset", torch.tensor([[True], [False]]))
    td = tenv.reset(td)
    assert td.get("observation")[:, STEP].tolist() == [0.0, 2.0]
    assert td.get(("hier", "completed")).tolist() == [[True, True], [False, True]]
    assert td.get(("hier", "steps"))[1].tolist() == [2, 1]
