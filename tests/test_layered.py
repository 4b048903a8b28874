"""The LayeredRL-style API: Hierarchy / RandomHierarchy / Collector on gymnasium vector envs and
TorchRL envs, run by the engine's passes."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.data import Bounded, Categorical
from torchrl.envs import TransformedEnv
from torchrl.modules import MLP, EGreedyModule, QValueActor
from torchrl.objectives import DQNLoss

from torchrl_hier import Hierarchy as EngineHierarchy
from torchrl_hier import Level, Timeout
from torchrl_hier.envs import GridMaze
from torchrl_hier.layered import Collector, Hierarchy, RandomHierarchy
from torchrl_hier.learning import HierarchyLearner, LevelLearner
from torchrl_hier.levels import random_level

# ----------------------------------------------------------------------------- envs and levels


class Corridor(gym.Env):
    """Walk right (action 1) from 0 to ``length``; reward 1 and ``is_success`` on arrival,
    truncated after ``max_steps``. The final observation (``length``) differs from every reset
    observation (0), so a transition built from the reset observation is easy to spot."""

    def __init__(self, length: int = 3, max_steps: int = 6):
        self.length, self.max_steps = length, max_steps
        self.observation_space = gym.spaces.Box(0.0, float(length), (1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = 0, 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.pos = min(max(self.pos + (1 if int(action) == 1 else -1), 0), self.length)
        self.t += 1
        success = self.pos == self.length
        truncated = self.t >= self.max_steps and not success
        obs = np.array([float(self.pos)], dtype=np.float32)
        return obs, float(success), success, truncated, {"is_success": success}


def make_corridor() -> Corridor:
    return Corridor()


def corridors(n: int = 3, mode=AutoresetMode.SAME_STEP) -> gym.vector.VectorEnv:
    return gym.vector.SyncVectorEnv([make_corridor] * n, autoreset_mode=mode)


def cartpoles(n: int = 4, mode=AutoresetMode.SAME_STEP) -> gym.vector.VectorEnv:
    return gym.make_vec(
        "CartPole-v1", num_envs=n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}
    )


def q_level(name: str, obs_dim: int, n_actions: int, eps: float = 0.2, **kwargs) -> Level:
    """An epsilon-greedy DQN level (a stock QValueActor + EGreedyModule) reading the observation."""
    spec = Categorical(n_actions)
    actor = QValueActor(
        MLP(in_features=obs_dim, out_features=n_actions, num_cells=[16]),
        in_keys=["observation"],
        spec=spec,
    )
    policy = TensorDictSequential(actor, EGreedyModule(spec, eps_init=eps, eps_end=eps))
    level = Level(name, policy, **kwargs)
    level.actor = actor  # for building its loss
    return level


def dqn_learner(level: Level, n_actions: int, **kwargs) -> LevelLearner:
    loss = DQNLoss(level.actor, action_space=Categorical(n_actions), delay_value=True)
    defaults = dict(warmup=16, batch_size=16, update_ratio=0.25, buffer_size=10_000)
    return LevelLearner(loss, level=level, **{**defaults, **kwargs})


def two_level_cartpole(env, seed: int = 0, learn: bool = True):
    """Top: random choice among 3 options; low: DQN on CartPole, hands control back every 4
    steps. Returns the hierarchy and its levels."""
    torch.manual_seed(seed)
    top = random_level("top", Categorical(3))
    low = q_level("low", 4, 2, control=Timeout(4))
    learners = {"low": dqn_learner(low, 2)} if learn else None
    return Hierarchy([top, low], env, learners=learners), top, low


# ----------------------------------------------------------------------------- the docs' loop


def test_manual_loop_of_the_docs_runs_with_final_obs():
    """The loop printed in the LayeredRL docs, as written except for gymnasium 1.x's
    ``final_obs`` key (the module docstring says so); ``hierarchy.reset()`` starts the session
    as the LayeredRL API reference asks."""
    env = cartpoles(4)
    hierarchy, _, _ = two_level_cartpole(env)
    learner = hierarchy.learners["low"]
    seed, n_vec_steps = 0, 60
    hierarchy.reset()

    hierarchy.train()
    obs, info = env.reset(seed=seed)

    for _ in range(n_vec_steps):
        # Get primitive action from hierarchy
        with torch.no_grad():
            action = hierarchy.get_action(obs)
        action = action.cpu().numpy()

        # Step environment
        obs_next, reward, terminated, truncated, info = env.step(action)

        # Handle resets
        if "_final_obs" in info:
            obs_next_transition = obs_next.copy()
            for i, env_final_obs in enumerate(info["final_obs"]):
                if env_final_obs is not None:
                    obs_next_transition[i] = env_final_obs
        else:
            obs_next_transition = obs_next

        # Process transition
        hierarchy.process_transition(
            obs_next=obs_next_transition,
            rew=reward,
            terminated=terminated,
            truncated=truncated,
        )

        # Learn
        hierarchy.learn()

    # Every lowest-level transition reached the learner (nothing dropped) and it learned.
    assert learner.n_transitions == len(learner.buffer) == n_vec_steps * 4
    assert learner.n_updates > 0
    assert hierarchy.n_transitions["low"] == n_vec_steps * 4


def test_learn_anneals_each_levels_exploration_by_its_own_transitions():
    """The docs' loop pasted as written explores less and less: learn() steps the level's
    EGreedyModule by the transitions its learner received since the last call."""
    env = cartpoles(4)
    torch.manual_seed(0)
    low = q_level("low", 4, 2, control=Timeout(4))
    egreedy = low.policy[-1]
    egreedy.eps_init.fill_(1.0), egreedy.eps.fill_(1.0), egreedy.eps_end.fill_(0.0)
    egreedy.annealing_num_steps = 400
    hierarchy = Hierarchy(
        [random_level("top", Categorical(3)), low], env, learners={"low": dqn_learner(low, 2)}
    )
    _manual_loop(hierarchy, env, 50, seed=0)
    hierarchy.learn()
    assert hierarchy.learners["low"].n_transitions == 200
    assert float(egreedy.eps) == pytest.approx(1.0 - 200 / 400)
    hierarchy.learn()  # no new transitions: no further annealing
    assert float(egreedy.eps) == pytest.approx(0.5)
    _manual_loop(hierarchy, env, 25, seed=1)
    hierarchy.get_copy().learn()  # copies share the learners and the schedule
    assert float(egreedy.eps) == pytest.approx(1.0 - 300 / 400)


def _manual_loop(hierarchy, env, n_vec_steps, seed):
    """The docs' loop with ``obs = obs_next`` (which the docs leave implicit); returns the
    per-step transitions."""
    obs, _ = env.reset(seed=seed)
    hierarchy.reset()
    out = []
    for _ in range(n_vec_steps):
        with torch.no_grad():
            action = hierarchy.get_action(obs).cpu().numpy()
        obs_next, reward, terminated, truncated, info = env.step(action)
        obs_next_transition = obs_next
        if "_final_obs" in info:
            obs_next_transition = obs_next.copy()
            mask = info["_final_obs"]
            obs_next_transition[mask] = np.stack(info["final_obs"][mask])
        out.append(hierarchy.process_transition(obs_next_transition, reward, terminated, truncated))
        obs = obs_next
    return out


def test_collector_uses_final_observation_not_reset_one():
    """At an episode end the transition's next observation is the last one of the episode
    (the corridor's end, 3), never the reset observation (0): LayeredRL's own Collector gets
    this wrong with gymnasium 1.x."""
    env = corridors(3)
    torch.manual_seed(0)
    level = q_level("walk", 1, 2, eps=0.5)
    learner = dqn_learner(level, 2, warmup=10_000)
    hierarchy = Hierarchy([level], env, learners={"walk": learner})
    collector = Collector(hierarchy=hierarchy, env=env, progress=False)
    collector.reset(seed=0)
    stats = collector.collect(n_steps=200, learn=True)
    data = learner.buffer[: len(learner.buffer)]
    terminated = data["next", "terminated"].squeeze(-1)
    truncated = data["next", "truncated"].squeeze(-1)
    assert terminated.any() and truncated.any()
    assert (data["next", "observation"][terminated] == 3.0).all()
    # A truncated episode ends wherever it is, but the next episode restarts at 0 while this
    # one ended after max_steps steps; its next obs is the env's, one step from the previous.
    gap = (data["next", "observation"] - data["observation"]).abs()
    assert (gap <= 1.0).all()
    assert stats["transitions"] == {"walk": 600} and len(learner.buffer) == 600


def test_collector_matches_manual_loop_and_disabled_autoreset():
    """Collector (SAME_STEP), Collector (DISABLED, resetting finished instances itself) and the
    manual loop produce the same transitions from the same seeds."""
    results = []
    for mode, use_collector in (
        (AutoresetMode.SAME_STEP, False),
        (AutoresetMode.SAME_STEP, True),
        (AutoresetMode.DISABLED, True),
    ):
        env = cartpoles(3, mode)
        hierarchy, _, _ = two_level_cartpole(env, learn=False)
        torch.manual_seed(1)
        if use_collector:
            level_data = []
            original = hierarchy.process_transition

            def record(*args, **kwargs):
                level_data.append(original(*args, **kwargs))
                return level_data[-1]

            hierarchy.process_transition = record
            collector = Collector(hierarchy=hierarchy, env=env, progress=False)
            collector.reset(seed=3)
            collector.collect(n_steps=40, learn=False)
        else:
            level_data = _manual_loop(hierarchy, env, 40, seed=3)
        results.append(level_data)
    for other in results[1:]:
        for step_a, step_b in zip(results[0], other):
            for name in ("top", "low"):
                assert (step_a[name] == step_b[name]).all()
    assert sum(step["top"].numel() for step in results[0]) > 0


def test_next_step_autoreset_is_rejected():
    env = cartpoles(2, AutoresetMode.NEXT_STEP)
    with pytest.raises(ValueError, match="NEXT_STEP mode .*SAME_STEP"):
        RandomHierarchy(env, "cpu")
    with pytest.raises(ValueError, match="NEXT_STEP mode .*SAME_STEP"):
        Hierarchy([random_level("low", Categorical(2), lowest=True)], env, keep_params=True)
    hierarchy = RandomHierarchy(cartpoles(2), "cpu")
    with pytest.raises(ValueError, match="SAME_STEP"):
        Collector(hierarchy=hierarchy, env=env)


def test_collector_learns_the_corridor():
    """Flat DQN through Collector(learn=True): the greedy policy of the evaluation copy walks
    straight to the end of the corridor (3 steps, success every time). An env obs map
    normalises the position."""
    env, eval_env = corridors(4), corridors(2)
    torch.manual_seed(0)
    level = q_level("walk", 1, 2, eps=0.3, gamma=0.9)
    learner = dqn_learner(
        level, 2, warmup=64, batch_size=64, update_ratio=0.125, lr=1e-2, target_update="hard",
        period=10,
    )
    hierarchy = Hierarchy(
        [level], env, learners={"walk": learner}, env_obs_maps=[lambda obs: obs / 3 - 0.5]
    )
    collector = Collector(
        hierarchy=hierarchy, env=env, eval_env=eval_env, eval_every=100, eval_episodes=4,
        progress=False,
    )
    collector.reset(seed=0)
    stats = collector.collect(n_steps=200, learn=True)
    final = stats["evaluations"][-1]
    assert final["success_rate"] == 1.0 and final["mean_length"] == 3.0
    assert learner.n_updates == (200 * 4 - 64) // 8
    assert stats["losses"]["walk"]["loss"] > 0


# ----------------------------------------------------------------------------- same semantics as the engine


def _three_levels(env_action_spec):
    return [
        random_level("option", Categorical(3)),
        random_level("subgoal", Bounded(-1.0, 1.0, (2,)), control=Timeout(2)),
        random_level("primitive", env_action_spec, control=Timeout(3), lowest=True),
    ]


def test_same_transitions_as_the_engine_transform_in_a_torchrl_rollout():
    """On a TorchRL env, stepping the LayeredRL API by hand gives exactly the transitions of
    the engine's policy + transform in ``env.rollout`` (episode ends and resets included)."""
    n, steps = 4, 30
    env = GridMaze(batch_size=[n], max_steps=5, seed=0)
    levels = _three_levels(env.action_spec_unbatched)
    engine = EngineHierarchy(levels, env)
    torch.manual_seed(0)
    rollout = TransformedEnv(env, engine.transform).rollout(
        steps, engine.policy, break_when_any_done=False
    )
    assert rollout["next", "done"].any()

    env = GridMaze(batch_size=[n], max_steps=5, seed=0)
    hierarchy = Hierarchy(levels, env, keep_params=True)
    torch.manual_seed(0)
    td = env.reset()
    hierarchy.reset()
    for t in range(steps):
        td["action"] = hierarchy.get_action(td["observation"])
        td, root = env.step_and_maybe_reset(td)
        nxt = td["next"]
        ours = hierarchy.process_transition(
            nxt["observation"], nxt["reward"], nxt["terminated"], nxt["truncated"]
        )
        theirs = engine.transitions(rollout[:, t])
        for name in engine.names:
            assert set(ours[name].keys(True, True)) == set(theirs[name].keys(True, True)), (set(ours[name].keys(True, True)) ^ set(theirs[name].keys(True, True)))
            assert (ours[name] == theirs[name]).all(), (name, t)
        td = root


def test_collector_on_a_torchrl_env_reports_success():
    env = GridMaze(batch_size=[4], rooms=1, room_size=3, max_steps=8, seed=0)
    torch.manual_seed(0)
    hierarchy = Hierarchy(_three_levels(env.action_spec_unbatched), env, keep_params=True)
    collector = Collector(hierarchy=hierarchy, env=env, progress=False)
    collector.reset(seed=0)
    stats = collector.collect(n_steps=100, learn=False)
    returns = np.array(stats["episode_returns"])
    assert stats["episodes"] == len(returns) > 10
    # GridMaze pays 1 exactly when it reports is_success.
    assert stats["success_rate"] == pytest.approx(float((returns == 1).mean()))
    assert 0 < stats["success_rate"] < 1
    assert stats["transitions"]["primitive"] == 400
    assert stats["transitions"]["option"] <= stats["transitions"]["subgoal"] < 400


# ----------------------------------------------------------------------------- collector statistics, evaluation


def test_collector_statistics_on_gym_env_with_success():
    env = corridors(3)
    torch.manual_seed(0)
    hierarchy = RandomHierarchy(env, "cpu")
    collector = Collector(hierarchy=hierarchy, env=env, progress=False)
    collector.reset(seed=0)
    first = collector.collect(n_steps=50, learn=False)
    second = collector.collect(n_steps=50, learn=False)
    for stats in (first, second):
        returns = np.array(stats["episode_returns"])
        lengths = np.array(stats["episode_lengths"])
        assert stats["episodes"] == len(returns) == len(lengths) > 0
        assert ((lengths >= 3) & (lengths <= 6)).all()  # 3 steps at least, truncated at 6
        assert stats["success_rate"] == pytest.approx(float((returns == 1).mean()))
        assert stats["mean_return"] == pytest.approx(float(returns.mean()))
        assert stats["env_steps"] == 150 and stats["vector_steps"] == 50
        assert stats["transitions"] == {"random": 150}
        assert stats["steps_per_second"] > 0
    # Episodes spanning the two calls are counted once, with their full length: every env
    # step belongs to one episode, finished or running.
    all_lengths = first["episode_lengths"] + second["episode_lengths"]
    running = collector._episodes.lengths.sum()
    assert sum(all_lengths) + running == 300


def test_periodic_evaluation_runs_a_copy_in_eval_mode():
    env, eval_env = cartpoles(3), cartpoles(2)
    hierarchy, _, low = two_level_cartpole(env)
    learner = hierarchy.learners["low"]
    collector = Collector(
        hierarchy=hierarchy, env=env, eval_env=eval_env, eval_every=20, eval_episodes=3,
        progress=False,
    )
    collector.reset(seed=0)
    stats = collector.collect(n_steps=60, learn=True)
    assert len(stats["evaluations"]) == 3
    for evaluation in stats["evaluations"]:
        assert evaluation["episodes"] == 3
        assert len(evaluation["episode_returns"]) == 3
    # Evaluation fed nothing to the learner: it holds exactly the training transitions.
    assert learner.n_transitions == 60 * 3
    assert hierarchy.training and low.policy.training
    assert stats["losses"]["low"]["loss"] >= 0


def test_evaluation_on_the_training_env_warns_and_restarts_training_episodes():
    env = corridors(2)
    hierarchy = RandomHierarchy(env, "cpu")
    with pytest.warns(UserWarning, match="eval_env"):
        collector = Collector(hierarchy=hierarchy, env=env, eval_every=10, eval_episodes=2, progress=False)
    collector.reset(seed=0)
    stats = collector.collect(n_steps=20, learn=False)
    assert len(stats["evaluations"]) == 2
    assert stats["transitions"] == {"random": 40}


def test_eval_mode_is_deterministic_and_feeds_no_learner():
    env = cartpoles(3)
    hierarchy, _, _ = two_level_cartpole(env)
    learner = hierarchy.learners["low"]
    obs, _ = env.reset(seed=0)
    copy_ = hierarchy.get_copy()
    copy_.eval()
    actions = []
    for _ in range(2):
        copy_.reset()
        actions.append(copy_.get_action(obs))
    assert torch.equal(actions[0], actions[1])
    copy_.process_transition(obs, np.ones(3), np.zeros(3, bool), np.zeros(3, bool))
    assert learner.n_transitions == 0
    with pytest.raises(RuntimeError, match="eval mode"):
        copy_.learn()


# ----------------------------------------------------------------------------- copies, sizes, maps


def test_get_copy_shares_networks_but_not_state():
    env = cartpoles(3)
    hierarchy, _, low = two_level_cartpole(env)
    obs, _ = env.reset(seed=0)
    hierarchy.reset()
    hierarchy.get_action(obs)
    copy_ = hierarchy.get_copy()
    assert copy_.levels[1].policy is low.policy and copy_.learners is hierarchy.learners
    # The copy is fresh (reset) and stepping it does not touch the original's pending step.
    before = hierarchy._acting_dict(hierarchy._acting)
    copy_.get_action(obs)
    copy_.process_transition(obs, np.ones(3), np.ones(3, bool), np.zeros(3, bool))
    after = hierarchy._acting_dict(hierarchy._acting)
    assert torch.equal(after["action"], before["action"])
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items() if torch.is_tensor(v))
    hierarchy.process_transition(obs, np.ones(3), np.zeros(3, bool), np.zeros(3, bool))


