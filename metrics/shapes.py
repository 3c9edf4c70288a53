"""Shapes-world metrics: exact prompt adherence from the oracle, and VBench-style quality analogues.

Semantic (adherence): per-attribute accuracy ``acc_<attribute>`` and ``all_correct``, the
fraction of clips whose every named attribute the oracle reads back.

Quality analogues (each in [0, 1], higher is better; named after the VBench dimension they stand in for):

- ``subject_consistency``: the object's appearance is stable: ``1 − std/mean`` of its coverage
  mass over frames;
- ``background_consistency``: the background is one flat colour: ``1 − 2·mean|p − b|`` over
  background pixels;
- ``temporal_flicker``: the static background does not flicker: ``1 − 4·mean|f_{k+1} − f_k|``
  over pixels that are background in both frames (VBench's (255 − mean|Δ|)/255, sharpened so
  differences show at this scale);
- ``motion_smoothness``: the object moves at constant velocity: ``1 − RMS residual / 2 px`` of
  the centroid track from its straight-line fit;
- ``dynamic_degree``: the fraction of clips asked to move whose objects do move (≥ 2 px);
- ``imaging_quality``: pixels are clean blends of the background and the object colour (no noise,
  no off-palette colour): ``1 − 4·mean distance`` from each pixel to that segment in RGB;
- ``sharpness``: crisp, not smeared objects: the coverage-weighted mean coverage ``Σα²/Σα``
  (≈ 0.9 for clean renders; a regression student's blur of several modes lowers it).

**World Total / Quality / Semantic** (``world_total``, ``world_quality``, ``world_semantic``):
VBench's aggregation, through the same code (:func:`tmd_bench.metrics.vbench.aggregate` with
:data:`WORLD`): Quality is the weighted mean of the six quality analogues above (VBench's
subject consistency, background consistency, temporal flickering, motion smoothness, imaging
quality; dynamic degree weighs ½ as in VBench; VBench's aesthetic quality has no analogue here
and is left out, not zeroed), Semantic the mean of the oracle's six attribute accuracies
(``acc_colour`` ↔ color, ``acc_shape`` ↔ object class, ``acc_count`` ↔ multiple objects,
``acc_background`` ↔ scene, ``acc_motion`` ↔ the prompted motion of human action / temporal
style, ``acc_size`` ↔ attribute binding, no VBench dimension), Total = (4·Quality + Semantic)/5.
Normalisation is the identity (min 0, max 1) for every world dimension: VBench's constants are
the empirical ranges of real videos' scores and mean nothing for these analogues, which are
already defined on [0, 1] with 1 = a clean render. ``sharpness`` (≈ 0.9 on clean renders) and
``all_correct`` (the conjunction of the accuracies) stay out. A dimension that is NaN (dynamic
degree when no prompt asks for motion) is left out of its group's mean.
"""

from __future__ import annotations

import numpy as np
import torch
from tmd_bench.metrics import oracle, vbench

from tmd_bench import world

QUALITY = ("subject_consistency", "background_consistency", "temporal_flicker", "motion_smoothness",
           "dynamic_degree", "imaging_quality", "sharpness")
SEMANTIC = tuple(f"acc_{a}" for a in world.ATTRIBUTES) + ("all_correct",)
IMPLEMENTATION = f"tmd_bench.metrics.shapes (analytic oracle version {oracle.VERSION}: template-fit shape, blur-robust count; no weights)"

WORLD_QUALITY = ("subject_consistency", "background_consistency", "temporal_flicker", "motion_smoothness",
                 "dynamic_degree", "imaging_quality")
WORLD_SEMANTIC = tuple(f"acc_{a}" for a in world.ATTRIBUTES)
WORLD = vbench.Aggregation(
    quality=tuple(vbench._key(d) for d in WORLD_QUALITY), semantic=tuple(vbench._key(d) for d in WORLD_SEMANTIC),
    normalize={vbench._key(d): (0.0, 1.0) for d in WORLD_QUALITY + WORLD_SEMANTIC},
    weight={"dynamic degree": 0.5}, name="Shapes-world")


