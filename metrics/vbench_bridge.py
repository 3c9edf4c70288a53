"""Full VBench through the ``vbench`` package (an optional extra): export, run, import.

- :func:`export_videos` writes a run's sample clips under VBench's file names,
  ``{prompt}-{index}.mp4`` with ``index`` 0–4 (VBench's ``prompts/README.md``: five videos per
  prompt, named ``$prompt-$index.mp4``; its loader looks up exactly those names), and a
  ``vbench_videos.json`` manifest with each file's prompt, index and seed. Seeds follow this
  toolkit's rule ``seed = 100000·prompt_index + sample_index`` (:func:`vbench_seed`; VBench asks
  only that seeds be random, not cherry-picked, and recorded — the manifest records them). A
  run's ``samples/`` hold its preview clips (one per prompt and seed); the manifest says how many
  of VBench's five each prompt has.
- :func:`run_vbench` calls ``vbench evaluate`` when the package (and its weights) are installed;
  without it the error is one line, never an ImportError.
- :func:`import_results` turns VBench's ``*_eval_results.json`` into a results-table row:
  ``vb_<dimension>`` per dimension, and ``vbench_quality``/``vbench_semantic``/``vbench_total``
  (VBench's aggregation, :mod:`tmd_bench.metrics.vbench`) where their groups are complete.

Clips are H.264 MP4 (yuv420p, CRF :data:`tmd_bench.video.CRF`) written by
:func:`tmd_bench.video.write_mp4`; the manifest records the format (``video_format``). Without PyAV
(``pip install av``) or its libx264 encoder the clips are GIF under the same names, which VBench's
loader also reads, and the summary's notes say so.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
from tmd_bench import video as videofile
from tmd_bench.metrics import vbench

VIDEOS_PER_PROMPT = 5
MANIFEST = "vbench_videos.json"


class VBenchUnavailable(ValueError):
    """The vbench package (or its command) is not installed; the message says how to get it."""


def vbench_seed(prompt_index: int, sample_index: int) -> int:
    return 100000 * prompt_index + sample_index


def vbench_name(prompt: str, index: int, suffix: str = ".mp4") -> str:
    """VBench's file name for sample ``index`` of ``prompt`` (``/`` cannot be in a file name: ``_``)."""
    if not 0 <= index < VIDEOS_PER_PROMPT:
        raise ValueError(f"VBench reads sample indexes 0–{VIDEOS_PER_PROMPT - 1}, got {index}")
    return f"{prompt.replace('/', '_')}-{index}{suffix}"


def mp4_available() -> bool:
    """PyAV with its libx264 encoder (:func:`tmd_bench.video.mp4_available`)."""
    return videofile.mp4_available()


def write_video(path: Path, video: np.ndarray, fps: int = 8) -> None:
    """``(3, F, H, W)`` in [−1, 1] → ``path``: H.264 MP4 for ``.mp4``, else GIF (both written atomically)."""
    if path.suffix == ".mp4":
        videofile.write_mp4(path, video, fps)
    else:
        videofile.write_gif(path, video, fps)


