"""Experiments from configs: builders (env, hierarchy, learners, transition pipeline,
collector), checkpoints and end-of-run reports, shared by ``torchrl_hier.train`` and
``torchrl_hier.evaluate``."""

from torchrl_hier.experiment.builders import (
    COLLECTORS,
    LEGACY_LEVEL_TARGETS,
    ConfigError,
    Experiment,
    TransitionPipeline,
    build_experiment,
    build_levels,
    upgrade_config,
    episode_stats,
    make_collector,
    make_task_env,
    resolve_device,
)
from torchrl_hier.experiment.checkpoint import (
    CheckpointError,
    ResumeWarning,
    checkpoint_file,
    collection_state,
    load_checkpoint,
    restore_collection,
    restore_policy,
    restore_training,
    resume_config,
    save_checkpoint,
)
from torchrl_hier.experiment.report import plot_learning_curve, write_summary

__all__ = [
    "COLLECTORS",
    "LEGACY_LEVEL_TARGETS",
    "ConfigError",
    "Experiment",
    "TransitionPipeline",
    "build_experiment",
    "build_levels",
    "upgrade_config",
    "episode_stats",
    "make_collector",
    "make_task_env",
    "resolve_device",
    "CheckpointError",
    "ResumeWarning",
    "checkpoint_file",
    "collection_state",
    "load_checkpoint",
    "restore_collection",
    "restore_policy",
    "restore_training",
    "resume_config",
    "save_checkpoint",
    "plot_learning_curve",
    "write_summary",
]
