"""The VBench bridge: export under VBench's names, import its JSON, a clear message without the package."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from tmd_bench.metrics import vbench, vbench_bridge
from typer.testing import CliRunner

from tmd_bench.cli import app

runner = CliRunner()


def tiny_run(folder, rows=("teacher-euler-s1",)):
    prompts = ["a red circle moving up", "a red circle moving up", "two blue squares/triangles"]
    (folder / "samples").mkdir(parents=True)
    for row in rows:
        videos = torch.rand(3, 3, 4, 8, 8) * 2 - 1
        save_file({"videos": videos}, str(folder / "samples" / f"{row}.safetensors"),
                  metadata={"prompts": json.dumps(prompts), "seeds": json.dumps([0, 1, 2])})
    return folder


def test_export_writes_vbench_names_and_a_seed_manifest(tmp_path):
    run = tiny_run(tmp_path / "run")
    r = runner.invoke(app, ["vbench", "export", str(run), "--out", str(tmp_path / "vb")])
    assert r.exit_code == 0, r.output
    ext = ".mp4" if vbench_bridge.mp4_available() else ".gif"
    names = sorted(p.name for p in (tmp_path / "vb").iterdir() if p.suffix == ext)
    assert names == sorted([f"a red circle moving up-0{ext}", f"a red circle moving up-1{ext}",
                            f"two blue squares_triangles-0{ext}"])
    manifest = json.loads((tmp_path / "vb" / vbench_bridge.MANIFEST).read_text())
    assert [(v["index"], v["seed"], v["seed_rule_vbench"]) for v in manifest["videos"]] == [
        (0, 0, 0), (1, 1, 1), (0, 2, 100000)]
    assert manifest["prompts_with_fewer_videos"] == 2
    # the filename → prompt rule VBench applies (utils.get_prompt_from_filename): strip "-<index>"
    assert names[0].rsplit("-", 1)[0] == "a red circle moving up"


def test_export_of_several_rows_writes_one_folder_each(tmp_path):
    run = tiny_run(tmp_path / "run", rows=("a-s1", "b-s2"))
    summary = vbench_bridge.export_videos(run, tmp_path / "vb")
    assert summary["files"] == 6 and sorted(p.name for p in (tmp_path / "vb").iterdir()) == ["a-s1", "b-s2"]


def test_vbench_names_stop_at_five():
    assert vbench_bridge.vbench_name("a cat", 4) == "a cat-4.mp4"
    with pytest.raises(ValueError, match="0–4"):
        vbench_bridge.vbench_name("a cat", 5)


def vbench_json(path, dims):
    # VBench's format: {dimension: [score, [per-video records]]}
    path.write_text(json.dumps({d.replace(" ", "_"): [v, [{"video_path": "x-0.mp4", "video_results": v}]]
                                for d, v in dims.items()}))
    return path


def test_import_makes_the_row_and_writes_it_into_a_run(tmp_path):
    dims = {d: 0.9 if d in vbench.QUALITY else 0.3 for d in vbench.DIMENSIONS}
    q = vbench_json(tmp_path / "q_eval_results.json", {d: dims[d] for d in vbench.QUALITY})
    s = vbench_json(tmp_path / "s_eval_results.json", {d: dims[d] for d in vbench.SEMANTIC})
    row = vbench_bridge.import_results([q, s])
    expected = vbench.aggregate(dims)
    assert row["vb_subject_consistency"] == 0.9 and row["vb_overall_consistency"] == 0.3
    assert len([k for k in row if k.startswith("vb_")]) == 16
    assert (row["vbench_quality"], row["vbench_semantic"], row["vbench_total"]) == pytest.approx(
        (expected["quality"], expected["semantic"], expected["total"]))
    only_q = vbench_bridge.import_results([q])
    assert only_q["vbench_quality"] == pytest.approx(expected["quality"])
    assert np.isnan(only_q["vbench_semantic"]) and np.isnan(only_q["vbench_total"])

    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame([{"row_id": "teacher-euler-s50", "method": "teacher-euler", "steps": 50}]).to_csv(
        run / "results.csv", index=False)
    r = runner.invoke(app, ["vbench", "import", str(q), str(s), "--run", str(run), "--row-id", "teacher-euler-s50"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(run / "results.csv")
    assert df.loc[0, "vbench_total"] == pytest.approx(expected["total"]) and df.loc[0, "steps"] == 50
    r = runner.invoke(app, ["vbench", "import", str(q), "--run", str(run), "--row-id", "nope"])
    assert r.exit_code == 2 and "no row 'nope'" in r.output


def test_import_rejects_unknown_dimensions(tmp_path):
    bad = vbench_json(tmp_path / "b_eval_results.json", {"beauty": 0.5})
    r = runner.invoke(app, ["vbench", "import", str(bad)])
    assert r.exit_code == 2 and "unknown VBench dimension" in r.output


def test_run_without_the_vbench_package_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setattr(vbench_bridge, "vbench_available", lambda: False)
    r = runner.invoke(app, ["vbench", "run", str(tmp_path), "--out", str(tmp_path / "o"),
                            "--dimension", "subject_consistency"])
    assert r.exit_code == 2
    assert "pip install vbench" in r.output and "Traceback" not in r.output
    assert not isinstance(r.exception, ImportError)
