"""`tmd-bench curves`: quality against distillation iterations and training wall time, one line per run.

A distillation run on the Shapes world keeps evaluable snapshots of its student
(``<stage>/snapshots/iter-<k>/``, at 100, 200, 500, 1,000 and 2,000 iterations; see
:func:`tmd_bench.distill.trainer.train`) beside its final student. This command finds them in the
given run folders, evaluates every one with the same suite, metrics and seed draws (rows tagged
``<run>-<stage>-it<k>``), pools the draws, and writes:

- ``curves.csv``: one line per (run, stage, iteration): the training wall time up to that snapshot
  (a TMD stage 2 adds its stage 1's), and each metric with its standard error;
- ``curves.html``: for each metric, one plot against iterations and one against wall time, one line
  per run and stage with its 95 % band;
- ``curves.md``: all-correct at each snapshot, one line per run and stage (the README's table).

Same suite, same seeds, same harness: the points on one plot differ only in how long the student
trained.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

CURVE_METRICS = ("all_correct", "fd_real", "world_quality", "sharpness", "div_pairwise", "div_vendi",
                 "div_world_coverage", "div_world_energy")  # diversity: with --metrics …,diversity


@dataclass
class Snapshot:
    label: str  # "<run>/<stage>"
    iteration: int
    wall_s: float  # training wall time up to this snapshot (stage 1 included for a TMD stage 2)
    folder: Path
    method: str
    steps: int

    @property
    def tag(self) -> str:
        return f"{self.label.replace('/', '-')}-it{self.iteration}"


def _method_and_steps(student: Path) -> tuple[str, int]:
    if (student / "tmd_config.json").is_file():
        cfg = json.loads((student / "tmd_config.json").read_text())
        return "tmd", int(cfg["outer_steps"])
    if (student / "student_config.json").is_file():
        cfg = json.loads((student / "student_config.json").read_text())
        return cfg["method"], int(cfg.get("steps") or 2)  # rCM's student has no step count: its 2-step row
    raise ValueError(f"{student}: not a distilled student (no tmd_config.json or student_config.json)")


def _final_elapsed(stage: Path) -> float:
    try:
        return float(json.loads((stage / "state.json").read_text())["elapsed_s"])
    except (OSError, ValueError, KeyError):
        return 0.0


def find_snapshots(runs: list[str | Path]) -> list[Snapshot]:
    """Every snapshot and final student under each run folder (a folder holding ``state.json`` is a stage)."""
    from tmd_bench.distill.trainer import snapshot_folders

    found: list[Snapshot] = []
    for run in runs:
        run = Path(run)
        if not run.is_dir():
            raise ValueError(f"{run}: no such run folder (the --out of `tmd-bench distill`)")
        stages = sorted({p.parent for p in run.rglob("state.json")
                         if p.parent.name != "student" and "snapshots" not in p.parent.parts})
        if not stages:
            raise ValueError(f"{run}: no training run inside (no state.json): give the --out of `tmd-bench distill`")
        for stage in stages:
            before = _final_elapsed(stage.parent / "stage1") if stage.name == "stage2" else 0.0
            label = f"{run.name}/{stage.relative_to(run)}" if stage != run else f"{run.parent.name}/{run.name}"
            points = [(k, d, json.loads((d / "snapshot.json").read_text())["elapsed_s"])
                      for k, d in snapshot_folders(stage)]
            final_it = int(json.loads((stage / "state.json").read_text()).get("iteration", 0))
            if (stage / "student").is_dir() and all(k != final_it for k, _, _ in points):
                points.append((final_it, stage / "student", _final_elapsed(stage)))
            for k, folder, wall in points:
                method, steps = _method_and_steps(folder)
                found.append(Snapshot(label, k, before + float(wall), folder, method, steps))
    return found


def evaluations(snaps: list[Snapshot], metrics: list[str] | None = None, per_prompt: int | None = None) -> list:
    """The ``(methods, steps, checkpoints, extra)`` of each snapshot, for :func:`tmd_bench.compare.run_draws`
    (``metrics``, ``per_prompt``: as for ``evaluate``; None: its defaults)."""
    extra = {k: v for k, v in (("metrics", metrics), ("per_prompt", per_prompt)) if v is not None}
    return [([s.method], [s.steps], {s.method: str(s.folder)}, {"tag": s.tag, **extra}) for s in snaps]


def curve_rows(snaps: list[Snapshot], pooled) -> list[dict]:
    """One record per snapshot from the pooled rows (``pooled``: a DataFrame of :func:`pool_rows`)."""
    by_tag = {r["row_id"]: r for r in pooled.to_dict("records")}
    out = []
    for s in snaps:
        row = next((r for k, r in by_tag.items() if k.endswith("-" + s.tag)), None)
        if row is None:
            continue
        rec = {"run": s.label, "method": s.method, "steps": s.steps, "iteration": s.iteration,
               "wall_s": round(s.wall_s, 2), "row_id": row["row_id"], "draws": row.get("draws", 1),
               "num_clips": row.get("num_clips")}
        for m in CURVE_METRICS:
            if m in row and row[m] == row[m]:
                rec[m] = row[m]
                se = row.get(f"{m}_se")
                rec[f"{m}_se"] = se if se is not None and se == se else math.nan
        out.append(rec)
    return sorted(out, key=lambda r: (r["run"], r["iteration"]))


def point_text(r: dict, metric: str) -> str:
    """One snapshot's ``metric`` as the curves' tables show it: a rate in percent, ± its standard error."""
    v, se = r[metric], r.get(f"{metric}_se")
    has_se = se is not None and se == se
    if metric == "all_correct":
        return f"{100 * v:.1f}%" + (f" ± {100 * se:.1f}" if has_se else "")
    return f"{v:.3g}" + (f" ± {se:.2g}" if has_se else "")


def curves_markdown(records: list[dict], metric: str = "all_correct") -> str:
    """One line per run and stage: ``metric`` at each snapshot's iteration (a rate in percent, ± its standard
    error), then the training wall time and iterations of its last point. Written as ``curves.md``."""
    iterations = sorted({r["iteration"] for r in records if metric in r})
    runs: dict[str, dict] = {}
    for r in records:
        if metric in r:
            runs.setdefault(r["run"], {})[r["iteration"]] = r

    def cell(r: dict | None) -> str:
        return "" if r is None else point_text(r, metric)

    head = ["run / stage", *[f"{k:,} it" for k in iterations], "wall time to the last point", "clips per point"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run, points in runs.items():
        last = points[max(points)]
        lines.append("| " + " | ".join([f"`{run}`", *[cell(points.get(k)) for k in iterations],
                                        f"{last['wall_s']:,.0f} s ({max(points):,} it)",
                                        str(last.get("num_clips", ""))]) + " |")
    return "\n".join(lines) + "\n"


def write_curves(records: list[dict], out: Path) -> tuple[Path, Path]:
    import pandas as pd

    from tmd_bench.reports.html import LOWER_IS_BETTER
    from tmd_bench.reports.paired import Z95
    from tmd_bench.reports.pareto import escape, isolate, line_svg

    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "curves.csv"
    pd.DataFrame(records).to_csv(csv_path, index=False)
    md = curves_markdown(records)
    for m in CURVE_METRICS:  # diversity, when measured: a table each, below all-correct's
        if m.startswith("div_") and any(m in r for r in records):
            md += f"\n`{m}` ({'lower' if m in LOWER_IS_BETTER else 'higher'} is more diverse):\n\n" + curves_markdown(records, m)
    (out / "curves.md").write_text(md, encoding="utf-8")
    html = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>tmd-bench training curves</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222}svg{background:#fff;"
            "border:1px solid #ddd;margin:0 12px 12px 0}svg .title{font-weight:600;font-size:14px}"
            "svg .tick{font-size:11px;fill:#555}svg .axis{font-size:12px}svg .legend{font-size:11px}"
            "svg .frame{fill:none;stroke:#999}svg .grid{stroke:#eee}table{border-collapse:collapse;font-size:12px}"
            "th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}td.text{text-align:left}"
            ".note{color:#666;font-size:12px}</style></head><body><h1>Training-efficiency curves</h1>",
            "<p class='note'>Every point: one student snapshot, evaluated with the same suite, metrics and seeds; "
            "bands: 95% interval (±1.96 SE over the pooled clips for all_correct, over draws otherwise).</p>"]
    for m in CURVE_METRICS:
        if not any(m in r for r in records):
            continue
        percent = m == "all_correct"
        lines: dict[str, list] = {}
        for r in records:
            if m in r:
                se = r.get(f"{m}_se")
                lines.setdefault(r["run"], []).append(
                    {"iteration": r["iteration"], "wall": r["wall_s"], "y": r[m],
                     "err": Z95 * se if se is not None and se == se else 0.0})
        html.append(f"<h2>{escape(m)}{' (lower is better)' if m in LOWER_IS_BETTER else ''}</h2><div>")
        for x_key, x_label in (("iteration", "distillation iterations"), ("wall", "training wall time (s)")):
            series = {k: [(p[x_key], p["y"], p["err"]) for p in v] for k, v in lines.items()}
            html.append(line_svg(series, x_label, m, f"{m} vs {x_label}", percent=percent))
        html.append("</div>")
    html.append("<h2>Points</h2><table><thead><tr>" + "".join(
        f"<th>{escape(c)}</th>" for c in ("run", "method", "iteration", "wall_s", *CURVE_METRICS)) + "</tr></thead><tbody>")
    for r in records:
        cells = [f"<td class='text'>{isolate(r['run'])}</td>", f"<td class='text'>{isolate(r['method'])}</td>",
                 f"<td>{r['iteration']}</td>", f"<td>{r['wall_s']:.0f}</td>"]
        for m in CURVE_METRICS:
            cells.append("<td></td>" if r.get(m) is None else f"<td>{point_text(r, m)}</td>")
        html.append("<tr>" + "".join(cells) + "</tr>")
    html.append("</tbody></table></body></html>")
    html_path = out / "curves.html"
    html_path.write_text("".join(html), encoding="utf-8")
    return csv_path, html_path


def curves(snaps: list[Snapshot], out: str | Path, draws: int = 1, limit: int | None = None,
           console=None, teacher=None, only: list[int] | None = None,
           evaluate: bool = True, metrics: list[str] | None = None,
           per_prompt: int | None = None) -> tuple[Path, Path] | None:
    """Evaluate every snapshot (:func:`find_snapshots`) on ``draws`` seed draws with ``teacher`` (the one
    the students were distilled from; default the shipped Shapes teacher); write ``curves.csv`` and
    ``curves.html``. ``only``: evaluate these draws alone (the rest in other processes); ``evaluate=False``:
    only pool the draws already written. Returns None while some draw's folder is still missing."""
    from tmd_bench.compare import draw_folders, run_draws
    from tmd_bench.reports.html import load_runs
    from tmd_bench.reports.pooled import pool_rows

    out = Path(out)
    if evaluate:
        run_draws(evaluations(snaps, metrics, per_prompt), out, draws, limit, teacher=teacher, console=console,
                  only=only)
    folders, missing = draw_folders(out, draws)
    if missing:
        return None
    pooled = pool_rows(load_runs(folders))
    return write_curves(curve_rows(snaps, pooled), out)
