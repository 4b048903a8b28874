"""Hindsight relabelling rules on hand-built transitions, with exact expected values."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.envs import TransformedEnv

from torchrl_hier import Hierarchy, Timeout
from torchrl_hier.envs import GridMaze
from torchrl_hier.levels import (
    EpisodeBuffer,
    GoalReward,
    GoalSlot,
    HindsightGoals,
    LevelEpisodes,
    SubgoalSpace,
    episode_bounds,
    hindsight_actions,
    random_level,
    stream_ids,
    subgoal_learner_frame,
    subgoal_test_penalties,
    subgoal_transitions,
)

SPACE = SubgoalSpace((0,), -10.0, 10.0)  # a 1-D position in observation entry 0


def transitions(
    positions, goals, done=None, tau=None, episode=None, actions=None, terminated=None
) -> TensorDict:
    """Transitions of a goal-conditioned level on a line: observation = (x,), the goal in the
    parent action; ``positions[i]`` is x before step i, ``positions[i + 1]`` after it."""
    n = len(positions) - 1
    x = torch.tensor(positions, dtype=torch.float32)[:, None]
    goal = torch.tensor(goals, dtype=torch.float32)[:, None]
    done = torch.zeros(n, 1, dtype=torch.bool) if done is None else torch.tensor(done)[:, None]
    terminated = done.clone() if terminated is None else torch.tensor(terminated)[:, None]
    data = {
        "observation": x[:-1],
        "parent_action": goal,
        "action": torch.zeros(n, 1) if actions is None else torch.tensor(actions, dtype=torch.float32),
        "steps_to_next_obs": torch.ones(n, 1, dtype=torch.long)
        if tau is None
        else torch.tensor(tau)[:, None],
        "next": {
            "observation": x[1:],
            "parent_action": goal,
            "reward": torch.full((n, 1), -1.0),
            "done": done,
            "terminated": terminated,
            "truncated": done & ~terminated,
        },
    }
    if episode is not None:
        data["episode"] = torch.tensor(episode)
    return TensorDict(data, batch_size=[n])


# ----------------------------------------------------------------------------- episodes
def test_episode_bounds_exact_and_rejects_split_episodes():
    first, last = episode_bounds(torch.tensor([4, 4, 4, 7, 9, 9]))
    assert first.tolist() == [0, 0, 0, 3, 4, 4]
    assert last.tolist() == [2, 2, 2, 3, 5, 5]
    with pytest.raises(ValueError, match="contiguous"):
        episode_bounds(torch.tensor([1, 2, 1]))


def test_episode_buffer_groups_streams_and_waits_for_episode_ends():
    buffer = EpisodeBuffer()
    # batch 1: stream 0 steps a0,a1(done),a2 ; stream 1 steps b0,b1 -- interleaved
    tag = torch.tensor([10, 20, 11, 21, 12], dtype=torch.float32)
    streams = torch.tensor([0, 1, 0, 1, 0])
    done = torch.tensor([False, False, True, False, False])
    batch1 = TensorDict(
        {"tag": tag, "next": {"done": done[:, None]}}, batch_size=[5]
    )
    out = buffer.add(batch1, streams)
    assert out["tag"].tolist() == [10, 11]  # stream 0's first episode ended
    assert out["episode"].tolist() == [0, 0]
    assert len(buffer) == 3
    # batch 2: b2 ends stream 1's episode; a3 ends stream 0's second one
    batch2 = TensorDict(
        {
            "tag": torch.tensor([22.0, 13.0, 14.0]),
            "next": {"done": torch.tensor([[True], [True], [False]])},
        },
        batch_size=[3],
    )
    out = buffer.add(batch2, torch.tensor([1, 0, 0]))
    assert out["tag"].tolist() == [12, 13, 20, 21, 22]
    assert out["episode"].tolist() == [1, 1, 2, 2, 2]
    assert "_stream" not in out.keys() and "_order" not in out.keys()
    rest = buffer.flush()
    assert rest["tag"].tolist() == [14] and rest["episode"].tolist() == [3]
    assert len(buffer) == 0 and buffer.flush() is None


def test_episode_buffer_rejects_mismatched_streams():
    td = TensorDict({"next": {"done": torch.zeros(3, 1, dtype=torch.bool)}}, batch_size=[3])
    with pytest.raises(ValueError, match="stream ids"):
        EpisodeBuffer().add(td, torch.zeros(2, dtype=torch.long))


def test_stream_ids_follow_leading_dims():
    td = TensorDict({}, batch_size=[2, 3])
    assert stream_ids(td).tolist() == [[0, 0, 0], [1, 1, 1]]
    assert stream_ids(TensorDict({}, batch_size=[4])).tolist() == [0, 0, 0, 0]


def test_level_episodes_release_whole_episodes_across_batches():
    """Episodes released batch after batch hold exactly the transitions of episodes that ended,
    each ends with done, and its τ sum to the episode length."""
    torch.manual_seed(0)
    env = GridMaze(batch_size=[3], max_steps=7, seed=1)
    levels = [
        random_level("top", env.action_spec_unbatched),
        random_level("low", env.action_spec_unbatched, control=Timeout(3), lowest=True),
    ]
    hier = Hierarchy(levels, env)
    tenv = TransformedEnv(env, hier.transform)
    episodes = LevelEpisodes(hier)
    released = {"top": [], "low": []}
    collector = Collector(
        tenv, hier.policy, frames_per_batch=15, total_frames=60,
        auto_register_policy_transforms=False,
    )
    for batch in collector:  # 4 batches of 5 steps per env, cutting episodes anywhere
        for name, data in episodes.add(batch).items():
            released[name].append(data)
    collector.shutdown()
    lengths = {}
    for name in ("top", "low"):
        data = torch.cat(released[name])
        first, last = episode_bounds(data["episode"])
        assert data["next", "done"][last].all()
        assert data["next", "done"].sum() == torch.unique(data["episode"]).numel()
        per_episode = torch.zeros(int(data["episode"].max()) + 1, dtype=torch.long)
        per_episode.index_add_(0, data["episode"], data["steps_to_next_obs"][:, 0])
        lengths[name] = per_episode[torch.unique(data["episode"])]
    # both levels see the same episodes, and durations tile each of them
    assert torch.equal(lengths["top"], lengths["low"])
    assert lengths["low"].numel() >= 6 and (lengths["low"] <= 7).all()
    # every env step is either in a released episode or still pending (lowest level: τ = 1)
    assert int(lengths["low"].sum()) + len(episodes.buffers["low"]) == 60


# ----------------------------------------------------------------------------- HER
def goal_reward(**kwargs) -> GoalReward:
    return GoalReward(SPACE, tolerance=0.5, **kwargs)


def test_her_final_exact():
    # one episode x: 0 -> 1 -> 2 -> 3, goal 9 (never reached), ends by truncation
    td = transitions([0, 1, 2, 3], [9, 9, 9], done=[False, False, True],
                     terminated=[False, False, False], episode=[0, 0, 0])
    out = HindsightGoals(goal_reward(), strategy="final", k=1, gamma=0.9)(td)
    assert out.shape == (6,)
    assert out["parent_action"][:, 0].tolist() == [9, 9, 9, 3, 3, 3]
    assert out["next", "parent_action"][:, 0].tolist() == [9, 9, 9, 3, 3, 3]
    assert out["next", "reward"][:, 0].tolist() == [-1, -1, -1, -1, -1, 0]
    assert out["next", "terminated"][:, 0].tolist() == [False] * 5 + [True]
    assert out["next", "done"][:, 0].tolist() == [False, False, True, False, False, True]
    # observations and actions are untouched
    assert torch.equal(out["observation"], td["observation"].repeat(2, 1))


def test_her_future_draws_only_later_goals_of_the_same_episode():
    # two episodes: x 0->1->2->3 (rows 0-2) and x 5->6 (rows 3-4)
    td = torch.cat(
        [
            transitions([0, 1, 2, 3], [9, 9, 9], done=[False, False, True], episode=[0, 0, 0]),
            transitions([5, 6, 7], [9, 9], done=[False, True], episode=[1, 1]),
        ]
    )
    k = 400
    her = HindsightGoals(goal_reward(), strategy="future", k=k, gamma=0.9)
    out = her(td, generator=torch.Generator().manual_seed(0))
    goals = out["parent_action"][td.shape[0]:, 0].reshape(k, td.shape[0])
    expected = [{1, 2, 3}, {2, 3}, {3}, {6, 7}, {7}]
    for row, allowed in enumerate(expected):
        assert set(goals[:, row].tolist()) == allowed  # every later goal drawn, nothing else
    # reward 0 exactly where the relabelled goal is the transition's own end position
    own_end = td["next", "observation"][:, 0].repeat(k)
    reached = goals.reshape(-1) == own_end
    assert torch.equal(out["next", "reward"][td.shape[0]:, 0] == 0, reached)
    assert torch.equal(out["next", "terminated"][td.shape[0]:, 0], reached | td["next", "terminated"][:, 0].repeat(k))


def test_her_episode_strategy_draws_any_goal_of_the_episode():
    td = transitions([0, 1, 2, 3], [9, 9, 9], done=[False, False, True], episode=[4, 4, 4])
    her = HindsightGoals(goal_reward(), strategy="episode", k=300, gamma=0.9)
    out = her(td, generator=torch.Generator().manual_seed(1))
    goals = out["parent_action"][3:, 0].reshape(300, 3)
    for row in range(3):
        assert set(goals[:, row].tolist()) == {1, 2, 3}


def test_her_reward_of_multi_step_transitions_exact():
    # one transition of tau = 3, gamma = 0.5, from x=0 to x=2: goal 2 reached at its end,
    # goal 9 not: rewards -1 - 0.5 + 0.25 * 0 = -1.5 and -1 - 0.5 - 0.25 = -1.75
    td = transitions([0, 2], [9], tau=[3], episode=[0])
    out = HindsightGoals(goal_reward(), strategy="final", k=1, gamma=0.5)(td)
    assert out["next", "reward"][:, 0].tolist() == [-1.75, -1.5]
    custom = HindsightGoals(goal_reward(reached=1.0, not_reached=0.0), strategy="final", k=1, gamma=0.5)
    assert custom(td)["next", "reward"][:, 0].tolist() == [0.0, 0.25]


def test_her_k0_only_marks_reaching_and_keeps_truncation():
    td = transitions([0, 1, 2], [1, 5], done=[False, True], terminated=[False, False], episode=[0, 0])
    out = HindsightGoals(goal_reward(), k=0)(td)
    assert out.shape == (2,)
    assert out["next", "reward"][:, 0].tolist() == [0.0, -1.0]
    assert out["next", "terminated"][:, 0].tolist() == [True, False]
    assert out["next", "done"][:, 0].tolist() == [True, True]
    assert out["next", "truncated"][:, 0].tolist() == [False, True]
    kept = HindsightGoals(goal_reward(), k=0, terminate=False)(td)
    assert kept["next", "terminated"][:, 0].tolist() == [False, False]


def test_her_goal_in_observation():
    # observation (x, goal): the env goal lives in entry 1
    obs = torch.tensor([[0.0, 9.0], [1.0, 9.0], [2.0, 9.0]])
    td = TensorDict(
        {
            "observation": obs[:-1],
            "action": torch.zeros(2, 1),
            "steps_to_next_obs": torch.ones(2, 1, dtype=torch.long),
            "episode": torch.zeros(2, dtype=torch.long),
            "next": {
                "observation": obs[1:],
                "reward": torch.zeros(2, 1),
                "done": torch.tensor([[False], [True]]),
                "terminated": torch.zeros(2, 1, dtype=torch.bool),
                "truncated": torch.tensor([[False], [True]]),
            },
        },
        batch_size=[2],
    )
    reward = GoalReward(SPACE, 0.5, goal=GoalSlot.observation((1,)), reached=1.0, not_reached=0.0)
    out = HindsightGoals(reward, strategy="final", k=1)(td)
    assert out["observation"][:, 1].tolist() == [9, 9, 2, 2]
    assert out["next", "observation"][:, 1].tolist() == [9, 9, 2, 2]
    assert out["observation"][:, 0].tolist() == [0, 1, 0, 1]
    assert out["next", "reward"][:, 0].tolist() == [0, 0, 0, 1]


def test_her_needs_episode_ids_and_known_strategy():
    td = transitions([0, 1], [3])
    with pytest.raises(KeyError, match="'episode'"):
        HindsightGoals(goal_reward(), level="low")(td)
    with pytest.raises(ValueError, match="Level 'low'.*'futur'"):
        HindsightGoals(goal_reward(), strategy="futur", level="low")
    with pytest.raises(ValueError, match="positive goal tolerance"):
        GoalReward(SPACE, tolerance=0.0)


# ----------------------------------------------------------------------------- subgoal levels
def subgoal_transitions_td(relative: bool = False):
    """Three subgoal-level transitions on a line; actions = [absolute subgoal, test flag]."""
    space = SubgoalSpace((0,), -2.0, 2.0, relative=relative) if relative else SubgoalSpace((0,), 0.0, 10.0)
    td = transitions(
        [1, 3, 4, 8],
        [0, 0, 0],  # (no parent: the parent_action entries are unused here)
        done=[False, False, True],
        actions=[[3.0, 1.0], [6.0, 1.0], [9.0, 1.0]],
        episode=[0, 0, 0],
    )
    return space, td


def test_hindsight_actions_absolute_exact():
    space, td = subgoal_transitions_td()
    out = hindsight_actions(td, space)
    # achieved at the end of each transition: 3, 4, 8 ; the test flag is kept
    assert out["action"].tolist() == [[3.0, 1.0], [4.0, 1.0], [8.0, 1.0]]
    assert torch.equal(td["action"][:, 0], torch.tensor([3.0, 6.0, 9.0]))  # input untouched


def test_hindsight_actions_relative_clamps_to_bounds():
    space, td = subgoal_transitions_td(relative=True)
    out = hindsight_actions(td, space)
    # displacements 3-1=2, 4-3=1, 8-4=4 -> clamped to 2 -> absolute targets 3, 4, 6
    assert out["action"][:, 0].tolist() == [3.0, 4.0, 6.0]
    frame = subgoal_learner_frame(out, space)
    assert frame["action"].tolist() == [[2.0], [1.0], [2.0]]


def test_subgoal_test_penalties_exact():
    space, td = subgoal_transitions_td()
    td["action"][1, 1] = 0.0  # row 1 not tested
    # row 0: tested, subgoal 3 reached (end x=3)  -> no penalty
    # row 1: not tested, missed                    -> no penalty
    # row 2: tested, missed, but the episode ended -> no penalty
    out = subgoal_test_penalties(td, space, tolerance=0.5, penalty=-10.0)
    assert out.shape[0] == 0
    td["next", "done"][2] = False
    td["next", "terminated"][2] = False
    td["next", "truncated"][2] = False
    td["action"][0, 0] = 0.0  # row 0 now misses by 3; row 2 misses by 1
    out = subgoal_test_penalties(td, space, tolerance=0.5, penalty=-10.0)
    assert out["action"].tolist() == [[0.0, 1.0], [9.0, 1.0]]  # original subgoals kept
    assert out["next", "reward"][:, 0].tolist() == [-10.0, -10.0]
    assert out["next", "terminated"].all() and out["next", "done"].all()
    # with a looser tolerance row 2 (miss by 1) passes
    loose = subgoal_test_penalties(td, space, tolerance=1.5, penalty=-10.0)
    assert loose["action"].tolist() == [[0.0, 1.0]]


def test_subgoal_transitions_pipeline():
    space, td = subgoal_transitions_td()
    td["next", "done"][2] = False
    td["next", "terminated"][2] = False
    td["next", "truncated"][2] = False
    # HER on the parent-action goal slot (as for a goal-conditioned middle level)
    goals = HindsightGoals(goal_reward(), strategy="final", k=1, gamma=0.9)
    out = subgoal_transitions(td, space, tolerance=0.5, penalty=-7.0, goals=goals)
    # 3 hindsight-action rows + 3 relabelled + 2 failed tests (rows 1: 6 vs 4, 2: 9 vs 8)
    assert out.shape == (8,)
    assert out["action"].shape == (8, 1)  # test flag dropped
    assert out["action"][:, 0].tolist() == [3, 4, 8, 3, 4, 8, 6, 9]
    assert out["next", "reward"][-2:, 0].tolist() == [-7.0, -7.0]
    no_penalty = subgoal_transitions(td, space, tolerance=0.5, penalty=None)
    assert no_penalty.shape == (3,) and no_penalty["action"][:, 0].tolist() == [3, 4, 8]


def test_goal_reward_matches_engine_rewards_of_a_goal_conditioned_level():
    """The per-step GoalReward the engine accumulates equals HindsightGoals' recomputation."""
    from torchrl_hier.levels import goal_conditioned_level, subgoal_level

    torch.manual_seed(0)
    env = GridMaze(batch_size=[4], max_steps=15, seed=0)
    space = SubgoalSpace((0, 1), 0.0, 1.0)
    top, _ = subgoal_level("sub", 4, space)
    low, _ = goal_conditioned_level("low", 4, env.action_spec_unbatched, space, tolerance=0.05, horizon=4)
    hier = Hierarchy([top, low], env)
    with torch.no_grad():
        batch = TransformedEnv(env, hier.transform).rollout(40, hier.policy, break_when_any_done=False)
    data = LevelEpisodes(hier).add(batch)["low"]
    assert data.shape[0] > 0
    recomputed = HindsightGoals(GoalReward(space, 0.05), k=0, gamma=low.gamma, terminate=False)(data)
    assert torch.equal(recomputed["next", "reward"], data["next", "reward"])


def test_empty_inputs_pass_through():
    """The first collector batches may release no finished episode: every step copes."""
    space, td = subgoal_transitions_td()
    empty = td[:0]
    assert HindsightGoals(goal_reward(), k=3)(empty).shape == (0,)
    out = subgoal_transitions(empty, space, tolerance=0.5, penalty=-1.0,
                              goals=HindsightGoals(goal_reward(), k=2))
    assert out.shape == (0,) and out["action"].shape == (0, 1)
    assert EpisodeBuffer().add(empty, torch.zeros(0, dtype=torch.long)).shape == (0,)
