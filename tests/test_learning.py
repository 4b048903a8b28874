"""LevelLearner / HierarchyLearner: targets, keys, counting, state, and learning on CartPole."""

from __future__ import annotations

import copy
import importlib.util
import logging
import math
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.data import Bounded, Categorical, LazyTensorStorage, OneHot, TensorDictReplayBuffer
from torchrl.envs import TransformedEnv
from torchrl.modules import (
    MLP,
    OneHotCategorical,
    ProbabilisticActor,
    QValueModule,
    TanhModule,
    TanhNormal,
    ValueOperator,
)
from torchrl.objectives import (
    DDPGLoss,
    DiscreteSACLoss,
    DQNLoss,
    HardUpdate,
    SACLoss,
    SoftUpdate,
    TD3Loss,
    ValueEstimators,
)
from torchrl.objectives.sac import compute_rsample_log_prob

from torchrl_hier import Hierarchy, Level, Timeout
from torchrl_hier.envs import GridMaze
from torchrl_hier.learning import HierarchyLearner, LevelLearner, transition_keys
from torchrl_hier.learning.fast import FusedSoftUpdate, direct_storage, make_sampler
from torchrl_hier.levels import random_level

OBS, N_ACT, ACT_DIM, GAMMA = 3, 4, 2, 0.9


# ----------------------------------------------------------------------------- networks
def mlp(i: int, o: int) -> MLP:
    return MLP(in_features=i, out_features=o, num_cells=[16], activation_class=nn.ReLU)


class QSA(nn.Module):
    """Q(s, a) for continuous actions."""

    def __init__(self):
        super().__init__()
        self.net = mlp(OBS + ACT_DIM, 1)

    def forward(self, observation, action):
        return self.net(torch.cat([observation, action], -1))


def dqn_loss(delay_value: bool = True) -> DQNLoss:
    qvalue = TensorDictSequential(
        TensorDictModule(mlp(OBS, N_ACT), in_keys=["observation"], out_keys=["action_value"]),
        QValueModule(spec=Categorical(N_ACT), action_value_key="action_value"),
    )
    return DQNLoss(qvalue, action_space=Categorical(N_ACT), delay_value=delay_value)


def discrete_sac_loss() -> DiscreteSACLoss:
    actor = ProbabilisticActor(
        TensorDictModule(mlp(OBS, N_ACT), in_keys=["observation"], out_keys=["logits"]),
        in_keys=["logits"],
        distribution_class=OneHotCategorical,
        spec=OneHot(N_ACT),
    )
    qvalue = ValueOperator(mlp(OBS, N_ACT), in_keys=["observation"], out_keys=["action_value"])
    return DiscreteSACLoss(actor, qvalue, action_space=OneHot(N_ACT), num_actions=N_ACT)


ACTION_SPEC = Bounded(-1.0, 1.0, (ACT_DIM,))


def sac_loss() -> SACLoss:
    actor = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(mlp(OBS, 2 * ACT_DIM), NormalParamExtractor()),
            in_keys=["observation"],
            out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        spec=ACTION_SPEC,
    )
    return SACLoss(actor, ValueOperator(QSA(), in_keys=["observation", "action"]))


def deterministic_actor() -> TensorDictSequential:
    return TensorDictSequential(
        TensorDictModule(mlp(OBS, ACT_DIM), in_keys=["observation"], out_keys=["param"]),
        TanhModule(in_keys=["param"], out_keys=["action"], spec=ACTION_SPEC),
    )


def td3_loss() -> TD3Loss:
    return TD3Loss(
        deterministic_actor(),
        ValueOperator(QSA(), in_keys=["observation", "action"]),
        action_spec=ACTION_SPEC,
        policy_noise=0.0,
        noise_clip=0.0,
    )


def ddpg_loss() -> DDPGLoss:
    return DDPGLoss(deterministic_actor(), ValueOperator(QSA(), in_keys=["observation", "action"]))


LOSSES = {
    "dqn": dqn_loss,
    "discrete_sac": discrete_sac_loss,
    "sac": sac_loss,
    "td3": td3_loss,
    "ddpg": ddpg_loss,
}


def transitions(kind: str, n: int = 6, seed: int = 0) -> TensorDict:
    """SMDP transitions as ``hierarchy.transitions`` writes them, with tau in 1..5."""
    g = torch.Generator().manual_seed(seed)
    if kind == "dqn":
        action = torch.randint(N_ACT, (n,), generator=g)
    elif kind == "discrete_sac":
        action = nn.functional.one_hot(torch.randint(N_ACT, (n,), generator=g), N_ACT)
    else:
        action = torch.rand(n, ACT_DIM, generator=g) * 2 - 1
    terminated = torch.zeros(n, 1, dtype=torch.bool)
    terminated[1::3] = True
    truncated = torch.zeros(n, 1, dtype=torch.bool)
    return TensorDict(
        {
            "observation": torch.randn(n, OBS, generator=g),
            "action": action,
            "steps_to_next_obs": (torch.arange(n) % 5 + 1).unsqueeze(-1),
            "next": {
                "observation": torch.randn(n, OBS, generator=g),
                "reward": torch.randn(n, 1, generator=g),
                "done": terminated | truncated,
                "terminated": terminated,
                "truncated": truncated,
            },
        },
        batch_size=[n],
    )


