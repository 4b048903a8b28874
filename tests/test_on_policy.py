"""On-policy levels: what a choice records, per-level trajectories, semi-MDP GAE, the on-policy
learner (flat and stacked PPO, the trainer, the LayeredRL-style API) and option-critic."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from gymnasium.vector import AutoresetMode
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.data import Categorical
from torchrl.envs import ExplorationType, GymWrapper, TransformedEnv, set_exploration_type
from torchrl.envs.utils import check_env_specs

from torchrl_hier import Hierarchy, Timeout
from torchrl_hier.envs import GridMaze
from torchrl_hier.learning import HierarchyLearner, LevelLearner, OnPolicyLearner
from torchrl_hier.levels import on_policy_level, option_critic_levels, option_level, option_spec


def small_maze(n: int = 6, max_steps: int = 7, seed: int = 0) -> GridMaze:
    """A 3x3 room: a random walk reaches the goal (termination) about as often as it runs out
    of steps (truncation)."""
    return GridMaze(batch_size=n, rooms=1, room_size=3, max_steps=max_steps, seed=seed)


def ppo_stack(env, n_options: int = 3, timeout: int = 3, algorithm: str = "ppo"):
    top, top_loss = on_policy_level("options", 4, option_spec(n_options), lowest=False, gamma=0.9)
    low, low_loss = on_policy_level(
        "moves", 4, env.action_spec_unbatched, parent_dim=n_options, algorithm=algorithm,
        control=Timeout(timeout), gamma=0.8,
    )
    return Hierarchy([top, low], env), {"options": top_loss, "moves": low_loss}


def collect(env, hierarchy, frames_per_batch: int, batches: int, seed: int = 0) -> list[TensorDictBase]:
    torch.manual_seed(seed)
    env.set_seed(seed)
    collector = Collector(
        TransformedEnv(env, hierarchy.transform), hierarchy.policy,
        frames_per_batch=frames_per_batch, total_frames=frames_per_batch * batches,
        auto_register_policy_transforms=False,
    )
    out = [batch.clone() for batch in collector]
    collector.shutdown()
    return out


def rows(trajectories: TensorDictBase) -> list[TensorDictBase]:
    """Each instance's transitions, in order."""
    mask = trajectories.get("mask")
    return [trajectories[i][mask[i]] for i in range(trajectories.shape[0])]


# ----------------------------------------------------------------------------- 1. records
def test_a_choice_records_its_log_prob_from_the_choice_on():
    """A PPO level's sample log-prob is carried under "hier" from its choice to the end of its
    transition (the lowest level's is in the env TensorDict), declared in the specs, and is
    the log-prob of the recorded action under the policy that chose it; levels that record
    nothing carry nothing more."""
    torch.manual_seed(0)
    env = small_maze(n=4, max_steps=20)
    hierarchy, _ = ppo_stack(env)
    transformed = TransformedEnv(env, hierarchy.transform)
    check_env_specs(transformed)
    carried = set(transformed.observation_spec["hier"].keys())
    assert carried == {
        "completed", "steps", "return", "count",
        "options_action", "options_observation", "options_action_log_prob",
    }
    dqn_top, _ = option_level("options", 4, 3)
    dqn_stack = Hierarchy([dqn_top, hierarchy.levels[1]], env)
    assert "options_action_log_prob" not in TransformedEnv(env, dqn_stack.transform).observation_spec["hier"].keys()

    (batch,) = collect(env, hierarchy, 4 * 30, 1)
    transitions = hierarchy.transitions(batch)
    options, moves = transitions["options"], transitions["moves"]
    assert options.shape[0] >= 4 * 30 // 3 and (options["steps_to_next_obs"] > 1).any()
    top, low = hierarchy.levels
    with torch.no_grad():
        dist = top.policy.get_dist(options.select("observation").clone())
        assert torch.allclose(dist.log_prob(options["action"]), options["action_log_prob"], atol=1e-6)
        dist = low.policy.get_dist(moves.select("observation", "parent_action").clone())
        assert torch.allclose(dist.log_prob(moves["action"]), moves["action_log_prob"], atol=1e-6)
    assert torch.equal(batch["action_log_prob"].reshape(-1), moves["action_log_prob"])


