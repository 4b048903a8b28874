"""The config factory of the ready-made learners (a level's ``learner`` block in the Hydra
configs, ``_target_: torchrl_hier.learning.from_config.learner_from_config``): a
``LevelLearner`` for off-policy levels, an ``OnPolicyLearner`` for on-policy ones, with the
optimizer named in the config."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torchrl.objectives import LossModule

from torchrl_hier.errors import ConfigError
from torchrl_hier.level import Level
from torchrl_hier.learning.level_learner import LevelLearner
from torchrl_hier.learning.on_policy import OnPolicyLearner

__all__ = ["OPTIMIZERS", "LEARNER_KEYS", "ON_POLICY_LEARNER_KEYS", "learner_from_config"]

#: ``learner.optimizer`` names.
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
#: Settings of an off-policy level's learner (``LevelLearner``).
LEARNER_KEYS = (
    "lr", "batch_size", "buffer_size", "warmup", "update_ratio", "target_update", "tau",
    "period", "max_grad_norm", "optimizer", "compile",
)
#: Settings of an on-policy level's learner (``OnPolicyLearner``).
ON_POLICY_LEARNER_KEYS = (
    "lr", "batch_size", "epochs", "lmbda", "min_transitions", "max_grad_norm", "optimizer",
    "compile",
)


def learner_from_config(
    loss: LossModule,
    *,
    where: str,
    device: torch.device,
    compile_default: bool,
    on_policy: bool = False,
    level: Level | None = None,
    gamma: float | None = None,
    **settings: Any,
) -> LevelLearner:
    """The learner of ``loss`` with the config's ``settings`` (the keys of
    ``LEARNER_KEYS``, or ``ON_POLICY_LEARNER_KEYS`` when ``on_policy``), its buffers on
    ``device``. ``compile_default`` is the run's ``compile`` choice, which ``settings['compile']``
    overrides; ``where`` names the block in error messages."""
    valid = ON_POLICY_LEARNER_KEYS if on_policy else LEARNER_KEYS
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        kind = "an on-policy" if on_policy else "a"
        raise ConfigError(
            f"{where} has unknown keys {unknown} for {kind} level's learner; valid: {list(valid)}."
        )
    optimizer = settings.pop("optimizer", "adam")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"{where}.optimizer={optimizer!r}; choose one of {list(OPTIMIZERS)}.")
    compile = settings.pop("compile", None)
    compile = compile_default if compile is None else compile
    if not isinstance(compile, bool):
        raise ConfigError(f"{where}.compile={compile!r}; choose true or false.")
    lr = float(settings.pop("lr", 1e-3))
    learner = OnPolicyLearner if on_policy else LevelLearner
    return learner(
        loss, level=level, gamma=gamma, device=device, compile=compile,
        optimizer=functools.partial(OPTIMIZERS[optimizer], lr=lr), **settings,
    )
