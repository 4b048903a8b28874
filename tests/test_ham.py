"""Hierarchies of Abstract Machines: machine semantics, SMDP transitions, collectors, wrappers."""

from __future__ import annotations

import pickle
import signal
import time

import pytest
from gymnasium.utils.env_checker import check_env
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase, SerialEnv, TransformedEnv, check_env_specs
from torchrl.objectives import DQNLoss, ValueEstimators

from torchrl_hier.ham import HAM, HAMError, HAMTimeoutError
from torchrl_hier.ham.taxi import LOCATIONS, decode, make_taxi_env, q_table, taxi_ham

GAMMA = 0.9


class Counter(EnvBase):
    """Batched env that says where it is: observation ``(t, instance, last action)`` (int64).

    The step from ``t`` to ``t + 1`` pays ``t + 1``; an instance's episode terminates after
    ``lengths[i]`` steps (``0``: never) or is truncated after ``truncate_at`` steps.
    """

    def __init__(self, n: int = 1, lengths=None, truncate_at: int | None = None, device="cpu"):
        batch = (n,) if n else ()
        super().__init__(batch_size=batch, device=device)
        self.n = max(n, 1)
        lengths = torch.zeros(self.n, dtype=torch.int64) if lengths is None else torch.as_tensor(lengths)
        self.lengths = lengths.to(self.device)
        self.truncate_at = truncate_at
        self.observation_spec = Composite(
            observation=Unbounded((*batch, 3), dtype=torch.int64, device=self.device), shape=batch
        )
        self.action_spec = Categorical(4, batch, device=self.device)
        self.reward_spec = Unbounded((*batch, 1), device=self.device)
        flag = Categorical(2, (*batch, 1), dtype=torch.bool, device=self.device)
        self.full_done_spec = Composite(done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=batch)
        self.t = torch.zeros(self.n, dtype=torch.int64, device=self.device)
        self.last = torch.full((self.n,), -1, dtype=torch.int64, device=self.device)

    def _obs(self):
        index = torch.arange(self.n, device=self.device)
        return torch.stack([self.t, index, self.last], -1).reshape(*self.batch_size, 3)

    def _reset(self, tensordict=None, **kwargs):
        reset = None if tensordict is None else tensordict.get("_reset", None)
        reset = torch.ones(self.n, dtype=torch.bool, device=self.device) if reset is None else reset.reshape(self.n)
        self.t = torch.where(reset, 0, self.t)
        self.last = torch.where(reset, -1, self.last)
        flag = torch.zeros(*self.batch_size, 1, dtype=torch.bool, device=self.device)
        return TensorDict(
            observation=self._obs(), done=flag, terminated=flag.clone(), truncated=flag.clone(),
            batch_size=self.batch_size, device=self.device,
        )

    def _step(self, tensordict):
        self.last = tensordict.get("action").reshape(self.n).clone()
        self.t = self.t + 1
        reward = self.t.float()
        terminated = (self.lengths > 0) & (self.t >= self.lengths)
        truncated = torch.zeros_like(terminated)
        if self.truncate_at is not None:
            truncated = (self.t >= self.truncate_at) & ~terminated
        shape = (*self.batch_size, 1)
        return TensorDict(
            observation=self._obs(), reward=reward.reshape(shape), done=(terminated | truncated).reshape(shape),
            terminated=terminated.reshape(shape), truncated=truncated.reshape(shape),
            batch_size=self.batch_size, device=self.device,
        )

    def _set_seed(self, seed):
        pass


def module(fn, in_keys=("observation",)):
    """A choice module computing the choice with ``fn`` from the joint state's entries."""
    return TensorDictModule(fn, in_keys=list(in_keys), out_keys=["action"])


class CountingModule(TensorDictModuleBase):
    """Records the batch size of every call; chooses ``(t + instance) % 3``."""

    def __init__(self):
        super().__init__()
        self.in_keys, self.out_keys, self.calls = ["observation"], ["action"], []

    def forward(self, td):
        self.calls.append(td.batch_size[0])
        obs = td.get("observation")
        return td.set("action", (obs[..., 0] + obs[..., 1]) % 3)


