"""The stock ``WanTransformer3DModel.forward`` taken apart into its stages, from public submodules.

``embed`` (patch embedding + rotary), ``condition`` (time and text embedding), ``run_blocks``
and ``output`` (modulated norm, projection, unpatchify). Composed in order they are exactly the
stock forward (tested); TMD runs blocks ``[0, L−H)`` as the backbone and ``[L−H, L)`` as the
flow head, and the DMD discriminator reads features after chosen blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tmd_bench.teachers import compute_dtype, wan_timestep


@dataclass
class Tokens:
    hidden: torch.Tensor  # (B, tokens, D)
    rotary: tuple[torch.Tensor, torch.Tensor] | torch.Tensor
    grid: tuple[int, int, int]  # tokens per (frame, height, width) after patching


@dataclass
class Condition:
    temb: torch.Tensor  # (B, D): drives the output modulation
    tproj: torch.Tensor  # (B, 6, D): drives every block's AdaLN modulation
    text: torch.Tensor  # (B, S, D): projected text for cross-attention


def embed(tr, x: torch.Tensor) -> Tokens:
    """Patch embedding and rotary embedding of a latent ``(B, C, F, H, W)``."""
    p_t, p_h, p_w = tr.config.patch_size
    _, _, f, h, w = x.shape
    rotary = tr.rope(x)
    hidden = tr.patch_embedding(x.to(tr.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2).contiguous()
    return Tokens(hidden, rotary, (f // p_t, h // p_h, w // p_w))


def patchify(tr, x: torch.Tensor) -> torch.Tensor:
    """Only the (shared) patch embedding: tokens ``(B, tokens, D)``."""
    return tr.patch_embedding(x.to(tr.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2).contiguous()


def condition(tr, t: torch.Tensor, text: torch.Tensor) -> Condition:
    """Wan's time embedding of ``1000·t`` (formed in float32, whatever the compute dtype) and its text
    projection (``text`` in the compute dtype)."""
    temb, tproj, ctx, _ = tr.condition_embedder(wan_timestep(t), text.to(compute_dtype(tr)), None)
    return Condition(temb, tproj.unflatten(1, (6, -1)), ctx)


def time_embedding(tr, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Only the time branch of ``condition``: ``temb`` of ``1000·t``."""
    ce = tr.condition_embedder
    proj = ce.timesteps_proj(wan_timestep(t))
    return ce.time_embedder(proj.to(next(ce.time_embedder.parameters()).dtype)).to(dtype)


def time_projection(tr, temb: torch.Tensor) -> torch.Tensor:
    """``temb`` → the blocks' modulation input ``(B, 6, D)``."""
    ce = tr.condition_embedder
    return ce.time_proj(ce.act_fn(temb)).unflatten(1, (6, -1))


def run_blocks(tr, blocks, hidden: torch.Tensor, cond: Condition, rotary, tproj: torch.Tensor | None = None,
               taps: dict[int, torch.Tensor] | None = None, first_index: int = 0) -> torch.Tensor:
    """Run ``blocks`` in order (gradient checkpointing when the model has it on).

    ``taps``, if given, receives the hidden state after each block, keyed by the block's index
    in the full model (``first_index`` + position)."""
    tproj = cond.tproj if tproj is None else tproj
    for i, block in enumerate(blocks):
        if torch.is_grad_enabled() and tr.gradient_checkpointing:
            hidden = tr._gradient_checkpointing_func(block, hidden, cond.text, tproj, rotary)
        else:
            hidden = block(hidden, cond.text, tproj, rotary)
        if taps is not None:
            taps[first_index + i] = hidden
    return hidden


def output(tr, hidden: torch.Tensor, temb: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Wan's output head: modulated norm, projection, unpatchify → ``(B, C, F, H, W)``."""
    shift, scale = (tr.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
    hidden = (tr.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden)
    hidden = tr.proj_out(hidden)
    b = hidden.shape[0]
    f, h, w = grid
    p_t, p_h, p_w = tr.config.patch_size
    hidden = hidden.reshape(b, f, h, w, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return hidden.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def unpatchify_features(tr, hidden: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Block features ``(B, tokens, D)`` → a feature video ``(B, D, F', H', W')`` on the token grid."""
    f, h, w = grid
    return hidden.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], f, h, w)


def forward(tr, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
            taps: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """The stock forward, stage by stage (equal to ``tr(x, 1000·t, text)``)."""
    tok = embed(tr, x)
    cond = condition(tr, t, text)
    hidden = run_blocks(tr, tr.blocks, tok.hidden, cond, tok.rotary, taps=taps)
    return output(tr, hidden, cond.temb, tok.grid)