def test_set_n_env_instances_resizes_state():
    env = cartpoles(3)
    hierarchy, _, _ = two_level_cartpole(env, learn=False)
    hierarchy.reset()
    hierarchy.set_n_env_instances(5)
    obs = np.zeros((5, 4), dtype=np.float32)
    assert hierarchy.get_action(obs).shape == (5,)
    hierarchy.process_transition(obs, np.zeros(5), np.zeros(5, bool), np.zeros(5, bool))
    with pytest.raises(ValueError, match=r"expected \(5, 4\)"):
        hierarchy.get_action(np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="positive int"):
        hierarchy.set_n_env_instances(0)


def test_env_obs_maps_and_negative_mapped_shapes():
    env = cartpoles(2)
    seen = {}

    def hide_something(obs):
        seen["top"] = obs.shape
        return obs[..., 2:]

    torch.manual_seed(0)
    top_net = TensorDictModule(
        nn.Sequential(nn.Linear(2, 3), nn.Softmax(-1)), in_keys=["observation"], out_keys=["probs"]
    )
    top = Level(
        "top",
        TensorDictSequential(top_net, TensorDictModule(lambda p: p.argmax(-1), ["probs"], ["action"])),
        action_spec=Categorical(3),
    )
    low = q_level("low", 4, 2, control=Timeout(2))
    hierarchy = Hierarchy(
        [top, low], env, env_obs_maps=[hide_something, None], mapped_env_obs_shapes=[-2, None]
    )
    assert top.obs_map is None  # the caller's level is not modified
    obs, _ = env.reset(seed=0)
    hierarchy.reset()
    hierarchy.get_action(obs)
    out = hierarchy.process_transition(obs, np.zeros(2), np.zeros(2, bool), np.ones(2, bool))
    assert out["top"]["observation"].shape == (2, 2)
    assert torch.equal(out["top"]["observation"], torch.as_tensor(obs[:, 2:]))
    with pytest.raises(ValueError, match="declares"):
        Hierarchy([top, low], env, env_obs_maps=[hide_something, None], mapped_env_obs_shapes=[-1, None])
    with pytest.raises(ValueError, match="one entry per level"):
        Hierarchy([top, low], env, env_obs_maps=[hide_something])


