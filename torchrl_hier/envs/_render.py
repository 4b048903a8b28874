"""Small tensor helpers that draw maze frames as ``HxWx3`` uint8 images (``rgb_array``)."""

from __future__ import annotations

import numpy as np
import torch

WALL = (60, 60, 70)
FREE = (235, 235, 235)
GOAL = (60, 180, 75)
AGENT = (220, 50, 50)


def check_index(index: int, batch_size: torch.Size) -> int:
    """A flat instance index into ``batch_size``, with a clear error when out of range."""
    n = batch_size.numel()
    if not -n <= index < n:
        raise IndexError(f"render(index={index}) is out of range for {n} env instances.")
    return index % n


def layout_image(walls: torch.Tensor, px: int) -> torch.Tensor:
    """The wall mask scaled up by ``px`` pixels per cell, as a float ``[H, W, 3]`` image."""
    if px < 1:
        raise ValueError(f"pixels per cell must be a positive int, got {px}.")
    mask = walls.repeat_interleave(px, 0).repeat_interleave(px, 1)
    wall = torch.tensor(WALL, dtype=torch.float32, device=walls.device)
    free = torch.tensor(FREE, dtype=torch.float32, device=walls.device)
    return torch.where(mask[..., None], wall, free)


def paint_disk(
    image: torch.Tensor, center: torch.Tensor, radius: float, px: int, color: tuple[int, int, int]
) -> torch.Tensor:
    """Paints a disk at ``center`` = (x, y) in cell units (x along columns, y along rows)."""
    rows, cols = image.shape[:2]
    y = (torch.arange(rows, device=image.device, dtype=torch.float32) + 0.5) / px
    x = (torch.arange(cols, device=image.device, dtype=torch.float32) + 0.5) / px
    inside = (x[None, :] - center[0]) ** 2 + (y[:, None] - center[1]) ** 2 <= radius**2
    paint = torch.tensor(color, dtype=torch.float32, device=image.device)
    return torch.where(inside[..., None], paint, image)


def paint_cell(
    image: torch.Tensor, cell: torch.Tensor, px: int, color: tuple[int, int, int], margin: int = 0
) -> torch.Tensor:
    """Paints grid cell ``(row, col)`` (with ``margin`` pixels left unpainted on each side)."""
    r, c = (int(v) for v in cell.tolist())
    image = image.clone()
    image[r * px + margin : (r + 1) * px - margin, c * px + margin : (c + 1) * px - margin] = (
        torch.tensor(color, dtype=torch.float32, device=image.device)
    )
    return image


def to_numpy(image: torch.Tensor) -> np.ndarray:
    return image.clamp(0, 255).to(torch.uint8).cpu().numpy()
