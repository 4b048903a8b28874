"""Bad input gets a clear error that names the level at fault and says how to fix it."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Categorical, Unbounded
from torchrl.envs import TransformedEnv
from torchrl.modules import MLP, QValueActor

from torchrl_hier import GoalReached, Hierarchy, Level, ModuleRule, Never, Timeout
from torchrl_hier.envs import GridMaze
from torchrl_hier.levels import constant_level, random_level

OBS_DIM = 4  # GridMaze: (agent_row, agent_col, goal_row, goal_col)


@pytest.fixture
def env() -> GridMaze:
    return GridMaze(batch_size=[3], max_steps=10, seed=0)


def upper(name: str = "top", out: int = 2, in_features: int = OBS_DIM, **kwargs) -> Level:
    """A level emitting an ``out``-dim float action from an MLP on its observation."""
    kwargs.setdefault("action_spec", Unbounded(out))
    net = MLP(in_features=in_features, out_features=out, num_cells=[8], device=kwargs.pop("device", None))
    return Level(name, TensorDictModule(net, in_keys=["observation"], out_keys=["action"]), **kwargs)


def lowest(name: str = "low", parent_dim: int = 2, obs_dim: int = OBS_DIM, **kwargs) -> Level:
    """A lowest level whose Q-net reads its observation and a ``parent_dim`` parent action."""
    net = MLP(in_features=obs_dim + parent_dim, out_features=4, num_cells=[8])
    policy = QValueActor(net, in_keys=["observation", "parent_action"], spec=Categorical(4))
    return Level(name, policy, **kwargs)


# --- the stack as a whole ---------------------------------------------------------------------


def test_empty_level_list(env):
    with pytest.raises(ValueError, match="at least one level.*empty list"):
        Hierarchy([], env)


def test_duplicate_level_names(env):
    with pytest.raises(ValueError, match=r"unique.*\['twin'\]"):
        Hierarchy([upper("twin"), lowest("twin")], env)


def test_non_level_in_list(env):
    with pytest.raises(TypeError, match="must be torchrl_hier.Level, got dict"):
        Hierarchy([upper(), {"name": "low"}], env)


def test_missing_observation_key(env):
    with pytest.raises(KeyError, match="no observation 'pixels'.*pass observation_key="):
        Hierarchy([upper(), lowest()], env, observation_key="pixels")


# --- action specs between levels --------------------------------------------------------------


def test_parent_action_spec_does_not_fit_child(env):
    """The top emits Unbounded(3) but the child's MLP was built for a 2-d parent action."""
    with pytest.raises(
        ValueError,
        match=r"Level 'low'.*level 'top' \(UnboundedContinuous\(shape=\(3,\).*"
        r"Make the spec of the level above match what this policy reads",
    ):
        Hierarchy([upper(out=3), lowest(parent_dim=2)], env)


def test_parent_categorical_action_into_vector_child(env):
    with pytest.raises(ValueError, match=r"Level 'low'.*level 'top' \(Categorical.*spec of the level above"):
        Hierarchy([random_level("top", Categorical(4)), lowest(parent_dim=2)], env)


def test_policy_output_differs_from_own_action_spec(env):
    with pytest.raises(
        ValueError, match=r"Level 'top'.*wrote an action of shape \(3, 2\).*gives shape \(3, 3\)"
    ):
        Hierarchy([upper(out=2, action_spec=Unbounded(3)), lowest(parent_dim=3)], env)


def test_missing_action_spec_above_lowest(env):
    with pytest.raises(ValueError, match="Level 'top' is above the lowest level, so it needs an action_spec"):
        Hierarchy([upper(action_spec=None), lowest()], env)


def test_lowest_action_spec_differs_from_env(env):
    with pytest.raises(
        ValueError, match="Level 'low' is the lowest level.*Leave action_spec=None to use the env's"
    ):
        Hierarchy([upper(), lowest(action_spec=Unbounded(2))], env)


