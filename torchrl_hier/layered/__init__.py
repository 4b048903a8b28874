"""The LayeredRL API (``Hierarchy``, ``RandomHierarchy``, ``Collector``) on the torchrl_hier engine.

Users coming from LayeredRL keep their loop::

    from torchrl_hier.layered import Hierarchy, RandomHierarchy, Collector

    hierarchy = Hierarchy(levels=[level0, level1], env=env,
                          env_obs_maps=[hide_something, None], mapped_env_obs_shapes=[-2, None],
                          learners={"low": LevelLearner(loss, level=level1)})

Levels are :class:`torchrl_hier.Level` s (a ``TensorDictModule`` policy reading
``"observation"`` / ``"parent_action"`` and writing ``"action"``, plus a return-control rule);
learners are :class:`torchrl_hier.learning.LevelLearner` s. The per-instance hierarchy state is
the engine's ``"hier"`` TensorDict, advanced by the same forward/backward passes that
``torchrl_hier.Hierarchy.policy`` and ``.transform`` run inside TorchRL collectors, so both ways
of driving a hierarchy produce the same transitions.

The manual loop of the LayeredRL docs runs as written, with ONE difference: **gymnasium 1.x
reports the last observation of an episode as** ``info["final_obs"]`` **(mask**
``info["_final_obs"]``**), not** ``info["final_observation"]``, and only in the vector env's
``SAME_STEP`` autoreset mode (``gymnasium.vector.AutoresetMode.SAME_STEP``; the default
``NEXT_STEP`` mode returns the reset observation one step later, with reward 0, and is not
supported). The loop must hand that final observation to ``process_transition``; with the old
key the ``if`` never fires and the hierarchy silently learns from reset observations.
Two things the docs' loop leaves implicit are needed as in LayeredRL itself: ``reset()`` once
at the start of the session (LayeredRL's API reference asks for it; here ``get_action`` raises
without it) and ``obs = obs_next`` at the end of each iteration (without it the loop still
runs, but acts on the first observation forever)::

    env = gymnasium.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync",
                             vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
    hierarchy.train()
    obs, info = env.reset(seed=seed)
    hierarchy.reset()                       # LayeredRL: "call this at the beginning"
    for _ in range(n_vec_steps):
        with torch.no_grad():
            action = hierarchy.get_action(obs)
        action = action.cpu().numpy()
        obs_next, reward, terminated, truncated, info = env.step(action)
        if "_final_obs" in info:            # LayeredRL docs: "_final_observation"
            obs_next_transition = obs_next.copy()
            for i, env_final_obs in enumerate(info["final_obs"]):
                if env_final_obs is not None:
                    obs_next_transition[i] = env_final_obs
        else:
            obs_next_transition = obs_next
        hierarchy.process_transition(obs_next=obs_next_transition, rew=reward,
                                     terminated=terminated, truncated=truncated)
        hierarchy.learn()
        obs = obs_next                      # (implicit in the LayeredRL docs)

:class:`Collector` does this for you (vectorised), also for TorchRL envs and for gymnasium's
``DISABLED`` autoreset mode, and raises on ``NEXT_STEP``. Unlike LayeredRL's,
``process_transition`` returns each
level's completed transitions (a mapping ``{level name: TensorDict}``, as
``torchrl_hier.Hierarchy.transitions`` gives them), so a loop can inspect or route them itself;
a level's transitions are extracted only when read (by its learner or by the loop).
``learn()`` also anneals each learning level's exploration (``EGreedyModule``,
``AdditiveGaussianModule``) by the transitions that level completed since the last call, so the
docs' loop pasted as written explores less as it learns, each level on its own clock.
"""

from torchrl_hier.layered.collector import Collector
from torchrl_hier.layered.hierarchy import Hierarchy, RandomHierarchy

__all__ = ["Collector", "Hierarchy", "RandomHierarchy"]