# ----------------------------------------------------------------------------- 2. trajectories
def hand_gae(row: TensorDictBase, value, gamma: float, lmbda: float) -> torch.Tensor:
    """GAE over one instance's semi-MDP transitions, step by step as written in the papers:
    delta = R + gamma**tau * (1 - terminated) * V(s') - V(s), A = delta + gamma**tau * lmbda *
    (1 - done) * A' (the row's last transition ends the rollout)."""
    with torch.no_grad():
        v = value(row.clone())["state_value"].squeeze(-1)
        v_next = value(row["next"].clone())["state_value"].squeeze(-1)
    reward = row["next", "reward"].squeeze(-1)
    tau = row["steps_to_next_obs"].squeeze(-1).double()
    done = row["next", "done"].squeeze(-1).tolist()
    terminated = row["next", "terminated"].squeeze(-1).tolist()
    out, following = [0.0] * row.shape[0], 0.0
    for t in reversed(range(row.shape[0])):
        discount = gamma ** tau[t].item()
        delta = reward[t].item() + discount * (not terminated[t]) * v_next[t].item() - v[t].item()
        last = t == row.shape[0] - 1
        following = delta + discount * lmbda * (not (done[t] or last)) * following
        out[t] = following
    return torch.tensor(out)


def test_semi_mdp_gae_matches_a_hand_computation():
    """The learner's GAE over the option level's trajectories (mixed tau, terminations and
    truncations) equals GAE written out step by step: gamma**tau per transition, no bootstrap
    after a termination, a bootstrap after a truncation."""
    torch.manual_seed(0)
    env = small_maze(n=6, max_steps=7)
    hierarchy, losses = ppo_stack(env, timeout=3)
    (batch,) = collect(env, hierarchy, 6 * 40, 1)
    trajectories = hierarchy.trajectories(batch)["options"]
    learner = OnPolicyLearner(losses["options"], level=hierarchy.levels[0], lmbda=0.7)
    with_advantages = learner.advantages(trajectories)
    valid = trajectories["mask"]
    tau = trajectories["steps_to_next_obs"][valid]
    assert set(tau.unique().tolist()) >= {1, 2, 3}
    assert trajectories["next", "terminated"][valid].any()
    truncated = trajectories["next", "truncated"][valid]
    assert truncated.any()
    critic = losses["options"].critic_network
    for i, row in enumerate(rows(trajectories)):
        expected = hand_gae(row, critic, gamma=0.9, lmbda=0.7)
        got = with_advantages["advantage"][i][valid[i]].squeeze(-1)
        torch.testing.assert_close(got.double(), expected.double(), atol=1e-5, rtol=1e-5)


def test_trajectories_refuse_a_batch_whose_last_dim_is_not_time():
    """A flattened or transposed collector batch would mix instances or turn time into
    instances (and GAE would run over that): refused, saying how the batch must come."""
    env = small_maze(n=6, max_steps=7)
    hierarchy, _ = ppo_stack(env, timeout=3)
    (batch,) = collect(env, hierarchy, 6 * 20, 1)
    assert hierarchy.trajectories(batch)["options"].shape[0] == 6
    for wrong in (batch.reshape(-1), batch.transpose(0, 1)):
        with pytest.raises(ValueError, match="last dim is not time.*time last"):
            hierarchy.trajectories(wrong)
    # split_trajs padding is not checked
    split = batch.clone().set(("collector", "mask"), torch.ones(batch.shape, dtype=torch.bool))
    split["collector", "mask"][:, 10:] = False
    split["next", "hier", "steps"][:, 11:] = 0
    hierarchy.trajectories(split)