# ----------------------------------------------------------------------------- random hierarchy


@pytest.mark.parametrize(
    "space, mean",
    [
        (gym.spaces.Discrete(3), [1.0]),
        (gym.spaces.MultiDiscrete([2, 4]), [0.5, 1.5]),
        (gym.spaces.MultiBinary(3), [0.5, 0.5, 0.5]),
        (gym.spaces.Box(-2.0, 3.0, (2,), dtype=np.float32), [0.5, 0.5]),
    ],
)
def test_random_hierarchy_samples_uniformly_from_finite_spaces(space, mean):
    env = gym.vector.SyncVectorEnv([make_corridor] * 2, autoreset_mode=AutoresetMode.SAME_STEP)
    env.single_action_space = space
    torch.manual_seed(0)
    hierarchy = RandomHierarchy(env, "cpu")
    hierarchy.reset()
    obs = np.zeros((2, 1), dtype=np.float32)
    actions = []
    for _ in range(400):
        actions.append(hierarchy.get_action(obs))
        hierarchy.process_transition(obs, np.zeros(2), np.zeros(2, bool), np.zeros(2, bool))
    actions = torch.stack(actions).reshape(800, -1)
    assert all(space.contains(a.numpy().astype(space.dtype).reshape(space.shape)) for a in actions)
    assert torch.allclose(actions.double().mean(0), torch.tensor(mean, dtype=torch.double), atol=0.15)


