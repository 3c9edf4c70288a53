"""Distilled students open in diffusers: ``TMDPipeline`` / ``FewStepPipeline`` against the harness.

The reference is the harness (``tmd-bench evaluate``'s own loaders and samplers): for the same prompt and
seed, a pipeline's video equals the harness's to ≤ 1e-5 (fp32), for every shipped Shapes student and for
tiny Wan students distilled here (2 iterations, diffusers-built checkpoint with a VAE)."""

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tmd_bench import FewStepPipeline, TMDPipeline, harness, registry, runtime
from tmd_bench.teachers import load_teacher

STUDENTS = Path(registry.ASSETS) / "students"
PROMPT = "a small red circle moving left on a black background"


def harness_method(folder: Path, teacher):
    """The method `tmd-bench evaluate` builds for a student folder (evaluate.py's loaders)."""
    from tmd_bench.distill import dmd2, meanflow, rcm, tmd

    if (folder / "tmd_config.json").is_file():
        return tmd.tmd_method(tmd.load_student(folder, teacher))
    method = registry.read_json(folder / "student_config.json")["method"]
    if method == "meanflow":
        return meanflow.meanflow_method(meanflow.load_meanflow(folder, teacher))
    student = dmd2.load_full_student(folder, teacher, method)
    if method == "rcm":
        return rcm.rcm_method(student, student.config.get("sigma_max", 80.0))
    return dmd2.full_student_method(student, method)


def harness_video(method, teacher, prompt, seed, steps) -> np.ndarray:
    """The harness's clip as a pipeline returns ``np`` frames: ``(B, F, H, W, 3)`` in [0, 1]."""
    videos = harness.generate(method, teacher, [prompt], [seed], steps).videos
    return ((videos.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).numpy()


def pipeline_class(folder: Path):
    return TMDPipeline if (folder / "tmd_config.json").is_file() else FewStepPipeline


SHIPPED = sorted(p.parent for p in STUDENTS.rglob("model_index.json"))


def test_every_shipped_student_is_a_pipeline_folder():
    names = {p.relative_to(STUDENTS).parts[0] for p in SHIPPED}
    assert names >= {"tmd-M2", "tmd-M1", "dmd2-s1", "dmd2-s2", "kd", "rcm", "meanflow"}, names
    for folder in SHIPPED:
        assert (folder / "README.md").is_file() and (folder / "transformer" / "config.json").is_file()


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: "/".join(p.relative_to(STUDENTS).parts[:2]))
def test_shipped_student_pipeline_equals_the_harness(folder):
    teacher = load_teacher("shapes")
    method = harness_method(folder, teacher)
    pipe = pipeline_class(folder).from_pretrained(folder)
    steps = pipe.config.outer_steps if isinstance(pipe, TMDPipeline) else pipe.config.steps
    seed = 11
    ref = harness_video(method, teacher, PROMPT, seed, steps)
    out = pipe(PROMPT, generator=torch.Generator().manual_seed(seed), output_type="np").frames
    assert out.shape == ref.shape == (1, 8, 24, 24, 3)
    assert np.abs(out - ref).max() <= 1e-5
    # pt frames are WanPipeline's layout (B, F, 3, H, W); latents are the harness's latents
    pt = pipe(PROMPT, generator=torch.Generator().manual_seed(seed), output_type="pt").frames
    assert tuple(pt.shape) == (1, 8, 3, 24, 24)
    np.testing.assert_allclose(pt.permute(0, 1, 3, 4, 2).numpy(), out, atol=1e-6)
    # another seed is another video (the generator is used, not ignored)
    other = pipe(PROMPT, generator=torch.Generator().manual_seed(seed + 1), output_type="np").frames
    assert np.abs(other - out).max() > 1e-2


def test_a_batch_matches_clip_by_clip_and_generators_name_the_seeds():
    folder = STUDENTS / "tmd-M2" / "stage2" / "student"
    pipe = TMDPipeline.from_pretrained(folder)
    prompts = [PROMPT, "a big blue square moving up on a black background"]
    both = pipe(prompts, generator=[torch.Generator().manual_seed(3), torch.Generator().manual_seed(8)]).frames
    one = pipe(prompts[1], generator=torch.Generator().manual_seed(8)).frames
    np.testing.assert_allclose(both[1:], one, atol=1e-5)
    with pytest.raises(ValueError, match="one per video"):
        pipe(prompts, generator=[torch.Generator().manual_seed(3)])
    with pytest.raises(ValueError, match="output_type"):
        pipe(PROMPT, output_type="gif")