@torch.no_grad()
def perturb_online(loss) -> None:
    """Moves the online parameters away from the targets, so bootstrapping from the wrong
    network would show."""
    for name, param in loss.named_parameters():
        if "target" not in name:
            param.add_(0.3 * torch.randn_like(param))


def run_with(params, module, td):
    with params.to_module(module):
        return module(td.clone())


# ----------------------------------------------------------------------------- targets
@torch.no_grad()
def hand_next_value(kind: str, loss, td: TensorDict, seed: int) -> torch.Tensor:
    """V(next) from the loss's *target* networks (the actor's online params where the loss
    samples the next action with them), computed outside the loss; shape [N]."""
    nxt = td["next"].select("observation")
    if kind == "dqn":
        out = run_with(loss.target_value_network_params, loss.value_network, nxt)
        return out["action_value"].max(-1).values
    if kind == "discrete_sac":
        logits = run_with(loss.actor_network_params, loss.actor_network, nxt)["logits"]
        prob = logits.softmax(-1)
        log_prob = torch.log(torch.where(prob == 0, 1e-8, prob))
        q = torch.stack(
            [
                run_with(loss.target_qvalue_network_params[i], loss.qvalue_network, nxt)[
                    "action_value"
                ]
                for i in range(loss.num_qvalue_nets)
            ]
        ).min(0).values
        return (prob * (q - loss._alpha * log_prob)).sum(-1)
    if kind == "sac":
        torch.manual_seed(seed)
        with loss.actor_network_params.to_module(loss.actor_network):
            dist = loss.actor_network.get_dist(nxt.clone())
        action, log_prob = compute_rsample_log_prob(dist)
        with_action = nxt.clone().set("action", action)
        q = torch.stack(
            [
                run_with(loss.target_qvalue_network_params[i], loss.qvalue_network, with_action)[
                    "state_action_value"
                ].squeeze(-1)
                for i in range(loss.num_qvalue_nets)
            ]
        ).min(0).values
        return q - loss._alpha * log_prob
    if kind in ("td3", "ddpg"):
        actor_params = loss.target_actor_network_params
        action = run_with(actor_params, loss.actor_network, nxt)["action"]
        with_action = nxt.clone().set("action", action)
        if kind == "ddpg":
            out = run_with(loss.target_value_network_params, loss.value_network, with_action)
            return out["state_action_value"].squeeze(-1)
        return torch.stack(
            [
                run_with(loss.target_qvalue_network_params[i], loss.qvalue_network, with_action)[
                    "state_action_value"
                ].squeeze(-1)
                for i in range(loss.num_qvalue_nets)
            ]
        ).min(0).values
    raise ValueError(kind)


def loss_target(kind: str, loss, td: TensorDict, seed: int) -> torch.Tensor:
    """The bootstrap target the loss itself computes, shape [N]."""
    td = td.clone()
    with torch.no_grad():
        if kind == "dqn":
            return loss.value_estimator.value_estimate(
                td, target_params=loss.target_value_network_params
            ).squeeze(-1)
        if kind == "discrete_sac":
            return loss._compute_target(td)
        if kind == "sac":
            torch.manual_seed(seed)
            return loss._compute_target_v2(td)
        if kind == "td3":
            return loss.value_loss(td)[1]["target_value"]
        if kind == "ddpg":
            return loss.loss_value(td)[1]["target_value"]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_loss_target_is_smdp_backup(kind):
    """Each loss, set up by the learner, bootstraps R + gamma**tau (1 - terminated) V(next)."""
    torch.manual_seed(0)
    loss = LOSSES[kind]()
    learner = LevelLearner(loss, gamma=GAMMA, warmup=0, batch_size=6)
    perturb_online(loss)
    data = transitions(kind)
    learner.extend(data)
    stored = learner.buffer[:6]  # what the buffer gives back still carries tau
    assert torch.equal(stored["steps_to_next_obs"], data["steps_to_next_obs"])

    target = loss_target(kind, loss, stored, seed=1)
    value = hand_next_value(kind, loss, stored, seed=1)
    reward = data["next", "reward"].squeeze(-1)
    tau = data["steps_to_next_obs"].squeeze(-1).float()
    not_terminated = (~data["next", "terminated"]).squeeze(-1).float()
    expected = reward + GAMMA**tau * not_terminated * value
    torch.testing.assert_close(target, expected, rtol=1e-5, atol=1e-5)
    # A one-step discount (tau ignored) would differ wherever tau > 1 and the state is live.
    one_step = reward + GAMMA * not_terminated * value
    assert not torch.allclose(target, one_step, atol=1e-3)