@pytest.mark.parametrize(
    "space, match",
    [
        (gym.spaces.Box(-np.inf, np.inf, (2,), dtype=np.float32), "cannot be sampled uniformly"),
        (gym.spaces.Box(np.array([0.0, -np.inf]), np.array([1.0, 1.0]), dtype=np.float64), "non-finite"),
        (gym.spaces.Discrete(3, start=1), "starts at"),
        (gym.spaces.Dict({"a": gym.spaces.Discrete(2)}), "not supported"),
    ],
)
def test_random_hierarchy_rejects_spaces_it_cannot_sample(space, match):
    env = gym.vector.SyncVectorEnv([make_corridor], autoreset_mode=AutoresetMode.SAME_STEP)
    env.single_action_space = space
    with pytest.raises((ValueError, TypeError), match=match):
        RandomHierarchy(env, "cpu")


# ----------------------------------------------------------------------------- params, save/load


def test_keep_params():
    env = cartpoles(2)
    torch.manual_seed(0)
    low = q_level("low", 4, 2)
    weights = copy.deepcopy(low.policy.state_dict())
    Hierarchy([low], env, keep_params=True)
    assert all(torch.equal(v, low.policy.state_dict()[k]) for k, v in weights.items())
    learner = dqn_learner(low, 2)
    Hierarchy([low], env, keep_params=False, learners={"low": learner})
    assert not all(torch.equal(v, low.policy.state_dict()[k]) for k, v in weights.items())
    # Target networks follow the re-initialised online networks.
    online = learner.loss.value_network_params.flatten_keys()
    target = learner.loss.target_value_network_params.flatten_keys()
    assert all(torch.equal(online[k], target[k]) for k in online.keys())

    lazy = Level(
        "lazy",
        TensorDictModule(nn.Sequential(nn.LazyLinear(2), nn.Softmax(-1)), ["observation"], ["probs"]),
    )
    lazy.policy = TensorDictSequential(
        lazy.policy, TensorDictModule(lambda p: p.argmax(-1), ["probs"], ["action"])
    )
    with pytest.raises(ValueError, match="uninitialised"):
        Hierarchy([lazy], env, keep_params=True)
    hierarchy = Hierarchy([lazy], env)  # keep_params=False initialises them
    hierarchy.reset()
    assert hierarchy.get_action(np.zeros((2, 4), dtype=np.float32)).shape == (2,)