def discounted_rewards(t0, tau):
    """What a transition from episode step t0 spanning tau steps must hold in Counter."""
    return torch.tensor(
        [sum(GAMMA**k * (t + k + 1) for k in range(n)) for t, n in zip(t0.tolist(), tau.tolist())],
        dtype=torch.float32,
    )


def rollout(env, ham, steps, policy=None):
    tenv = TransformedEnv(env, ham.transform)
    return tenv.rollout(steps, policy or ham.make_policy(), break_when_any_done=False)


# ---------------------------------------------------------------- the seed's example (module level:
# MultiSyncCollector workers unpickle these machines by reference)
def repetition(args):
    return args % 3


SEED_HAM = HAM(Counter(1), max_depth=4)


@SEED_HAM.learnable_choice_machine(
    Categorical(3), module(repetition, ["args"]), args_spec=Categorical(10), gamma=GAMMA
)
def repetition_choice(ham, args, choice):
    return int(choice) + 1  # the number of repetitions selected


@SEED_HAM.action_machine
def action_machine(ham, args):
    return args["my action"]


@SEED_HAM.functional_machine
def loop_machine(ham, args):
    for i in range(10):
        rep = yield ham.CALL(repetition_choice, i)
        for _ in range(rep):
            yield ham.CALL(action_machine, {"my action": 2})
    return None


SEED_HAM.set_root(loop_machine)
SEED_STEPS = sum(i % 3 + 1 for i in range(10))  # 19 actions for the ten choices


def make_seed_env():
    return TransformedEnv(Counter(2, lengths=[7, 0]), SEED_HAM.transform)


def test_seed_example_ten_choices_nine_transitions():
    assert SEED_HAM.machine_count == 3
    data = rollout(Counter(1), SEED_HAM, SEED_STEPS)
    assert (data["action"] == 2).all()
    out = SEED_HAM.transitions(data)["repetition_choice"]
    assert out.shape == (9,)  # ten choice points, env not terminated: nine transitions
    assert out["args"].tolist() == list(range(9))
    assert out["next", "args"].tolist() == list(range(1, 10))
    assert out["action"].tolist() == [i % 3 for i in range(9)]
    assert out["steps_to_next_obs"].flatten().tolist() == [i % 3 + 1 for i in range(9)]
    assert not out["next", "done"].any()
    # one more step: the root machine returns, restarts, and makes its 11th choice
    assert SEED_HAM.transitions(rollout(Counter(1), SEED_HAM, SEED_STEPS + 1))["repetition_choice"].shape == (10,)


def test_check_env_specs_and_policy_spec():
    env = TransformedEnv(Counter(3), SEED_HAM.transform)
    check_env_specs(env)
    spec = SEED_HAM.policy.spec
    assert ("ham", "repetition_choice", "event_stack") in spec.keys(True, True)
    assert set(SEED_HAM.policy.out_keys) == set(spec.keys(True, True))


# ---------------------------------------------------------------- semantics
def test_call_stack_return_values_and_recursion():
    ham = HAM(Counter(1), max_depth=6)
    point = ham.choice_point("pick", Categorical(3), module(lambda obs: obs[..., 0] % 3))

    @ham.functional_machine
    def countdown(ham, n):
        if n == 0:
            choice = yield ham.CALL(point)
            return [choice]
        below = yield ham.CALL(countdown, n - 1)
        return below + [n]

    @ham.action_machine
    def emit(ham, value):
        return value % 4

    @ham.functional_machine
    def root(ham, args):
        values = yield ham.CALL(countdown, 3)
        assert ham.stack == ("root",)
        for value in values:
            yield ham.CALL(emit, value)

    ham.set_root(root)
    data = rollout(Counter(1), ham, 8)
    # episode steps 0-3: choice at t=0 is 0 -> [0, 1, 2, 3]; steps 4-7: choice at t=4 is 1
    assert data["action"].flatten().tolist() == [0, 1, 2, 3, 1, 1, 2, 3]
    ids = {name: m.index for name, m in ham.machines.items()}
    stack = data["ham", "pick", "event_stack"][0, 0, 0].tolist()
    assert stack == [ids["root"], ids["countdown"], ids["countdown"], ids["countdown"], ids["countdown"], ids["pick"]]
    assert data["ham", "pick", "n"].flatten().tolist() == [1, 0, 0, 0, 1, 0, 0, 0]
    out = ham.transitions(data)["pick"]
    assert out.shape == (1,) and out["steps_to_next_obs"].item() == 4
    assert out["stack"].tolist() == out["next", "stack"].tolist() == [stack]