def test_a_batch_cut_inside_a_running_transition_changes_nothing():
    """Two batches cut while option transitions run give the transitions of one uncut batch
    (none dropped, none twice, the running one completed in the second batch with the log-prob
    recorded in the first), and the same advantages for every transition whose rollout both
    runs share (with lmbda = 0: for every transition)."""
    env = small_maze(n=5, max_steps=12)
    hierarchy, losses = ppo_stack(env, timeout=4)
    (whole,) = collect(env, hierarchy, 5 * 30, 1)
    first, second = collect(env, hierarchy, 5 * 15, 2)
    uncut = hierarchy.trajectories(whole)["options"]
    parts = [hierarchy.trajectories(b)["options"] for b in (first, second)]
    # the cut falls inside a running option of some instance: its transition started before
    # step 15 (in the first batch) and completes after it
    assert not whole["next", "hier", "completed"][:, 14, 0].all()
    for i, (row, a, b) in enumerate(zip(rows(uncut), rows(parts[0]), rows(parts[1]))):
        assert a.shape[0] + b.shape[0] == row.shape[0]
        joined = torch.cat([a, b])
        for key in ("observation", "action", "action_log_prob", "steps_to_next_obs", ("next", "reward")):
            assert torch.equal(joined[key], row[key]), (i, key)

    learner = OnPolicyLearner(losses["options"], level=hierarchy.levels[0], lmbda=0.8)
    learner.extend(parts[0])
    learner.extend(parts[1])
    assert learner.n_transitions == int(uncut["mask"].sum())
    for lmbda in (0.8, 0.0):
        learner.advantage_module.lmbda.fill_(lmbda)
        whole_adv = learner.advantages(uncut)
        part_adv = [learner.advantages(p) for p in parts]
        for i in range(uncut.shape[0]):
            n_first = int(parts[0]["mask"][i].sum())
            uncut_row = whole_adv["advantage"][i][uncut["mask"][i]]
            second_row = part_adv[1]["advantage"][i][parts[1]["mask"][i]]
            torch.testing.assert_close(second_row, uncut_row[n_first:])
            if lmbda == 0.0:
                first_row = part_adv[0]["advantage"][i][parts[0]["mask"][i]]
                torch.testing.assert_close(first_row, uncut_row[:n_first])


# ----------------------------------------------------------------------------- 3. learners
def cartpoles(n: int, seed: int) -> GymWrapper:
    """``n`` CartPole-v1 in one gymnasium vector env (resets by the collector's partial
    resets): cheaper per step than a SerialEnv of GymEnv."""
    vector = gym.vector.SyncVectorEnv(
        [lambda: gym.make("CartPole-v1") for _ in range(n)], autoreset_mode=AutoresetMode.DISABLED
    )
    env = GymWrapper(vector, categorical_action_encoding=True)
    env.set_seed(seed)
    return env


@torch.no_grad()
def greedy_cartpole_return(hierarchy: Hierarchy, episodes: int = 16, seed: int = 12_345) -> float:
    """Mean return of the first episode of ``episodes`` fresh CartPoles, deterministic actions."""
    env = TransformedEnv(cartpoles(episodes, seed), hierarchy.transform)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        rollout = env.rollout(500, hierarchy.policy, break_when_any_done=False)
    done = rollout["next", "done"].squeeze(-1)
    first_episode = (done.cumsum(-1) - done.long()) == 0
    return float((rollout["next", "reward"].squeeze(-1) * first_episode).sum(-1).mean())


def train_cartpole(hierarchy: Hierarchy, learners, frames: int, env) -> None:
    collector = Collector(
        TransformedEnv(env, hierarchy.transform), hierarchy.policy, frames_per_batch=2048,
        total_frames=frames, auto_register_policy_transforms=False,
    )
    for batch in collector:
        learners.extend_batch(batch)
        learners.update()
    collector.shutdown()


@pytest.mark.slow
def test_flat_ppo_solves_cartpole():
    """A one-level hierarchy with a PPO level and the on-policy learner solves CartPole-v1:
    greedy return >= 475 on fresh episodes after 24k frames (~10-20 s)."""
    torch.manual_seed(0)
    env = cartpoles(16, seed=0)
    level, loss = on_policy_level("agent", 4, env.action_spec_unbatched, entropy_coeff=0.0)
    hierarchy = Hierarchy([level], env)
    learner = OnPolicyLearner(loss, level=level, epochs=10, batch_size=256, lr=1e-3)
    train_cartpole(hierarchy, HierarchyLearner({"agent": learner}, hierarchy=hierarchy), 24_576, env)
    assert learner.n_updates == 12 * 10 * 8  # batches x epochs x minibatches of 2048
    assert greedy_cartpole_return(hierarchy) >= 475