def _record_steps(env, hierarchy, obs, n_steps):
    """Steps env with hierarchy (learning), returning (actions, env outputs) per step."""
    actions, outputs = [], []
    for _ in range(n_steps):
        with torch.no_grad():
            action = hierarchy.get_action(obs)
        actions.append(action.clone())
        obs_next, reward, terminated, truncated, info = env.step(action.numpy())
        transition = obs_next.copy()
        if "_final_obs" in info:
            transition[info["_final_obs"]] = np.stack(info["final_obs"][info["_final_obs"]])
        outputs.append((obs_next, transition, reward, terminated, truncated))
        hierarchy.process_transition(transition, reward, terminated, truncated)
        hierarchy.learn()
        obs = obs_next
    return actions, outputs


def _env_step(env, action):
    obs_next, reward, terminated, truncated, info = env.step(action.numpy())
    transition = obs_next.copy()
    if "_final_obs" in info:
        transition[info["_final_obs"]] = np.stack(info["final_obs"][info["_final_obs"]])
    return obs_next, (transition, reward, terminated, truncated)


@pytest.mark.parametrize("pending", [False, True], ids=["between-steps", "after-get_action"])
def test_save_load_resumes_mid_episode_with_the_same_actions(tmp_path, pending):
    """A run saved mid-episode (top-level options in flight, and optionally between
    get_action and process_transition) resumes in a hierarchy with other weights with the same
    actions, the same replay buffer and the same learner updates."""
    env = cartpoles(3)
    hierarchy, _, _ = two_level_cartpole(env, seed=0)
    obs, _ = env.reset(seed=0)
    hierarchy.reset()
    _, outputs = _record_steps(env, hierarchy, obs, 25)
    obs = outputs[-1][0]
    assert not hierarchy._state.completed[:, 0].all()  # options in flight
    path = tmp_path / "hierarchy.pt"
    pending_step = None
    if pending:
        action = hierarchy.get_action(obs)
        hierarchy.save(path, include_buffers=True)
        obs, pending_step = _env_step(env, action)
        hierarchy.process_transition(*pending_step)
        hierarchy.learn()
    else:
        hierarchy.save(path, include_buffers=True)
    actions, outputs = _record_steps(env, hierarchy, obs, 20)
    assert any(out[3].any() or out[4].any() for out in outputs)  # episode ends happen after
    learner = hierarchy.learners["low"]

    restored, _, _ = two_level_cartpole(cartpoles(3), seed=123)
    restored.load(path)
    assert len(restored.learners["low"].buffer) == 25 * 3
    if pending:
        restored.process_transition(*pending_step)
        restored.learn()
    for action, (obs_next, transition, reward, terminated, truncated) in zip(actions, outputs):
        with torch.no_grad():
            assert torch.equal(restored.get_action(obs), action)
        restored.process_transition(transition, reward, terminated, truncated)
        restored.learn()
        obs = obs_next
    ours, theirs = restored.learners["low"], learner
    assert ours.n_updates == theirs.n_updates > 0
    for (k, a), b in zip(ours.loss.state_dict().items(), theirs.loss.state_dict().values()):
        assert torch.equal(a, b), k