def test_dqn_loss_uses_the_smdp_target_end_to_end():
    """The DQN loss value itself is mean((Q(s, a) - R - gamma**tau (1 - term) max Q'(s'))^2)."""
    torch.manual_seed(0)
    loss = dqn_loss()
    loss.loss_function = "l2"
    LevelLearner(loss, gamma=GAMMA, warmup=0)
    perturb_online(loss)
    data = transitions("dqn")
    value = hand_next_value("dqn", loss, data, seed=0)
    with torch.no_grad():
        q = run_with(loss.value_network_params, loss.value_network, data.select("observation"))
        chosen = q["action_value"].gather(-1, data["action"].unsqueeze(-1)).squeeze(-1)
        tau = data["steps_to_next_obs"].squeeze(-1).float()
        target = data["next", "reward"].squeeze(-1) + GAMMA**tau * (
            ~data["next", "terminated"]
        ).squeeze(-1).float() * value
        got = loss(data.clone())["loss"]
    torch.testing.assert_close(got, (chosen - target).pow(2).mean(), rtol=1e-5, atol=1e-6)


def test_hierarchy_transitions_carry_what_the_learner_needs():
    """Real SMDP transitions of a 2-level hierarchy feed a DQN learner per level."""
    torch.manual_seed(0)
    env = GridMaze(batch_size=[4], max_steps=12, seed=0)
    top = Level(
        "option",
        TensorDictSequential(
            TensorDictModule(mlp(4, 3), in_keys=["observation"], out_keys=["action_value"]),
            QValueModule(spec=Categorical(3), action_value_key="action_value"),
        ),
        action_spec=Categorical(3),
        gamma=0.95,
    )

    class Low(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp(4 + 3, 4)

        def forward(self, observation, parent_action):
            return self.net(torch.cat([observation, nn.functional.one_hot(parent_action, 3)], -1))

    low_q = TensorDictSequential(
        TensorDictModule(
            Low(), in_keys=["observation", "parent_action"], out_keys=["action_value"]
        ),
        QValueModule(spec=Categorical(4), action_value_key="action_value"),
    )
    low = Level("primitive", low_q, control=Timeout(3), gamma=0.9)
    hier = Hierarchy([top, low], env)
    learners = HierarchyLearner.from_losses(
        hier,
        {
            "option": DQNLoss(top.policy, action_space=Categorical(3)),
            "primitive": DQNLoss(low_q, action_space=Categorical(4)),
        },
        per_level={"option": {"warmup": 4}},
        warmup=16,
        batch_size=8,
        update_ratio=0.5,
    )
    rollout = TransformedEnv(env, hier.transform).rollout(
        30, hier.policy, break_when_any_done=False
    )
    data = hier.transitions(rollout)
    learners.extend(data)
    assert learners.n_transitions == {name: d.batch_size.numel() for name, d in data.items()}
    assert 0 < learners.n_transitions["option"] < learners.n_transitions["primitive"] == 120
    assert learners["option"].gamma == 0.95 and learners["primitive"].gamma == 0.9
    logs = learners.update()
    assert set(logs) == {"option", "primitive"}
    assert all(math.isfinite(v) for log in logs.values() for v in log.values())
    assert learners.n_updates == {
        name: math.floor((n - learners[name].warmup) * 0.5)
        for name, n in learners.n_transitions.items()
    }
    # The option level's multi-step transitions: its target uses gamma**tau with tau > 1.
    option = data["option"]
    assert (option["steps_to_next_obs"] > 1).any()
    loss = learners["option"].loss
    value = hand_next_value("dqn", loss, option, seed=0)
    tau = option["steps_to_next_obs"].squeeze(-1).float()
    expected = option["next", "reward"].squeeze(-1) + 0.95**tau * (
        ~option["next", "terminated"]
    ).squeeze(-1).float() * value
    torch.testing.assert_close(loss_target("dqn", loss, option, seed=0), expected)


# ----------------------------------------------------------------------------- bad input
def test_missing_keys_are_named():
    learner = LevelLearner(dqn_loss(), gamma=GAMMA)
    data = transitions("dqn")
    with pytest.raises(KeyError, match="steps_to_next_obs") as err:
        learner.extend(data.select(*learner.loss.in_keys))  # the classic mistake
    assert "gamma\\*\\*tau" in str(err.value) or "gamma**tau" in str(err.value)
    bad = data.exclude(("next", "reward"), "action")
    with pytest.raises(KeyError, match=r"lack \['action', 'next/reward'\]"):
        learner.extend(bad)
    assert learner.n_transitions == 0 and len(learner.buffer) == 0


def test_inconsistent_layouts_and_bad_tau_raise():
    learner = LevelLearner(dqn_loss(), gamma=GAMMA)
    data = transitions("dqn")
    learner.extend(data)
    with pytest.raises(KeyError, match="new \\['extra'\\]"):
        learner.extend(data.clone().set("extra", torch.zeros(6)))
    with pytest.raises(KeyError, match="missing \\['next/truncated'\\]"):
        learner.extend(data.exclude(("next", "truncated")))
    zero_tau = data.clone()
    zero_tau["steps_to_next_obs"][0] = 0
    with pytest.raises(ValueError, match=">= 1"):
        learner.extend(zero_tau)
    float_tau = data.clone().set("steps_to_next_obs", data["steps_to_next_obs"].float())
    with pytest.raises(TypeError, match="integer"):
        learner.extend(float_tau)
    with pytest.raises(TypeError, match="TensorDict"):
        learner.extend({"observation": torch.zeros(3)})
    assert learner.n_transitions == 6


def test_gamma_is_required_and_checked_against_the_level():
    level = random_level("low", Categorical(N_ACT), lowest=True, gamma=0.8)
    with pytest.raises(ValueError, match="gamma"):
        LevelLearner(dqn_loss())
    with pytest.raises(ValueError, match="differs from level 'low'"):
        LevelLearner(dqn_loss(), level=level, gamma=0.9)
    learner = LevelLearner(dqn_loss(), level=level)
    assert learner.gamma == 0.8
    assert float(learner.loss.value_estimator.gamma) == pytest.approx(0.8)
    # An estimator the user made with another gamma is replaced, not silently.
    loss = dqn_loss()
    loss.make_value_estimator(ValueEstimators.TD0, gamma=0.5)
    with pytest.warns(UserWarning, match=r"gamma=0.5; the learner replaces it with one at the level's gamma=0.8"):
        learner = LevelLearner(loss, level=level)
    assert float(learner.loss.value_estimator.gamma) == pytest.approx(0.8)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LevelLearner(loss, level=level)  # the same gamma: nothing to say


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="LossModule"):
        LevelLearner(nn.Linear(2, 2), gamma=0.9)
    with pytest.raises(ValueError, match="update_ratio"):
        LevelLearner(dqn_loss(), gamma=0.9, update_ratio=0)
    with pytest.raises(ValueError, match="warmup"):
        LevelLearner(dqn_loss(), gamma=0.9, warmup=-1)
    with pytest.raises(ValueError, match="none of the loss's parameters"):
        LevelLearner(dqn_loss(), gamma=0.9, optimizer=torch.optim.SGD(mlp(1, 1).parameters(), 0.1))


