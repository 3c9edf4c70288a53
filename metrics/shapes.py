"""Shapes-world metrics: exact prompt adherence from the oracle, and VBench-style quality analogues.

Semantic (adherence): per-attribute accuracy ``acc_<attribute>`` and ``all_correct``, the
fraction of clips whose every named attribute the oracle (version 3, :mod:`tmd_bench.metrics.oracle`)
reads back. The oracle reads every object on its own; an ambiguous or out-of-range reading is wrong.

Quality analogues (version 3; each in [0, 1], higher is better, ≈ 1 on clean renders; named after
the VBench dimension they stand in for). They are computed on what the oracle found: *object
candidates* per frame (components of coverage α > 0.5 with ≥ 4 px, each owning the pixels within
2 px nearer to it than to another) and *objects* (candidates linked over the frames in which the
clip's count holds). **A frame with no object candidate scores 0 in every per-frame dimension, and a
clip with no object scores 0 in every per-object one: an empty (all-background) clip scores 0
throughout** — nothing was generated, and it must not outscore any attempt.

- ``subject_consistency`` (per object): VBench's formula on the object instead of the frame:
  over the object's frames f₁ < … < f_m, ``½(ρ(d_j, d_{j−1}) + ρ(d_j, d_1))`` clamped ≥ 0 for
  j ≥ 2, summed and divided by F − 1 (a frame where the object is missing adds 0); ``d`` is the
  object's appearance — its region's RGB difference from the background, resampled (bilinear,
  17×17 px) around its α-centroid, so translation does not count — and ρ Pearson's correlation.
  Mean over objects; no object → 0. Uniform noise: its blobs' appearances are uncorrelated → ≈ 0;
- ``background_consistency`` (per frame): the background is one flat colour: ``1 − 2·mean|p − b|``
  over the frame's background pixels (α < 0.05), ``b`` the measured background colour;
- ``temporal_flicker`` (per pair of consecutive frames): the static background does not flicker:
  ``1 − 4·mean|f_{k+1} − f_k|`` over pixels that are background in both frames (VBench's
  (255 − mean|Δ|)/255, sharpened so differences show at this scale);
- ``motion_smoothness`` (per object): constant velocity: ``1 − RMS residual / 2 px`` of its
  centroid track from a straight-line fit, times the fraction of frames it is found in (< 3
  frames → 0); mean over objects;
- ``dynamic_degree``: for prompts that ask for motion, the fraction of the clip's objects that move
  ≥ 2 px over the clip (no object → 0); NaN for "standing still" prompts;
- ``imaging_quality`` (per frame): no noise, no off-palette colour: ``1 − 4·mean distance`` from
  each pixel to the nearest blend segment ``b → c`` of the object colours the candidates have
  (measured colours, RGB in [0, 1]);
- ``sharpness`` (per object): crisp, not smeared: ``1 / (1 + σ̂²)`` per frame, σ̂ (px) the Gaussian
  blur of the template that fits the object best (the oracle's template fit, σ refined between the
  grid points); mean over the object's frames, times the fraction of frames it is found in; mean
  over objects. 1 for a clean render of any shape and size, ½ for a σ = 1 px blur, ≈ 0.3 for
  σ = 2 px (a regression student's average of several modes is such a blur);
- ``subject_presence`` (reported, not aggregated): the fraction of frames with an object candidate.

Per-frame dimensions are averaged over all F frames (or F − 1 pairs), the zeros of empty frames
included. On the 128 renders of ``shapes-eval`` world_quality is 0.998 clean, 0.918 blurred with
σ = 1 px, 0.882 with σ = 2 px, 0.130 for uniform noise and 0 for empty clips (v2 of these
analogues: 0.997, –, 0.980, 0.415, 0.545); ``tests/metrics/test_world_scores.py`` checks the ranking
clean > blurred > noise > empty in aggregate and clip by clip.

**World Total / Quality / Semantic** (``world_total``, ``world_quality``, ``world_semantic``):
VBench's aggregation, through the same code (:func:`tmd_bench.metrics.vbench.aggregate` with
:data:`WORLD`): Quality is the weighted mean of the seven quality analogues above — VBench's subject
consistency, background consistency, temporal flickering, motion smoothness, imaging quality and
dynamic degree (weight ½ as in VBench), and ``sharpness`` in the seventh place, where VBench has
aesthetic quality (no analogue here) — Semantic the mean of the oracle's six attribute accuracies
(``acc_colour`` ↔ color, ``acc_shape`` ↔ object class, ``acc_count`` ↔ multiple objects,
``acc_background`` ↔ scene, ``acc_motion`` ↔ the prompted motion of human action / temporal
style, ``acc_size`` ↔ attribute binding, no VBench dimension), Total = (4·Quality + Semantic)/5.
Normalisation is the identity (min 0, max 1) for every world dimension: VBench's constants are
the empirical ranges of real videos' scores and mean nothing for these analogues, which are
already defined on [0, 1] with 1 = a clean render. ``all_correct`` (the conjunction of the
accuracies) and ``subject_presence`` stay out. A dimension that is NaN (dynamic degree when no
prompt asks for motion) is left out of its group's mean. Changed in version 3: ``sharpness``
(now ``1/(1 + σ̂²)``, 1 on clean renders; before, the raw ``Σα²/Σα`` ≈ 0.9) joined the Quality
group, so Quality is a mean over seven dimensions (weights sum 6.5) instead of six (5.5); the
mechanism (:class:`~tmd_bench.metrics.vbench.Aggregation`, identity normalisation, weights, 4:1
Total) is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from tmd_bench.metrics import oracle, vbench

from tmd_bench import world

QUALITY = ("subject_consistency", "background_consistency", "temporal_flicker", "motion_smoothness",
           "dynamic_degree", "imaging_quality", "sharpness", "subject_presence")
SEMANTIC = tuple(f"acc_{a}" for a in world.ATTRIBUTES) + ("all_correct",)
QUALITY_VERSION = 3
def implementation(oracle_version: int = 3) -> str:
    """What the run card records for the Shapes metrics read with oracle ``oracle_version``."""
    reader = ("analytic oracle v3: every object read on its own, ambiguous or out-of-range readings wrong"
              if oracle_version == 3 else "analytic oracle v2: template-fit shape, blur-robust count")
    return (f"tmd_bench.metrics.shapes (attributes: {reader}; quality analogues v{QUALITY_VERSION} on oracle v3's "
            "object tracks: empty frames score 0, sharpness in Quality; no weights)")


IMPLEMENTATION = implementation()

WORLD_QUALITY = ("subject_consistency", "background_consistency", "temporal_flicker", "motion_smoothness",
                 "dynamic_degree", "imaging_quality", "sharpness")
WORLD_SEMANTIC = tuple(f"acc_{a}" for a in world.ATTRIBUTES)
WORLD = vbench.Aggregation(
    quality=tuple(vbench._key(d) for d in WORLD_QUALITY), semantic=tuple(vbench._key(d) for d in WORLD_SEMANTIC),
    normalize={vbench._key(d): (0.0, 1.0) for d in WORLD_QUALITY + WORLD_SEMANTIC},
    weight={"dynamic degree": 0.5}, name="Shapes-world")
BACKGROUND_ALPHA = 0.05  # coverage below which a pixel is background for the background dimensions
PATCH_RADIUS = 8  # subject-consistency descriptor: (2·8 + 1)² px around the object's centroid


def world_scores(agg: dict[str, float]) -> dict[str, float]:
    """``world_quality``, ``world_semantic``, ``world_total`` from a row's Shapes metrics (VBench's
    aggregation with :data:`WORLD`; NaN dimensions are left out of their group)."""
    scores = {d: agg[d] for d in WORLD_QUALITY + WORLD_SEMANTIC if d in agg and not np.isnan(agg[d])}
    out = vbench.aggregate(scores, missing="skip", spec=WORLD)
    return {f"world_{k}": float(out[k]) for k in ("quality", "semantic", "total")}


def _clip01(v: float) -> float:
    return float(min(max(v, 0.0), 1.0))


def _patch(img: np.ndarray, cx: float, cy: float, radius: int = PATCH_RADIUS) -> np.ndarray:
    """Bilinear samples of ``img`` (H, W, C) on a (2r+1)² grid centred on (cx, cy) (pixel centres
    at i + 0.5; zero outside the frame), flattened."""
    h, w = img.shape[:2]
    off = np.arange(-radius, radius + 1, dtype=np.float64)
    gy, gx = np.meshgrid(cy - 0.5 + off, cx - 0.5 + off, indexing="ij")
    y0, x0 = np.floor(gy).astype(int), np.floor(gx).astype(int)
    fy, fx = (gy - y0)[..., None], (gx - x0)[..., None]
    pad = np.pad(img, ((1, 1), (1, 1), (0, 0)))

    def at(yy, xx):
        yy, xx = yy + 1, xx + 1
        ok = (yy >= 0) & (yy < h + 2) & (xx >= 0) & (xx < w + 2)
        out = np.zeros(yy.shape + img.shape[2:])
        out[ok] = pad[yy[ok], xx[ok]]
        return out

    v = (at(y0, x0) * (1 - fy) * (1 - fx) + at(y0, x0 + 1) * (1 - fy) * fx
         + at(y0 + 1, x0) * fy * (1 - fx) + at(y0 + 1, x0 + 1) * fy * fx)
    return v.ravel()


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b) / den if den > 1e-12 else 0.0


def _object_consistency(o: oracle.ObjectTrack, x: np.ndarray, b: np.ndarray, n_frames: int) -> float:
    if n_frames < 2:
        return 0.0
    d = [_patch((x[bl.frame] - b) * bl.region[..., None], *bl.centroid) for bl in o.blobs]
    s = sum(max(0.0, 0.5 * (_rho(d[j], d[j - 1]) + _rho(d[j], d[0]))) for j in range(1, len(d)))
    return _clip01(s / (n_frames - 1))


def _object_smoothness(o: oracle.ObjectTrack, n_frames: int) -> float:
    if len(o.blobs) < 3:
        return 0.0
    t, c = o.frames.astype(np.float64), o.centroids
    res = [c[:, k] - np.polyval(np.polyfit(t, c[:, k], 1), t) for k in range(2)]
    return _clip01(1 - np.sqrt(np.mean(np.square(res))) / 2.0) * len(o.blobs) / n_frames


def _segment_distance(x: np.ndarray, b: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Distance of each pixel (…, 3) to the nearest segment b → c over ``colours`` (K, 3)."""
    d = colours - b
    v = x - b
    lam = np.clip(v @ d.T / np.maximum((d**2).sum(-1), 1e-6), 0, 1)  # (…, K)
    return np.linalg.norm(v[..., None, :] - lam[..., None] * d, axis=-1).min(-1)


