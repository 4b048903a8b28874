"""TorchRL's INFO lines about the library's own internals, shown only when the user asks for them.

Importing torchrl gives its ``torchrl`` logger a stdout handler at INFO (``RL_LOGGING_LEVEL``
sets the level), and each ``LazyTensorStorage`` announces its first write there
(``Initialized LazyTensorStorage with ... shape``). The replay buffers a ``LevelLearner``
makes for itself are an internal of this library, so their announcement is dropped unless
the user asked for TorchRL's INFO lines. Nothing here changes the logger's level, handlers
or anything else at import; the filter exists only during that one write.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["torchrl_info_requested", "quiet_torchrl_info"]


def torchrl_info_requested() -> bool:
    """Whether the user chose TorchRL's log level: ``RL_LOGGING_LEVEL`` is set, or the
    ``torchrl`` logger's level is no longer the INFO that torchrl gives it at import."""
    return "RL_LOGGING_LEVEL" in os.environ or logging.getLogger("torchrl").level != logging.INFO


def _below_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


@contextmanager
def quiet_torchrl_info() -> Iterator[None]:
    """Drops the ``torchrl`` logger's records below WARNING inside the block, unless
    :func:`torchrl_info_requested`; warnings and errors pass."""
    if torchrl_info_requested():
        yield
        return
    logger = logging.getLogger("torchrl")
    logger.addFilter(_below_warning)
    try:
        yield
    finally:
        logger.removeFilter(_below_warning)
