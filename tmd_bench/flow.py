"""Rectified-flow conventions shared by every sampler and method (Wan's, spec tmd.md §1).

``x_t = (1 − t)·x + t·x1``, t ∈ [0, 1], **t = 1 is noise**; the teacher predicts the velocity
``v ≈ E[x1 − x | x_t]`` and its x0-prediction is ``g = x_t − t·v``.
"""

from __future__ import annotations

import torch

T_MAX = 0.999  # time grids end here instead of 1, as in Wan pretraining


def shift(u: torch.Tensor | float, gamma: float) -> torch.Tensor | float:
    """Timestep shift ``t = γu / ((γ − 1)u + 1)`` (γ ≥ 1 moves mass towards noise)."""
    return gamma * u / ((gamma - 1) * u + 1)


def interpolate(x: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x_t = (1 − t)·x + t·x1`` with t broadcast over a batch ``(B,)``."""
    t = t.view(-1, *([1] * (x.ndim - 1)))
    return (1 - t) * x + t * x1


def x0_from_velocity(x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``g(x_t, t) = x_t − t·v``."""
    return x_t - t.view(-1, *([1] * (x_t.ndim - 1))) * v


def time_grid(steps: int, gamma: float, t_max: float = T_MAX) -> torch.Tensor:
    """Decreasing grid ``t_M = t_max > … > t_0 = 0`` of ``steps`` intervals: the uniform grid
    in u, shifted with γ, scaled so it starts at ``t_max``. float64, length ``steps + 1``."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return shift(u, gamma) * t_max
