"""Rows pooled over seed draws, the paired-gap table and the paper's claims with their verdicts.

A *draw* is one evaluation of the suite with one ``--seed`` (``tmd-bench compare --draws K`` and
``tmd-bench demo --draws K`` evaluate with ``--seed 0, 1000, …``, each draw in its own run folder).
One draw of 128 clips has a binomial standard error near ±2.7 points at 90 % all-correct, and two
rows' draws differ by more than that often; so every comparison the report states is made on the
pooled draws:

- :func:`pool_rows`: one row per ``row_id`` over the draws — each metric the mean of its draws (all
  draws have the same clip count), ``num_clips`` their sum, ``draws`` and ``seeds``; ``all_correct_se``
  the binomial standard error over the pooled clips, and ``<metric>_se`` the standard error over
  draws (std/√K) of every other quality metric (the plots' error bars are ±1.96 of it);
- :func:`gap_table`: each row against the 50-step teacher and against its matched baseline, paired
  by (prompt, seed) clip over all draws (:func:`tmd_bench.reports.paired.paired_gap`);
- :func:`claims`: each claim of the TMD paper this world can test, with its verdict from the paired
  interval and the ``tmd-bench gap`` command that reproduces it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from tmd_bench.reports.paired import GapError, clip, paired_gap

TEACHER_REFERENCE = "teacher-euler-s50"
# Columns that identify a row's configuration: equal in every draw of it, or the draws are not one row.
IDENTITY = ("method", "steps", "teacher", "suite", "dtype", "oracle_version", "inner_steps", "head_blocks",
            "solver", "guidance", "shift")
CLOSE_POINTS = 5.0  # "close to": the 95 % interval of the gap lies above −5 points


class PoolError(ValueError):
    """Draws that cannot be pooled; the message says which and why."""


def pool_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per ``row_id`` of ``df`` (rows of several runs, one draw each: :func:`load_runs`)."""
    out = []
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and c not in ("seed", "num_clips")]
    for row_id, g in df.groupby("row_id", sort=False):
        for c in IDENTITY:
            if c in g and g[c].nunique(dropna=False) > 1 and not g[c].isna().all():
                raise PoolError(f"row {clip(repr(row_id))}: its draws differ in {c} "
                                f"({clip(', '.join(map(str, g[c].unique())))}); pool runs of one configuration")
        if "seed" in g and g["seed"].duplicated().any():
            raise PoolError(f"row {clip(repr(row_id))}: two runs used --seed {int(g['seed'][g['seed'].duplicated()].iloc[0])}; "
                            "draws must use different seeds")
        first = g.iloc[0].to_dict()
        k = len(g)
        row = dict(first)
        for c in numeric:
            vals = pd.to_numeric(g[c], errors="coerce")
            row[c] = float(vals.mean()) if vals.notna().any() else math.nan
            if k > 1 and not c.endswith("_se") and vals.notna().sum() > 1 and _is_quality(c):
                row[f"{c}_se"] = float(vals.std(ddof=1) / math.sqrt(vals.notna().sum()))
        n = int(pd.to_numeric(g.get("num_clips", pd.Series([0] * k)), errors="coerce").fillna(0).sum())
        row["num_clips"] = n
        row["draws"] = k
        row["seeds"] = ",".join(str(int(s)) for s in sorted(g["seed"])) if "seed" in g else ""
        row["seed"] = int(min(g["seed"])) if "seed" in g else first.get("seed")
        if "all_correct" in g and n:
            p = row["all_correct"]
            row["all_correct_se"] = math.sqrt(max(p * (1 - p), 0.0) / n)  # binomial, over the pooled clips
        row["run"] = "pooled" if k > 1 else first["run"]
        out.append(row)
    return pd.DataFrame(out)


def _is_quality(column: str) -> bool:
    return (column.startswith(("acc_", "vb_", "div_", "world_", "vbench_")) or column in (
        "all_correct", "subject_consistency", "background_consistency", "temporal_flicker", "motion_smoothness",
        "dynamic_degree", "imaging_quality", "sharpness", "subject_presence", "clip_score", "psnr_teacher",
        "ssim_teacher", "fd_clip_teacher", "fd_real", "fd_real_floor", "shapes_clip_score"))


_TMD = re.compile(r"^tmd-M(?P<m>\d+)-N(?P<n>\d+)H(?P<h>\d+)(?P<tag>-.+)?$")
_STEPS = re.compile(r"^(?P<method>[a-z0-9]+(?:-[a-z]+)?)-s(?P<m>\d+)(?P<tag>-.+)?$")


def split_tag(row_id: str) -> tuple[str, str]:
    """``("tmd-M2-N2H2", "-novel")`` from ``"tmd-M2-N2H2-novel"``; the tag is empty for plain rows."""
    m = _TMD.match(row_id) or _STEPS.match(row_id)
    tag = (m.group("tag") or "") if m else ""
    return row_id[: len(row_id) - len(tag)], tag


