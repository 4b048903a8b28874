"""torchrl_hier's multi-process collectors raise a worker's error in the main process.

TorchRL's own ``MultiSyncCollector`` reports a worker that raised while collecting only as
``RuntimeError: At least one process failed``; here the main process gets the user's exception
with the traceback of the machine or rule that raised it. The machines, rules and env
factories are module-level so that the workers unpickle them by reference.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import traceback

import pytest
import torch
from tensordict.nn import TensorDictModule
from torch import Tensor
from torchrl.data import Categorical
from torchrl.envs import TransformedEnv

from torchrl_hier import Hierarchy, Level, ReturnControlRule
from torchrl_hier.collectors import MultiSyncCollector, WorkerError
from torchrl_hier.control import LevelStep
from torchrl_hier.envs import GridMaze
from torchrl_hier.ham import HAM
from torchrl_hier.ham.taxi import make_taxi_env


class ParcelLost(Exception):
    """A user's error, raised by machine code."""


TAXI_HAM = HAM(make_taxi_env(1))


@TAXI_HAM.functional_machine
def drive_then_lose_the_parcel(ham, args):
    for _ in range(3):
        yield ham.ACTION(0)
    raise ParcelLost("the parcel fell out of the taxi")


TAXI_HAM.set_root(drive_then_lose_the_parcel)


def make_taxi() -> TransformedEnv:
    return TransformedEnv(make_taxi_env(2, seed=0), TAXI_HAM.transform)


def collect(collector: MultiSyncCollector) -> None:
    try:
        for _ in collector:
            pass
    finally:
        collector.shutdown()


def test_machine_error_in_a_worker_reaches_the_main_process():
    collector = MultiSyncCollector(
        [make_taxi, make_taxi], TAXI_HAM.make_policy(), frames_per_batch=20, total_frames=40,
        auto_register_policy_transforms=False,
    )
    with pytest.raises(ParcelLost, match="the parcel fell out of the taxi") as info:
        collect(collector)
    text = "".join(traceback.format_exception(info.value))
    assert "MultiSyncCollector worker 0" in text
    assert 'raise ParcelLost("the parcel fell out of the taxi")' in text  # the machine's line
    assert "in drive_then_lose_the_parcel" in text
    assert "raised in HAM machine 'drive_then_lose_the_parcel'" in text


class RuleBroken(Exception):
    """A user's error, raised by a return-control rule; it takes two arguments, so it does
    not unpickle and reaches the main process as a WorkerError naming it."""

    def __init__(self, level: str, count: int):
        super().__init__(f"level {level} broke at transition {count}")


class BreaksAtFive(ReturnControlRule):
    """Keeps control until the level's 5th transition since it took control, then raises."""

    def __call__(self, step: LevelStep) -> Tensor:
        if bool((step.count >= 5).any()):
            raise RuleBroken(step.name, 5)
        return torch.zeros_like(step.count, dtype=torch.bool)


def pick_option(observation: Tensor) -> Tensor:
    return (observation[..., 0] > 0).long()


def move_along(observation: Tensor, option: Tensor) -> Tensor:
    return option + 1


def _levels() -> list[Level]:
    top = Level(
        "top", TensorDictModule(pick_option, ["observation"], ["action"]), action_spec=Categorical(2)
    )
    low = Level(
        "low", TensorDictModule(move_along, ["observation", "parent_action"], ["action"]),
        action_spec=Categorical(4), control=BreaksAtFive(),
    )
    return [top, low]


LEVEL_STACK = Hierarchy(_levels(), GridMaze(batch_size=[2], max_steps=20, seed=0))


def make_maze() -> TransformedEnv:
    return TransformedEnv(GridMaze(batch_size=[2], max_steps=20, seed=0), LEVEL_STACK.transform)


def test_rule_error_in_a_worker_reaches_the_main_process():
    collector = MultiSyncCollector(
        [make_maze], LEVEL_STACK.policy, frames_per_batch=20, total_frames=40,
        auto_register_policy_transforms=False,
    )
    with pytest.raises(WorkerError, match=r"test_collectors\.RuleBroken: level low broke") as info:
        collect(collector)
    assert "raise RuleBroken(step.name, 5)" in str(info.value)  # the rule's line


EXITING_SCRIPT = textwrap.dedent(
    """
    import torch
    from torchrl.envs import TransformedEnv
    from torchrl_hier import Hierarchy, Timeout
    from torchrl_hier.collectors import MultiSyncCollector
    from torchrl_hier.envs import GridMaze
    from torchrl_hier.levels import random_level
    from torchrl.data import Categorical


    def hierarchy(env):
        return Hierarchy(
            [random_level("top", Categorical(4)),
             random_level("low", env.action_spec_unbatched, Timeout(3), lowest=True)],
            env,
        )


    def make_env():
        env = GridMaze(batch_size=[4], seed=0)
        return TransformedEnv(env, hierarchy(env).transform)


    if __name__ == "__main__":
        torch.set_num_threads(1)
        policy = hierarchy(GridMaze(batch_size=[4])).policy
        collector = MultiSyncCollector([make_env, make_env], policy, frames_per_batch=200,
                                       total_frames=400, auto_register_policy_transforms=False)
        for batch in collector:
            pass
        collector.shutdown()
        print("shut down")
    """
)


@pytest.mark.slow  # spawns worker processes (~10-30 s)
def test_a_script_exits_after_shutting_the_collector_down(tmp_path):
    """TorchRL 0.14.1's weight-sync schemes, left to their ``__del__``, hung the exiting
    interpreter of a script like this one (after its last line ran)."""
    script = tmp_path / "collect.py"
    script.write_text(EXITING_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "shut down" in result.stdout, result.stderr[-2000:]