# ----------------------------------------------------------------------------- counting
def test_warmup_and_update_ratio_count_the_levels_own_transitions():
    torch.manual_seed(0)
    learner = LevelLearner(dqn_loss(), gamma=GAMMA, warmup=10, update_ratio=0.5, batch_size=4)
    learner.extend(transitions("dqn", n=8))
    assert learner.update() == {} and learner.n_updates == 0
    learner.extend(transitions("dqn", n=0))  # a level may complete nothing in a batch
    learner.extend(transitions("dqn", n=6, seed=1))  # 14 transitions: 4 past the warm-up
    logs = learner.update()
    assert learner.n_updates == 2 and set(logs) == {"loss"} and math.isfinite(logs["loss"])
    assert learner.update() == {}  # nothing more owed
    learner.extend(transitions("dqn", n=3, seed=2))  # 17: floor(7 * 0.5) = 3
    learner.update()
    assert learner.n_updates == 3

    fast = LevelLearner(dqn_loss(), gamma=GAMMA, warmup=0, update_ratio=2.0, batch_size=4)
    fast.extend(transitions("dqn", n=5))
    fast.update()
    assert fast.n_updates == 10 and fast.n_transitions == 5


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_every_loss_updates(kind):
    """A few gradient steps with each loss change its parameters and report its terms."""
    torch.manual_seed(0)
    loss = LOSSES[kind]()
    learner = LevelLearner(loss, gamma=GAMMA, warmup=0, update_ratio=1.0, batch_size=4)
    before = [p.detach().clone() for p in loss.parameters()]
    learner.extend(transitions(kind, n=8))
    logs = learner.update()
    assert learner.n_updates == 8
    assert any(key.startswith("loss") for key in logs)
    assert all(math.isfinite(value) for value in logs.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, loss.parameters()))


def test_loss_trains_the_policy_module():
    """The loss's parameters are the policy's: what the learner learns is what the level runs."""
    torch.manual_seed(0)
    loss = dqn_loss()
    policy = loss.value_network
    learner = LevelLearner(loss, gamma=GAMMA, warmup=0, update_ratio=1.0, batch_size=4)
    obs = TensorDict(observation=torch.randn(5, OBS), batch_size=[5])
    before = policy(obs.clone())["action_value"]
    learner.extend(transitions("dqn"))
    learner.update()
    assert not torch.allclose(policy(obs.clone())["action_value"], before)


# ----------------------------------------------------------------------------- targets
def test_target_update_choices():
    loss = dqn_loss()
    assert isinstance(LevelLearner(loss, gamma=GAMMA).target_updater, SoftUpdate)
    hard = LevelLearner(dqn_loss(), gamma=GAMMA, target_update="hard", period=3)
    assert isinstance(hard.target_updater, HardUpdate)
    assert hard.target_updater.value_network_update_interval == 3
    soft_loss = dqn_loss()
    soft = SoftUpdate(soft_loss, tau=0.1)
    assert LevelLearner(soft_loss, gamma=GAMMA, target_update=soft).target_updater is soft
    with pytest.raises(ValueError, match="another loss"):
        LevelLearner(dqn_loss(), gamma=GAMMA, target_update=SoftUpdate(dqn_loss(), tau=0.1))
    with pytest.raises(ValueError, match="no target networks"):
        LevelLearner(dqn_loss(delay_value=False), gamma=GAMMA, target_update="soft")
    assert LevelLearner(dqn_loss(delay_value=False), gamma=GAMMA).target_updater is None
    with pytest.raises(ValueError, match="target_update"):
        LevelLearner(dqn_loss(), gamma=GAMMA, target_update="polyak")


