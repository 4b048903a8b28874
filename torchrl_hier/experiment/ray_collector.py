"""``collector=ray``: the hierarchy in TorchRL's Ray collector (``torchrl.collectors.distributed``).

Each Ray worker is a TorchRL ``Collector`` running ``hierarchy.policy`` in
``TransformedEnv(task, hierarchy.transform)``; the learners and their replay buffers stay in
the driver. After each update the trainer calls ``collector.update_policy_weights_()``, which
is TorchRL's own Ray weight sync (the policy's parameters go through Ray's object store to every
worker). By default the driver starts a local Ray cluster sized to this machine;
``collector.address=<host:port>`` (or ``auto``) attaches to a running cluster instead.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from torchrl.collectors import Collector
from torchrl.envs import EnvBase

from torchrl_hier.experiment.builders import ConfigError

__all__ = ["RayWorkerCollector", "make_ray_collector", "ray_init_config"]


class RayWorkerCollector(Collector):
    """TorchRL's ``Collector`` as a Ray worker, truthy.

    Ray tests an actor's truth when it stores the error of a failed task, and ``len()`` of an
    endless collector (the workers' ``total_frames=-1``) raises in TorchRL 0.14.1; without
    ``__bool__`` a worker whose policy or env raises dies with Ray's internal ``TypeError``
    instead of handing the user's exception to the driver.
    """

    def __bool__(self) -> bool:
        return True


def ray_init_config(ccfg: DictConfig, workers: int) -> dict[str, Any]:
    """Keyword arguments for ``ray.init``: attach to ``collector.address`` if given, else start a
    local cluster with this machine's CPUs (refusing more workers than it can run)."""
    config: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": bool(ccfg.get("log_to_driver", False)),
        "logging_level": "warning",
    }
    address = ccfg.get("address")
    if address:
        config["address"] = str(address)
        return config
    cpus = os.cpu_count() or 1
    needed = workers * float(ccfg.get("cpus_per_worker", 1))
    if needed > cpus:
        raise ConfigError(
            f"collector.num_workers={workers} x collector.cpus_per_worker="
            f"{ccfg.get('cpus_per_worker', 1)} needs {needed:g} CPUs, but this machine has {cpus}: "
            "the local Ray cluster could never start them all. Use fewer workers, a smaller "
            "collector.cpus_per_worker, or collector.address=<host:port> of a bigger cluster."
        )
    config["num_cpus"] = cpus
    return config


def make_ray_collector(
    ccfg: DictConfig,
    env_factories: list[Callable[[], EnvBase]],
    policy,
    *,
    frames_per_batch: int,
    total_frames: int,
    device,
):
    """A synchronous ``RayCollector`` with one ``Collector`` per env factory (one per worker)."""
    if importlib.util.find_spec("ray") is None:
        raise ImportError(
            "collector=ray needs Ray, which is not installed: pip install 'torchrl_hier[ray]' "
            "(the Makefile's install does)."
        )
    from torchrl.collectors.distributed import RayCollector

    if torch.device(device).type != "cpu":
        raise ConfigError(
            f"collector=ray runs on the CPU only for now (device={str(device)!r}): the workers "
            "reserve no GPU. Use device=cpu, or collector=sync / multi_sync on the GPU."
        )
    workers = len(env_factories)
    collector = RayCollector(
        env_factories,
        policy,
        frames_per_batch=frames_per_batch,
        total_frames=total_frames,
        device=device,
        sync=True,
        collector_class=RayWorkerCollector,
        collector_kwargs={"auto_register_policy_transforms": False},
        ray_init_config=ray_init_config(ccfg, workers),
        remote_configs={"num_cpus": float(ccfg.get("cpus_per_worker", 1)), "num_gpus": 0},
    )
    # Sets up TorchRL's weight sync (it is lazy) with the driver's current weights, so the first
    # batch already comes from them; the trainer calls it again after every update.
    collector.update_policy_weights_()
    return collector
