"""`tmd-bench gap`: is row A within X points of a baseline row? Answered by pairing clips.

Two rows evaluated on the same suite see the same (prompt, seed) clips, so their per-clip outcomes
are strongly correlated: the standard error of the *difference* is the standard deviation of the
per-clip differences over √n, usually far smaller than the two binomial errors combined. Runs are
pooled (e.g. one suite evaluated with ``--seed 0/1000/2000/3000``); clips are keyed by (prompt, seed),
so a clip only one side has is left out of the comparison and counted as unpaired.

All rates, differences and errors are in points: percentage points of the per-clip metric
(``all_correct`` is 1 for a correct clip, 0 otherwise).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

Z95 = 1.96


class GapError(ValueError):
    """Per-clip files that cannot be paired; the message says which and why."""


def _per_clip_dir(run: Path) -> Path:
    d = run / "per_clip"
    if not d.is_dir():
        raise GapError(f"{run}: no per_clip/ folder — is this the --out folder of `tmd-bench evaluate`?")
    return d


def _values(path: Path, df: pd.DataFrame, metric: str) -> np.ndarray:
    col = df[metric]
    if col.dtype == bool:
        return col.to_numpy(float)
    if col.dtype == object:
        mapped = col.astype(str).str.strip().str.lower().map({"true": 1.0, "false": 0.0})
        if mapped.notna().all():
            return mapped.to_numpy(float)
    values = pd.to_numeric(col, errors="coerce")
    if values.isna().any():
        line = int(np.flatnonzero(values.isna().to_numpy())[0]) + 2
        raise GapError(f"{path}:{line}: {metric} is {col.iloc[line - 2]!r}, not a number or True/False")
    return values.to_numpy(float)


def load_row(runs: list[Path], row_id: str, metric: str) -> tuple[dict[tuple[str, int], float], int]:
    """Per-clip metric of one row pooled over the runs: {(prompt, seed): value}, and how many runs held it."""
    clips: dict[tuple[str, int], float] = {}
    where: dict[tuple[str, int], Path] = {}
    found = 0
    for run in runs:
        path = _per_clip_dir(run) / f"{row_id}.csv"
        if not path.is_file():
            continue
        found += 1
        df = pd.read_csv(path)
        missing = [c for c in ("prompt", "seed", metric) if c not in df.columns]
        if missing:
            raise GapError(f"{path}: no column {', '.join(missing)}; columns: {', '.join(map(str, df.columns))}")
        for prompt, seed, v in zip(df["prompt"].astype(str), df["seed"].astype(int), _values(path, df, metric)):
            key = (prompt, int(seed))
            if key in clips:
                raise GapError(f"row {row_id}: clip (prompt {prompt!r}, seed {seed}) appears twice "
                               f"({where[key]} and {path}); pooled runs must use different --seed values")
            clips[key] = float(v)
            where[key] = path
    return clips, found


def _available(runs: list[Path]) -> list[str]:
    return sorted({p.stem for run in runs for p in _per_clip_dir(run).glob("*.csv")})


def verdict(diff: float, lo: float, within: float) -> str:
    """"yes" if the 95% lower bound of (row − baseline) is ≥ −within, "estimate only" if only the estimate is."""
    if not math.isnan(lo) and lo >= -within:
        return "yes"
    if diff >= -within:
        return "estimate only"
    return "no"


def paired_gap(runs: list[str | Path], baseline: str, rows: list[str], metric: str = "all_correct",
               within: float | None = None) -> list[dict]:
    """One dict per row: paired clips, rates, row − baseline with its paired SE and 95% interval (points)."""
    runs = [Path(r) for r in runs]
    if not runs:
        raise GapError("give at least one run folder (the --out of `tmd-bench evaluate`)")
    if not rows:
        raise GapError("give at least one row to compare with the baseline (--rows)")
    if within is not None and not within >= 0:
        raise GapError(f"--within must be ≥ 0 points, got {within}")
    for run in runs:
        _per_clip_dir(run)
    loaded = {}
    for row_id in dict.fromkeys([baseline, *rows]):
        clips, found = load_row(runs, row_id, metric)
        if not found:
            raise GapError(f"row {row_id!r} is in none of the runs; rows there: {', '.join(_available(runs))}")
        loaded[row_id] = (clips, found)
    base, _ = loaded[baseline]
    out = []
    for row_id in rows:
        clips, found = loaded[row_id]
        keys = sorted(base.keys() & clips.keys())
        if not keys:
            raise GapError(f"row {row_id!r} and baseline {baseline!r} share no (prompt, seed) clip: "
                           "were they evaluated on the same suite and --seed?")
        b = np.array([base[k] for k in keys])
        r = np.array([clips[k] for k in keys])
        d = r - b
        n = len(keys)
        se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        diff = float(d.mean())
        result = {
            "row_id": row_id, "baseline": baseline, "metric": metric, "runs": found, "paired": n,
            "baseline_rate": 100 * float(b.mean()), "row_rate": 100 * float(r.mean()),
            "diff": 100 * diff, "se": 100 * se, "lo": 100 * (diff - Z95 * se), "hi": 100 * (diff + Z95 * se),
            "unpaired_row": len(clips) - n, "unpaired_baseline": len(base) - n,
        }
        if within is not None:
            result["within"] = verdict(result["diff"], result["lo"], within)
        out.append(result)
    return out
