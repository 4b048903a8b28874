"""TensorDict keys of the HAM state, its per-step choice events and its transitions."""

from __future__ import annotations

STATE = "ham"

#: ``("ham", "restart")`` bool ``[*B]``: the instance's episode was just reset, so the policy
#: restarts its machines from the root.
RESTART = (STATE, "restart")
#: ``("ham", "steps"|"return"|"pending")`` ``[*B, C]`` (one column per choice point):
#: env steps and discounted reward since the choice point's last choice, and whether it made
#: one in this episode (a transition is running).
STEPS = (STATE, "steps")
RETURN = (STATE, "return")
PENDING = (STATE, "pending")

# Per choice point, under ("ham", name): the last choice's joint state (carried by the
# transform) ...
OBSERVATION = "observation"
STACK = "stack"
ARGS = "args"
CHOICE = "choice"
# ... and the choices of the current step (written by the policy; "n" is also reset to 0 by
# the transform so that stale events never leak into the next step).
N = "n"
EVENT_STACK = "event_stack"
EVENT_ARGS = "event_args"
EVENT_CHOICE = "event_choice"

#: What a choice module writes (and a transition's choice is stored under).
ACTION = "action"
STEPS_TO_NEXT_OBS = "steps_to_next_obs"

RESERVED = {"restart", "steps", "return", "pending"}


def point_key(name: str, leaf: str) -> tuple[str, str, str]:
    return (STATE, name, leaf)