SUITE_TAGS = ("-novel",)  # a tag naming another prompt suite; other tags name a variant of the row (-tmmf, -nokd)


def matched_baseline(row_id: str, available: set[str]) -> str | None:
    """The row a method is compared with at equal outer steps M: DMD2-v at M steps for TMD (M outer
    steps), rCM, KD and MeanFlow; TMD stage 1 alone against the stage 2 trained from it (``-tmmf``, or the
    plain row where stage 2 started from stage 1); a suite tag (``-novel``) kept, a variant's dropped."""
    base, tag = split_tag(row_id)
    cand = None
    if tag == "-stage1":
        return next((c for c in (base + "-tmmf", base) if c in available), None)
    if (m := _TMD.match(base)) is not None:
        cand = f"dmd2-s{m.group('m')}"
    elif (m := _STEPS.match(base)) is not None and m.group("method") in ("rcm", "kd", "meanflow"):
        cand = f"dmd2-s{m.group('m')}"
    if cand is None:
        return None
    cand += tag if tag in SUITE_TAGS else ""
    return cand if cand in available and cand != row_id else None


def gap_table(runs: list[str | Path], rows: list[str]) -> list[dict]:
    """Each row against the 50-step teacher (of its suite) and against its matched baseline, paired by
    (prompt, seed) clip over every draw; points of all-correct. Rows without per-clip records are left out."""
    available = set(rows)
    out = []
    for row_id in rows:
        _, tag = split_tag(row_id)
        ref = TEACHER_REFERENCE + (tag if tag in SUITE_TAGS else "")  # a variant is compared on its own suite
        for kind, baseline in (("vs teacher 50 steps", ref), ("vs matched baseline", matched_baseline(row_id, available))):
            if baseline is None or baseline == row_id or baseline not in available:
                continue
            try:
                (g,) = paired_gap(runs, baseline, [row_id])
            except GapError:
                continue  # e.g. a row without per-clip records (no Shapes metrics)
            out.append({"comparison": kind, **g})
    return out


# Diversity measures compared with the teacher's (per prompt, paired by prompt and its K seeds): what each
# says, and which way is "more diverse" (the energy distance to the world's spread falls as diversity recovers)
DIVERSITY_METRICS = (
    ("div_pairwise", "1 − mean pairwise cosine of Shapes-CLIP features", "higher"),
    ("div_vendi", "Vendi score: effective number of distinct clips of K", "higher"),
    ("div_world_coverage", "latent cells reached, ÷ what K world renders reach", "higher"),
    ("div_world_energy", "energy distance of start/speed to the world's renders", "lower"),
)


def diversity_table(runs: list[str | Path], rows: list[str]) -> list[dict]:
    """Each row with per-prompt diversity records (``evaluate --metrics diversity``) against the 50-step
    teacher of its suite, for every measure of :data:`DIVERSITY_METRICS`: row − teacher paired by (prompt,
    its K seeds) over every draw, in the measure's units. A student that collapsed onto one sample per
    prompt shows it here even when every clip is correct."""
    runs = [Path(r) for r in runs]
    available = set(rows)
    out = []
    for row_id in rows:
        _, tag = split_tag(row_id)
        ref = TEACHER_REFERENCE + (tag if tag in SUITE_TAGS else "")
        if ref not in available or ref == row_id:
            continue
        for metric, meaning, better in DIVERSITY_METRICS:
            try:
                (g,) = paired_gap(runs, ref, [row_id], metric=metric)
            except GapError:
                continue  # no per-prompt records (diversity not measured), the measure not in them, or none paired
            out.append({**g, "meaning": meaning, "better": better})
    return out


def fmt_measure(rec: dict) -> str:
    """``−0.012 ± 0.004 [−0.020, −0.004]``: a diversity gap in the measure's units."""
    return f"{rec['diff']:+.3f} ± {rec['se']:.3f} [{rec['lo']:+.3f}, {rec['hi']:+.3f}]"