def clip_quality(r: oracle.Reading, clip: torch.Tensor, moving: bool | None = None) -> dict[str, float]:
    """Quality analogues of one clip from the oracle's reading (definitions: module docstring).

    ``moving``: whether the prompt asks for motion (``dynamic_degree``; NaN when None or False)."""
    x = ((clip.detach().double().cpu().numpy() + 1) / 2).clip(0, 1).transpose(1, 2, 3, 0)  # F,H,W,3
    n_frames = x.shape[0]
    a, b = r.alpha, r.background_rgb
    present = r.present
    objects = r.objects
    out: dict[str, float] = {"subject_presence": float(present.mean())}
    per_object = (lambda f: float(np.mean([f(o) for o in objects])) if objects else 0.0)
    out["subject_consistency"] = per_object(lambda o: _object_consistency(o, x, b, n_frames))

    bg = a < BACKGROUND_ALPHA
    frame_bg = [_clip01(1 - 2 * np.abs(x[f][bg[f]] - b).mean()) if present[f] and bg[f].any() else 0.0
                for f in range(n_frames)]
    out["background_consistency"] = float(np.mean(frame_bg))
    pairs = []
    for f in range(n_frames - 1):
        both = bg[f] & bg[f + 1]
        ok = present[f] and present[f + 1] and both.any()
        pairs.append(_clip01(1 - 4 * np.abs(x[f + 1] - x[f])[both].mean()) if ok else 0.0)
    out["temporal_flicker"] = float(np.mean(pairs)) if pairs else 0.0
    out["motion_smoothness"] = per_object(lambda o: _object_smoothness(o, n_frames))
    moved = [float(np.hypot(*o.velocity) * (n_frames - 1) >= oracle.STILL_THRESHOLD) for o in objects]
    out["dynamic_degree"] = (float(np.mean(moved)) if moved else 0.0) if moving else float("nan")

    labels = sorted({bl.colour for fb in r.blobs for bl in fb if bl.colour is not None})
    cols = r.colours_rgb[labels] if labels else r.object_rgb[None]
    dist = _segment_distance(x, b, cols)  # F, H, W
    out["imaging_quality"] = float(np.mean([_clip01(1 - 4 * dist[f].mean()) if present[f] else 0.0
                                            for f in range(n_frames)]))
    out["sharpness"] = per_object(lambda o: float(np.mean([_clip01(bl.sharpness) for bl in o.blobs]))
                                  * len(o.blobs) / n_frames)
    return out


