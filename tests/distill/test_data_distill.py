"""`distill --data`: TMD (and DMD2-v) on a folder of teacher latents from a tiny random Wan checkpoint;
resume continues the data stream where an uninterrupted run would be; unusable data exits 2."""

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tmd_bench.distill.tmd_train import TMDTrainConfig, run_tmd
from typer.testing import CliRunner

from tmd_bench import dataset
from tmd_bench.cli import app
from tmd_bench.teachers import load_teacher

WORKER = Path(__file__).with_name("data_worker.py")
PROMPTS = ["a cat sitting on the grass", "a dog running", "a red field"]
TMD_ARGS = ["--method", "tmd", "--outer-steps", "2", "--inner-steps", "2", "--head-blocks", "2", "--batch-size", "2",
            "--device", "cpu"]


def wan(folder):
    t = load_teacher("wan2.1-1.3b", folder)
    t.spec = replace(t.spec, frames=5, height=32, width=32)
    return t


@pytest.fixture(scope="module")
def wan_data(wan_teacher_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("wan-data")
    dataset.generate(wan(wan_teacher_dir), PROMPTS, out, steps=1, per_prompt=2, shard_size=4, batch_size=2)
    return out


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_distill_tmd_on_data_then_resume(wan_teacher_dir, wan_data, tmp_path):
    base = ["distill", "--teacher", "wan2.1-1.3b", "--teacher-path", wan_teacher_dir, "--data", wan_data, *TMD_ARGS,
            "--stage1-iterations", "2", "--checkpoint-every", "1", "--out", tmp_path / "run"]
    r = cli(*base, "--stage2-iterations", "2")
    assert r.exit_code == 0, r.output
    for stage, position in (("stage1", 2), ("stage2", 4)):  # stage 2 continues the stream stage 1 read
        state = json.loads((tmp_path / "run" / stage / "state.json").read_text())
        assert state["data_position"] == position and state["data"] == dataset.LatentDataset(wan_data).identity
        assert (tmp_path / "run" / stage / "student").is_dir()
    r = cli(*base, "--stage2-iterations", "3", "--resume")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run" / "stage2" / "state.json").read_text())["data_position"] == 5
    assert [row["iteration"] for row in log(tmp_path / "run" / "stage2" / "log.csv")] == ["2", "3"]
    # resuming on other data is refused
    other = tmp_path / "other"
    dataset.generate(wan(wan_teacher_dir), PROMPTS[:2], other, steps=1, shard_size=4)
    r = cli(*[other if a == wan_data else a for a in base], "--stage2-iterations", "4", "--resume")
    assert r.exit_code == 2 and "trained on data" in r.output, r.output


def test_resumed_run_reads_the_same_batches_as_an_uninterrupted_one(wan_teacher_dir, wan_data, tmp_path):
    teacher = wan(wan_teacher_dir)
    cfg = TMDTrainConfig(outer_steps=2, inner_steps=2, head_blocks=2, batch_size=4, stage1_iterations=4,
                         stage1_lr=1e-3)
    torch.manual_seed(0)  # the student's new layers (their initialisation is not the data's business)
    run_tmd(teacher, cfg, tmp_path / "whole", stages=(1,), checkpoint_every=2, log_every=1, data=wan_data)
    torch.manual_seed(0)
    run_tmd(teacher, replace(cfg, stage1_iterations=2), tmp_path / "cut", stages=(1,), checkpoint_every=2, log_every=1,
            data=wan_data)
    run_tmd(teacher, cfg, tmp_path / "cut", stages=(1,), resume=True, checkpoint_every=2, log_every=1, data=wan_data)
    # 4 batches of 4 over 6 clips: the stream crosses an epoch boundary on both sides of the cut
    a, b = log(tmp_path / "whole" / "stage1" / "log.csv"), log(tmp_path / "cut" / "stage1" / "log.csv")
    assert [r["iteration"] for r in b] == ["1", "2", "3", "4"]
    for ra, rb in zip(a, b):
        assert float(ra["mse"]) == pytest.approx(float(rb["mse"]), rel=1e-5), (ra, rb)
    for run in ("whole", "cut"):
        assert json.loads((tmp_path / run / "stage1" / "state.json").read_text())["data_position"] == 4


def test_dmd2_trains_on_data(wan_teacher_dir, wan_data, tmp_path):
    r = cli("distill", "--teacher", "wan2.1-1.3b", "--teacher-path", wan_teacher_dir, "--data", wan_data,
            "--method", "dmd2", "--steps", "2", "--iterations", "2", "--batch-size", "2", "--device", "cpu",
            "--out", tmp_path / "dmd2")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "dmd2" / "dmd2" / "student").is_dir()


def test_unusable_data_exits_2(wan_teacher_dir, shapes_teacher_dir, wan_data, tmp_path):
    r = cli("distill", "--teacher", "shapes", "--teacher-path", shapes_teacher_dir, "--data", wan_data, *TMD_ARGS,
            "--out", tmp_path / "a")
    assert r.exit_code == 2 and "written by teacher 'wan2.1-1.3b'; this run distills 'shapes'" in r.output, r.output
    r = cli("distill", "--teacher", "wan2.1-1.3b", "--teacher-path", wan_teacher_dir, *TMD_ARGS, "--out", tmp_path / "b")
    assert r.exit_code == 2 and "tmd-bench data generate" in r.output, r.output
    r = cli("distill", "--teacher", "wan2.1-1.3b", "--teacher-path", wan_teacher_dir, "--data", tmp_path / "none",
            *TMD_ARGS, "--out", tmp_path / "c")
    assert r.exit_code == 2 and "no index.json" in r.output, r.output
    r = cli("distill", "--teacher", "shapes", "--teacher-path", shapes_teacher_dir, "--data", wan_data,
            "--method", "kd", "--out", tmp_path / "d")  # on Wan, kd takes --data as its prompt source
    assert r.exit_code == 2 and "kd regresses on teacher ODE pairs" in r.output, r.output


def test_two_processes_each_reading_their_rows_match_one_process(wan_teacher_dir, wan_data, tmp_path):
    """DDP on 2 processes, each reading half of every global batch from the shards, computes the same
    losses as one process reading the whole batch."""
    sys.path.insert(0, str(WORKER.parent))
    from data_worker import run

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(WORKER), str(wan_teacher_dir), str(wan_data), str(tmp_path / "ddp")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    for r in (0, 1):  # 4 batches (2 per stage), each rank read its 2 rows of the global batch of 4
        assert json.loads((tmp_path / "ddp" / f"rows-rank{r}.json").read_text()) == [[2, 2 * r, 2 * r + 2, 4]] * 4
    run(wan_teacher_dir, wan_data, tmp_path / "single")
    for stage in ("stage1", "stage2"):
        a, b = log(tmp_path / "ddp" / stage / "log.csv"), log(tmp_path / "single" / stage / "log.csv")
        assert [r["iteration"] for r in a] == ["1", "2"]
        for ra, rb in zip(a, b):
            for k in ra:
                if k not in ("iteration", "elapsed_s") and rb[k] not in ("", "nan"):
                    assert float(ra[k]) == pytest.approx(float(rb[k]), rel=1e-4, abs=1e-6), (stage, k, ra, rb)
        assert json.loads((tmp_path / "ddp" / stage / "state.json").read_text())["data"] == \
            dataset.LatentDataset(wan_data).identity