# The TMD paper's claims this world can test: (claim, row, baseline, kind). kind "≥": row at least as good
# as the baseline; "close": row within CLOSE_POINTS of it.
CLAIMS = (
    ("TMD ≥ DMD2-v at matched effective NFE (2 = 2)", "tmd-M2-N1H2", "dmd2-s2", "≥"),
    ("TMD ≥ DMD2-v at matched M (TMD 2.5 effective NFE, DMD2-v 2)", "tmd-M2-N2H2", "dmd2-s2", "≥"),
    ("TMD ≥ DMD2-v at M = 1 (1.25 vs 1 effective NFE; TMD 3,000 iterations, DMD2-v 1,000)", "tmd-M1-N2H2",
     "dmd2-s1", "≥"),
    ("TMD ≥ DMD2-v at M = 1, both trained 3× longer (3,000 iterations), as the paper does", "tmd-M1-N2H2",
     "dmd2-s1-x3", "≥"),
    ("TMD with a one-block head ≥ DMD2-v (2.25 vs 2 effective NFE)", "tmd-M2-N2H1", "dmd2-s2", "≥"),
    ("TMD ≥ DMD2-v at 3 steps (3.5 vs 3 effective NFE)", "tmd-M2-N4H2", "dmd2-s3", "≥"),
    ("TMD ≥ DMD2-v at 4 steps (3.5 vs 4 effective NFE)", "tmd-M2-N4H2", "dmd2-s4", "≥"),
    ("TMD ≥ rCM at matched effective NFE (2 = 2)", "tmd-M2-N1H2", "rcm-s2", "≥"),
    ("TMD ≥ rCM at M = 1 (1.25 vs 1)", "tmd-M1-N2H2", "rcm-s1", "≥"),
    ("N = 4 ≥ N = 2 at inference (an N = 2 student)", "tmd-M2-N4H2", "tmd-M2-N2H2", "≥"),
    ("M = 1 close to M = 2 (within 5 points)", "tmd-M1-N2H2", "tmd-M2-N2H2", "close"),
    ("stage 2 (DMD2-v through the head's rollout) ≥ stage 1 alone", "tmd-M2-N2H2-tmmf", "tmd-M2-N2H2-stage1", "≥"),
    ("the two-stage recipe (TM-MF stage 1, then stage 2) ≥ stage 2 from the teacher", "tmd-M2-N2H2-tmmf",
     "tmd-M2-N2H2", "≥"),
    ("TMD ≥ DMD2-v on unseen colour–shape pairs (shapes-novel)", "tmd-M2-N2H2-novel", "dmd2-s2-novel", "≥"),
    ("TMD M1 ≥ DMD2-v one-step without its KD warm-up (fair M = 1; 3,000 vs 1,000 iterations)", "tmd-M1-N2H2",
     "dmd2-s1-nokd", "≥"),
    # the ablations (README "Stage 1, ablated"): rows of `tmd-bench curves` over the ablation run folders, so
    # these claims get a verdict in the report of those folders (each arm at the same 300 stage-2 iterations)
    ("TM-MF stage 1 ≥ plain TM stage 1 (stage 2 from each)", "tmd-M2-N2H2-guided-stage2-it300",
     "tmd-M2-N2H2-plain-tm-stage2-it300", "≥"),
    ("rollout through the head ≥ no rollout in stage 2 (both from the teacher)", "tmd-M2-N2H2-teacher-stage2-it300",
     "tmd-M2-N2H2-no-rollout-stage2-it300", "≥"),
)
ABLATION_COMMAND = ("tmd-bench curves runs/ablation/{guided,teacher,plain-tm,no-rollout}/stage2 --draws 8 "
                    "(README, \"Stage 1, ablated\")")


def verdict(kind: str, lo: float, hi: float) -> str:
    """From the paired 95 % interval of row − baseline (points)."""
    if math.isnan(lo) or math.isnan(hi):
        return "not tested"
    if kind == "close":
        return "reproduced" if lo >= -CLOSE_POINTS else ("not reproduced" if hi < -CLOSE_POINTS else "undecided")
    return "reproduced" if lo > 0 else ("not reproduced" if hi < 0 else "tie")


def claims(runs: list[str | Path], rows: list[str]) -> list[dict]:
    """One record per claim: the rows, the paired gap and its verdict, and the command behind it."""
    available = set(rows)
    folders = " ".join(str(r) for r in runs)
    out = []
    for text, row, base, kind in CLAIMS:
        rec = {"claim": text, "row": row, "baseline": base, "kind": kind}
        if row in available and base in available:
            try:
                (g,) = paired_gap(runs, base, [row])
            except GapError as e:
                rec.update(verdict="not tested", why=str(e))
            else:
                rec.update({k: g[k] for k in ("paired", "row_rate", "baseline_rate", "diff", "se", "lo", "hi")},
                           verdict=verdict(kind, g["lo"], g["hi"]),
                           command=f"tmd-bench gap {folders} --baseline {base} --rows {row}")
        else:
            missing = [r for r in (row, base) if r not in available]
            why = f"row(s) {', '.join(missing)} not evaluated"
            if "-stage2-it" in row:
                why += f": an ablation, {ABLATION_COMMAND}"
            rec.update(verdict="not tested", why=why)
        out.append(rec)
    return out


def fmt_gap(rec: dict) -> str:
    """``−0.8 ± 0.8 [−2.4, +0.8]`` (points; ± one paired standard error, then the 95 % interval)."""
    if "diff" not in rec or rec["diff"] is None or (isinstance(rec["diff"], float) and np.isnan(rec["diff"])):
        return ""
    return f"{rec['diff']:+.1f} ± {rec['se']:.1f} [{rec['lo']:+.1f}, {rec['hi']:+.1f}]"