@pytest.mark.slow
def test_two_level_ppo_learns_cartpole():
    """PPO over options above a PPO option-conditioned primitive level (options of 4 steps)
    learns CartPole: a uniformly random policy balances ~22 steps, this one is asked for 5x
    that after 8k frames; each level learns from its own transitions, counted once."""
    torch.manual_seed(0)
    env = cartpoles(16, seed=0)
    top, top_loss = on_policy_level("option", 4, option_spec(2), lowest=False, entropy_coeff=0.0)
    low, low_loss = on_policy_level(
        "primitive", 4, env.action_spec_unbatched, parent_dim=2, control=Timeout(4),
        entropy_coeff=0.0,
    )
    hierarchy = Hierarchy([top, low], env)
    learners = HierarchyLearner(
        {
            "option": OnPolicyLearner(top_loss, level=top, epochs=10, batch_size=64, lr=1e-3),
            "primitive": OnPolicyLearner(low_loss, level=low, epochs=10, batch_size=256, lr=1e-3),
        },
        hierarchy=hierarchy,
    )
    train_cartpole(hierarchy, learners, 8192, env)
    counts = learners.n_transitions
    assert counts["primitive"] == 8192
    # one option transition per 4 steps, plus the shorter ones cut by episode ends
    assert 8192 / 4 <= counts["option"] < 8192 / 2
    assert greedy_cartpole_return(hierarchy) >= 110


def test_on_policy_and_off_policy_levels_mix():
    """A DQN option level above a PPO primitive level: extend_batch hands the option level its
    transitions and the PPO level its trajectories, and both learn."""
    torch.manual_seed(0)
    env = small_maze(n=8, max_steps=20)
    top, top_loss = option_level("options", 4, 3)
    low, low_loss = on_policy_level(
        "moves", 4, env.action_spec_unbatched, parent_dim=3, control=Timeout(3)
    )
    hierarchy = Hierarchy([top, low], env)
    learners = HierarchyLearner(
        {
            "options": LevelLearner(top_loss, level=top, warmup=16, batch_size=16),
            "moves": OnPolicyLearner(low_loss, level=low, epochs=2, batch_size=64),
        },
        hierarchy=hierarchy,
    )
    before = [p.clone() for p in low.policy.parameters()]
    for batch in collect(env, hierarchy, 8 * 16, 3):
        learners.extend_batch(batch)
        logs = learners.update()
    assert set(logs) == {"options", "moves"}
    assert learners.n_updates["moves"] == 3 * 2 * 2
    assert any(not torch.equal(a, b) for a, b in zip(before, low.policy.parameters()))
    with pytest.raises(TypeError, match="trajectories"):
        learners["moves"].extend(hierarchy.transitions(batch)["moves"])


def test_learner_state_round_trip_keeps_the_held_trajectories():
    """A learner saved between two batches (holding trajectories, as min_transitions allows)
    and loaded into a fresh one takes the same update: parameters, optimizer, counts and the
    held trajectories are restored."""
    torch.manual_seed(0)
    env = small_maze(n=6, max_steps=12)
    hierarchy, losses = ppo_stack(env)
    (batch,) = collect(env, hierarchy, 6 * 20, 1)
    data = hierarchy.trajectories(batch)["options"]

    def learner(loss):
        return OnPolicyLearner(loss, level=hierarchy.levels[0], epochs=2, batch_size=16,
                               min_transitions=10_000)

    first = learner(losses["options"])
    first.extend(data)
    first.update()  # below min_transitions: holds
    state = first.state_dict()
    _, other_losses = ppo_stack(env)
    second = learner(other_losses["options"])
    second.load_state_dict(state)
    assert second.n_transitions == first.n_transitions == int(data["mask"].sum())
    for one in (first, second):
        one.min_transitions = 1
        torch.manual_seed(1)
        one.update()
    for a, b in zip(losses["options"].parameters(), other_losses["options"].parameters()):
        torch.testing.assert_close(a, b)
    assert first.n_updates == second.n_updates > 0


