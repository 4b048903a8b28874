"""Counter-based random draws for the built-in tasks: the same numbers on every device.

torch's generators give different streams on cpu and cuda for one seed, so a task drawing its
starts and goals from a generator on its own device has different episodes per device. Here
each draw is a hash (the splitmix64 finaliser) of ``(seed, instance index, that instance's
episode count, draw index)``, computed with int64 tensor ops that every device performs
alike: wrapping adds and multiplies (two's complement, the low 64 bits of the product), xors,
and logical right shifts written as an arithmetic shift plus a mask.

So a draw needs no host sync and no loop over instances; an instance's episodes depend
neither on the device nor on the batch size or the other instances' resets; and the whole
state is two integer buffers (the seed and the per-instance episode counters), which
``env.to(device)`` moves and ``env.state_dict()`` saves.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["EpisodeDraws", "splitmix64", "to_int64", "uniform"]

_MASK64 = (1 << 64) - 1


def to_int64(value: int) -> int:
    """``value`` modulo 2**64, as the signed int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = to_int64(0x9E3779B97F4A7C15)
_MUL1 = to_int64(0xBF58476D1CE4E5B9)
_MUL2 = to_int64(0x94D049BB133111EB)


def _shift_right(z: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic: it copies the sign)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(z: Tensor) -> Tensor:
    """splitmix64's output function on int64 tensors: ``z + golden``, then the finaliser
    (Steele, Lea & Flood 2014), bit for bit the unsigned 64-bit algorithm."""
    z = z + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MUL1
    z = (z ^ _shift_right(z, 27)) * _MUL2
    return z ^ _shift_right(z, 31)


def uniform(words: Tensor) -> Tensor:
    """float32 in ``[0, 1)`` from non-negative 63-bit words: their top 24 bits times 2**-24,
    exact in float32, so equal on every device."""
    return (words >> 39).to(torch.float32) * 2.0**-24


class EpisodeDraws(nn.Module):
    """``n_words`` random words per env instance for each episode start (a reset).

    Word ``j`` of instance ``b`` at its ``e``-th reset is
    ``splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ b) ^ e) ^ j)`` shifted right by one
    bit (non-negative, 63 random bits): use ``word % n`` for an index below ``n`` (bias below
    ``n / 2**63``) and :func:`uniform` for a float. Only the instances that are reset advance
    their episode count.
    """

    def __init__(
        self, n_instances: int, n_words: int, seed: int | None = None,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        if n_instances < 1 or n_words < 1:
            raise ValueError(
                f"EpisodeDraws needs n_instances >= 1 and n_words >= 1, got {n_instances} and "
                f"{n_words}."
            )
        self.register_buffer("seed", torch.zeros((), dtype=torch.int64, device=device))
        self.register_buffer("episodes", torch.zeros(n_instances, dtype=torch.int64, device=device))
        self.register_buffer("instances", torch.arange(n_instances, device=device))
        self.register_buffer("word_index", torch.arange(n_words, device=device))
        self.manual_seed(seed)

    def manual_seed(self, seed: int | None) -> None:
        """Restarts the draws from ``seed`` (``None``: 0; any int, taken modulo 2**64): every
        instance's episode count goes back to 0."""
        self.seed.fill_(to_int64(0 if seed is None else int(seed)))
        self.episodes.zero_()

    def step_words(self, steps: Tensor, n_words: int) -> Tensor:
        """``n_words`` random words ``[n_instances, n_words]`` for step ``steps`` (int64, one
        per instance) of each instance's running episode (the one its last reset started):
        a hash of ``(seed, instance, episode count, step, word index)``, in a stream apart from
        the reset draws (the episode count enters bit-complemented, a negative number that no
        reset's key uses). Advances nothing: the same step of the same episode gives the same
        words, so an env whose state is saved mid-episode continues with the same draws."""
        key = splitmix64(splitmix64(splitmix64(self.seed) ^ self.instances) ^ ~self.episodes)
        key = splitmix64(key ^ steps.reshape(-1).to(torch.int64))
        index = torch.arange(n_words, device=key.device)
        return _shift_right(splitmix64(key[:, None] ^ index), 1)

    def forward(self, reset: Tensor) -> Tensor:
        """The words ``[n_instances, n_words]`` of every instance's next episode; the
        instances where the bool ``reset`` (any shape with ``n_instances`` elements) is True
        advance their episode count."""
        key = splitmix64(splitmix64(splitmix64(self.seed) ^ self.instances) ^ self.episodes)
        words = _shift_right(splitmix64(key[:, None] ^ self.word_index), 1)
        self.episodes.add_(reset.reshape(-1).to(torch.int64))
        return words