def test_model_card_is_a_hugging_face_card():
    from huggingface_hub import ModelCard

    for folder in SHIPPED:
        card = ModelCard.load(folder / "README.md")
        assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "text-to-video"
        assert card.data.base_model and "tmd-bench" in card.data.tags
        assert "from_pretrained" in card.text and "## Config" in card.text
        assert re.search(r"runs/draws8[a-z]?/report/report\.csv", card.text) and "## Made by" in card.text  # its pooled rows


def test_readme_snippet_runs_as_written(tmp_path, monkeypatch):
    """The README's "use your student in diffusers" block, executed as it is written there."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"<!-- diffusers-snippet -->\s*```python\n(.*?)```", readme, re.S)
    assert block, "README: the diffusers snippet (marked <!-- diffusers-snippet -->) is missing"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tmd_bench").mkdir()
    shutil.copytree(STUDENTS, tmp_path / "tmd_bench" / "assets" / "students")  # the paths the snippet names
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    assert scope["frames"].shape[-1] == 3


# ---------------------------------------------------------------------------------------------
# Tiny Wan students: distilled here for 2 iterations, loaded with diffusers' machinery


@pytest.fixture(scope="module")
def wan(wan_pipeline_dir):
    return runtime.load("wan2.1-1.3b", wan_pipeline_dir, "cpu", None, frames=5, height=32, width=32)


@pytest.fixture(scope="module")
def wan_students(wan, tmp_path_factory):
    from tmd_bench.distill import dmd2, tmd_train

    from tmd_bench import dataset

    root = tmp_path_factory.mktemp("wan-students")
    dataset.generate(wan, ["a cat sitting on the grass", "a dog running"], root / "data", steps=1, per_prompt=2,
                     shard_size=4, batch_size=2)
    tmd_cfg = replace(tmd_train.preset("wan2.1-1.3b"), batch_size=2, stage1_iterations=2, stage2_iterations=2,
                      gradient_checkpointing=False, dtype="float32", head_blocks=2, student_every=1)
    tmd_final = tmd_train.run_tmd(wan, tmd_cfg, root / "tmd", checkpoint_every=2, data=root / "data")
    dmd_cfg = dmd2.DMD2Config(steps=2, iterations=2, batch_size=2, teacher_guidance=5.0)
    dmd_final = dmd2.run_dmd2(wan, dmd_cfg, root / "dmd2", checkpoint_every=2, data=root / "data")
    return {"tmd": tmd_final, "dmd2": dmd_final}


@pytest.mark.parametrize("method", ["tmd", "dmd2"])
def test_tiny_wan_student_pipeline_equals_the_harness(wan, wan_students, method):
    folder = wan_students[method]
    index = registry.read_json(folder / "model_index.json")
    assert index["vae"] == ["diffusers", "AutoencoderKLWan"] and index["teacher"] == "wan2.1-1.3b"
    pipe = pipeline_class(folder).from_pretrained(folder)
    ref = harness_video(harness_method(folder, wan), wan, "a cat sitting on the grass", 4, 2)
    out = pipe("a cat sitting on the grass", num_frames=5, height=32, width=32,
               generator=torch.Generator().manual_seed(4)).frames
    assert out.shape == ref.shape == (1, 5, 32, 32, 3)
    assert np.abs(out - ref).max() <= 1e-5
    latents = pipe("a cat sitting on the grass", num_frames=5, height=32, width=32,
                   generator=torch.Generator().manual_seed(4), output_type="latent").frames
    assert tuple(latents.shape) == (1, 16, 2, 4, 4)


def test_referenced_teacher_components_load_from_the_teacher(wan, wan_students, tmp_path):
    """A Wan student references its teacher's text encoder, tokenizer and VAE instead of copying them
    (UMT5-XXL is 11 GB): the folder then has none of them, and the pipeline still equals the copy."""
    from tmd_bench.pipelines import write_pipeline_files

    folder = tmp_path / "student"
    shutil.copytree(wan_students["tmd"], folder)
    for c in ("text_encoder", "tokenizer", "vae"):
        shutil.rmtree(folder / c)
    write_pipeline_files(folder, wan, components="reference")
    index = registry.read_json(folder / "model_index.json")
    assert index["teacher_components"] == "text_encoder,tokenizer,vae" and index["vae"] == [None, None]
    assert not (folder / "text_encoder").exists()
    copied = TMDPipeline.from_pretrained(wan_students["tmd"])
    referenced = TMDPipeline.from_pretrained(folder)
    kw = dict(num_frames=5, height=32, width=32, output_type="np")
    a = copied("a dog running", generator=torch.Generator().manual_seed(1), **kw).frames
    b = referenced("a dog running", generator=torch.Generator().manual_seed(1), **kw).frames
    assert np.abs(a - b).max() <= 1e-6
    # the teacher gone: one clear error naming what the student needs
    moved = registry.read_json(folder / "model_index.json")
    moved["teacher_path"] = str(tmp_path / "nowhere")
    (folder / "model_index.json").write_text(__import__("json").dumps(moved))
    with pytest.raises(registry.TeacherNotFound, match="references its teacher's text_encoder"):
        TMDPipeline.from_pretrained(folder)


def test_card_command_writes_the_results_rows_into_the_model_card(tmp_path):
    import pandas as pd
    from huggingface_hub import ModelCard
    from typer.testing import CliRunner

    from tmd_bench.cli import app

    folder = tmp_path / "student"
    shutil.copytree(STUDENTS / "dmd2-s2" / "dmd2" / "student", folder)
    table = tmp_path / "results.csv"
    pd.DataFrame([{"row_id": "dmd2-s2", "suite": "shapes-eval", "steps": 2, "nfe_counted": 2.0, "effective_nfe": 2.0,
                   "all_correct": 0.834, "all_correct_se": 0.0116, "latency_total_s": 0.0421, "num_clips": 1024},
                  {"row_id": "other", "suite": "shapes-eval"}]).to_csv(table, index=False)
    r = CliRunner().invoke(app, ["card", str(folder), "--results", str(table), "--rows", "dmd2-s2"])
    assert r.exit_code == 0, r.output
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "diffusers"
    assert "| dmd2-s2 | shapes-eval | 2 | 2 | 2 | 83.4% ± 1.2 | 42.1 | 1024 |" in card.text
    assert "other" not in card.text and "## Made by" in card.text  # the command that made it stays
    r = CliRunner().invoke(app, ["card", str(folder), "--results", str(table), "--rows", "nope"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "no row 'nope'" in r.output, r.output
    r = CliRunner().invoke(app, ["card", str(tmp_path), "--results", str(table), "--rows", "dmd2-s2"])
    assert r.exit_code == 2 and "no model_index.json" in r.output, r.output


@pytest.mark.parametrize("method", ["tmd", "dmd2"])
def test_tiny_wan_student_pipeline_in_bf16_equals_the_bf16_harness(wan_pipeline_dir, wan_students, method):
    """``from_pretrained(folder, torch_dtype=torch.bfloat16)`` runs the same bf16 computation as the harness
    on a bf16 teacher (fp32 latents, diffusers' fp32 modules kept), and stays near the fp32 video."""
    folder = wan_students[method]
    wan16 = runtime.load("wan2.1-1.3b", wan_pipeline_dir, "cpu", "bfloat16", frames=5, height=32, width=32)
    pipe = pipeline_class(folder).from_pretrained(folder, dtype=torch.bfloat16)
    assert pipe.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert pipe.transformer.scale_shift_table.dtype == torch.float32
    assert pipe.vae.dtype == torch.float32  # the Wan VAE decodes in fp32, as the harness's teacher does
    old = pipeline_class(folder).from_pretrained(folder, torch_dtype=torch.bfloat16)  # diffusers' older keyword
    assert old.vae.dtype == torch.float32 and old.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    ref = harness_video(harness_method(folder, wan16), wan16, "a cat sitting on the grass", 4, 2)
    kw = dict(num_frames=5, height=32, width=32, generator=torch.Generator().manual_seed(4))
    out = pipe("a cat sitting on the grass", **kw).frames
    assert out.dtype == np.float32 and out.shape == ref.shape == (1, 5, 32, 32, 3)
    assert np.abs(out - ref).max() <= 1e-5
    fp32 = pipeline_class(folder).from_pretrained(folder)("a cat sitting on the grass", **{
        **kw, "generator": torch.Generator().manual_seed(4)}).frames
    assert 0 < np.abs(out - fp32).mean() < 0.05  # bf16 is another computation, close to fp32
