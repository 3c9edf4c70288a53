"""VBench-style quality dimensions computable offline from a CLIP image encoder and pixels.

Named as VBench names them; where VBench's own model is unavailable offline the substitute is
named in :data:`IMPLEMENTATIONS` (and so in every run card):

- ``background_consistency``: CLIP image features (as VBench): per frame k ≥ 2,
  ½·(max(cos(f_1, f_k), 0) + max(cos(f_{k−1}, f_k), 0)), averaged. (VBench's subject consistency
  is the same formula on DINO features; it is not computed until DINO weights can be loaded.)
- ``temporal_flickering``: ``(255 − mean|frame_{k+1} − frame_k|) / 255`` on 8-bit frames (VBench
  applies it to static prompts; so should the reader).
- ``motion_smoothness``: VBench interpolates the odd frames with AMT; substitute: the linear
  interpolation ``(frame_{k−1} + frame_{k+1}) / 2`` of each interior frame,
  ``(255 − mean|interp − frame|) / 255``.
- ``dynamic_degree``: VBench thresholds RAFT optical flow; substitute: a clip is dynamic when the
  mean of the top 5% absolute consecutive-frame differences exceeds 6/255.

Columns carry a ``vb_`` prefix so they never mix with the Shapes world's analogues.
The VBench aggregation over these (Quality only; the semantic dimensions need VBench itself)
uses :mod:`tmd_bench.metrics.vbench`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMPLEMENTATIONS = {
    "background_consistency": "CLIP image features (as VBench)",
    "temporal_flickering": "pixel differences (as VBench)",
    "motion_smoothness": "linear frame interpolation (substitute for VBench's AMT)",
    "dynamic_degree": "top-5% frame difference > 6/255 (substitute for VBench's RAFT flow)",
}
DYNAMIC_THRESHOLD = 6 / 255


def feature_consistency(feats: torch.Tensor) -> torch.Tensor:
    """``(B, F, D)`` normalised features → per-clip VBench consistency ``(B,)``."""
    if feats.shape[1] < 2:
        return torch.ones(feats.shape[0])
    first, prev, cur = feats[:, :1], feats[:, :-1], feats[:, 1:]
    sim_first = (first * cur).sum(-1).clamp_min(0)
    sim_prev = (prev * cur).sum(-1).clamp_min(0)
    return ((sim_first + sim_prev) / 2).mean(1)


def _frames01(videos: torch.Tensor) -> torch.Tensor:
    """``(B, 3, F, H, W)`` in [−1, 1] → 8-bit-quantised frames in [0, 1], ``(B, F, 3, H, W)``."""
    return (((videos.float() + 1) / 2).clamp(0, 1) * 255).round().div(255).permute(0, 2, 1, 3, 4)


def temporal_flickering(videos: torch.Tensor) -> torch.Tensor:
    x = _frames01(videos)
    return 1 - (x[:, 1:] - x[:, :-1]).abs().flatten(1).mean(1)


def motion_smoothness(videos: torch.Tensor) -> torch.Tensor:
    x = _frames01(videos)
    if x.shape[1] < 3:
        return torch.ones(x.shape[0])
    interp = (x[:, :-2] + x[:, 2:]) / 2
    return 1 - (interp - x[:, 1:-1]).abs().flatten(1).mean(1)


def dynamic_degree(videos: torch.Tensor) -> torch.Tensor:
    x = _frames01(videos)
    diff = (x[:, 1:] - x[:, :-1]).abs().flatten(1)
    k = max(1, int(0.05 * diff.shape[1]))
    return (diff.topk(k, dim=1).values.mean(1) > DYNAMIC_THRESHOLD).float()


def vbench_lite(videos: torch.Tensor, scorer) -> dict[str, float]:
    """The four dimensions, averaged over clips, in VBench's [0, 1] units (``vb_`` columns)."""
    feats = scorer.frame_features(videos).cpu()
    return {
        "vb_background_consistency": float(feature_consistency(F.normalize(feats, dim=-1)).mean()),
        "vb_temporal_flickering": float(temporal_flickering(videos).mean()),
        "vb_motion_smoothness": float(motion_smoothness(videos).mean()),
        "vb_dynamic_degree": float(dynamic_degree(videos).mean()),
    }