def test_trainer_runs_on_policy_configs(tmp_path):
    """`hierarchy=options_ppo` and `hierarchy=flat_ppo` train through the Hydra trainer; a PPO
    level's learner takes on-policy settings and refuses hindsight copies."""
    from hydra import compose, initialize_config_module

    from torchrl_hier.experiment import ConfigError
    from torchrl_hier.train import train

    common = [
        "task=GridMaze-FourRooms", "task.n_envs=8", "collector.frames_per_batch=256",
        "total_frames=512", "eval.episodes=4", "eval.every_frames=0", "progress=false",
    ]
    with initialize_config_module("torchrl_hier.conf", version_base=None):
        for hierarchy in ("options_ppo", "flat_ppo"):
            cfg = compose("config", [*common, f"hierarchy={hierarchy}", f"run_dir={tmp_path / hierarchy}"])
            summary = train(cfg)
            for name, level in summary["levels"].items():
                assert level["updates"] > 0 and level["learner_transitions"] == level["transitions"], name
        cfg = compose("config", [*common, "hierarchy=flat_ppo", "+hierarchy.levels.agent.learner.warmup=4",
                                 f"run_dir={tmp_path / 'bad'}"])
        with pytest.raises(ConfigError, match="unknown keys.*warmup"):
            train(cfg)
        cfg = compose("config", [*common, "hierarchy=flat_ppo", "hierarchy.levels.agent.hindsight_k=4",
                                 f"run_dir={tmp_path / 'bad2'}"])
        with pytest.raises(ConfigError, match="hindsight_k=0"):
            train(cfg)


def test_layered_api_learns_on_policy():
    """The LayeredRL-style loop feeds an on-policy learner each step of its level, joins the
    steps into trajectories and updates once it holds min_transitions: none is lost, and a
    two-level PPO stack learns CartPole from it (greedy return >= 5x the untrained one's after
    4k frames)."""
    from torchrl_hier.layered import Collector as LayeredCollector
    from torchrl_hier.layered import Hierarchy as LayeredHierarchy

    torch.manual_seed(0)
    vector = gym.make_vec(
        "CartPole-v1", num_envs=16, vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
    )
    top, top_loss = on_policy_level("option", 4, option_spec(2), lowest=False, entropy_coeff=0.0)
    low, low_loss = on_policy_level(
        "primitive", 4, Categorical(2), parent_dim=2, control=Timeout(4), entropy_coeff=0.0
    )
    learners = {
        "option": OnPolicyLearner(top_loss, level=top, epochs=10, batch_size=64, lr=1e-3,
                                  min_transitions=256),
        "primitive": OnPolicyLearner(low_loss, level=low, epochs=10, batch_size=256, lr=1e-3,
                                     min_transitions=1024),
    }
    hierarchy = LayeredHierarchy([top, low], vector, learners=learners, keep_params=True)
    collector = LayeredCollector(hierarchy=hierarchy, env=vector, progress=False)
    collector.reset(seed=0)
    first = collector.collect(n_steps=64, learn=True)  # the untrained policy's episodes
    collector.collect(n_steps=192, learn=True)
    assert learners["primitive"].n_updates == 4 * 10 * 4  # every 64 steps of 16 instances
    assert learners["option"].n_updates > 0
    for name, count in hierarchy.n_transitions.items():
        assert learners[name].n_transitions == count
    greedy = collector.evaluate(16)["mean_return"]
    assert greedy >= max(110, 5 * first["mean_return"]), (first["mean_return"], greedy)


# ----------------------------------------------------------------------------- 4. option-critic
def option_critic_stack(env, deliberation_cost: float = 0.01):
    top, low, loss = option_critic_levels(
        4, 3, env.action_spec_unbatched, gamma=0.9, deliberation_cost=deliberation_cost,
        termination_bias=0.0, hidden=(32,),
    )
    hierarchy = Hierarchy([top, low], env)
    learner = OnPolicyLearner(loss, level=low, epochs=1, batch_size=512, lr=3e-3)
    learners = HierarchyLearner({"primitive": learner}, hierarchy=hierarchy, frozen=["option"])
    return hierarchy, loss, learners