def test_hard_update_copies_every_period():
    torch.manual_seed(0)
    loss = dqn_loss()
    learner = LevelLearner(
        loss, gamma=GAMMA, warmup=0, update_ratio=1.0, batch_size=4, target_update="hard", period=3
    )
    online, target = loss.value_network_params, loss.target_value_network_params
    learner.extend(transitions("dqn", n=3))
    learner.update()  # 3 steps: the counter reaches the period, no copy yet
    assert not (online.data == target.data).all()
    learner.extend(transitions("dqn", n=1))
    learner.update()  # the 4th step copies
    assert (online.data == target.data).all()


# ----------------------------------------------------------------------------- state
def trained_learner(kind: str, seed: int) -> LevelLearner:
    torch.manual_seed(seed)
    learner = LevelLearner(LOSSES[kind](), gamma=GAMMA, warmup=2, update_ratio=1.0, batch_size=4)
    learner.extend(transitions(kind, n=6))
    learner.update()
    return learner


@pytest.mark.parametrize("kind", ["dqn", "sac"])
@pytest.mark.parametrize("include_buffer", [False, True])
def test_state_dict_round_trip(kind, include_buffer):
    learner = trained_learner(kind, seed=0)
    state = copy.deepcopy(learner.state_dict(include_buffer=include_buffer))
    assert ("buffer" in state) == include_buffer
    fresh = trained_learner(kind, seed=1)  # different weights, optimizer state, counters
    fresh.load_state_dict(state)
    assert fresh.n_transitions == learner.n_transitions and fresh.n_updates == learner.n_updates
    for (name, a), b in zip(learner.loss.state_dict().items(), fresh.loss.state_dict().values()):
        assert torch.equal(a, b), name  # online and target parameters
    if include_buffer:
        assert torch.equal(fresh.buffer[:6]["observation"], learner.buffer[:6]["observation"])
    # Same state, same data, same seed: the next updates are identical.
    more = transitions(kind, n=3, seed=5)
    logs = []
    for which in (learner, fresh):
        if not include_buffer:
            which.buffer.empty()
        which.extend(more)
        torch.manual_seed(7)
        logs.append(which.update())
    assert logs[0] == logs[1]


def test_load_state_dict_checks_gamma():
    state = trained_learner("dqn", 0).state_dict()
    other = LevelLearner(dqn_loss(), gamma=0.5)
    with pytest.raises(ValueError, match="gamma"):
        other.load_state_dict(state)
    with pytest.raises(KeyError, match="Not a LevelLearner state dict"):
        other.load_state_dict({"loss": {}})


# ----------------------------------------------------------------------------- hierarchy
def grid_levels():
    env = GridMaze(batch_size=[2], max_steps=10, seed=0)
    q = TensorDictSequential(
        TensorDictModule(mlp(4, 4), in_keys=["observation"], out_keys=["action_value"]),
        QValueModule(spec=Categorical(4), action_value_key="action_value"),
    )
    top = random_level("option", Categorical(2))
    low = Level("primitive", q, control=Timeout(2), gamma=0.9)
    return env, top, low, q


def test_hierarchy_learner_routes_and_guards():
    env, top, low, q = grid_levels()
    hier = Hierarchy([top, low], env)
    learner = LevelLearner(DQNLoss(q, action_space=Categorical(4)), level=low, warmup=0)
    with pytest.raises(ValueError, match=r"\['option'\] have no learner"):
        HierarchyLearner({"primitive": learner}, hierarchy=hier)
    learners = HierarchyLearner({"primitive": learner}, hierarchy=hier, frozen=["option"])
    rollout = TransformedEnv(env, hier.transform).rollout(8, hier.policy, break_when_any_done=False)
    learners.extend(hier.transitions(rollout))
    assert learners.n_transitions == {"primitive": 16}
    with pytest.raises(KeyError, match="have no learner"):
        HierarchyLearner({"primitive": learner}).extend(hier.transitions(rollout))
    with pytest.raises(KeyError, match="No level named"):
        HierarchyLearner({"nope": learner}, hierarchy=hier)
    assert set(learners.state_dict()) == {"primitive"} and len(learners) == 1