def test_lowest_action_spec_batched_like_the_env_names_the_unbatched_spec():
    """The batched ``env.action_spec`` as the lowest level's spec: the error shows the
    per-instance spec the level needs, not the batched one (which would read as equal)."""
    env = GridMaze(batch_size=[8])
    with pytest.raises(ValueError, match=r"shape=\(8,\).*differs from the env's Categorical\(shape=\(\),.*action_spec_unbatched"):
        Hierarchy([random_level("top", Unbounded(2)), random_level("low", env.action_spec, control=Timeout(5))], env)


def test_policy_reading_a_key_no_level_gets_names_what_it_gets(env):
    low = Level("low", TensorDictModule(nn.Linear(OBS_DIM + 2, 4), ["parent"], ["action"]), control=Timeout(2))
    with pytest.raises(ValueError, match=r"It reads \['parent'\]; a level's policy gets \['observation', 'parent_action'\]"):
        Hierarchy([upper(), low], env)


def test_a_dqn_head_on_continuous_actions_says_what_fits():
    from torchrl.data import Bounded

    from torchrl_hier.levels.parts import dqn_head

    with pytest.raises(TypeError, match="discrete action spec.*got Bounded.*TD3 or SAC head"):
        dqn_head(4, Bounded(-1.0, 1.0, shape=(2,)))


def test_lowest_action_spec_with_other_number_of_actions(env):
    with pytest.raises(ValueError, match="Level 'low'"):
        Hierarchy([upper(), lowest(action_spec=Categorical(5))], env)


def test_policy_that_does_not_write_action(env):
    net = MLP(in_features=OBS_DIM, out_features=2, num_cells=[8])
    top = Level("top", TensorDictModule(net, in_keys=["observation"], out_keys=["act"]), action_spec=Unbounded(2))
    with pytest.raises(KeyError, match=r"Level 'top'.*did not write 'action'.*\['act'.*Set the policy's out_keys"):
        Hierarchy([top, lowest()], env)


# --- observation maps -------------------------------------------------------------------------


def test_obs_map_output_differs_from_obs_shape(env):
    top = upper(in_features=2, obs_map=lambda obs: obs[..., :2], obs_shape=3)
    with pytest.raises(ValueError, match=r"Level 'top'.*per-instance shape \(2,\).*obs_shape=3.*Fix the map or the declared shape"):
        Hierarchy([top, lowest()], env)


def test_negative_obs_shape_must_match_the_map(env):
    """``obs_shape=-1`` declares one entry fewer than the env observation (3), not 2."""
    top = upper(in_features=2, obs_map=lambda obs: obs[..., 2:], obs_shape=-1)
    with pytest.raises(ValueError, match=r"Level 'top'.*shape \(2,\).*obs_shape=-1 declares \(3,\)"):
        Hierarchy([top, lowest()], env)


def test_negative_obs_shape_works_when_right(env):
    """``obs_shape=-2``: the top sees only the goal half of the observation, in the passes and
    in its transitions."""
    top = upper(in_features=2, obs_map=lambda obs: obs[..., 2:], obs_shape=-2)
    low = lowest(obs_map=lambda obs: obs[..., :2], obs_shape=-2, obs_dim=2, control=Timeout(2))
    hierarchy = Hierarchy([top, low], env)
    rollout = TransformedEnv(env, hierarchy.transform).rollout(12, hierarchy.policy, break_when_any_done=False)
    transitions = hierarchy.transitions(rollout)
    assert transitions["top"]["observation"].shape[1:] == (2,)
    assert transitions["low"]["next", "observation"].shape[1:] == (2,)
    # the top's observation is the goal: constant within an episode
    torch.testing.assert_close(transitions["top"]["observation"], transitions["top"]["next", "observation"])


def test_obs_shape_without_map_must_match_env(env):
    with pytest.raises(ValueError, match=r"Level 'top'.*\(4,\).*obs_shape=3"):
        Hierarchy([upper(obs_shape=3), lowest()], env)


def test_obs_map_that_changes_batch_dims(env):
    top = upper(obs_map=lambda obs: obs[0], obs_shape=OBS_DIM)
    with pytest.raises(ValueError, match=r"Level 'top'.*changed the batch dims.*obs\[\.\.\., 2:\]"):
        Hierarchy([top, lowest()], env)


def test_obs_map_that_fails(env):
    with pytest.raises(ValueError, match=r"Level 'top': its obs_map failed.*shape \(3, 4\)"):
        Hierarchy([upper(obs_map=lambda obs: obs.reshape(7)), lowest()], env)


