"""The error of a config value that cannot work (shared by the config builders and the level
families' factories, so that the CLIs report it as one ``Error:`` line)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config value that cannot work; the message names the config key and how to fix it."""