def test_discounted_reward_tau_and_same_step_choices():
    """Two choices of one choice point without an action between them give a τ=0 transition;
    rewards are sum_k gamma**k r_k over the env steps since the choice point's last choice."""
    ham = HAM(Counter(1))
    point = ham.choice_point(
        "c", Categorical(2), module(lambda obs, args: (obs[..., 0] + args) % 2, ["observation", "args"]),
        gamma=GAMMA, args_spec=Categorical(2),
    )

    @ham.functional_machine
    def root(ham, args):
        while True:
            a = yield ham.CALL(point, 0)
            b = yield ham.CALL(point, 1)
            yield ham.ACTION(a)
            yield ham.ACTION(b)
            if ham.observation[0] % 3 == 1:
                yield ham.ACTION(2)

    ham.set_root(root)
    data = rollout(Counter(1), ham, 14)
    out = ham.transitions(data)["c"]
    tau = out["steps_to_next_obs"].flatten()
    t0 = out["observation"][:, 0]
    assert (out["next", "observation"][:, 0] - t0 == tau).all()
    torch.testing.assert_close(out["next", "reward"].flatten(), discounted_rewards(t0, tau))
    assert set(tau.tolist()) == {0, 2, 3}
    zero = tau == 0
    assert (out["args"][zero] == 0).all() and (out["next", "args"][zero] == 1).all()
    assert (out["action"] == (t0 + out["args"]) % 2).all()
    # consecutive transitions chain up: each starts where the previous one ended
    assert torch.equal(out["next", "observation"][:-1], out["observation"][1:])
    assert torch.equal(out["next", "args"][:-1], out["args"][1:])
    assert out["observation"][0, 0] == 0 and data["observation"][0, -1, 0] - out["next", "observation"][-1, 0] < 4


def test_episode_ends_inside_a_machine_and_restart():
    ham = HAM(Counter(1, lengths=[5]))
    nav = ham.choice_point("nav", Categorical(4), module(lambda obs: obs[..., 0] % 4), gamma=GAMMA)

    @ham.functional_machine
    def walk(ham, args):
        for _ in range(3):
            move = yield ham.CALL(nav)
            yield ham.ACTION(move)
            yield ham.ACTION(move)

    ham.set_root(walk)
    data = rollout(Counter(1, lengths=[5]), ham, 10)
    out = ham.transitions(data)["nav"]
    # episode 1: choices at t=0, 2, 4, ends after step 5 (mid-way through the third choice)
    first_episode = out[:3]
    assert first_episode["observation"][:, 0].tolist() == [0, 2, 4]
    assert first_episode["steps_to_next_obs"].flatten().tolist() == [2, 2, 1]
    assert first_episode["next", "terminated"].flatten().tolist() == [False, False, True]
    assert not first_episode["next", "truncated"].any()
    torch.testing.assert_close(first_episode["next", "reward"][2], torch.tensor([5.0]))
    # the machine restarted from the root: the next episode's first choice is at t=0 again
    assert out[3]["observation"][0].item() == 0
    assert data["ham", "restart"].flatten().tolist()[:7] == [True, False, False, False, False, True, False]


