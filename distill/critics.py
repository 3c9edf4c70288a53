"""The DMD2-v critics shared by TMD stage 2 and the DMD2-v / rCM baselines (spec tmd.md §8).

- :class:`FakeScore`: the teacher's architecture, initialised from it, trained by denoising score
  matching on the student's samples; x0-parametrised ``g_F(x_t, t) = x_t − t·v_F(x_t, t)``.
- :class:`Discriminator`: small Conv3D heads on unpatchified *teacher* features after a few
  blocks (1.3B: 15, 22, 29; 14B: 19, 29, 39), one logit map per head.
- :func:`teacher_x0` and :func:`teacher_features`: the frozen teacher's CFG x0-prediction and its
  block features (differentiable w.r.t. the input, for the generator's GAN term).
"""

from __future__ import annotations

import copy

import torch
from tmd_bench.distill import wan_parts as wp
from tmd_bench.distill.tmd import seeded_init
from torch import nn

from tmd_bench import flow

# Paper's discriminator taps (0-based block indices) per teacher depth.
DISCRIMINATOR_BLOCKS = {30: (15, 22, 29), 40: (19, 29, 39)}


def discriminator_blocks(num_blocks: int) -> tuple[int, ...]:
    """The paper's taps for Wan depths; elsewhere the same relative depths (½, ¾, last)."""
    return DISCRIMINATOR_BLOCKS.get(num_blocks, (num_blocks // 2, (3 * num_blocks) // 4, num_blocks - 1))


class FakeScore(nn.Module):
    """A trainable copy of the teacher transformer, used as an x0-predictor."""

    def __init__(self, teacher_transformer: nn.Module):
        super().__init__()
        self.transformer = copy.deepcopy(teacher_transformer).train().requires_grad_(True)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        v = wp.forward(self.transformer, x_t, t, text)
        return flow.x0_from_velocity(x_t, t, v)


@torch.no_grad()
def teacher_x0(teacher, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, negative: torch.Tensor,
               guidance: float) -> torch.Tensor:
    """``g_T = g(c_neg) + w·(g(c) − g(c_neg))`` with ``g = x_t − t·v`` (one batched pass). A two-expert
    teacher (Wan2.2 A14B) scores each row with the expert that owns its timestep, at that expert's
    scale (``Teacher.guidance_for``: ``guidance`` for the high-noise expert)."""
    parts = _route(teacher, t)
    if len(parts) > 1:
        from tmd_bench.teachers import combine_rows

        return combine_rows(x_t.shape[0], [
            (rows, used, _teacher_x0(tr, x_t[rows], t[rows], text[rows], negative, _scale(teacher, t[rows], guidance)))
            for tr, rows, used in parts])
    return _teacher_x0(parts[0][0], x_t, t, text, negative, _scale(teacher, t, guidance))


def _route(teacher, t: torch.Tensor):
    return teacher.route(t) if getattr(teacher, "transformer_2", None) is not None else [(teacher.transformer, None, True)]


def _scale(teacher, t: torch.Tensor, guidance: float) -> float:
    if getattr(teacher, "transformer_2", None) is None:
        return guidance
    w = teacher.guidance_for(t, guidance)
    return float(w) if not isinstance(w, torch.Tensor) else float(w[0])  # rows of one expert share it


def _teacher_x0(tr, x_t, t, text, negative, guidance: float) -> torch.Tensor:
    if guidance == 1.0:
        return flow.x0_from_velocity(x_t, t, wp.forward(tr, x_t, t, text))
    neg = negative.expand(x_t.shape[0], -1, -1)
    v_u, v_c = wp.forward(tr, torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([neg, text])).chunk(2)
    return flow.x0_from_velocity(x_t, t, v_u + guidance * (v_c - v_u))


def teacher_features(teacher, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                     blocks: tuple[int, ...]) -> list[torch.Tensor]:
    """Teacher hidden states after ``blocks`` as feature videos ``(B, D, F', H', W')``.

    Runs only as many blocks as the deepest tap. Differentiable w.r.t. ``x_t`` (the teacher's
    own parameters are frozen). A two-expert teacher gives each row the features of the expert that
    owns its timestep."""
    parts = _route(teacher, t)
    if len(parts) > 1:
        from tmd_bench.teachers import combine_rows

        feats = [(rows, used, _features(tr, x_t[rows], t[rows], text[rows], blocks)) for tr, rows, used in parts]
        return [combine_rows(x_t.shape[0], [(rows, used, f[k]) for rows, used, f in feats]) for k in range(len(blocks))]
    return _features(parts[0][0], x_t, t, text, blocks)


def _features(tr, x_t, t, text, blocks):
    tok = wp.embed(tr, x_t)
    cond = wp.condition(tr, t, text)
    taps: dict[int, torch.Tensor] = {}
    wp.run_blocks(tr, tr.blocks[: max(blocks) + 1], tok.hidden, cond, tok.rotary, taps=taps)
    return [wp.unpatchify_features(tr, taps[b], tok.grid) for b in blocks]


class Discriminator(nn.Module):
    """One Conv3D head per tapped block: conv → GroupNorm → SiLU → conv → 1-channel logit map."""

    def __init__(self, dim: int, num_heads: int, hidden: int | None = None, seed: int = 0):
        """``seed``: the run's seed; the heads are initialised from it (:func:`seeded_init`), never
        from the global RNG."""
        super().__init__()
        hidden = hidden or max(dim // 2, 8)
        groups = 8 if hidden % 8 == 0 else 1
        with seeded_init(seed, "discriminator"):
            self.heads = nn.ModuleList(
                nn.Sequential(
                    nn.Conv3d(dim, hidden, kernel_size=3, padding=1),
                    nn.GroupNorm(groups, hidden),
                    nn.SiLU(),
                    nn.Conv3d(hidden, hidden, kernel_size=3, padding=1),
                    nn.GroupNorm(groups, hidden),
                    nn.SiLU(),
                    nn.Conv3d(hidden, 1, kernel_size=1),
                )
                for _ in range(num_heads)
            )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.heads):
            raise ValueError(f"discriminator has {len(self.heads)} heads, got {len(features)} feature maps")
        return [head(f.float() if head[0].weight.dtype == torch.float32 else f).flatten(1)
                for head, f in zip(self.heads, features)]