def test_hierarchy_learner_checks_gamma_and_keys():
    env, top, low, q = grid_levels()
    hier = Hierarchy([top, low], env)
    wrong_gamma = LevelLearner(DQNLoss(q, action_space=Categorical(4)), gamma=0.5)
    with pytest.raises(ValueError, match="differs from level 'primitive'"):
        HierarchyLearner({"primitive": wrong_gamma}, hierarchy=hier, frozen=["option"])
    # A loss whose network reads an entry the level's transitions do not hold.
    goal_q = TensorDictSequential(
        TensorDictModule(mlp(4, 4), in_keys=["goal"], out_keys=["action_value"]),
        QValueModule(spec=Categorical(4), action_value_key="action_value"),
    )
    reads_goal = LevelLearner(DQNLoss(goal_q, action_space=Categorical(4)), gamma=0.9)
    with pytest.raises(KeyError, match="reads \\['goal', 'next/goal'\\]"):
        HierarchyLearner({"primitive": reads_goal}, hierarchy=hier, frozen=["option"])
    assert "parent_action" in transition_keys(has_parent=True)
    assert "parent_action" not in transition_keys(has_parent=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_learner_on_cuda():
    torch.manual_seed(0)
    loss = dqn_loss().to("cuda")
    learner = LevelLearner(
        loss, gamma=GAMMA, warmup=0, update_ratio=1.0, batch_size=4, device="cuda"
    )
    learner.extend(transitions("dqn"))
    assert learner.buffer[:6]["observation"].device.type == "cuda"
    logs = learner.update()
    assert learner.n_updates == 6 and math.isfinite(logs["loss"])


# ----------------------------------------------------------------------------- learning
def load_example():
    path = Path(__file__).resolve().parents[1] / "examples" / "train_cartpole.py"
    spec = importlib.util.spec_from_file_location("train_cartpole", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_flat_dqn_solves_cartpole():
    """A one-level hierarchy is a flat DQN agent: greedy average return >= 195 on CartPole-v1
    (on test episodes other than the validation episodes used to stop training)."""
    example = load_example()
    cfg = example.Config(hierarchy="flat", seed=0)
    result = example.train(cfg)
    assert result["frames"] <= cfg.total_frames
    assert result["eval_mean"] >= 195, result["eval_returns"]


@pytest.mark.slow
def test_two_level_dqn_learns_cartpole():
    """An option level over an option-conditioned primitive level, both DQN, learns CartPole:
    a uniformly random policy balances ~22 steps; this one is asked for 5x that."""
    example = load_example()
    cfg = example.Config(hierarchy="two_level", seed=0, stop_return=200.0)
    result = example.train(cfg)
    counts, updates = result["n_transitions"], result["n_updates"]
    # The option level completes one transition per option (option_steps env steps, fewer at
    # an episode end), so far fewer than the primitive level; both updated on their own counts.
    steps = cfg.option_steps
    assert counts["primitive"] / steps - cfg.n_envs <= counts["option"] < counts["primitive"] / 2
    assert updates["option"] == int((counts["option"] - cfg.warmup // steps) * cfg.update_ratio)
    assert updates["primitive"] == int((counts["primitive"] - cfg.warmup) * cfg.update_ratio)
    assert result["eval_mean"] >= 110, result["eval_returns"]


# ----------------------------------------------------------------------------- fast paths
def test_fused_soft_update_equals_soft_update():
    """FusedSoftUpdate gives SoftUpdate's targets bit for bit, for every loss with targets."""
    for kind in ("dqn", "sac", "td3", "ddpg", "discrete_sac"):
        torch.manual_seed(0)
        loss = LOSSES[kind]()
        twin = copy.deepcopy(loss)
        stock = SoftUpdate(loss, tau=0.01)
        fused = FusedSoftUpdate(SoftUpdate(twin, tau=0.01))
        perturb_online(loss)
        twin.load_state_dict(loss.state_dict())  # online moved away from the targets
        for _ in range(3):
            stock.step()
            fused.step()
        for (name, a), b in zip(loss.state_dict().items(), twin.state_dict().values()):
            assert torch.equal(a, b), (kind, name)
        assert any(
            "target" in name and not torch.equal(a, b)
            for (name, a), b in zip(loss.state_dict().items(), LOSSES[kind]().state_dict().values())
        )
    with pytest.raises(TypeError, match="SoftUpdate"):
        FusedSoftUpdate(HardUpdate(dqn_loss()))


def test_fast_sampling_draws_the_rows_buffer_sample_draws():
    learner = LevelLearner(dqn_loss(), gamma=GAMMA, batch_size=64)
    data = transitions("dqn", n=40)
    learner.extend(data)
    assert direct_storage(learner.buffer) is learner.buffer._storage
    sample = make_sampler(learner.buffer, 64)
    torch.manual_seed(3)
    fast = sample()
    torch.manual_seed(3)
    stock = learner.buffer.sample(64)
    assert fast.shape == (64,) and (stock["index"] < 40).all()
    assert (fast == stock).all()  # same random stream, same rows
    # every row is a stored transition (not an unwritten slot of the preallocated storage)
    rows = (fast["observation"].unsqueeze(1) == data["observation"].unsqueeze(0)).all(-1)
    assert rows.any(1).all()


def test_buffers_that_cannot_be_read_directly_use_their_sample():
    from torchrl.data import SamplerWithoutReplacement
    from torchrl.envs import RewardScaling

    custom = {
        "sampler": TensorDictReplayBuffer(
            storage=LazyTensorStorage(100), sampler=SamplerWithoutReplacement()
        ),
        "transform": TensorDictReplayBuffer(
            storage=LazyTensorStorage(100),
            transform=RewardScaling(0.0, 2.0, in_keys=[("next", "reward")]),
        ),
    }
    for name, buffer in custom.items():
        learner = LevelLearner(
            dqn_loss(), gamma=GAMMA, warmup=0, batch_size=4, update_ratio=1.0, buffer=buffer
        )
        learner.extend(transitions("dqn"))
        assert direct_storage(buffer) is None, name
        if name == "transform":
            assert (make_sampler(buffer, 4)()["next", "reward"].abs() <= 2 * 3.5).all()
        assert math.isfinite(learner.update()["loss"]) and learner.n_updates == 6


def test_update_reads_the_loss_outputs_once():
    """The mean logs are the means of the per-step values (summed on device, synced once)."""
    torch.manual_seed(0)
    learner = LevelLearner(sac_loss(), gamma=GAMMA, warmup=0, update_ratio=1.0, batch_size=4)
    learner.extend(transitions("sac", n=5))
    seen = []
    step = learner._gradient_step
    learner._gradient_step = lambda batch: seen.append(step(batch)) or seen[-1]
    logs = learner.update()
    assert len(seen) == 5 and set(logs) >= {"loss_actor", "loss_qvalue", "loss_alpha", "alpha"}
    for key, value in logs.items():
        assert value == pytest.approx(torch.stack([s[key] for s in seen]).mean().item(), rel=1e-6)


# ----------------------------------------------------------------------------- compile
def compiled_pair(kind: str):
    """An eager and a compiled learner with equal networks and the same replay data."""
    torch.manual_seed(0)
    loss = LOSSES[kind]()
    twin = copy.deepcopy(loss)
    data = transitions(kind, n=16)
    learners = []
    for which, compile in ((loss, False), (twin, True)):
        learner = LevelLearner(
            which, gamma=GAMMA, warmup=0, update_ratio=0.25, batch_size=8, max_grad_norm=1.0,
            compile=compile,
        )
        learner.extend(data)
        learners.append(learner)
    return learners


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dqn", "sac", "td3"])
def test_compiled_update_equals_eager_update(kind):
    """Same samples (same seed), same steps: compiled and eager learners end with the same
    parameters and report the same losses, up to float rounding. (Inductor draws the random
    numbers inside a compiled graph from its own generator; ``fallback_random`` makes it use
    eager's, so that both learners see the same samples and noise.)"""
    import torch._inductor.config

    eager, compiled = compiled_pair(kind)
    logs = []
    with torch._inductor.config.patch(fallback_random=True):
        for learner in (eager, compiled):
            torch.manual_seed(1)  # the samples and the actors' noise
            logs.append(learner.update())
    assert eager.n_updates == compiled.n_updates == 4
    assert compiled._compiled
    assert logs[0].keys() == logs[1].keys()
    for key in logs[0]:
        assert logs[1][key] == pytest.approx(logs[0][key], rel=1e-4, abs=1e-5), key
    for (name, a), b in zip(eager.loss.state_dict().items(), compiled.loss.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_compiled_learner_keeps_the_smdp_target_and_state():
    """A compiled DQN learner still bootstraps with gamma**tau, and its state dict
    round-trips into an eager learner (and back)."""
    torch.manual_seed(0)
    loss = dqn_loss()
    learner = LevelLearner(loss, gamma=GAMMA, warmup=0, update_ratio=1.0, batch_size=6,
                           compile=True)
    learner.extend(transitions("dqn"))
    learner.update()
    assert learner._compiled
    stored = learner.buffer[:6]
    tau = stored["steps_to_next_obs"].squeeze(-1).float()
    live = (~stored["next", "terminated"]).squeeze(-1).float()
    expected = stored["next", "reward"].squeeze(-1) + GAMMA**tau * live * hand_next_value(
        "dqn", loss, stored, seed=0
    )
    torch.testing.assert_close(loss_target("dqn", loss, stored, seed=0), expected)
    eager = LevelLearner(dqn_loss(), gamma=GAMMA, warmup=0, update_ratio=1.0, batch_size=6)
    eager.load_state_dict(copy.deepcopy(learner.state_dict(include_buffer=True)))
    for (name, a), b in zip(loss.state_dict().items(), eager.loss.state_dict().values()):
        assert torch.equal(a, b), name
    learner.load_state_dict(eager.state_dict())
    learner.extend(transitions("dqn", n=2, seed=4))
    assert math.isfinite(learner.update()["loss"]) and learner.n_updates == 8


@pytest.mark.slow
def test_ready_made_td3_head_compiles():
    """The ready-made TD3 actor (TanhDelta with safe=False: TorchRL 0.14.1 refuses to compile
    its default safe=True) takes compiled gradient steps, without a fallback warning."""
    import warnings

    from torchrl_hier.levels.parts import actor_critic_head

    torch.manual_seed(0)
    _, _, loss = actor_critic_head(OBS, ACTION_SPEC, algorithm="td3", hidden=(16,), gamma=GAMMA)
    learner = LevelLearner(loss, gamma=GAMMA, warmup=0, update_ratio=1.0, batch_size=4,
                           compile=True)
    learner.extend(transitions("td3"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        logs = learner.update()
    assert learner._compiled and learner.compile_options is not None
    assert learner.n_updates == 6 and math.isfinite(logs["loss_qvalue"])


def test_compile_argument_is_checked():
    with pytest.raises(TypeError, match="compile must be a bool or a mapping"):
        LevelLearner(dqn_loss(), gamma=GAMMA, compile="yes")
    learner = LevelLearner(dqn_loss(), gamma=GAMMA, compile={"mode": "reduce-overhead"})
    assert learner.compile_options == {"dynamic": False, "mode": "reduce-overhead"}
    assert LevelLearner(dqn_loss(), gamma=GAMMA).compile_options is None


def test_a_compile_failure_warns_and_falls_back_to_eager():
    """A backend that cannot compile: the learner says so and takes the eager steps."""

    def broken_backend(graph, example_inputs):
        raise NotImplementedError("this backend compiles nothing")

    torch.manual_seed(0)
    eager = LevelLearner(dqn_loss(), gamma=GAMMA, warmup=0, update_ratio=1.0, batch_size=4)
    torch.manual_seed(0)
    broken = LevelLearner(
        dqn_loss(), gamma=GAMMA, warmup=0, update_ratio=1.0, batch_size=4,
        compile={"backend": broken_backend},
    )
    logs = []
    for learner in (eager, broken):
        learner.extend(transitions("dqn"))
        torch.manual_seed(2)
        if learner is broken:
            with pytest.warns(RuntimeWarning, match="runs eagerly from now on"):
                logs.append(learner.update())
        else:
            logs.append(learner.update())
    assert broken.compile_options is None and not broken._compiled
    assert logs[0] == logs[1]
    for a, b in zip(eager.loss.state_dict().values(), broken.loss.state_dict().values()):
        assert torch.equal(a, b)


def test_train_config_compile_key():
    """``compile=auto`` (default) compiles the lowest level's learner in long runs only;
    ``true``/``false`` and a level's ``learner.compile`` decide explicitly."""
    from hydra import compose, initialize_config_module

    from torchrl_hier.experiment import ConfigError, build_experiment

    def compiled(*overrides: str) -> dict[str, bool]:
        with initialize_config_module("torchrl_hier.conf", version_base=None):
            cfg = compose("config", overrides=["task=GridMaze-FourRooms", "hierarchy=options",
                                               "task.n_envs=2", *overrides])
        learners = build_experiment(cfg).learners
        return {name: learner.compile_options is not None for name, learner in learners.items()}

    assert compiled() == {"option": False, "primitive": True}
    assert compiled("total_frames=1000") == {"option": False, "primitive": False}
    assert compiled("compile=true", "total_frames=1000") == {"option": True, "primitive": True}
    assert compiled("compile=false", "+hierarchy.levels.option.learner.compile=true") == {
        "option": True, "primitive": False,
    }
    with pytest.raises(ConfigError, match="compile='sometimes'"):
        compiled("compile=sometimes")


def test_non_finite_transitions_are_reported_by_level_and_key():
    """NaN/inf in the transitions is noticed on the device and reported at the next update
    (its one host sync), naming the level and the entry."""
    from torchrl_hier.levels import random_level

    level = random_level("primitive", Categorical(N_ACT), lowest=True)
    learner = LevelLearner(dqn_loss(), level=level, gamma=level.gamma, warmup=0,
                           update_ratio=1.0, batch_size=4)
    data = transitions("dqn", n=6)
    data["next", "reward"][2] = float("nan")
    learner.extend(data)
    with pytest.raises(FloatingPointError, match=r"level 'primitive' hold NaN or inf in \['next/reward'\]"):
        learner.update()


def test_a_non_finite_loss_is_reported():
    learner = LevelLearner(dqn_loss(), gamma=GAMMA, warmup=0, update_ratio=1.0, batch_size=4)
    learner.extend(transitions("dqn", n=6))
    with torch.no_grad():
        next(iter(learner.loss.parameters())).fill_(float("inf"))
    with pytest.raises(FloatingPointError, match=r"The loss of this learner became non-finite \(\['loss'\]\)"):
        learner.update()


def test_own_buffer_does_not_log_torchrl_info_unless_asked(torchrl_records, monkeypatch):
    """The buffer a LevelLearner makes itself does not announce its storage on TorchRL's
    logger unless the user chose TorchRL's log level (RL_LOGGING_LEVEL or the logger's)."""
    def first_write(**kwargs) -> list[str]:
        torchrl_records.clear()
        LevelLearner(dqn_loss(), gamma=GAMMA, **kwargs).extend(transitions("dqn"))
        return [r.getMessage() for r in torchrl_records if r.levelno == logging.INFO]

    assert first_write() == []
    assert not logging.getLogger("torchrl").filters  # the filter lived for that write only
    # a buffer the user passes logs as TorchRL makes it log
    assert first_write(buffer=TensorDictReplayBuffer(storage=LazyTensorStorage(100)))
    logging.getLogger("torchrl").setLevel(logging.DEBUG)  # the user chose torchrl's level
    assert first_write()[0].startswith("Initialized LazyTensorStorage")
    logging.getLogger("torchrl").setLevel(logging.INFO)
    monkeypatch.setenv("RL_LOGGING_LEVEL", "INFO")
    assert first_write()[0].startswith("Initialized LazyTensorStorage")