def test_truncation_is_kept_apart():
    ham = HAM(Counter(1, truncate_at=3))
    point = ham.choice_point("c", Categorical(4), module(lambda obs: obs[..., 0] % 4))

    @ham.functional_machine
    def root(ham, args):
        while True:
            action = yield ham.CALL(point)
            yield ham.ACTION(action)

    ham.set_root(root)
    out = ham.transitions(rollout(Counter(1, truncate_at=3), ham, 6))["c"]
    end = out["next", "done"].flatten()
    assert end.sum() == 2
    assert out["next", "truncated"].flatten()[end].all() and not out["next", "terminated"].any()


def test_batched_instances_at_different_places_match_lone_runs():
    """Instances whose episodes end at different times drift apart: they sit at different
    depths of a recursion and at different choice points in the same step. Each instance's
    transitions in the batched run equal those of a run of that instance alone."""
    lengths = [7, 0, 4, 9]

    def build(env):
        ham = HAM(env, max_depth=8)
        depth = ham.choice_point("depth", Categorical(3), module(lambda obs: obs[..., 0] % 3), gamma=GAMMA)
        move = ham.choice_point("move", Categorical(4), module(lambda obs: (obs[..., 0] * 3) % 4))

        @ham.functional_machine
        def dive(ham, n):
            if n > 0:
                yield ham.CALL(dive, n - 1)
                return
            action = yield ham.CALL(move)
            yield ham.ACTION(action)

        @ham.functional_machine
        def root(ham, args):
            while True:
                d = yield ham.CALL(depth)
                yield ham.CALL(dive, d)
                if d == 2:
                    yield ham.ACTION(3)

        ham.set_root(root)
        return ham

    ham = build(Counter(4, lengths=lengths))
    data = rollout(Counter(4, lengths=lengths), ham, 24)
    together = ham.transitions(data)
    stacks = data["ham", "move", "event_stack"][:, :, 0]
    depths = (stacks > 0).sum(-1)
    assert (depths.max(0).values != depths.min(0).values).any()  # different depths in one step
    for i, length in enumerate(lengths):
        lone = build(Counter(1, lengths=[length]))
        ref = lone.transitions(rollout(Counter(1, lengths=[length]), lone, 24))
        for name in ("depth", "move"):
            mine = together[name][together[name]["observation"][:, 1] == i]
            assert mine.shape == ref[name].shape, name
            assert torch.equal(mine["observation"][:, 0], ref[name]["observation"][:, 0])
            for key in ("steps_to_next_obs", ("next", "reward"), "action", "stack", ("next", "stack"),
                        ("next", "terminated")):
                assert torch.equal(mine[key], ref[name][key]), (name, key)


def test_durations_tile_and_discounted_returns_add_up():
    lengths = [6, 11]
    ham = HAM(Counter(2, lengths=lengths))
    point = ham.choice_point("c", Categorical(3), module(lambda obs: (obs[..., 0] + obs[..., 1]) % 3), gamma=GAMMA)

    @ham.functional_machine
    def root(ham, args):
        yield ham.ACTION(3)  # one step before the first choice of every episode
        while True:
            n = yield ham.CALL(point)
            for _ in range(n + 1):
                yield ham.ACTION(n)

    ham.set_root(root)
    data = rollout(Counter(2, lengths=lengths), ham, 33)
    out = ham.transitions(data)["c"]
    for i, length in enumerate(lengths):
        mine = out[out["observation"][:, 1] == i]
        ends = mine["next", "done"].flatten().nonzero().flatten().tolist()
        start = 0
        for end in ends:
            episode = mine[start : end + 1]
            start = end + 1
            tau = episode["steps_to_next_obs"].flatten()
            assert tau.sum() == length - 1  # all steps after the first choice
            t0 = episode["observation"][:, 0].float()
            discounted = (GAMMA ** (t0 - 1) * episode["next", "reward"].flatten()).sum()
            expected = sum(GAMMA ** (t - 1) * (t + 1) for t in range(1, length))
            torch.testing.assert_close(discounted, torch.tensor(expected, dtype=torch.float32))
        assert len(ends) >= 2


