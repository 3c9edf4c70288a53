"""VBench's aggregation, exactly as VBench computes it — a local calculator.

Each of the 16 dimensions is min/max-normalised with VBench's fixed constants and weighted (1,
dynamic degree 0.5); **Quality** is the weighted mean of the 7 quality dimensions, **Semantic** of
the 9 semantic ones, and **Total = (4·Quality + 1·Semantic) / 5**. Constants: VBench's
``scripts/constant.py``; procedure: its ``scripts/cal_final_score.py`` (a missing dimension
counts as a raw score of 0 there — normalised like any other, so it can go below 0 — and here only
when ``missing="zero"``). Checked against both files and
against published leaderboard rows (per-dimension scores → published Total/Quality/Semantic) in
``tests/metrics/test_vbench.py``.

Inputs are raw per-dimension scores in [0, 1] (VBench's JSON results hold them as
``{"subject_consistency": [score, per_video…]}``; :func:`from_vbench_json` reads that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

QUALITY = ("subject consistency", "background consistency", "temporal flickering", "motion smoothness",
           "aesthetic quality", "imaging quality", "dynamic degree")
SEMANTIC = ("object class", "multiple objects", "human action", "color", "spatial relationship", "scene",
            "appearance style", "temporal style", "overall consistency")
DIMENSIONS = QUALITY + SEMANTIC

WEIGHT = {d: 1.0 for d in DIMENSIONS} | {"dynamic degree": 0.5}
NORMALIZE = {  # (min, max)
    "subject consistency": (0.1462, 1.0),
    "background consistency": (0.2615, 1.0),
    "temporal flickering": (0.6293, 1.0),
    "motion smoothness": (0.706, 0.9975),
    "dynamic degree": (0.0, 1.0),
    "aesthetic quality": (0.0, 1.0),
    "imaging quality": (0.0, 1.0),
    "object class": (0.0, 1.0),
    "multiple objects": (0.0, 1.0),
    "human action": (0.0, 1.0),
    "color": (0.0, 1.0),
    "spatial relationship": (0.0, 1.0),
    "scene": (0.0, 0.8222),
    "appearance style": (0.0009, 0.2855),
    "temporal style": (0.0, 0.364),
    "overall consistency": (0.0, 0.364),
}
QUALITY_WEIGHT, SEMANTIC_WEIGHT = 4.0, 1.0


@dataclass(frozen=True)
class Aggregation:
    """Which dimensions form Quality and Semantic, their (min, max) normalisation and weights.

    :data:`VBENCH` is VBench's own; the Shapes world's (``tmd_bench.metrics.shapes.WORLD``) goes
    through the same :func:`normalised` and :func:`aggregate`.
    """

    quality: tuple[str, ...]
    semantic: tuple[str, ...]
    normalize: dict[str, tuple[float, float]]
    weight: dict[str, float] = field(default_factory=dict)  # absent: 1
    quality_weight: float = QUALITY_WEIGHT
    semantic_weight: float = SEMANTIC_WEIGHT
    name: str = "VBench"

    @property
    def dimensions(self) -> tuple[str, ...]:
        return self.quality + self.semantic

    def w(self, d: str) -> float:
        return self.weight.get(d, 1.0)


VBENCH = Aggregation(QUALITY, SEMANTIC, NORMALIZE, WEIGHT)


def _key(name: str) -> str:
    return name.replace("_", " ").strip().lower()


def normalised(scores: dict[str, float], spec: Aggregation = VBENCH) -> dict[str, float]:
    """``w_d · (s_d − min_d) / (max_d − min_d)`` for each dimension present."""
    out = {}
    for name, value in scores.items():
        d = _key(name)
        if d not in spec.normalize:
            raise ValueError(f"unknown {spec.name} dimension {str(name)[:80]!r}; expected one of "
                             f"{', '.join(spec.dimensions)}")
        check_score(d, value, spec.name)
        lo, hi = spec.normalize[d]
        out[d] = spec.w(d) * (float(value) - lo) / (hi - lo)
    return out


def check_score(dimension: str, value, name: str = "VBench") -> None:
    """A raw dimension score is a number in [0, 1]; percentages (VBench's leaderboard shows them) and NaN
    are refused, since normalising either silently gives a meaningless Total."""
    import math

    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} dimension {dimension!r}: score {str(value)[:40]!r} is not a number") from None
    if math.isnan(v) or not 0.0 <= v <= 1.0:
        hint = " — scores are fractions: divide percentages by 100" if 1.0 < v <= 100.0 else ""
        raise ValueError(f"{name} dimension {dimension!r}: score {v} is outside [0, 1]{hint}")


def aggregate(scores: dict[str, float], missing: str = "error", spec: Aggregation = VBENCH) -> dict[str, float]:
    """Quality, Semantic and Total (all in [0, 1] scale, ×100 for the leaderboard's percentages).

    ``missing="error"`` refuses an incomplete set of dimensions; ``"zero"`` gives absent ones a raw
    score of 0 and normalises it, as VBench's own script does; ``"skip"`` averages over the dimensions present (not
    comparable with published numbers — the result says so with ``complete = 0``).
    ``spec`` chooses the dimensions, constants and weights (default: VBench's).
    """
    if missing not in ("error", "zero", "skip"):
        raise ValueError(f"missing must be 'error', 'zero' or 'skip', got {missing!r}")
    norm = normalised(scores, spec)
    absent = [d for d in spec.dimensions if d not in norm]
    if absent and missing == "error":
        raise ValueError(f"missing {spec.name} dimensions: {', '.join(absent)} (pass missing='zero' or 'skip')")
    if missing == "zero":  # cal_final_score.py: an absent dimension is a *raw* 0, then normalised like the rest
        norm = normalised({**{d: 0.0 for d in absent}, **scores}, spec)

    def mean(group: tuple[str, ...]) -> float:
        dims = [d for d in group if d in norm] if missing == "skip" else list(group)
        if not dims:
            return float("nan")
        return sum(norm.get(d, 0.0) for d in dims) / sum(spec.w(d) for d in dims)

    quality, semantic = mean(spec.quality), mean(spec.semantic)
    qw, sw = spec.quality_weight, spec.semantic_weight
    total = (qw * quality + sw * semantic) / (qw + sw)
    return {"quality": quality, "semantic": semantic, "total": total, "complete": float(not absent)}


def from_vbench_json(path: str | Path) -> dict[str, float]:
    """Per-dimension scores from a VBench ``*_eval_results.json`` (``{dim: [score, details]}``)."""
    from tmd_bench.registry import read_json

    data = read_json(Path(path))  # a corrupt file, or one that is not an object, is an error naming it
    out = {}
    for k, v in data.items():
        score = v[0] if isinstance(v, list) else v
        if not isinstance(score, (int, float)):
            raise ValueError(f"{path}: dimension {k!r} has no numeric score")
        try:
            check_score(_key(k), score)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        out[_key(k)] = float(score)
    return out