def load_samples(source: str | Path) -> list[tuple[str, np.ndarray, list[str], list[int]]]:
    """``(row_id, videos, prompts, seeds)`` from a run folder (``samples/*.safetensors``) or one such file."""
    from safetensors import safe_open

    source = Path(source)
    if source.is_dir():
        files = sorted((source / "samples").glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{source}: no samples/*.safetensors — is this a folder written by `tmd-bench evaluate`?")
    elif source.is_file() and source.suffix == ".safetensors":
        files = [source]
    else:
        raise FileNotFoundError(f"{source}: neither a run folder nor a samples .safetensors file")
    out = []
    for f in files:
        with safe_open(str(f), "np") as st:
            meta = st.metadata() or {}
            videos = st.get_tensor("videos")
        prompts, seeds = json.loads(meta.get("prompts", "[]")), json.loads(meta.get("seeds", "[]"))
        if len(prompts) != len(videos):
            raise ValueError(f"{f}: {len(videos)} clips but {len(prompts)} prompts in its metadata")
        out.append((f.stem, videos, prompts, seeds or [None] * len(prompts)))
    return out


def export_videos(source: str | Path, out: str | Path, fps: int = 8) -> dict:
    """Write every sample clip of ``source`` under VBench's names into ``out`` (one sub-folder per
    row when the run has several). Returns a summary: folders, files, format, and notes."""
    rows = load_samples(source)
    out = Path(out)
    suffix = ".mp4" if mp4_available() else ".gif"
    summary = {"folders": [], "files": 0, "format": suffix[1:], "notes": []}
    if suffix == ".gif":
        summary["notes"].append(f"{videofile.mp4_unavailable_reason()}, so clips are GIF under VBench's names "
                                "(VBench reads .gif too); install av (with libx264) for .mp4")
    video_format = {**(videofile.VIDEO_FORMAT if suffix == ".mp4" else videofile.GIF_FORMAT), "fps": fps}
    for row_id, videos, prompts, seeds in rows:
        folder = out / row_id if len(rows) > 1 else out
        folder.mkdir(parents=True, exist_ok=True)
        order = list(dict.fromkeys(prompts))  # prompt index: first appearance
        counts: dict[str, int] = {}
        manifest, skipped = [], 0
        for video, prompt, seed in zip(videos, prompts, seeds):
            index = counts.get(prompt, 0)
            counts[prompt] = index + 1
            if index >= VIDEOS_PER_PROMPT:
                skipped += 1
                continue
            name = vbench_name(prompt, index, suffix)
            write_video(folder / name, video, fps)
            manifest.append({"file": name, "prompt": prompt, "index": index, "prompt_index": order.index(prompt),
                             "seed": seed, "seed_rule_vbench": vbench_seed(order.index(prompt), index)})
        short = sorted({p for p, n in counts.items() if n < VIDEOS_PER_PROMPT})
        (folder / MANIFEST).write_text(json.dumps({
            "row_id": row_id, "source": str(source), "fps": fps, "video_format": video_format,
            "videos_per_prompt": VIDEOS_PER_PROMPT,
            "prompts_with_fewer_videos": len(short), "videos": manifest}, indent=2))
        if short:
            summary["notes"].append(f"{row_id}: {len(short)} of {len(counts)} prompts have fewer than "
                                    f"{VIDEOS_PER_PROMPT} videos (VBench's protocol samples {VIDEOS_PER_PROMPT})")
        if skipped:
            summary["notes"].append(f"{row_id}: {skipped} clips beyond index {VIDEOS_PER_PROMPT - 1} left out")
        summary["folders"].append(str(folder))
        summary["files"] += len(manifest)
    return summary


def vbench_available() -> bool:
    return importlib.util.find_spec("vbench") is not None and shutil.which("vbench") is not None


def run_vbench(videos: str | Path, out: str | Path, dimensions: list[str], mode: str = "custom_input") -> list[Path]:
    """``vbench evaluate`` on a folder of exported clips; returns the ``*_eval_results.json`` written."""
    if not vbench_available():
        raise VBenchUnavailable("full VBench needs the vbench package and its weights, which are not installed: "
                                "pip install vbench (see github.com/Vchitect/VBench), then re-run")
    videos, out = Path(videos), Path(out)
    if not videos.is_dir():
        raise FileNotFoundError(f"{videos}: no such folder of videos (write one with `tmd-bench vbench export`)")
    if not dimensions:
        raise ValueError("give at least one --dimension (e.g. subject_consistency)")
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*_eval_results.json"))
    cmd = ["vbench", "evaluate", "--videos_path", str(videos), "--output_path", str(out), "--mode", mode,
           "--dimension", *dimensions]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ValueError(f"vbench evaluate failed (exit {proc.returncode}): {tail[0]}")
    written = sorted(set(out.glob("*_eval_results.json")) - before)
    if not written:
        raise FileNotFoundError(f"vbench evaluate wrote no *_eval_results.json into {out}")
    return written


def import_results(paths: list[str | Path]) -> dict[str, float]:
    """Merge VBench result files into one row: ``vb_<dimension>`` and the aggregates whose groups are complete."""
    if not paths:
        raise ValueError("give at least one VBench *_eval_results.json")
    scores: dict[str, float] = {}
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: no such VBench result file")
        scores.update(vbench.from_vbench_json(p))
    vbench.normalised(scores)  # unknown dimension names are an error here, not a silent column
    row = {f"vb_{d.replace(' ', '_')}": v for d, v in scores.items()}
    agg = vbench.aggregate(scores, missing="skip")
    has_q, has_s = set(vbench.QUALITY) <= set(scores), set(vbench.SEMANTIC) <= set(scores)
    nan = float("nan")
    row["vbench_quality"] = agg["quality"] if has_q else nan
    row["vbench_semantic"] = agg["semantic"] if has_s else nan
    row["vbench_total"] = agg["total"] if has_q and has_s else nan
    return row


def merge_into_run(row: dict[str, float], run: str | Path, row_id: str) -> Path:
    """Write the imported columns into row ``row_id`` of ``run/results.csv``."""
    import pandas as pd

    from tmd_bench.evaluate import write_results

    path = Path(run) / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no results.csv — is this the output folder of `tmd-bench evaluate`?")
    rows = pd.read_csv(path).to_dict("records")
    target = [r for r in rows if r["row_id"] == row_id]
    if not target:
        raise ValueError(f"{path}: no row {row_id!r}; rows: {', '.join(str(r['row_id']) for r in rows)}")
    target[0].update(row)
    write_results(rows, path)
    return path