# --- devices ----------------------------------------------------------------------------------


def test_level_on_meta_device(env):
    with pytest.raises(ValueError, match=r"Level 'top'.*on meta.*runs on cpu.*level.policy.to\('cpu'\)"):
        Hierarchy([upper(device="meta"), lowest()], env)


def test_hierarchy_device_differs_from_levels(env):
    with pytest.raises(ValueError, match=r"Level 'top'.*on cpu.*runs on meta.*pass device='cpu'"):
        Hierarchy([upper(), lowest()], env, device="meta")


def test_level_with_buffer_on_wrong_device(env):
    top = constant_level("top", torch.zeros(2, device="meta"), action_spec=Unbounded(2))
    with pytest.raises(ValueError, match="Level 'top'.*meta"):
        Hierarchy([top, lowest()], env)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_level_in_cpu_hierarchy(env):
    with pytest.raises(ValueError, match=r"Level 'top'.*on cuda.*runs on cpu.*level.policy.to\('cpu'\)"):
        Hierarchy([upper(device="cuda"), lowest()], env)


# --- running it wrongly -----------------------------------------------------------------------


def test_policy_in_env_without_transform(env):
    hierarchy = Hierarchy([upper(), lowest()], env)
    with pytest.raises(KeyError, match=r"'hier' is not in the TensorDict.*TransformedEnv\(env, hierarchy.transform\)"):
        env.rollout(3, hierarchy.policy)


def test_transitions_of_a_batch_without_transform(env):
    hierarchy = Hierarchy([upper(), lowest()], env)
    with pytest.raises(KeyError, match="not collected in an env transformed by this hierarchy's transform"):
        hierarchy.transitions(env.rollout(3))


def test_transform_called_on_data(env):
    hierarchy = Hierarchy([upper(), lowest()], env)
    with pytest.raises(RuntimeError, match=r"TransformedEnv\(env, hierarchy.transform\).*hierarchy.transitions"):
        hierarchy.transform(env.reset())


def test_goal_reached_with_mismatched_goal(env):
    """GoalReached compares the 4-d observation with a 2-d subgoal unless told what to pick."""
    with pytest.raises(ValueError, match=r"GoalReached on level 'low'.*\(3, 4\).*\(3, 2\).*pass achieved=/goal="):
        Hierarchy([upper(), lowest(control=GoalReached(tolerance=0.1))], env)


def test_goal_reached_with_missing_key(env):
    rule = GoalReached(tolerance=0.1, achieved="position")
    with pytest.raises(ValueError, match=r"GoalReached on level 'low': key 'position'.*not in"):
        Hierarchy([upper(), lowest(control=rule)], env)


def test_module_rule_that_does_not_write_its_key(env):
    net = TensorDictModule(nn.Linear(OBS_DIM, 1), in_keys=["observation"], out_keys=["stop"])
    with pytest.raises(ValueError, match=r"ModuleRule on level 'low'.*did not write 'terminate'"):
        Hierarchy([upper(), lowest(control=ModuleRule(net))], env)


def test_level_reward_of_wrong_shape(env):
    low = lowest(reward=lambda step: torch.zeros(5))
    with pytest.raises(ValueError, match=r"Level 'low': its reward rule returned shape \(5,\).*shape \(3,\)"):
        Hierarchy([upper(), low], env)


# --- levels and rules on their own ------------------------------------------------------------


@pytest.mark.parametrize("transitions", [0, -3, 2.0, True, None])
def test_timeout_needs_positive_int(transitions):
    with pytest.raises(ValueError, match="Timeout\\(transitions\\) needs a positive int"):
        Timeout(transitions)


def test_timeout_names_what_it_counts_and_keeps_steps_as_a_deprecated_alias():
    assert repr(Timeout(4)) == "Timeout(transitions=4)"
    with pytest.warns(DeprecationWarning, match="Timeout\\(transitions=...\\)"):
        old = Timeout(steps=4)
    assert old == Timeout(transitions=4) and old.steps == 4
    with pytest.raises(TypeError, match="not both"):
        Timeout(4, steps=4)


