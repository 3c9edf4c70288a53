"""`tmd-bench gap`: is row A within X points of a baseline row? Answered by pairing clips.

Two rows evaluated on the same suite see the same (prompt, seed) clips, so their per-clip outcomes
are strongly correlated: the standard error of the *difference* is the standard deviation of the
per-clip differences over √n, usually far smaller than the two binomial errors combined. Runs are
pooled (e.g. one suite evaluated with ``--seed 0/1000/2000/3000``); clips are keyed by (prompt, seed),
so a clip only one side has is left out of the comparison and counted as unpaired.

All rates, differences and errors are in points: percentage points of the per-clip metric
(``all_correct`` is 1 for a correct clip, 0 otherwise).

Diversity (``div_*``) is a property of a prompt's K clips, not of one clip: those metrics are read from
``per_prompt/<row>.csv`` (``evaluate --metrics diversity``), paired by (prompt, first seed of the K), and
reported in the measure's own units (the Vendi score is a count of distinct samples, not a rate). A prompt
where a measure is undefined (NaN: energy distance with fewer than 2 readable clips) is left unpaired.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np

Z95 = 1.96
ECHO_LIMIT = 200  # characters of a field, value or name echoed in an error message


class GapError(ValueError):
    """Per-clip files that cannot be paired; the message says which and why."""


def clip(text: object, limit: int = ECHO_LIMIT) -> str:
    """``text`` on one line (newlines shown as ``\\n``) and cut to ``limit`` characters with an ellipsis:
    what an error message may echo of its input."""
    s = str(text).replace("\r", "\\r").replace("\n", "\\n")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def inside(run: Path, rel: object) -> tuple[Path | None, str]:
    """``run/rel`` resolved (symlinks followed) when it lies inside the run folder, else ``(None, why)``.
    Absolute paths and paths that leave the folder (``..``, a symlink pointing out) are refused."""
    if not isinstance(rel, str) or not rel:
        return None, "not a path"
    if "\x00" in rel:
        return None, "contains a NUL character"
    if Path(rel).is_absolute():
        return None, "is an absolute path"
    try:
        root = Path(run).resolve()
        path = (root / rel).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, an unreadable component
        return None, f"cannot be resolved ({clip(e)})"
    if path == root or not path.is_relative_to(root):
        return None, "resolves outside the run folder"
    return path, ""


def read_csv_rows(path: Path, error: type[Exception] = ValueError, name: object = None
                  ) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A CSV table read strictly: the header and ``(line, fields)`` of each data row (blank lines skipped).

    Every way the file can be malformed is one ``error`` naming the file (``name``, default ``path``): unreadable,
    not UTF-8, empty, bad quoting, a repeated column name, or a row whose number of fields differs from the
    header's. Fields are strings, as written."""
    where = clip(name if name is not None else path, 300)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise error(f"{where}: cannot be read ({clip(e.strerror or e)})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    if not text.strip():
        raise error(f"{where}: empty file, no header row")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            if not fields:
                continue
            if header is None:
                header = fields
                seen = set()
                for c in header:
                    if c in seen:
                        raise error(f"{where}: column {clip(repr(c))} appears twice in the header")
                    seen.add(c)
                continue
            if len(fields) != len(header):
                raise error(f"{where}:{reader.line_num}: {len(fields)} field{'s' * (len(fields) != 1)}, "
                            f"the header has {len(header)}")
            rows.append((reader.line_num, fields))
    except csv.Error as e:
        raise error(f"{where}:{reader.line_num}: not valid CSV ({clip(e)})") from None
    if header is None:
        raise error(f"{where}: empty file, no header row")
    return header, rows


NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


GROUP_PREFIX = "div_"  # metrics of a prompt's K clips (per_prompt/), not of one clip (per_clip/)


def table_of(metric: str) -> str:
    """The folder of a run that holds ``metric``: ``per_prompt`` for diversity, else ``per_clip``."""
    return "per_prompt" if metric.startswith(GROUP_PREFIX) else "per_clip"


def scale_of(metric: str) -> float:
    """Per-clip rates are shown in points (× 100); a per-prompt measure in its own units."""
    return 1.0 if table_of(metric) == "per_prompt" else 100.0


def _per_clip_dir(run: Path, table: str = "per_clip") -> Path:
    d = run / table
    if not d.is_dir():
        hint = (" (diversity is written per prompt by `tmd-bench evaluate --metrics diversity`)" if table == "per_prompt"
                else "")
        raise GapError(f"{clip(run, 300)}: no {table}/ folder — is this the --out folder of `tmd-bench evaluate`?{hint}")
    return d


def _value(where: str, line: int, metric: str, text: str, undefined: bool = False) -> float:
    """A per-clip outcome: True/False (any case) → 1/0, else a finite number (``undefined``: an empty field
    or NaN is allowed and read as NaN)."""
    t = text.strip()
    if undefined and t.lower() in ("", "nan"):
        return math.nan
    if t.lower() in ("true", "false"):
        return 1.0 if t.lower() == "true" else 0.0
    if NUMBER.fullmatch(t) and math.isfinite(float(t)):
        return float(t)
    raise GapError(f"{where}:{line}: {clip(metric)} is {clip(repr(text))}, not a number or True/False")


def _seed(where: str, line: int, text: str) -> int:
    t = text.strip()
    if NUMBER.fullmatch(t) and math.isfinite(float(t)) and float(t).is_integer():
        return int(t) if re.fullmatch(r"[+-]?[0-9]+", t) else int(float(t))
    raise GapError(f"{where}:{line}: seed is {clip(repr(text))}, not an integer")


def _read_per_clip(run: Path, path: Path, metric: str) -> list[tuple[str, int, float]]:
    """(prompt, seed, value) of each clip in one per-clip file; a malformed file is one line naming it."""
    where = clip(path, 300)
    header, rows = read_csv_rows(path, GapError, name=path)
    missing = [c for c in ("prompt", "seed", metric) if c not in header]
    if missing:
        raise GapError(f"{where}: no column {clip(', '.join(missing))}; columns: {clip(', '.join(header))}")
    col = {c: header.index(c) for c in ("prompt", "seed", metric)}
    undefined = table_of(metric) == "per_prompt"
    return [(f[col["prompt"]], _seed(where, line, f[col["seed"]]),
             _value(where, line, metric, f[col[metric]], undefined)) for line, f in rows]


def load_row(runs: list[Path], row_id: str, metric: str) -> tuple[dict[tuple[str, int], float], int]:
    """Per-clip metric of one row pooled over the runs: {(prompt, seed): value}, and how many runs held it."""
    clips: dict[tuple[str, int], float] = {}
    where: dict[tuple[str, int], Path] = {}
    found = 0
    table = table_of(metric)
    for run in runs:
        if table == "per_prompt" and not (run / table).is_dir():
            continue  # a draw evaluated without --metrics diversity: nothing of this metric in it
        path = _per_clip_dir(run, table) / f"{row_id}.csv"
        try:
            exists = path.is_file()
        except (OSError, ValueError):
            exists = False
        if not exists:
            continue
        resolved, why = inside(run, f"{table}/{row_id}.csv")
        if resolved is None:
            raise GapError(f"{clip(path, 300)} {why}: not read")
        found += 1
        for prompt, seed, v in _read_per_clip(run, resolved, metric):
            key = (prompt, seed)
            if v != v:  # undefined for this prompt's clips: nothing to pair
                continue
            if key in clips:
                raise GapError(f"row {clip(row_id)}: clip (prompt {clip(repr(prompt))}, seed {seed}) appears twice "
                               f"({clip(where[key], 300)} and {clip(path, 300)}); pooled runs must use different "
                               "--seed values")
            clips[key] = v
            where[key] = path
    return clips, found


def _available(runs: list[Path], table: str = "per_clip") -> list[str]:
    return sorted({p.stem for run in runs if (run / table).is_dir() for p in (run / table).glob("*.csv")})


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
    table, scale = table_of(metric), scale_of(metric)
    if table == "per_clip":
        for run in runs:
            _per_clip_dir(run, table)
    elif not any((run / table).is_dir() for run in runs):
        _per_clip_dir(runs[0], table)  # none has diversity records: the error says how to write them
    loaded = {}
    for row_id in dict.fromkeys([baseline, *rows]):
        clips, found = load_row(runs, row_id, metric)
        if not found:
            raise GapError(f"row {clip(repr(row_id))} is in none of the runs; rows there: "
                           f"{clip(', '.join(_available(runs, table)))}")
        loaded[row_id] = (clips, found)
    base, _ = loaded[baseline]
    out = []
    for row_id in rows:
        clips, found = loaded[row_id]
        keys = sorted(base.keys() & clips.keys())
        if not keys:
            raise GapError(f"row {clip(repr(row_id))} and baseline {clip(repr(baseline))} share no (prompt, seed) clip: "
                           "were they evaluated on the same suite and --seed?")
        b = np.array([base[k] for k in keys])
        r = np.array([clips[k] for k in keys])
        d = r - b
        n = len(keys)
        se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        diff = float(d.mean())
        result = {
            "row_id": row_id, "baseline": baseline, "metric": metric, "runs": found, "paired": n,
            "baseline_rate": scale * float(b.mean()), "row_rate": scale * float(r.mean()),
            "diff": scale * diff, "se": scale * se, "lo": scale * (diff - Z95 * se), "hi": scale * (diff + Z95 * se),
            "units": "points" if scale == 100 else "measure",
            "unpaired_row": len(clips) - n, "unpaired_baseline": len(base) - n,
        }
        if within is not None:
            result["within"] = verdict(result["diff"], result["lo"], within)
        out.append(result)
    return out