def test_choice_modules_run_once_per_round_for_all_waiting_instances():
    counting = CountingModule()
    ham = HAM(Counter(5))
    point = ham.choice_point("c", Categorical(3), counting)

    @ham.functional_machine
    def root(ham, args):
        while True:
            first = yield ham.CALL(point)
            if ham.index % 2:  # odd instances choose twice in a row
                yield ham.CALL(point)
            yield ham.ACTION(first)

    ham.set_root(root)
    counting.calls.clear()
    rollout(Counter(5), ham, 3)
    assert counting.calls == [5, 2, 5, 2, 5, 2]


# ---------------------------------------------------------------- errors
def _simple(body, **ham_kwargs):
    ham = HAM(Counter(2), **ham_kwargs)
    ham.functional_machine(body)
    ham.set_root(body)
    return ham


def test_error_in_machine_code_surfaces_with_traceback():
    def broken(ham, args):
        yield ham.ACTION(0)
        raise ZeroDivisionError("machine bug")

    ham = _simple(broken)
    with pytest.raises(ZeroDivisionError, match="machine bug") as info:
        rollout(Counter(2), ham, 3)
    assert any("HAM machine 'broken'" in note for note in info.value.__notes__)
    assert any(entry.name == "broken" for entry in info.traceback)
    # the policy refuses to go on until the env is reset, and recovers after
    policy = ham.make_policy()
    env = TransformedEnv(Counter(2), ham.transform)
    td = env.reset()
    policy(td)
    with pytest.raises(ZeroDivisionError):
        policy(env.step(td)["next"])


def test_stuck_machine_is_named():
    def spin(ham, args):
        while True:
            yield ham.CALL(helper)

    def helper(ham, args):
        return None

    ham = HAM(Counter(2), max_machine_steps=50)
    ham.functional_machine(helper)
    ham.functional_machine(spin)
    ham.set_root(spin)
    with pytest.raises(HAMError, match="'spin'.*50 machine steps"):
        rollout(Counter(2), ham, 2)


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="the time limit uses SIGALRM")
def test_infinite_loop_without_yield_times_out():
    def hang(ham, args):
        while True:
            pass
        yield

    ham = _simple(hang, time_limit=0.3)
    start = time.perf_counter()
    with pytest.raises(HAMTimeoutError, match="'hang'"):
        rollout(Counter(2), ham, 2)
    assert time.perf_counter() - start < 10


def test_action_outside_the_action_spec_names_the_machine():
    ham = HAM(Counter(2))

    @ham.action_machine
    def bad_move(ham, args):
        return 7 if ham.index == 1 else 0

    @ham.functional_machine
    def root(ham, args):
        while True:
            yield ham.CALL(bad_move)

    ham.set_root(root)
    with pytest.raises(HAMError, match="'bad_move' \\(env instance 1\\).*7.*outside"):
        rollout(Counter(2), ham, 2)


def test_choice_outside_the_choice_spec_names_the_choice_point():
    ham = HAM(Counter(2))
    point = ham.choice_point("c", Categorical(3), module(lambda obs: obs[..., 1] + 2))  # instance 1: 3

    @ham.functional_machine
    def root(ham, args):
        while True:
            yield ham.CALL(point)
            yield ham.ACTION(0)

    ham.set_root(root)
    with pytest.raises(HAMError, match="Choice point 'c' got the choice 3 for env instance 1, outside"):
        rollout(Counter(2), ham, 2)


