"""`tmd-bench report RUN…`: merge evaluation runs into ``report.csv`` and a self-contained ``report.html``.

The page needs no network: styles, the small table-sorting script, the SVG plots and the sample
animations (GIF data URIs) are all inline. Every piece of text from the runs (prompts, names,
run cards) is HTML-escaped, so a prompt containing ``<script>`` shows as text, and bidi-isolated: Unicode's
direction controls show as visible ``[U+202E]`` markers and right-to-left text sits in ``<bdi>``, so no
string can reorder the page around it.

The runs are untrusted input. Nothing outside the run folders is read: every path a results file names
(``run_card``) or implies (``samples/<row_id>.safetensors``) must resolve, symlinks followed, inside the
run folder it came from, else it is skipped with a warning (stderr, and listed in the page). A malformed
``results.csv`` is one :class:`ReportError` line naming the file and what is wrong; a corrupt run card or
sample file is a warning, and the report is built without it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from safetensors import safe_open
from tmd_bench.reports.paired import NUMBER, Z95, clip, inside, read_csv_rows
from tmd_bench.reports.pareto import escape, isolate, pareto_front, plain, scatter_svg

# The default quality axis: the first of these with a value in some row (Shapes accuracy first; on a
# real checkpoint, whatever `--metrics` computed). Without any, the report shows speed only.
QUALITY_METRICS = ("all_correct", "vbench_total", "clip_score", "psnr_teacher", "ssim_teacher",
                   "fd_clip_teacher", "fd_real")
LOWER_IS_BETTER = frozenset({"fd_clip_teacher", "fd_real",  # Fréchet distances: 0 is the reference itself
                             "div_world_energy"})  # energy distance to the world's own spread


# What the report itself reads from every row: the table's identity columns and the two cost axes of
# the plots. `tmd-bench evaluate` and `tmd-bench bench latency` write all of them.
REQUIRED_COLUMNS = ("row_id", "method", "teacher", "latency_total_s", "effective_nfe")
NUMERIC_COLUMNS = ("latency_total_s", "effective_nfe")
# Kept as text whatever they look like (a row id "007" stays "007"); row_id and method never empty.
TEXT_COLUMNS = frozenset({"row_id", "method", "teacher", "run_card", "suite", "dtype"})
# Columns the report adds to each row; a results file that has them has them replaced.
RESERVED_COLUMNS = ("run", "run_dir", "label", "pareto_latency", "pareto_nfe")  # (pooled rows add draws, seeds)
CARD_LIMIT = 1 << 20  # bytes of one run card shown in the page
_INT = re.compile(r"[+-]?[0-9]+")
_NAN_LIKE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
Warn = Callable[[str], None]


class ReportError(ValueError):
    """Runs that cannot be reported; the message says which and why."""


def warn_stderr(message: str) -> None:
    """The default warning sink: one line on stderr."""
    print(f"warning: {clip(message, 600)}", file=sys.stderr)


def _is_number(text: str) -> bool:
    return bool(NUMBER.fullmatch(text) or _NAN_LIKE.fullmatch(text))


def _column(name: str, values: list[str]):
    """One column of strings as pandas would type it: text columns stay text ("" → missing, except in
    row_id/method), all-True/False → bool, all numbers → int64 or float64 ("" → NaN), else text."""
    if name in TEXT_COLUMNS:
        keep_empty = name in ("row_id", "method")
        return pd.Series([v if v or keep_empty else np.nan for v in values], dtype=object)
    present = [v for v in values if v != ""]
    if present and all(v in ("True", "False") for v in present):
        if len(present) == len(values):
            return pd.Series([v == "True" for v in values], dtype=bool)
        return pd.Series([(v == "True") if v else np.nan for v in values], dtype=object)
    if all(_is_number(v) for v in present):
        if present and len(present) == len(values) and all(_INT.fullmatch(v) for v in values):
            ints = [int(v) for v in values]
            if all(-(2**63) <= i < 2**63 for i in ints):
                return pd.Series(ints, dtype="int64")
        return pd.Series([float(v) if v else np.nan for v in values], dtype="float64")
    return pd.Series([v if v else np.nan for v in values], dtype=object)


def read_results_table(path: Path, name: object = None) -> pd.DataFrame:
    """One ``results.csv`` as a table, or a one-line :class:`ReportError` naming it (``name``, default the
    path) and saying what is wrong: unreadable, not UTF-8, empty, bad CSV, a row with the wrong number of
    fields, a required column missing, an empty row id, a non-numeric latency/NFE, no rows."""
    where = clip(name if name is not None else path, 300)
    header, rows = read_csv_rows(path, ReportError, name=where)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ReportError(f"{where}: missing required column{'s' * (len(missing) > 1)} {', '.join(missing)} "
                          f"(has: {clip(', '.join(header)) or 'none'}) — not a results table of `tmd-bench evaluate`")
    if not rows:
        raise ReportError(f"{where}: no result rows")
    lines = [line for line, _ in rows]
    columns = {}
    for i, c in enumerate(header):
        values = [f[i] for _, f in rows]
        if c == "row_id":
            empty = next((line for line, v in zip(lines, values) if not v.strip()), None)
            if empty is not None:
                raise ReportError(f"{where}:{empty}: empty row_id")
        if c in NUMERIC_COLUMNS:
            bad = next(((line, v) for line, v in zip(lines, values) if v != "" and not _is_number(v)), None)
            if bad is not None:
                raise ReportError(f"{where}:{bad[0]}: {c} is {clip(repr(bad[1]))}, not a number")
        columns[c] = _column(c, values)
    return pd.DataFrame(columns)


def load_runs(runs: list[str | Path], warn: Warn | None = None) -> pd.DataFrame:
    """The rows of every run's ``results.csv``, with the run's name (``run``) and resolved folder (``run_dir``)."""
    warn = warn or warn_stderr
    frames = []
    if not runs:
        raise ReportError("give at least one run folder (the --out of `tmd-bench evaluate`)")
    for run in runs:
        run = Path(run)
        path = run / "results.csv"
        if not path.is_file():
            raise ReportError(f"{clip(run, 300)}: no results.csv — is this the output folder of `tmd-bench evaluate`?")
        resolved, why = inside(run, "results.csv")
        if resolved is None:
            raise ReportError(f"{clip(path, 300)} {why}: not read")
        df = read_results_table(resolved, name=path)
        reserved = [c for c in RESERVED_COLUMNS if c in df.columns]
        if reserved:
            warn(f"{clip(path, 300)}: column(s) {', '.join(reserved)} are the report's own; replaced")
            df = df.drop(columns=reserved)
        df.insert(0, "run", run.name or str(run))
        df["run_dir"] = str(run.resolve())
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    if df["run"].duplicated().any() and df[["run", "row_id"]].duplicated().any():
        # two folders with the same name: disambiguate by their full paths
        df["run"] = df["run_dir"]
    return df


def _gif(video: np.ndarray) -> str:
    """(3, F, H, W) in [−1, 1] → base64 animated GIF at native resolution (the page scales it)."""
    from PIL import Image

    frames = ((video.transpose(1, 2, 3, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)
    imgs = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=160, loop=0)
    return base64.b64encode(buf.getvalue()).decode()


def _strip(video: np.ndarray) -> str:
    """(3, F, H, W) → base64 PNG of the frames side by side, native resolution."""
    from PIL import Image

    frames = ((video.transpose(1, 2, 3, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)
    h, w = frames.shape[1:3]
    strip = np.full((h, (w + 1) * len(frames) - 1, 3), 255, np.uint8)
    for i, f in enumerate(frames):
        strip[:, i * (w + 1):i * (w + 1) + w] = f
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _samples(row: pd.Series, warn: Warn) -> tuple[list[str], list[str], list, list] | None:
    """The row's preview clips as (GIFs, frame strips, prompts, seeds), or ``None``: no samples file, or one
    that is outside the run folder, corrupt or of the wrong shape (then with a warning)."""
    rel = f"samples/{row['row_id']}.safetensors"
    what = f"samples of row {clip(repr(row['row_id']))} in run {clip(row['run'])}"
    path, why = inside(Path(row["run_dir"]), rel)
    if path is None:
        warn(f"{what}: {clip(repr(rel))} {why}; not read")
        return None
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
            videos = f.get_tensor("videos")
        prompts, seeds = json.loads(meta.get("prompts", "[]")), json.loads(meta.get("seeds", "[]"))
        if not (isinstance(prompts, list) and isinstance(seeds, list)):
            raise ValueError("prompts/seeds metadata are not lists")
        if videos.ndim != 5 or videos.shape[1] != 3:
            raise ValueError(f"videos of shape {tuple(videos.shape)}, not (clips, 3, frames, height, width)")
        n = min(len(videos), len(prompts), len(seeds))
        videos = videos[:n].astype(np.float32)
        return [_gif(v) for v in videos], [_strip(v) for v in videos], prompts[:n], seeds[:n]
    except Exception as e:  # noqa: BLE001 - any failure to parse or render an untrusted file skips it
        warn(f"{what}: {clip(rel)} is unreadable ({clip(type(e).__name__ + ': ' + str(e))}); skipped")
        return None


def _run_card(row: pd.Series, warn: Warn) -> tuple[str, str | None]:
    """(text to show, the card's path when it may be linked) for one row's run card. A card outside the run
    folder is never read; an unreadable, non-UTF-8, oversized or non-JSON one is not shown."""
    rel = row["run_card"]
    what = f"run card of row {clip(repr(row['row_id']))} in run {clip(row['run'])}"
    path, why = inside(Path(row["run_dir"]), rel)
    if path is None:
        warn(f"{what}: {clip(repr(rel))} {why}; not read")
        return f"(not shown: {clip(rel)} {why})", None
    if not path.is_file():
        return f"(missing: {path})", None
    try:
        if path.stat().st_size > CARD_LIMIT:
            raise ValueError(f"larger than {CARD_LIMIT >> 20} MiB")
        text = path.read_bytes().decode("utf-8")
        json.loads(text)
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        warn(f"{what}: {clip(rel)} is not a readable JSON file ({clip(e)}); skipped")
        return f"(not shown: {clip(rel)} is not a readable JSON file)", None
    return text, str(path)


PERCENT_COLUMNS = ("all_correct",)  # and every acc_*: rates in [0, 1], shown in percent
MS_COLUMNS = ("latency_text_s", "latency_denoise_s", "latency_decode_s", "latency_total_s")  # shown in ms


def _is_percent(column: str) -> bool:
    return column in PERCENT_COLUMNS or column.startswith("acc_")


def _unit(column: str) -> str:
    return " (%)" if _is_percent(column) else " (ms)" if column in MS_COLUMNS else ""


def _cell(v, column: str = "", se=None) -> tuple[str, str]:
    """(display text, sort key) of a table cell: rates in percent with one decimal (± the row's standard
    error where it has one), latencies in milliseconds, other numbers to 3 significant digits; the sort
    key is always the raw value (and ``report.csv`` keeps every raw value)."""
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return "", ""
        has_se = se is not None and isinstance(se, (float, np.floating)) and np.isfinite(se)
        if _is_percent(column):
            text = f"{100 * v:.1f}" + (f" ± {100 * se:.1f}" if has_se else "")
        elif column in MS_COLUMNS:
            text = f"{1000 * v:.3g}" if 1000 * v < 100 else f"{1000 * v:.0f}"
        elif column in ("nfe", "nfe_counted", "effective_nfe", "effective_nfe_declared", "steps"):
            text = f"{v:.4g}"
        else:
            text = f"{v:.3g}" + (f" ± {se:.2g}" if has_se else "")
        return text, repr(float(v))
    if isinstance(v, (int, np.integer)):
        return str(v), str(int(v))
    return str(v), str(v)


MD_COLUMNS = (("row_id", "config"), ("nfe_counted", "NFE counted"), ("effective_nfe", "eff. NFE"),
              ("latency_total_s", "latency / clip"), ("all_correct", "all-correct"), ("acc_shape", "shape"),
              ("acc_count", "count"), ("acc_motion", "motion"), ("sharpness", "sharpness"), ("fd_real", "FD to real"),
              ("clip_score", "Shapes-CLIP"), ("world_quality", "world quality"),
              ("tmd_inner_noise_sensitivity", "y1 sensitivity"), ("num_clips", "clips"))


def _md(text: object) -> str:
    return plain(text).replace("|", "\\|").replace("\n", " ")


def markdown(df: pd.DataFrame, claim_rows: list[dict], gaps: list[dict], diversity: list[dict] | None = None) -> str:
    """``report.md``: the results (pooled rows with ± SE), the claims, the paired gaps and the diversity
    against the teacher as Markdown tables — what the README pastes, so that no figure in it is typed by hand."""
    from tmd_bench.reports.pooled import fmt_gap, fmt_measure

    cols = [(c, h) for c, h in MD_COLUMNS if c in df]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for c, _ in cols:
            v = r[c]
            if c == "row_id":
                cells.append(f"`{_md(v)}`")
            elif not isinstance(v, (int, float, np.integer, np.floating)) or pd.isna(v):
                cells.append(_md(v) if isinstance(v, str) else "")
            elif c == "latency_total_s":
                cells.append(f"{1000 * v:.0f} ms")
            elif c in ("nfe_counted", "effective_nfe", "num_clips"):
                cells.append(f"{v:g}")
            elif _is_percent(c):
                se = r.get(f"{c}_se") if c == "all_correct" else None
                cells.append(f"{100 * v:.1f}%" + (f" ± {100 * se:.1f}" if se is not None and pd.notna(se) else ""))
            else:
                cells.append(f"{v:.3f}" if c != "clip_score" else f"{v:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    out = ["## Results", "", *lines, ""]
    if claim_rows:
        out += ["## Claims", "", "| claim | row | baseline | gap ± SE [95% interval], points | verdict |",
                "|---|---|---|---|---|"]
        for c in claim_rows:
            row = f"`{_md(c['row'])}`" if c.get("row") else ""
            base = f"`{_md(c['baseline'])}`" if c.get("baseline") else ""
            out.append(f"| {_md(c['claim'])} | {row} | {base} | {fmt_gap(c) or _md(c.get('why', ''))} | "
                       f"**{_md(c['verdict'])}** |")
        out.append("")
    if gaps:
        out += ["## Paired gaps", "", "| row | vs | baseline | paired clips | row % | baseline % | gap ± SE [95% interval] |",
                "|---|---|---|---|---|---|---|"]
        for g in gaps:
            out.append(f"| `{_md(g['row_id'])}` | {_md(g['comparison'])} | `{_md(g['baseline'])}` | {g['paired']} | "
                       f"{g['row_rate']:.1f} | {g['baseline_rate']:.1f} | {fmt_gap(g)} |")
        out.append("")
    if diversity:
        out += ["## Diversity vs the teacher", "",
                "| row | measure | better | paired prompts | row | teacher | row − teacher ± SE [95% interval] |",
                "|---|---|---|---|---|---|---|"]
        for g in diversity:
            out.append(f"| `{_md(g['row_id'])}` | `{g['metric']}` | {g['better']} | {g['paired']} | {g['row_rate']:.3f} | "
                       f"{g['baseline_rate']:.3f} | {fmt_measure(g)} |")
        out.append("")
    return "\n".join(out)


def _diversity_html(rows: list[dict]) -> list[str]:
    from tmd_bench.reports.pooled import DIVERSITY_METRICS, fmt_measure

    html = ["<h2>Diversity vs the teacher</h2><p class='note'>Each prompt's K clips (<code>evaluate --metrics "
            "diversity</code>) against the 50-step teacher's K clips of the same prompt and seeds: row − teacher, "
            "paired by prompt over every draw, ± one paired standard error, then the 95% interval, in each "
            "measure's own units. " + "; ".join(f"<code>{m}</code>: {isolate(what)} ({b} is more diverse)"
                                              for m, what, b in DIVERSITY_METRICS)
            + ". Also in <code>diversity.csv</code>.</p>",
            "<table class='sortable'><thead><tr><th>row</th><th>measure</th><th>paired prompts</th><th>row</th>"
            "<th>teacher</th><th>row − teacher ± SE [95% interval]</th></tr></thead><tbody>"]
    for g in rows:
        html.append(f"<tr><td class='text'>{isolate(g['row_id'])}</td><td class='text'>{isolate(g['metric'])}</td>"
                    f"<td>{g['paired']}</td><td>{g['row_rate']:.3f}</td><td>{g['baseline_rate']:.3f}</td>"
                    f"<td data-key='{g['diff']!r}'>{isolate(fmt_measure(g))}</td></tr>")
    html.append("</tbody></table>")
    return html


def _claims_html(claim_rows: list[dict]) -> list[str]:
    from tmd_bench.reports.pooled import fmt_gap

    html = ["<h2>The paper's claims on this world</h2><p class='note'>Each claim of the TMD paper that this "
            "world can test, decided by the paired 95% interval of row − baseline (points of all-correct): "
            "<b>reproduced</b> (the interval lies above 0; for “close”, above −5), <b>tie</b> (it contains 0), "
            "<b>not reproduced</b> (below 0). The command re-derives the figure from the same run folders.</p>",
            "<table class='claims'><thead><tr><th>claim</th><th>row</th><th>baseline</th><th>row (%)</th>"
            "<th>baseline (%)</th><th>gap ± SE [95% interval] (points)</th><th>verdict</th><th>command</th>"
            "</tr></thead><tbody>"]
    for c in claim_rows:
        rate = lambda k: f"{c[k]:.1f}" if isinstance(c.get(k), (float, int)) else ""  # noqa: E731
        html.append(f"<tr><td class='text'>{isolate(c['claim'])}</td><td class='text'>{isolate(c.get('row', ''))}</td>"
                    f"<td class='text'>{isolate(c.get('baseline', ''))}</td><td>{rate('row_rate')}</td>"
                    f"<td>{rate('baseline_rate')}</td><td>{isolate(fmt_gap(c))}</td>"
                    f"<td class='text verdict'>{isolate(c['verdict'])}</td><td class='text'><code>"
                    f"{isolate(c.get('command') or c.get('why', ''))}</code></td></tr>")
    html.append("</tbody></table>")
    return html


def _gaps_html(gaps: list[dict]) -> list[str]:
    from tmd_bench.reports.pooled import fmt_gap

    html = ["<h2>Paired gaps</h2><p class='note'>Row − baseline in points of all-correct, paired by (prompt, "
            "seed) over every draw: ± one paired standard error, then the 95% interval. Baselines: the "
            "50-step teacher of the same suite, and the matched baseline (DMD2-v at the same M for TMD, rCM, "
            "KD and MeanFlow; stage 1 + 2 for a stage-1 row). Also in <code>gaps.csv</code>.</p>",
            "<table class='sortable'><thead><tr><th>row</th><th>comparison</th><th>baseline</th><th>paired clips</th>"
            "<th>row (%)</th><th>baseline (%)</th><th>gap ± SE [95% interval] (points)</th></tr></thead><tbody>"]
    for g in gaps:
        html.append(f"<tr><td class='text'>{isolate(g['row_id'])}</td><td class='text'>{isolate(g['comparison'])}</td>"
                    f"<td class='text'>{isolate(g['baseline'])}</td><td>{g['paired']}</td>"
                    f"<td>{g['row_rate']:.1f}</td><td>{g['baseline_rate']:.1f}</td>"
                    f"<td data-key='{g['diff']!r}'>{isolate(fmt_gap(g))}</td></tr>")
    html.append("</tbody></table>")
    return html


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px}
.plots{display:flex;flex-wrap:wrap;gap:16px}
svg.pareto{background:#fff;border:1px solid #ddd}
svg .title{font-weight:600;font-size:14px}svg .tick{font-size:11px;fill:#555}
svg .axis{font-size:12px}svg .label{font-size:10px;fill:#333}svg .legend{font-size:11px}
svg .frame{fill:none;stroke:#999}svg .grid{stroke:#eee}
svg .front{fill:none;stroke:#444;stroke-width:1.5;stroke-dasharray:5 3}
svg .on-front circle{stroke:#000;stroke-width:1.5}
svg .err{stroke-width:1.5;opacity:.7}
td.verdict{font-weight:600}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f4f4f4;cursor:pointer;position:sticky;top:0}td.text{text-align:left}
tr.front td:first-child{font-weight:600}
.samples td{text-align:center;vertical-align:top}.samples img{image-rendering:pixelated;zoom:4}
.samples img.strip{zoom:3}
.prompt{max-width:220px;text-align:left;font-size:12px}
pre{background:#f8f8f8;padding:8px;overflow:auto;max-height:400px;font-size:11px}
.note{color:#666;font-size:12px}
.note.missing{color:#7a4b00;background:#fff6e0;border:1px solid #f0d9a0;padding:6px 10px;font-size:13px}.note.missing code{white-space:nowrap}
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var body = th.closest('table').tBodies[0];
    var asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.key, y = b.cells[col].dataset.key;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
"""


def _quality_axis(df: pd.DataFrame, metric: str | None) -> str | None:
    """The y axis of the plots: ``metric`` when given (a name that is not a column is an error, not a
    silent speed-only page), else the first of ``QUALITY_METRICS`` with a value, else ``None``: timing
    rows alone (a Wan checkpoint evaluated without ``--metrics``, ``bench latency``) still get a report."""
    if metric is None:
        return next((m for m in QUALITY_METRICS
                     if m in df and pd.api.types.is_numeric_dtype(df[m]) and df[m].notna().any()), None)
    if metric not in df:
        numeric = [c for c in df.select_dtypes("number").columns]
        raise ReportError(f"quality metric {clip(repr(metric))} is not in the results; choose one of {clip(numeric)}")
    values = pd.to_numeric(df[metric], errors="coerce")
    bad = values.isna() & df[metric].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ReportError(f"quality metric {clip(repr(metric))} is not a number in run {clip(df['run'].iloc[i])}, "
                          f"row {clip(repr(df['row_id'].iloc[i]))}: {clip(repr(df[metric].iloc[i]))}")
    df[metric] = values.astype(float)
    return metric


def _write_csv(df: pd.DataFrame, out: Path, cards: dict[int, str | None]) -> Path:
    """``report.csv``: the merged rows, run cards as paths relative to the report (rows from
    ``bench latency`` have none, and a card outside its run folder is left out)."""
    csv = df.drop(columns=["label", "run_dir"])
    if "run_card" in df:
        csv["run_card"] = [os.path.relpath(cards[i], out.resolve()) if cards.get(i) else np.nan for i in df.index]
    path = out / "report.csv"
    csv.to_csv(path, index=False)
    return path


def _speed_quality(df: pd.DataFrame, metric: str) -> list[str]:
    """The two Pareto plots, quality against latency and against effective NFE."""
    axis = f"{metric} (lower is better)" if metric in LOWER_IS_BETTER else metric

    se = f"{metric}_se"
    percent = _is_percent(metric)
    html = ["<h2>Speed / quality</h2>"]
    suites = df["suite"].astype(str) if "suite" in df else pd.Series([""] * len(df), index=df.index)
    order = suites.value_counts(sort=True).index.tolist()  # the suite with most rows first
    groups = sorted(df["method"].astype(str).unique())  # one colour per method on every plot
    for suite in order:
        sub = df[suites == suite]

        def points(cost: str, front: str) -> list[dict]:
            return [{"x": float(r[cost]), "y": float(r[metric]), "label": r["label"], "short": r["row_id"],
                     "group": r["method"], "front": bool(r[front]), "err": _err(r, se, percent)}
                    for _, r in sub.iterrows()]

        where = f" — {suite}" if len(order) > 1 and suite else ""
        if where:
            html.append(f"<h3>{isolate(suite)}</h3>")
        html += ["<div class='plots'>",
                 scatter_svg(points("latency_total_s", "pareto_latency"), "latency per clip (s)", axis,
                             f"{metric} vs latency{where}", percent=percent, groups=groups),
                 scatter_svg(points("effective_nfe", "pareto_nfe"), "effective NFE (counted)", axis,
                             f"{metric} vs effective NFE{where}", percent=percent, groups=groups),
                 "</div>"]
    return html


def _err(row: pd.Series, se: str, percent: bool) -> tuple[float, float] | None:
    """The (lower, upper) half-widths of a plotted point's 95 % interval, ±1.96 SE, a rate's kept inside [0, 1]."""
    if se not in row or not pd.notna(row[se]):
        return None
    y, e = float(row[se.removesuffix("_se")]), Z95 * float(row[se])
    if percent:
        return (min(e, max(y, 0.0)), min(e, max(1.0 - y, 0.0)))
    return (e, e)


def _speed_only(df: pd.DataFrame) -> list[str]:
    """Instead of the Pareto plots when no run has a quality column: why, how to add one, and latency
    against effective NFE (the speed view that timing rows alone support)."""
    points = [{"x": float(r["effective_nfe"]), "y": float(r["latency_total_s"]), "label": r["label"],
               "short": r["row_id"], "group": r["method"], "front": False} for _, r in df.iterrows()]
    return ["<h2>Speed</h2><p class='note missing'>No quality metric was computed for these runs, so this "
            "page shows latency and NFE only (no speed/quality plot, no Pareto front). To add a quality axis, "
            "evaluate again with <code>--metrics fidelity</code> (PSNR/SSIM against the teacher's 50-step "
            "samples from the same noise), <code>--metrics clip</code> (CLIP score) or "
            "<code>--metrics vbench-lite</code>, or merge VBench scores into the run with "
            "<code>tmd-bench vbench import</code>; the report then picks the axis itself.</p>",
            "<div class='plots'>",
            scatter_svg(points, "effective NFE (counted)", "latency per clip (s)", "latency vs effective NFE"),
            "</div>"]


def build_report(runs: list[str | Path], out: str | Path, metric: str | None = None,
                 warn: Warn | None = None, pool: bool = False) -> tuple[Path, Path]:
    """Write ``report.csv`` and ``report.html`` for ``runs`` into ``out``; returns both paths.

    ``metric`` is the quality axis; by default the first of ``QUALITY_METRICS`` the runs have, and with
    none of them the page shows speed only and says how to add one. ``warn`` receives each one-line
    warning (a file skipped); by default they go to stderr. They are listed in the page too.

    ``pool``: the runs are seed draws of the same rows (``--draws``): each row is pooled over them
    (:func:`tmd_bench.reports.pooled.pool_rows`) and the page adds the paired-gap table (``gaps.csv``)
    and the paper's claims with their verdicts (``claims.csv``)."""
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        (warn or warn_stderr)(message)

    df = load_runs(runs, note)
    gaps: list[dict] = []
    claim_rows: list[dict] = []
    diversity: list[dict] = []
    if pool:
        from tmd_bench.reports import pooled

        try:
            df = pooled.pool_rows(df)
        except pooled.PoolError as e:
            raise ReportError(str(e)) from None
        rows = list(df["row_id"])
        gaps = pooled.gap_table(runs, rows)
        claim_rows = pooled.claims(runs, rows)
        diversity = pooled.diversity_table(runs, rows)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot write to the report folder {out}: {e.strerror or e}") from None
    metric = _quality_axis(df, metric)
    label = df["run"] + "/" + df["row_id"] if df["run"].nunique() > 1 else df["row_id"]
    df["label"] = label
    if metric is not None:
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0  # pareto_front wants higher = better
        better = [sign * float(v) for v in df[metric]]
        df["pareto_latency"] = False
        df["pareto_nfe"] = False
        suites = df["suite"].astype(str) if "suite" in df else pd.Series([""] * len(df), index=df.index)
        for suite in suites.unique():  # a front compares rows on one prompt suite only
            idx = suites.index[suites == suite]
            sub = [better[df.index.get_loc(i)] for i in idx]
            df.loc[idx, "pareto_latency"] = pareto_front(df.loc[idx, "latency_total_s"].tolist(), sub)
            df.loc[idx, "pareto_nfe"] = pareto_front(df.loc[idx, "effective_nfe"].tolist(), sub)
        df["pareto_latency"] = df["pareto_latency"].astype(bool)
        df["pareto_nfe"] = df["pareto_nfe"].astype(bool)
    cards: dict[int, tuple[str, str | None]] = {}
    if "run_card" in df:  # read (or refused) once, before anything is written
        cards = {i: _run_card(r, note) for i, r in df.iterrows() if isinstance(r["run_card"], str)}
    samples = {r["label"]: _samples(r, note) for _, r in df.iterrows()}
    samples = {k: v for k, v in samples.items() if v is not None}
    csv_path = _write_csv(df, out, {i: link for i, (_, link) in cards.items()})
    if pool:
        pd.DataFrame(gaps).to_csv(out / "gaps.csv", index=False)
        pd.DataFrame(claim_rows).to_csv(out / "claims.csv", index=False)
        if diversity:
            pd.DataFrame(diversity).to_csv(out / "diversity.csv", index=False)
    (out / "report.md").write_text(markdown(df, claim_rows, gaps, diversity), encoding="utf-8")

    html = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>tmd-bench report</title>"
            f"<style>{STYLE}</style></head><body>",
            "<h1>tmd-bench report</h1>",
            f"<p class='note'>Runs: {', '.join(isolate(r) for r in sorted(df['run'].unique()))}. Teacher(s): "
            f"{', '.join(isolate(t) for t in sorted(df['teacher'].astype(str).unique()))}. Quality axis: "
            f"<b>{isolate(metric) if metric else 'none (no quality metric computed)'}</b>. "
            "NFE is counted by hooks on the network, effective NFE = DiT blocks executed ÷ L; latency is the "
            "median end-to-end time per clip (text encoding + denoising + decoding) after warm-up.</p>"]
    if pool:
        k = int(df["draws"].max())
        html.append(f"<p class='note'>Each row is pooled over its seed draws (up to {k}; the <b>draws</b> and "
                    "<b>seeds</b> columns say which): every metric is the mean of its draws, "
                    "<code>all_correct_se</code> the binomial standard error over the pooled clips, and "
                    "<code>&lt;metric&gt;_se</code> the standard error over draws. Comparisons below pair clips "
                    "by (prompt, seed) across rows.</p>")
    if metric is not None:
        html += _speed_quality(df, metric)
    else:
        html += _speed_only(df)
    if claim_rows:
        html += _claims_html(claim_rows)
    if gaps:
        html += _gaps_html(gaps)
    if diversity:
        html += _diversity_html(diversity)

    shown = [c for c in ["label", "method", "steps", "inner_steps", "head_blocks", "nfe", "nfe_counted",
                         "effective_nfe", "latency_text_s", "latency_denoise_s", "latency_decode_s",
                         "latency_total_s", "fps", metric] if c in df]
    quality_cols = ("world_total", "world_quality", "world_semantic", "vbench_total", "vbench_quality",
                    "vbench_semantic", "subject_consistency", "background_consistency", "temporal_flicker",
                    "motion_smoothness", "dynamic_degree", "imaging_quality", "sharpness", "clip_score", "psnr_teacher", "ssim_teacher",
                    "fd_clip_teacher", "fd_real")
    extra = [c for c in df.columns
             if (c.startswith(("acc_", "vb_")) or c in quality_cols) and c not in shown and not c.endswith("_se")]
    cols = shown + extra
    if pool:
        cols += [c for c in ("draws", "seeds", "num_clips") if c in df]
    front_note = " Bold: on the Pareto front of quality vs latency." if metric else ""
    html.append(f"<h2>Results</h2><p class='note'>Click a column to sort.{front_note}</p>"
                "<table class='sortable'><thead><tr>")
    html += [f"<th>{isolate(c)}{_unit(c)}</th>" for c in cols]
    html.append("</tr></thead><tbody>")
    for _, r in df.iterrows():
        html.append(f"<tr class='{'front' if metric and r['pareto_latency'] else ''}'>")
        for c in cols:
            text, key = _cell(r[c], c, r.get(f"{c}_se"))
            cls = " class='text'" if isinstance(r[c], str) else ""
            html.append(f"<td{cls} data-key='{escape(key)}'>{isolate(text)}</td>")
        html.append("</tr>")
    html.append("</tbody></table>")

    # Samples: the same prompts and seeds, every configuration side by side.
    if samples:
        ref_prompts, ref_seeds = next(iter(samples.values()))[2:]
        html.append("<h2>Samples</h2><p class='note'>Each column is one configuration; each row one prompt "
                    "and seed (the same initial noise for every configuration).</p>"
                    "<div style='overflow-x:auto'><table class='samples'><thead><tr><th>prompt (seed)</th>")
        html += [f"<th>{isolate(k)}</th>" for k in samples]
        html.append("</tr></thead><tbody>")
        for i, (p, s) in enumerate(zip(ref_prompts, ref_seeds)):
            html.append(f"<tr><td class='prompt'>{isolate(p)} ({isolate(s)})</td>")
            for k, (gifs, _, prompts, seeds) in samples.items():
                if i < len(prompts) and prompts[i] == p and seeds[i] == s:
                    html.append(f"<td><img alt='{escape(k)}: {escape(p)}' src='data:image/gif;base64,{gifs[i]}'></td>")
                else:
                    html.append("<td class='note'>not sampled</td>")
            html.append("</tr>")
        html.append("</tbody></table></div>")
        html.append("<details><summary>Frame strips</summary><table class='samples'>")
        for k, (_, strips, _, _) in samples.items():
            html.append(f"<tr><td class='prompt'>{isolate(k)}</td><td>")
            html += [f"<img class='strip' alt='{escape(k)} frames' src='data:image/png;base64,{strip}'><br>"
                     for strip in strips]
            html.append("</td></tr>")
        html.append("</table></details>")

    html.append("<h2>Run cards</h2>")
    for i, r in df.iterrows():
        if i not in cards:  # `bench latency` rows: no run card
            continue
        html.append(f"<details><summary>{isolate(r['label'])}</summary><pre>{isolate(cards[i][0])}</pre></details>")
    if warnings:
        html.append("<h2>Warnings</h2><p class='note missing'>What the report refused to read, could not use or "
                    "replaced in these runs:</p><ul class='warnings'>")
        html += [f"<li>{isolate(w)}</li>" for w in warnings]
        html.append("</ul>")
    html.append(f"<script>{SORT_SCRIPT}</script></body></html>")
    html_path = out / "report.html"
    html_path.write_text("".join(html), encoding="utf-8")
    return csv_path, html_path
