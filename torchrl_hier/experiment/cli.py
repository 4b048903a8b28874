"""Command-line help on top of Hydra: an override of an unknown key gets, besides Hydra's own
error, the list of valid keys where the path went wrong (and close matches); a config or
checkpoint error ends the command with one ``Error:`` line, the same way in every CLI."""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from omegaconf import DictConfig, OmegaConf

__all__ = ["GROUPS", "unknown_key_messages", "report_unknown_keys", "user_errors_exit"]

#: The config groups of ``torchrl_hier/conf/config.yaml``.
GROUPS = ("task", "hierarchy", "collector", "logger")


def unknown_key_messages(
    overrides: Sequence[str], config_name: str = "config", groups: Sequence[str] = GROUPS
) -> list[str]:
    """For each command-line override of a key the config does not have, a message listing
    the valid keys where it went wrong (Hydra's own error does not list them)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:
        return []  # Hydra reports malformed overrides itself
    selections, keys = [], []
    for ov in parsed:
        key = ov.key_or_group
        if key.startswith("hydra") or ov.is_add() or ov.is_force_add() or ov.is_delete():
            continue
        if key in groups:
            value = next(iter(ov.sweep_string_iterator())) if ov.is_sweep_override() else ov.value()
            selections.append(f"{key}={value}")
        else:
            keys.append(key)
    if not keys:
        return []
    fresh = not GlobalHydra.instance().is_initialized()
    try:
        if fresh:
            initialize_config_module("torchrl_hier.conf", version_base=None)
        cfg = compose(config_name, overrides=selections)
    except Exception:
        return []  # an unknown group choice: Hydra lists the choices itself
    finally:
        if fresh:
            GlobalHydra.instance().clear()
    messages = []
    for key in keys:
        node, path = cfg, []
        for part in key.split("."):
            # `in` is False for a mandatory value (???); keys() lists it.
            if isinstance(node, DictConfig) and part in node.keys():
                if OmegaConf.is_missing(node, part):
                    break
                node, path = node[part], [*path, part]
                continue
            if isinstance(node, DictConfig):
                where = ".".join(path) or "the top level"
                valid = sorted(str(k) for k in node.keys())
                close = difflib.get_close_matches(part, valid, n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                groups_hint = (
                    f" Config groups (choose with group=option): {list(groups)}."
                    if not path and groups else ""
                )
                messages.append(
                    f"Unknown config key {key!r}: {where} has no {part!r}.{hint} Valid keys at "
                    f"{where}: {valid}.{groups_hint} To add a new key use +{key}=..."
                )
            break
    return messages


def report_unknown_keys(argv: Sequence[str], config_name: str, groups: Sequence[str]) -> None:
    """Prints :func:`unknown_key_messages` of the ``key=value`` arguments to stderr."""
    args = [a for a in argv if "=" in a and not a.startswith("-")]
    for message in unknown_key_messages(args, config_name, groups):
        print(message, file=sys.stderr)


@contextmanager
def user_errors_exit(log: logging.Logger) -> Iterator[None]:
    """Ends the command on a config or checkpoint error with one ``Error: ...`` line on stderr
    (and in the run's log) and exit status 1, instead of a traceback: those errors already say
    what is wrong and how to fix it."""
    from torchrl_hier.experiment.builders import ConfigError
    from torchrl_hier.experiment.checkpoint import CheckpointError

    try:
        yield
    except (ConfigError, CheckpointError) as err:
        if logging.getLogger().handlers:  # a run log (Hydra's train.log); else print only
            log.error("Error: %s", err)
        print(f"Error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
