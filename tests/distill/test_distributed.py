"""Two processes (torchrun, gloo on the CPU) against one: TMD stage 2 under DDP (with gradient
accumulation) and FSDP2, a stopped-and-resumed run, DCP resume on another number of processes, and
sharded evaluation. One torchrun launch (dist_worker.py) does every multi-process part."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from tmd_bench.distill.tmd_train import TMDTrainConfig, run_tmd

from tmd_bench import distributed
from tmd_bench.evaluate import EvalConfig, evaluate
from tmd_bench.teachers import load_teacher

WORKER = Path(__file__).with_name("dist_worker.py")
CFG = TMDTrainConfig(outer_steps=2, inner_steps=2, head_blocks=2, batch_size=4, stage2_lr=1e-3, stage2_iterations=5,
                     teacher_guidance=2.0)


@pytest.fixture(scope="module")
def runs(shapes_teacher_dir, wan22_a14b_dir, tmp_path_factory):
    """The two-process runs (worker) and the single-process references at the same global batch."""
    from tmd_bench import dataset, runtime

    out = tmp_path_factory.mktemp("dist")
    a14b = runtime.load("wan2.2-t2v-a14b", wan22_a14b_dir, "cpu", None, frames=5, height=32, width=32)
    dataset.generate(a14b, ["a cat sitting on the grass", "a dog running"], out / "a14b-data", steps=2, per_prompt=4,
                     shard_size=8, batch_size=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(WORKER), str(shapes_teacher_dir), str(out), str(wan22_a14b_dir), str(out / "a14b-data")]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        # seen once in 6 launches on a loaded 2-core machine: a rank aborted in gloo's C++ teardown. One
        # relaunch from scratch; every assertion below still holds the relaunched run to one process's
        for sub in ("ddp", "fsdp", "cut", "cut-at-3", "eval", "a14b-fsdp"):
            shutil.rmtree(out / sub, ignore_errors=True)
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    teacher = load_teacher("shapes", shapes_teacher_dir)
    torch.manual_seed(0)  # the discriminator's initialisation (as the worker does)
    run_tmd(teacher, CFG, out / "single", stages=(2,), checkpoint_every=3, log_every=1)
    sys.path.insert(0, str(WORKER.parent))
    from dist_worker import a14b_stage2

    a14b_stage2(wan22_a14b_dir, out / "a14b-data", out / "a14b-single")
    return out


def test_two_process_fsdp2_shards_both_experts_of_a_two_expert_teacher(runs):
    """Wan2.2 A14B: TMD stage 2 with both experts sharded over 2 processes equals one process (every
    loss, every weight of the student)."""
    a, b = log(runs / "a14b-fsdp"), log(runs / "a14b-single")
    assert [r["iteration"] for r in a] == [r["iteration"] for r in b] == [1, 2, 3, 4, 5]
    for ra, rb in zip(a, b):
        for k in ra:
            assert (pd.isna(ra[k]) and pd.isna(rb[k])) or ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-6), (k, ra, rb)
    sa, sb = student(runs / "a14b-fsdp"), student(runs / "a14b-single")
    worst = max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)
    assert worst <= 5e-5, worst  # float rounding of the sharded reductions; an update moves weights by ≈ lr = 1e-3


def log(run: Path) -> list[dict]:
    with open(run / "stage2" / "log.csv") as f:
        return [{k: float(v) for k, v in r.items() if k != "elapsed_s"} for r in csv.DictReader(f)]


def student(run: Path) -> dict[str, torch.Tensor]:
    folder = run / "stage2" / "student"
    return {**load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors")),
            **load_file(str(folder / "tmd_head" / "diffusion_pytorch_model.safetensors"))}


def assert_same_run(run: Path, ref: Path) -> None:
    a, b = log(run), log(ref)
    assert [r["iteration"] for r in a] == [1, 2, 3, 4, 5]
    for ra, rb in zip(a, b):  # every loss of every iteration: critics on 1–4, the student on 5
        for k in ra:
            assert (pd.isna(ra[k]) and pd.isna(rb[k])) or ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-6), (k, ra, rb)
    sa, sb, s3 = student(run), student(ref), student(ref.parent / "cut-at-3")
    assert sa.keys() == sb.keys()
    worst = max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)
    assert worst <= 1e-5, worst  # float rounding only
    # not vacuous: the student's one update (iteration 5; AdamW moves a weight by ≈ lr) is 100× larger
    assert max((sa[k].float() - s3[k].float()).abs().max().item() for k in sa) > 0.5 * CFG.stage2_lr


def test_two_process_ddp_with_accumulation_matches_one_process(runs):
    """DDP on 2 processes × 2 micro-batches of 1 = one process with the global batch of 4."""
    assert_same_run(runs / "ddp", runs / "single")


def test_two_process_fsdp2_matches_one_process(runs):
    assert_same_run(runs / "fsdp", runs / "single")
    meta = (runs / "fsdp" / "stage2" / "state.json").read_text()
    assert '"format": "dcp"' in meta and '"world_size": 2' in meta and '"strategy": "fsdp"' in meta
    assert sorted(p.name for p in (runs / "fsdp" / "stage2" / "dcp").iterdir()) == ["step-00000005"]


def test_stopped_and_resumed_two_process_run_ends_where_an_uninterrupted_one_does(runs):
    assert_same_run(runs / "cut", runs / "single")
    assert_same_run(runs / "cut", runs / "fsdp")


def test_dcp_checkpoint_of_two_processes_resumes_in_one(runs, shapes_teacher_dir, tmp_path):
    """The FSDP2 checkpoint at iteration 3, resumed without a process group, ends as the others."""
    run = tmp_path / "resumed"
    shutil.copytree(runs / "cut-at-3", run)
    teacher = load_teacher("shapes", shapes_teacher_dir)
    torch.manual_seed(1)  # whatever: every network's state comes from the checkpoint
    run_tmd(teacher, CFG, run, stages=(2,), resume=True, checkpoint_every=3, log_every=1)
    assert_same_run(run, runs / "single")


def test_sharded_evaluation_equals_one_process(runs, shapes_teacher_dir, tmp_path):
    """5 prompts in batches of 2 on 2 processes (2 + 3 clips) = one process, to the bit."""
    one = evaluate(EvalConfig(teacher="shapes", teacher_path=str(shapes_teacher_dir), methods=["teacher-euler"],
                              steps=[1, 2], prompts="shapes-eval", limit=5, batch_size=2, latency_warmup=0,
                              latency_repeats=1, preview=5, metrics=["shapes"], out=str(tmp_path / "one")))
    two = pd.read_csv(runs / "eval" / "results.csv")
    timing = [c for c in one if c.startswith("latency_") or c in ("fps", "peak_memory_mb", "metrics_time_s")]
    pd.testing.assert_frame_equal(two.drop(columns=timing), one.drop(columns=timing), check_exact=True)
    for row in one["row_id"]:
        a = load_file(str(runs / "eval" / "samples" / f"{row}.safetensors"))["videos"]
        b = load_file(str(tmp_path / "one" / "samples" / f"{row}.safetensors"))["videos"]
        assert a.shape[0] == 5 and torch.equal(a, b)
        assert (runs / "eval" / "per_clip" / f"{row}.csv").read_text() == \
            (tmp_path / "one" / "per_clip" / f"{row}.csv").read_text()


def test_global_batch_draws_are_sliced_per_shard():
    whole = torch.Generator().manual_seed(7)
    full = (distributed.randn((4, 3), whole), distributed.rand(4, whole), distributed.randint(5, 4, whole))
    for lo, hi in ((0, 2), (2, 3), (3, 4)):
        g = distributed.ShardGenerator.rows(7, lo, hi, 4)
        part = (distributed.randn((hi - lo, 3), g), distributed.rand(hi - lo, g), distributed.randint(5, hi - lo, g))
        for a, b in zip(part, full):
            assert torch.equal(a, b[lo:hi])
    with pytest.raises(ValueError, match="a draw of 4 rows on a shard of 1 rows"):
        distributed.rand(4, distributed.ShardGenerator.rows(7, 0, 1, 4))


def test_evaluation_shards_are_whole_batches():
    spans = [distributed.batch_span(5, 2, r, 2) for r in range(2)]
    assert spans == [(0, 2), (2, 5)]
    assert [distributed.batch_span(3, 4, r, 2) for r in range(2)] == [(0, 0), (0, 3)]
    assert distributed.strip_option(["distill", "--nproc", "2", "--nproc=3", "--out", "x"], "--nproc") == \
        ["distill", "--out", "x"]


def test_several_processes_are_for_tmd_only(tmp_path):
    from typer.testing import CliRunner

    from tmd_bench.cli import app

    r = CliRunner().invoke(app, ["distill", "--method", "kd", "--nproc", "2", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "run --method tmd; kd runs in one process" in r.output
    r = CliRunner().invoke(app, ["distill", "--grad-accumulation", "2", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "add --nproc 1" in r.output