@pytest.mark.parametrize("tolerance", [0, -0.5, float("nan")])
def test_goal_reached_needs_positive_tolerance(tolerance):
    with pytest.raises(ValueError, match="GoalReached needs a positive tolerance"):
        GoalReached(tolerance=tolerance)


@pytest.mark.parametrize("other", [lambda step: step.steps > 2, 3, None])
@pytest.mark.parametrize("compose", ["or", "and"])
def test_composing_rule_with_non_rule(other, compose):
    with pytest.raises(TypeError, match="compose only with other rules.*Wrap a callable in ModuleRule"):
        (Timeout(3) | other) if compose == "or" else (Never() & other)


def test_control_that_is_not_a_rule():
    with pytest.raises(TypeError, match=r"Level 'low': control must be a ReturnControlRule such as Timeout"):
        lowest(control=lambda step: step.steps > 2)


def test_gamma_out_of_range():
    with pytest.raises(ValueError, match=r"Level 'low': gamma must be in \[0, 1\], got 1.5"):
        lowest(gamma=1.5)


def test_policy_that_is_not_a_tensordict_module():
    with pytest.raises(TypeError, match=r"Level 'low': policy must be a TensorDictModule.*got Linear"):
        Level("low", nn.Linear(OBS_DIM, 4))


@pytest.mark.parametrize("name", ["", None])
def test_level_needs_a_name(name):
    with pytest.raises(ValueError, match="non-empty string name"):
        lowest(name=name)


def test_top_level_control_is_never_consulted_so_it_warns(env):
    with pytest.warns(UserWarning, match=r"'top' is the top level.*Timeout\(transitions=5\).*never consulted"):
        Hierarchy(
            [random_level("top", Categorical(3), control=Timeout(5)),
             random_level("low", env.action_spec_unbatched, lowest=True)],
            env,
        )


def test_gymnasium_env_is_refused_with_the_way_to_wrap_it():
    import gymnasium

    with pytest.raises(TypeError, match="GymWrapper.*torchrl_hier.layered.Hierarchy"):
        Hierarchy([random_level("low", Categorical(2), lowest=True)], gymnasium.make("CartPole-v1"))


def test_policy_of_one_hierarchy_in_the_env_of_another(env):
    two = Hierarchy(
        [random_level("top", Categorical(3)), random_level("low", env.action_spec_unbatched, lowest=True)],
        env,
    )
    three = Hierarchy(
        [random_level("a", Categorical(3)), random_level("b", Categorical(3)),
         random_level("low", env.action_spec_unbatched, lowest=True)],
        env,
    )
    td = TransformedEnv(env, three.transform).reset()
    with pytest.raises(ValueError, match=r"does not belong to this hierarchy: expected 2 levels"):
        two.policy(td)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_cuda_device_without_a_gpu_is_named(env):
    import gymnasium
    from gymnasium.vector import AutoresetMode

    from torchrl_hier.layered import RandomHierarchy

    with pytest.raises(ValueError, match="no usable CUDA GPU.*Use device='cpu'"):
        Hierarchy([random_level("low", env.action_spec_unbatched, lowest=True)], env, device="cuda")
    vec = gymnasium.vector.SyncVectorEnv(
        [lambda: gymnasium.make("CartPole-v1")], autoreset_mode=AutoresetMode.SAME_STEP
    )
    with pytest.raises(ValueError, match="no usable CUDA GPU"):
        RandomHierarchy(vec, device="cuda")


def test_top_level_policy_reading_parent_action_is_told_what_the_top_can_read(env):
    net = MLP(in_features=OBS_DIM + 2, out_features=2, num_cells=[8])
    top = Level(
        "top", TensorDictModule(net, in_keys=["observation", "parent_action"], out_keys=["action"]),
        action_spec=Unbounded(2),
    )
    with pytest.raises(ValueError, match="It is the top level: it reads only 'observation'"):
        Hierarchy([top, lowest()], env)


def test_lowest_policy_writing_actions_outside_the_env_spec(env):
    with pytest.raises(ValueError, match="on a dry run its policy wrote env actions outside"):
        Hierarchy([constant_level("low", torch.tensor(7))], env)