DEFAULT_ORACLE = 3  # version 2 stays available (--oracle 2) to re-read runs made before it
ORACLE_VERSIONS = (2, 3)


def evaluate_clips(videos: torch.Tensor, prompts: list[str],
                   oracle_version: int = DEFAULT_ORACLE) -> tuple[dict[str, float], list[dict]]:
    """Score clips ``(B, 3, F, H, W)`` against their Shapes prompts.

    Attributes (``acc_*``, ``all_correct``) are read by the oracle ``oracle_version`` (3, the default:
    every object on its own, ambiguity is wrong; 2: the earlier reader); the quality analogues always use
    version 3's object tracks. Returns the aggregate metrics and one record per clip."""
    if len(videos) != len(prompts):
        raise ValueError(f"{len(videos)} clips for {len(prompts)} prompts")
    if oracle_version not in ORACLE_VERSIONS:
        raise ValueError(f"--oracle must be one of {', '.join(map(str, ORACLE_VERSIONS))}, got {oracle_version}")
    per_clip = []
    for clip, prompt in zip(videos, prompts):
        scene = world.Scene.parse(prompt)
        r = oracle.read(clip)
        if oracle_version == 2:
            from tmd_bench.metrics import oracle_v2

            reading = oracle_v2.read(clip)
            match, attributes = reading.matches(scene), reading.attributes
        else:
            match, attributes = r.matches(scene), r.attributes
        q = clip_quality(r, clip, moving=scene.motion != "still")
        per_clip.append({"prompt": prompt, "read": attributes, "correct": match,
                         "all_correct": all(match.values()), **q})
    agg = {f"acc_{a}": float(np.mean([c["correct"][a] for c in per_clip])) for a in world.ATTRIBUTES}
    agg["all_correct"] = float(np.mean([c["all_correct"] for c in per_clip]))
    # binomial standard error of the rate: what a difference between two rows has to beat
    agg["all_correct_se"] = float(np.sqrt(agg["all_correct"] * (1 - agg["all_correct"]) / len(per_clip)))
    for k in QUALITY:
        vals = [c[k] for c in per_clip if not np.isnan(c[k])]
        agg[k] = float(np.mean(vals)) if vals else float("nan")
    return agg, per_clip
