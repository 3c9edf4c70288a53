"""bf16 end to end on the CPU, from a checkpoint diffusers' WanPipeline wrote: every method distills and
evaluates with ``--dtype bfloat16``; diffusers' fp32-kept modules stay fp32; latents stay fp32; the
finite differences of TM-MF / MeanFlow targets run in a float32 island."""

import copy
import csv
import json
import math

import pandas as pd
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from tmd_bench.cli import app

SIZE = ["--frames", "5", "--height", "32", "--width", "32"]
PROMPTS = "a cat sitting on the grass\na dog running\na red field\n"
# method → (distill options, student folder inside --out, evaluate step count)
METHODS = {
    "tmd": (["--outer-steps", "2", "--inner-steps", "2", "--head-blocks", "2", "--stage1-iterations", "2",
             "--stage2-iterations", "5"], "stage2/student", 2),
    "dmd2": (["--steps", "2", "--iterations", "5"], "dmd2/student", 2),
    "rcm": (["--iterations", "2"], "student", 2),
    "meanflow": (["--iterations", "2"], "student", 2),
    # on a Wan teacher kd's ODE pairs take their prompts from --data, sampled at --frames/--height/--width
    "kd": (["--kd-pairs", "4", "--kd-teacher-steps", "2", "--iterations", "2", *SIZE], "student", 1),
}


def cli(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def bf16_data(wan_pipeline_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("bf16")
    (d / "p.txt").write_text(PROMPTS)
    cli("data", "generate", "--teacher", "wan2.1-1.3b", "--teacher-path", wan_pipeline_dir, "--dtype", "bfloat16",
        "--device", "cpu", "--prompts", d / "p.txt", "--out", d / "data", "--steps", "2", *SIZE, "--per-prompt", "2")
    return d


def test_data_generate_records_bf16_and_keeps_the_checkpoints_sampler(bf16_data):
    ix = json.loads((bf16_data / "data" / "index.json").read_text())
    assert ix["dtype"] == "bfloat16" and ix["sampler"]["solver"] == "unipc" and ix["sampler"]["shift"] == 3.0
    assert "--dtype bfloat16" in ix["command"] and "--solver unipc" in ix["command"]


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_distills_and_evaluates_in_bf16(method, wan_pipeline_dir, bf16_data, tmp_path):
    opts, student_sub, steps = METHODS[method]
    teacher = ["--teacher", "wan2.1-1.3b", "--teacher-path", wan_pipeline_dir, "--dtype", "bfloat16", "--device", "cpu"]
    r = cli("distill", *teacher, "--method", method, *opts, "--batch-size", "2", "--data", bf16_data / "data",
            "--out", tmp_path / "run")
    hint = r.output.split("evaluate it:")[1]
    assert "--teacher-path" in hint and "--dtype bfloat16" in hint  # the hint reproduces
    logs = sorted((tmp_path / "run").rglob("log.csv"))
    assert logs
    for log in logs:  # every logged loss is finite, and each loss was logged at least once
        rows = list(csv.DictReader(open(log)))
        for k in rows[0]:
            values = [float(row[k]) for row in rows if row[k] not in ("", "nan")]
            assert values and all(math.isfinite(v) for v in values), (log, k, rows)
    student = next(p for p in (tmp_path / "run").rglob(student_sub) if p.is_dir())
    with safe_open(str(student / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes["scale_shift_table"] == "F32" and dtypes["blocks.0.attn1.to_q.weight"] == "BF16"
    cli("evaluate", *teacher, "--methods", method, "--checkpoint", f"{method}={student}", "--steps", steps, *SIZE,
        "--prompts", bf16_data / "p.txt", "--latency-repeats", "1", "--out", tmp_path / "eval")
    row = pd.read_csv(tmp_path / "eval" / "results.csv").iloc[0]
    assert row["dtype"] == "bfloat16" and row["nfe_counted"] == row["nfe"]
    card = json.loads((tmp_path / "eval" / row["run_card"]).read_text())
    assert card["precision"] == {"compute_dtype": "bfloat16", "latents": "float32", "solver_state": "float32",
                                 "vae": "float32"}
    assert card["command"].count("--dtype bfloat16") == 1 and "--teacher-path" in card["command"]


def test_the_finite_difference_runs_in_a_float32_island(wan_pipeline_dir):
    """MeanFlow's target on a bf16 student equals the same weights' fp32 target; without the island the
    bf16 difference of nearly equal outputs is off by far more (the test fails if the island is removed)."""
    from tmd_bench import runtime
    from tmd_bench.distill import losses
    from tmd_bench.distill.meanflow import MeanFlowStudent
    from tmd_bench.distill.precision import float32_island

    t16 = runtime.load("wan2.1-1.3b", wan_pipeline_dir, "cpu", "bfloat16", 5, 32, 32)
    st16 = MeanFlowStudent(t16.transformer, {})
    with torch.no_grad():  # a non-zero (t − r) embedding, so r matters
        for p in st16.delta_time.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    st32 = copy.deepcopy(st16).float()  # the same (bf16-valued) weights in float32
    g = torch.Generator().manual_seed(0)
    z = torch.randn(t16.latent_shape(2), generator=g)
    v = torch.randn(z.shape, generator=g)
    t, r = torch.tensor([0.6, 0.8]), torch.tensor([0.2, 0.5])
    text = t16.encode_text(["a cat", "a dog"])

    def target(st, island):
        with torch.no_grad():
            if island:
                with float32_island(st):
                    return losses.meanflow_target(lambda z_, t_: st(z_, r, t_, text), z, t, r, v, 5e-3)
            return losses.meanflow_target(lambda z_, t_: st(z_, r, t_, text), z, t, r, v, 5e-3)

    ref = target(st32, False)
    with_island, without = target(st16, True), target(st16, False)
    assert st16.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16  # restored after the island
    assert st16.transformer.scale_shift_table.dtype == torch.float32
    err_island, err_bf16 = (with_island - ref).abs().max().item(), (without - ref).abs().max().item()
    assert err_island < 1e-4 and err_bf16 > 50 * err_island, (err_island, err_bf16)