def world_scores(agg: dict[str, float]) -> dict[str, float]:
    """``world_quality``, ``world_semantic``, ``world_total`` from a row's Shapes metrics (VBench's
    aggregation with :data:`WORLD`; NaN dimensions are left out of their group)."""
    scores = {d: agg[d] for d in WORLD_QUALITY + WORLD_SEMANTIC if d in agg and not np.isnan(agg[d])}
    out = vbench.aggregate(scores, missing="skip", spec=WORLD)
    return {f"world_{k}": float(out[k]) for k in ("quality", "semantic", "total")}


def _clip01(v: float) -> float:
    return float(min(max(v, 0.0), 1.0))


def clip_quality(r: oracle.Reading, clip: torch.Tensor) -> dict[str, float]:
    """Quality analogues of one clip from the oracle's reading (NaN where undefined)."""
    x = ((clip.detach().float().cpu().numpy() + 1) / 2).clip(0, 1).transpose(1, 2, 3, 0)  # F,H,W,3
    a = r.alpha
    out: dict[str, float] = {}
    areas = r.areas
    out["subject_consistency"] = _clip01(1 - areas.std() / areas.mean()) if areas.mean() > 1 else 0.0
    bg = a < 0.05
    out["background_consistency"] = _clip01(1 - 2 * np.abs(x[bg] - r.background_rgb).mean()) if bg.any() else 0.0
    both = bg[1:] & bg[:-1]
    out["temporal_flicker"] = _clip01(1 - 4 * np.abs(x[1:] - x[:-1])[both].mean()) if both.any() else 0.0
    ok = np.isfinite(r.centroids).all(1) & (areas > oracle.MIN_AREA / 2)
    if ok.sum() >= 3:
        t = np.arange(len(areas))[ok]
        res = [r.centroids[ok, k] - np.polyval(np.polyfit(t, r.centroids[ok, k], 1), t) for k in range(2)]
        out["motion_smoothness"] = _clip01(1 - np.sqrt(np.mean(np.square(res))) / 2.0)
    else:
        out["motion_smoothness"] = 0.0
    seg = r.object_rgb - r.background_rgb
    lam = ((x - r.background_rgb) @ seg / max(float(seg @ seg), 1e-6)).clip(0, 1)
    dist = np.linalg.norm(x - (r.background_rgb + lam[..., None] * seg), axis=-1)
    out["imaging_quality"] = _clip01(1 - 4 * dist.mean())
    out["sharpness"] = float((a**2).sum() / a.sum()) if a.sum() > 1 else 0.0
    return out


def evaluate_clips(videos: torch.Tensor, prompts: list[str]) -> tuple[dict[str, float], list[dict]]:
    """Score clips ``(B, 3, F, H, W)`` against their Shapes prompts.

    Returns the aggregate metrics and one record per clip (prompt, read attributes, per-clip scores).
    """
    if len(videos) != len(prompts):
        raise ValueError(f"{len(videos)} clips for {len(prompts)} prompts")
    per_clip = []
    for clip, prompt in zip(videos, prompts):
        scene = world.Scene.parse(prompt)
        r = oracle.read(clip)
        match = r.matches(scene)
        q = clip_quality(r, clip)
        moving = scene.motion != "still"
        q["dynamic_degree"] = float(np.abs(r.displacement).max() >= oracle.STILL_THRESHOLD) if moving else float("nan")
        per_clip.append({"prompt": prompt, "read": r.attributes, "correct": match,
                         "all_correct": all(match.values()), **q})
    agg = {f"acc_{a}": float(np.mean([c["correct"][a] for c in per_clip])) for a in world.ATTRIBUTES}
    agg["all_correct"] = float(np.mean([c["all_correct"] for c in per_clip]))
    # binomial standard error of the rate: what a difference between two rows has to beat
    agg["all_correct_se"] = float(np.sqrt(agg["all_correct"] * (1 - agg["all_correct"]) / len(per_clip)))
    for k in QUALITY:
        vals = [c[k] for c in per_clip if not np.isnan(c[k])]
        agg[k] = float(np.mean(vals)) if vals else float("nan")
    return agg, per_clip
