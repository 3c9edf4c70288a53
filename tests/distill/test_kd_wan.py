"""KD and one-step DMD2-v's KD warm-up on a Wan teacher: teacher ODE pairs from a prompt file or from the
prompts recorded in a data folder, sampled with the checkpoint's own solver, cached under a key that
names the prompt list.

`tmd-bench distill` has no --frames/--height/--width, so a Wan teacher there samples at its preset size
(81×480×832), far too big for a CPU test: the runs below call the library (``run_kd``/``run_dmd2``, what
the CLI calls) on the tiny checkpoint resized to 5×32×32; the CLI is exercised where it fails before the
teacher loads."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tmd_bench.distill import dmd2, kd
from tmd_bench.distill.dmd2 import DMD2Config
from typer.testing import CliRunner

from tmd_bench import dataset, harness, runtime
from tmd_bench.cli import app
from tmd_bench.suites import load_suite

PROMPTS = ["a cat sitting on the grass", "a dog running", "a red field"]
KD_CFG = kd.KDConfig(pairs=4, teacher_steps=2, iterations=2, batch_size=2)


def wan(folder):
    return runtime.load("wan2.1-1.3b", folder, "cpu", None, frames=5, height=32, width=32)


@pytest.fixture(scope="module")
def teacher(wan_pipeline_dir):
    return wan(wan_pipeline_dir)


@pytest.fixture(scope="module")
def wan_data(teacher, tmp_path_factory):
    """6 clips (2 per prompt) in 2 shards of the tiny checkpoint at 5×32×32."""
    out = tmp_path_factory.mktemp("wan-data")
    dataset.generate(teacher, PROMPTS, out, steps=1, per_prompt=2, shard_size=4, batch_size=2)
    return out


def cached_pairs(folder):
    index = json.loads((Path(folder) / "index.json").read_text())
    noise, target, prompts = [], [], []
    for name in index["shards"]:
        with safe_open(str(Path(folder) / name), "pt") as f:
            noise.append(f.get_tensor("noise"))
            target.append(f.get_tensor("target"))
            prompts += json.loads(f.metadata()["prompts"])
    return index, torch.cat(noise), torch.cat(target), prompts


def stamps(folder):
    return [p.stat().st_mtime_ns for p in sorted(Path(folder).glob("*.safetensors"))]


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_kd_on_wan_from_a_prompt_file(teacher, tmp_path):
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    prompts = load_suite(str(tmp_path / "p.txt")).prompts
    final = kd.run_kd(teacher, KD_CFG, tmp_path / "kd", prompts=prompts, checkpoint_every=1)
    assert (final / "student_config.json").is_file()
    assert dmd2.load_full_student(final, teacher, "kd").config["steps"] == 1

    index, noise, target, pair_prompts = cached_pairs(tmp_path / "kd" / "pairs")
    assert pair_prompts == [PROMPTS[k % 3] for k in range(4)]  # cycled: pair k takes prompt k mod n
    assert index["key"]["solver"] == teacher.spec.solver == "unipc"  # the checkpoint's own scheduler
    assert index["key"]["prompts"] == kd.prompts_identity(PROMPTS)
    assert noise.dtype == target.dtype == torch.float32
    assert target.shape == noise.shape == (4, *teacher.latent_shape(1)[1:])  # latents, not decoded video
    # pair k's target is the teacher sampler's endpoint for its prompt and seed
    method = harness.teacher_method(teacher, teacher.spec.solver)
    negative = teacher.encode_text([teacher.spec.negative_prompt])
    for k in (0, 3):
        seed = KD_CFG.seed * 1_000_003 + k
        x = harness.noise_for_seeds(teacher, [seed])
        with torch.no_grad():
            ref = method.sample(x, teacher.encode_text([PROMPTS[k % 3]]), negative, KD_CFG.teacher_steps, [seed])
        torch.testing.assert_close(noise[k:k + 1], x)
        torch.testing.assert_close(target[k:k + 1], ref.float(), rtol=0, atol=1e-5)  # batch of 4 vs 1

    # the same prompts reuse the cache; another prompt file regenerates it
    before = stamps(tmp_path / "kd" / "pairs")
    kd.make_pairs(teacher, KD_CFG, tmp_path / "kd" / "pairs", prompts=prompts)
    assert stamps(tmp_path / "kd" / "pairs") == before
    other = ["a blue fox in a snowy forest", "a dog running"]
    kd.make_pairs(teacher, KD_CFG, tmp_path / "kd" / "pairs", prompts=other)
    index2, _, target2, pair_prompts2 = cached_pairs(tmp_path / "kd" / "pairs")
    assert index2["key"]["prompts"] == kd.prompts_identity(other) != index["key"]["prompts"]
    assert pair_prompts2 == [other[k % 2] for k in range(4)]
    assert not torch.equal(target2[0], target[0])


def test_kd_on_wan_takes_its_prompts_from_a_data_folder(teacher, wan_data, tmp_path):
    assert kd.data_prompts(wan_data) == PROMPTS  # distinct, in clip order, across both shards
    final = kd.run_kd(teacher, KD_CFG, tmp_path / "kd", data=wan_data, checkpoint_every=1)
    assert (final / "student_config.json").is_file()
    index, _, _, pair_prompts = cached_pairs(tmp_path / "kd" / "pairs")
    assert pair_prompts == [PROMPTS[k % 3] for k in range(4)]
    assert index["key"]["prompts"] == kd.prompts_identity(PROMPTS)
    # --prompts wins over the data folder's prompts
    kd.run_kd(teacher, KD_CFG, tmp_path / "kd2", prompts=["a blue fox"], data=wan_data, checkpoint_every=1)
    assert cached_pairs(tmp_path / "kd2" / "pairs")[3] == ["a blue fox"] * 4


def test_one_step_dmd2_on_wan_warms_up_on_pairs_from_its_data(teacher, wan_data, tmp_path):
    cfg = DMD2Config(steps=1, iterations=2, batch_size=2, teacher_guidance=5.0, kd_warmup_iterations=2, kd_pairs=4,
                     kd_teacher_steps=1)
    final = dmd2.run_dmd2(teacher, cfg, tmp_path, checkpoint_every=1, data=wan_data)
    assert (tmp_path / "kd-warmup" / "student" / "student_config.json").is_file()
    assert dmd2.load_full_student(final, teacher, "dmd2").config["steps"] == 1
    index, _, _, pair_prompts = cached_pairs(tmp_path / "kd-warmup" / "pairs")
    assert pair_prompts == [PROMPTS[k % 3] for k in range(4)] and index["key"]["solver"] == "unipc"


def test_kd_pairs_on_wan_without_prompts_exit_2(wan_pipeline_dir, tmp_path):
    base = ["distill", "--teacher", "wan2.1-1.3b", "--teacher-path", wan_pipeline_dir, "--device", "cpu",
            "--out", tmp_path / "run"]
    for method in (["--method", "kd"], ["--method", "dmd2", "--steps", "1"]):
        r = cli(*base, *method, "--kd-pairs", "4", "--iterations", "2")
        assert r.exit_code == 2, r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
        assert "--prompts FILE" in r.output and "--data FOLDER" in r.output, r.output
    with pytest.raises(ValueError, match="pass --prompts FILE"):
        kd.pair_prompts(wan(wan_pipeline_dir))
    # kd on a Wan teacher now reads --data (its prompts): a folder that is not one fails before the teacher loads
    r = cli(*base, "--method", "kd", "--data", tmp_path / "none")
    assert r.exit_code == 2 and "no index.json" in r.output, r.output


def test_prompts_and_data_are_refused_where_no_pairs_use_them(wan_pipeline_dir, shapes_teacher_dir, tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n")
    shapes = ["distill", "--teacher", "shapes", "--teacher-path", shapes_teacher_dir, "--device", "cpu",
              "--out", tmp_path / "run"]
    r = cli(*shapes, "--method", "kd", "--prompts", tmp_path / "p.txt")
    assert r.exit_code == 2 and "Shapes world" in r.output, r.output
    r = cli(*shapes, "--method", "kd", "--data", tmp_path)
    assert r.exit_code == 2 and "kd regresses on teacher ODE pairs" in r.output, r.output
    r = cli("distill", "--teacher", "wan2.1-1.3b", "--teacher-path", wan_pipeline_dir, "--device", "cpu",
            "--method", "dmd2", "--steps", "2", "--prompts", tmp_path / "p.txt", "--out", tmp_path / "run")
    assert r.exit_code == 2 and "--steps 2 has none" in r.output, r.output


def test_kd_on_shapes_through_the_cli_keeps_its_world_pairs(shapes_teacher_dir, tmp_path):
    r = cli("distill", "--teacher-path", shapes_teacher_dir, "--method", "kd", "--iterations", "2", "--batch-size", "2",
            "--kd-pairs", "4", "--kd-teacher-steps", "1", "--device", "cpu", "--out", tmp_path / "kd")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "kd" / "student" / "student_config.json").is_file()
    index = json.loads((tmp_path / "kd" / "pairs" / "index.json").read_text())
    # the Shapes pairs' key is as before: Euler, prompts from the world stream (no prompt list)
    assert set(index["key"]) == {"teacher", "teacher_sha256", "pairs", "teacher_steps", "seed", "solver", "guidance",
                                 "shift"} and index["key"]["solver"] == "euler"