def test_option_critic_targets_match_a_hand_computation():
    """Q_Omega's target on a transition (s, w, a, r, s') is the intra-option Q-learning target
    r + gamma**tau * (1 - terminated) * [(1 - beta_w(s')) Q(s', w) + beta_w(s') max Q(s', .)]."""
    torch.manual_seed(0)
    env = small_maze(n=6, max_steps=7)
    hierarchy, loss, _ = option_critic_stack(env)
    (batch,) = collect(env, hierarchy, 6 * 20, 1)
    moves = hierarchy.transitions(batch)["primitive"]
    terminated = moves["next", "terminated"].squeeze(-1)
    assert terminated.any() and (moves["next", "truncated"].squeeze(-1)).any()
    with torch.no_grad():
        targets = loss.targets(moves)
        q_next = loss.qvalue(moves["next"].select("observation").clone())["action_value"]
        beta_next = torch.sigmoid(loss.termination.net(moves["next", "observation"]))
    for i in range(moves.shape[0]):
        w = int(moves["parent_action"][i].argmax())
        u = (1 - beta_next[i, w]) * q_next[i, w] + beta_next[i, w] * q_next[i].max()
        expected = moves["next", "reward"][i, 0] + 0.9 * (not terminated[i]) * u
        torch.testing.assert_close(targets[i], expected, atol=1e-6, rtol=1e-5)