def test_misuse_gets_clear_errors():
    ham = HAM(Counter(2), max_depth=3)

    def not_registered(ham, args):
        return None

    @ham.functional_machine
    def forgot_yield(ham, args):
        ham.CALL(forgot_yield)
        return None

    with pytest.raises(HAMError, match="not a machine of this HAM"):
        ham.set_root(not_registered)
    ham.set_root(forgot_yield)
    with pytest.raises(HAMError, match="without yielding it"):
        rollout(Counter(2), ham, 1)

    deep = HAM(Counter(2), max_depth=3)

    @deep.functional_machine
    def recurse(ham, args):
        yield ham.CALL(recurse)

    deep.set_root(recurse)
    with pytest.raises(HAMError, match="deeper than max_depth=3"):
        rollout(Counter(2), deep, 1)

    with pytest.raises(ValueError, match="Choice point 'wrong': its module wrote choices of shape"):
        HAM(Counter(2)).choice_point("wrong", Categorical(3), module(lambda obs: obs.float()))
    with pytest.raises(HAMError, match="no root machine"):
        HAM(Counter(2)).policy
    with pytest.raises(KeyError, match="ham.transform"):
        SEED_HAM.make_policy()(Counter(2).reset())


# ---------------------------------------------------------------- collectors and learners
def test_collector_batches_cut_anywhere_give_the_rollout_transitions():
    env = TransformedEnv(Counter(2, lengths=[7, 0]), SEED_HAM.transform)
    whole = SEED_HAM.transitions(env.rollout(30, SEED_HAM.make_policy(), break_when_any_done=False))
    collector = Collector(
        make_seed_env(), SEED_HAM.make_policy(), frames_per_batch=2 * 3, total_frames=2 * 30,
        auto_register_policy_transforms=False,
    )
    parts = [SEED_HAM.transitions(batch)["repetition_choice"] for batch in collector]
    collector.shutdown()
    pieces = torch.cat(parts)
    ref = whole["repetition_choice"]
    assert pieces.shape == ref.shape

    def key(td):  # rows sorted by (instance, time)
        order = (td["observation"][:, 1] * 1000 + td["observation"][:, 0]).argsort()
        return td[order]

    for name in ("steps_to_next_obs", ("next", "reward"), "action", "args", ("next", "args"), ("next", "terminated")):
        assert torch.equal(key(pieces)[name], key(ref)[name]), name


def _check_seed_transitions(out):
    tau = out["steps_to_next_obs"].flatten()
    t0 = out["observation"][:, 0]
    going = ~out["next", "done"].flatten()
    assert (out["next", "observation"][:, 0] - t0 == tau).all()
    assert (tau[going] == out["action"][going] + 1).all()  # the choice is repetitions - 1
    torch.testing.assert_close(out["next", "reward"].flatten(), discounted_rewards(t0, tau))


@pytest.mark.slow
def test_multisync_collector_runs_the_ham_in_workers():
    collector = MultiSyncCollector(
        [make_seed_env, make_seed_env], SEED_HAM.make_policy(), frames_per_batch=40, total_frames=80,
        auto_register_policy_transforms=False,
    )
    try:
        batches = list(collector)
    finally:
        collector.shutdown()
    assert len(batches) == 2
    for batch in batches:
        out = SEED_HAM.transitions(batch)["repetition_choice"]
        assert out.shape[0] > 5
        _check_seed_transitions(out)


def test_dqn_loss_on_ham_transitions_uses_tau():
    torch.manual_seed(0)
    env = make_taxi_env(8, seed=0)
    nav = q_table(500, 4, n_args=4, eps_init=1.0, eps_end=1.0)
    ham = taxi_ham(env, nav.policy)
    data = TransformedEnv(env, ham.transform).rollout(100, ham.policy, break_when_any_done=False)
    out = ham.transitions(data)["nav"]
    assert out.shape[0] > 50 and (out["steps_to_next_obs"] > 1).any()  # pickups inside a transition
    with torch.no_grad():
        nav.table.table.normal_()
    loss = DQNLoss(nav.actor, action_space="categorical", delay_value=False, loss_function="l2")
    loss.make_value_estimator(ValueEstimators.TD0, gamma=0.9)
    table = nav.table.table.detach()
    q = table[out["observation"] * 4 + out["args"]].gather(-1, out["action"][:, None]).flatten()
    next_q = table[out["next", "observation"] * 4 + out["next", "args"]].max(-1).values
    not_final = (~out["next", "terminated"]).flatten().float()
    target = out["next", "reward"].flatten() + 0.9 ** out["steps_to_next_obs"].flatten() * not_final * next_q
    torch.testing.assert_close(loss(out.clone())["loss"], (q - target).pow(2).mean())
    # the tabular step: every sampled entry moves by alpha times its mean TD error
    per_entry = nav.loss(gamma=0.9)
    before = table.clone()
    nav.table.table.grad = None
    nav.step_loss(per_entry, out.clone()).backward()
    with torch.no_grad():
        nav.table.table -= 0.5 / 2 * nav.table.table.grad
    entry = (out["observation"] * 4 + out["args"]) * 4 + out["action"]
    first = entry.unique()[0]
    rows = entry == first
    moved = (nav.table.table.detach() - before).flatten()[first]
    torch.testing.assert_close(moved, 0.5 * (target - q)[rows].mean())