# ----------------------------------------------------------------------------- bad input


def test_bad_input_errors():
    env = cartpoles(3)
    hierarchy, _, low = two_level_cartpole(env)
    obs, _ = env.reset(seed=0)
    with pytest.raises(RuntimeError, match="before reset"):
        hierarchy.get_action(obs)
    hierarchy.reset()
    with pytest.raises(RuntimeError, match="without a preceding get_action"):
        hierarchy.process_transition(obs, np.zeros(3), np.zeros(3, bool), np.zeros(3, bool))
    with pytest.raises(ValueError, match=r"obs has shape \(3, 5\), expected \(3, 4\)"):
        hierarchy.get_action(np.zeros((3, 5), dtype=np.float32))
    hierarchy.get_action(obs)
    with pytest.raises(RuntimeError, match="twice"):
        hierarchy.get_action(obs)
    with pytest.raises(ValueError, match=r"obs_next has shape \(4,\), expected \(3, 4\)"):
        hierarchy.process_transition(obs[0], np.zeros(3), np.zeros(3, bool), np.zeros(3, bool))
    with pytest.raises(ValueError, match=r"rew has shape \(3, 2\), expected \(3,\) or \(3, 1\)"):
        hierarchy.process_transition(obs, np.zeros((3, 2)), np.zeros(3, bool), np.zeros(3, bool))
    with pytest.raises(ValueError, match=r"terminated has shape \(2,\)"):
        hierarchy.process_transition(obs, np.zeros(3), np.zeros(2, bool), np.zeros(3, bool))
    with pytest.raises(TypeError, match=r"terminated must hold booleans .* float64.* swapped"):
        hierarchy.process_transition(obs, np.zeros(3, bool), np.ones(3), np.zeros(3, bool))
    with pytest.raises(TypeError, match=r"truncated must hold booleans"):
        hierarchy.process_transition(obs, np.zeros(3), np.zeros(3, bool), torch.zeros(3))
    with pytest.raises(ValueError, match=r"terminated holds integers other than 0 and 1"):
        hierarchy.process_transition(obs, np.zeros(3), np.array([0, 2, 1]), np.zeros(3, bool))
    hierarchy.process_transition(obs, np.zeros(3), np.array([0, 1, 0]), torch.zeros(3, dtype=torch.int64))
    hierarchy.get_action(obs)
    hierarchy.process_transition(obs, np.zeros(3), np.zeros(3, bool), np.zeros(3, bool))

    collector = Collector(hierarchy=hierarchy, env=env, progress=False)
    with pytest.raises(RuntimeError, match="before reset"):
        collector.collect(n_steps=5)
    collector.reset(seed=0)
    for n_steps in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_steps must be a positive int"):
            collector.collect(n_steps=n_steps)
    with pytest.raises(ValueError, match="instances"):
        Collector(hierarchy=hierarchy, env=cartpoles(2))
    with pytest.raises(TypeError, match="single gymnasium env"):
        RandomHierarchy(gym.make("CartPole-v1"), "cpu")