def test_option_critic_action_critic_matches_a_hand_computation():
    """With ``action_critic=True``, ``Q_U(s, w, a)`` learns towards the intra-option target g
    (``loss_action_critic``, weighted by ``critic_coeff``) and the policy gradient's advantage
    is ``Q_U(s, w, a) - Q_Omega(s, w)`` (``Q_U`` alone with ``baseline=False``): by hand,
    from the networks' raw outputs; bad action critics are refused."""
    from torchrl_hier.levels import OptionCriticLoss, OptionHeads

    torch.manual_seed(0)
    env = small_maze(n=6, max_steps=7)
    top, low, loss = option_critic_levels(
        4, 3, env.action_spec_unbatched, gamma=0.9, termination_bias=0.0, hidden=(32,),
        critic_coeff=3.0, entropy_coeff=0.0, action_critic=True,
    )
    assert "loss_action_critic" in loss.out_keys
    hierarchy = Hierarchy([top, low], env)
    (batch,) = collect(env, hierarchy, 6 * 20, 1)
    moves = hierarchy.transitions(batch)["primitive"]
    loss.make_value_estimator(gamma=0.9)
    out = loss(moves)
    rows_ = torch.arange(moves.shape[0])
    option, action = moves["parent_action"].argmax(-1), moves["action"].reshape(-1)
    obs = moves["observation"].float()
    with torch.no_grad():
        q_u = loss.action_critic.net(obs).unflatten(-1, (3, 4))[rows_, option, action]
        q_omega = loss.qvalue.module[0](obs)[rows_, option]
        target = loss.targets(moves)
    torch.testing.assert_close(out["loss_action_critic"], 1.5 * (q_u - target).pow(2).mean())
    params = list(loss.intra_option.parameters())

    def log_pi() -> torch.Tensor:  # log pi(a | s, w) from the raw heads
        logits = loss.intra_option[0].module.net(obs).unflatten(-1, (3, 4))[rows_, option]
        return logits.log_softmax(-1)[rows_, action]

    by_hand = -(log_pi() * (q_u - q_omega)).mean()
    for a, b in zip(torch.autograd.grad(out["loss_policy"], params), torch.autograd.grad(by_hand, params)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    # baseline=False: the advantage is Q_U itself
    plain = OptionCriticLoss(loss.qvalue, loss.intra_option, loss.termination, entropy_coeff=0.0,
                             action_critic=loss.action_critic, baseline=False)
    plain.make_value_estimator(gamma=0.9)
    no_baseline = -(log_pi() * q_u).mean()
    for a, b in zip(torch.autograd.grad(plain(moves)["loss_policy"], params),
                    torch.autograd.grad(no_baseline, params)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    # Q_U's gradient is its TD error: the critic learns towards g, not the policies' advantage
    (grad,) = torch.autograd.grad(out["loss_action_critic"], [loss.action_critic.net[-1].bias])
    heads = torch.zeros(moves.shape[0], 3, 4)
    heads[rows_, option, action] = 3.0 * (q_u - target) / moves.shape[0]
    torch.testing.assert_close(grad, heads.flatten(1).sum(0), atol=1e-6, rtol=1e-4)
    # No leaks: the policy term trains no critic, the action critic's term only Q_U.
    critics = [*loss.qvalue.parameters(), *loss.action_critic.parameters()]
    assert all(g is None for g in torch.autograd.grad(out["loss_policy"], critics, allow_unused=True))
    others = [*loss.qvalue.parameters(), *params, *loss.termination.parameters()]
    assert all(g is None for g in torch.autograd.grad(out["loss_action_critic"], others, allow_unused=True))
    with pytest.raises(TypeError, match="action_critic must be an OptionHeads"):
        OptionCriticLoss(loss.qvalue, loss.intra_option, loss.termination, action_critic=torch.nn.Linear(4, 12))
    with pytest.raises(ValueError, match="action_critic has 2 options x 4 actions; the level has 3 options"):
        OptionCriticLoss(loss.qvalue, loss.intra_option, loss.termination,
                         action_critic=OptionHeads(torch.nn.Linear(4, 8), 2, 4))


def test_option_critic_loss_takes_intra_option_policies_without_a_spec():
    """Without an action critic the loss needs only ``get_dist`` of the intra-option policy:
    a plain ``ProbabilisticTensorDictSequential`` (no ``spec``) is accepted."""
    from tensordict.nn import (
        ProbabilisticTensorDictModule,
        ProbabilisticTensorDictSequential,
        TensorDictModule,
    )
    from torch.distributions import Categorical as CategoricalDistribution

    from torchrl_hier.levels import OptionCriticLoss

    _, _, loss = option_critic_levels(4, 3, Categorical(4), gamma=0.9, hidden=(8,))
    policy = ProbabilisticTensorDictSequential(
        TensorDictModule(torch.nn.Linear(7, 4), ["observation"], ["logits"]),
        ProbabilisticTensorDictModule(["logits"], ["action"], distribution_class=CategoricalDistribution),
    )
    assert OptionCriticLoss(loss.qvalue, policy, loss.termination).action_critic is None


@pytest.mark.parametrize("deliberation_cost, direction", [(0.0, 1), (1.0, -1)])
def test_option_critic_terminations_change_with_training(deliberation_cost, direction):
    """The termination gradient moves beta: without a deliberation cost the advantage
    Q(s', w) - V(s') <= 0 raises every option's termination probability; a cost larger than
    the advantages lowers it (longer options). The other parts learn too."""
    torch.manual_seed(0)
    env = small_maze(n=16, max_steps=12)
    hierarchy, loss, learners = option_critic_stack(env, deliberation_cost)
    probe = torch.rand(256, 4)
    with torch.no_grad():
        before = torch.sigmoid(loss.termination.net(probe)).mean()
    params = {name: [p.clone() for p in module.parameters()] for name, module in
              (("qvalue", loss.qvalue), ("intra_option", loss.intra_option))}
    for batch in collect(env, hierarchy, 16 * 16, 8):
        learners.extend_batch(batch)
        logs = learners.update()
    with torch.no_grad():
        after = torch.sigmoid(loss.termination.net(probe)).mean()
    assert direction * (after - before) > 0.02, (before, after)
    assert set(logs["primitive"]) >= {"loss_critic", "loss_policy", "loss_termination"}
    for name, module in (("qvalue", loss.qvalue), ("intra_option", loss.intra_option)):
        assert any(not torch.equal(a, b) for a, b in zip(params[name], module.parameters())), name