def test_taxi_machines_only_pick_up_and_drop_off_at_locations():
    torch.manual_seed(1)
    env = make_taxi_env(6, seed=1)
    ham = taxi_ham(env, q_table(500, 4, n_args=4, eps_init=1.0, eps_end=1.0).policy)
    data = TransformedEnv(env, ham.transform).rollout(100, ham.policy, break_when_any_done=False)
    actions = data["action"].flatten().tolist()
    states = data["observation"].flatten().tolist()
    special = [(a, decode(s)) for a, s in zip(actions, states) if a >= 4]
    assert special, "expected some pickups/drop-offs in 600 random-navigation steps"
    assert all((row, col) in LOCATIONS for _, (row, col, _, _) in special)
    assert (data["next", "reward"] != -10).all()  # never an illegal pickup or drop-off


# ---------------------------------------------------------------- one step = one choice
class Single(Counter):
    def __init__(self, length=0):
        super().__init__(0, lengths=[length])


def test_choice_env_steps_one_choice_and_reports_tau():
    env = SEED_HAM.choice_env(Single(length=7))
    check_env_specs(env)
    data = env.rollout(3, lambda td: td.set("action", torch.tensor(2)))
    tau = data["next", "steps_to_next_obs"].flatten().tolist()
    assert tau == [3, 3, 1]  # 3 repetitions each; the episode ends after 7 steps
    torch.testing.assert_close(data["next", "reward"][0], torch.tensor([1 + 2 * GAMMA + 3 * GAMMA**2]))
    assert data["next", "terminated"].flatten().tolist() == [False, False, True]
    assert data["args"].tolist() == [0, 1, 2]
    batched = SerialEnv(2, lambda: SEED_HAM.choice_env(Single()))
    assert batched.rollout(2)["next", "steps_to_next_obs"].shape == (2, 2, 1)


def test_gymnasium_env():
    env = SEED_HAM.gym_env(Single())
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs["args"] == 0 and obs["stack"][:2].tolist() == [3, 1]
    obs, reward, terminated, truncated, info = env.step(1)
    assert info["tau"] == 2 and obs["args"] == 1 and not terminated
    assert reward == pytest.approx(1 + 2 * GAMMA)


def test_policy_pickles_without_machine_state():
    policy = SEED_HAM.make_policy()
    rollout(Counter(2), SEED_HAM, 3, policy=policy)
    assert policy._runtime is not None
    clone = pickle.loads(pickle.dumps(policy))
    assert clone._runtime is None and clone.ham.machine_count == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    env = Counter(3, lengths=[7, 0, 5], device="cuda")
    ham = HAM(env)
    point = ham.choice_point("c", Categorical(3), module(lambda obs: obs[..., 0] % 3), gamma=GAMMA)

    @ham.functional_machine
    def root(ham, args):
        while True:
            n = yield ham.CALL(point)
            for _ in range(n + 1):
                yield ham.ACTION(n)

    ham.set_root(root)
    data = rollout(env, ham, 12)
    out = ham.transitions(data)["c"]
    assert out.device.type == "cuda" and out.shape[0] > 3