@pytest.mark.parametrize(
    "as_input",
    [
        pytest.param(lambda a: a.astype(a.dtype.newbyteorder(">")), id="big-endian"),
        pytest.param(lambda a: a[::-1].copy()[::-1], id="negative-strides"),
        pytest.param(lambda a: np.asfortranarray(a), id="fortran-order"),
        pytest.param(lambda a: a.tolist(), id="list"),
        pytest.param(lambda a: a.astype(np.float64) if a.dtype.kind == "f" else a, id="float64"),
        pytest.param(lambda a: a.astype(np.int64) if a.dtype.kind == "b" else a, id="int-flags"),
    ],
)
def test_numpy_inputs_of_any_layout_give_the_transitions_of_tensors(as_input):
    """However the env's arrays come (dtype, byte order, strides, lists), the hierarchy sees
    the same values as when given torch tensors."""
    outs = []
    for convert in (torch.as_tensor, as_input):
        env = cartpoles(3)
        hierarchy, _, _ = two_level_cartpole(env, learn=False)
        obs, _ = env.reset(seed=0)
        hierarchy.reset()
        steps = []
        for _ in range(12):
            action = hierarchy.get_action(convert(obs))
            obs, reward, terminated, truncated, _ = env.step(action.numpy())
            ours = hierarchy.process_transition(
                convert(obs), convert(reward), convert(terminated), convert(truncated)
            )
            steps.append({name: ours[name].clone() for name in hierarchy.names})
        outs.append(steps)
    assert any(len(step[name]) for step in outs[0] for name in step)
    for ours, theirs in zip(*outs):
        for name in ours:
            assert (ours[name] == theirs[name]).all()


def test_learner_whose_loss_keys_do_not_match_the_level():
    env = cartpoles(2)
    low = q_level("low", 4, 2)
    pixels_actor = QValueActor(
        MLP(in_features=4, out_features=2, num_cells=[8]), in_keys=["pixels"], spec=Categorical(2)
    )
    loss = DQNLoss(pixels_actor, action_space=Categorical(2), delay_value=True)
    learner = LevelLearner(loss, level=low, warmup=4, batch_size=4)
    with pytest.raises(KeyError, match="pixels"):
        Hierarchy([low], env, learners={"low": learner})
    with pytest.raises(KeyError, match="unknown levels"):
        Hierarchy([low], env, learners={"nope": dqn_learner(low, 2)})


def test_hierarchy_learner_mapping_is_accepted_and_frozen_levels_are_skipped():
    env = cartpoles(2)
    torch.manual_seed(0)
    top = random_level("top", Categorical(3))
    low = q_level("low", 4, 2, control=Timeout(2))
    learner = dqn_learner(low, 2)
    hierarchy = Hierarchy([top, low], env, learners=HierarchyLearner({"low": learner}, frozen=["top"]))
    assert hierarchy.learners == {"low": learner}
    collector = Collector(hierarchy=hierarchy, env=env, progress=False)
    collector.reset(seed=0)
    stats = collector.collect(n_steps=10, learn=False)
    assert learner.n_transitions == stats["transitions"]["low"] == 20 and learner.n_updates == 0
    assert stats["transitions"]["top"] > 0


# ----------------------------------------------------------------------------- writer, GPU


class _ScalarLog:
    """Collects ``add_scalar`` calls, the one method of a SummaryWriter the API uses."""

    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))


def test_writer_receives_losses_and_returns():
    env = cartpoles(2)
    torch.manual_seed(0)
    low = q_level("low", 4, 2)
    writer = _ScalarLog()
    hierarchy = Hierarchy([low], env, learners={"low": dqn_learner(low, 2)}, writer=writer)
    collector = Collector(hierarchy=hierarchy, env=env, progress=False)
    collector.reset(seed=0)
    collector.collect(n_steps=40)
    tags = {tag for tag, _, _ in writer.scalars}
    assert {"low/loss", "train/return", "train/episode_length"} <= tags


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_layered_hierarchy_on_cuda():
    env = GridMaze(batch_size=[8], max_steps=10, seed=0, device="cuda")
    levels = [
        random_level("option", Categorical(3, device="cuda")),
        random_level("primitive", env.action_spec_unbatched, control=Timeout(3), lowest=True),
    ]
    hierarchy = Hierarchy(levels, env, keep_params=True, device="cuda")
    collector = Collector(hierarchy=hierarchy, env=env, progress=False)
    collector.reset(seed=0)
    stats = collector.collect(n_steps=30, learn=False)
    assert stats["transitions"]["primitive"] == 240
    assert hierarchy._state.completed.device.type == "cuda"


def test_transitions_are_extracted_only_when_read_and_once():
    from tensordict import TensorDict

    from torchrl_hier.transitions import LazyTransitions

    calls = []

    def extract(names):
        calls.append(list(names))
        return {name: TensorDict({}, batch_size=[0]) for name in names}

    lazy = LazyTransitions(extract, ["top", "mid", "low"])
    assert calls == [] and list(lazy) == ["top", "mid", "low"] and len(lazy) == 3
    lazy["mid"], lazy["mid"]
    assert calls == [["mid"]]
    dict(lazy.items())
    assert calls == [["mid"], ["top", "low"]]  # the rest in one pass
    with pytest.raises(KeyError, match="No level named 'nope'"):
        lazy["nope"]
