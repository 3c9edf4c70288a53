"""Wan2.2 teachers against diffusers' own WanPipeline, on tiny checkpoints WanPipeline itself wrote
(``conftest.build_wan22_pipeline``): TI2V-5B's per-token timesteps, 48-channel VAE and 16× spatial
compression; A14B's two experts switched at the boundary with a CFG scale each. Then every method
distills 2 iterations on each and evaluates, and the students open as pipelines."""

import numpy as np
import pytest
import torch

from tmd_bench import harness, registry, runtime

PROMPT = "a cat sitting on the grass"
NEGATIVE = "blurry static"


def teacher(name, folder, frames, height, width, dtype=None):
    return runtime.load(name, folder, "cpu", dtype, frames=frames, height=height, width=width)


@pytest.fixture(scope="module")
def ti2v(wan22_ti2v_dir):
    return teacher("wan2.2-ti2v-5b", wan22_ti2v_dir, 5, 64, 64)


@pytest.fixture(scope="module")
def a14b(wan22_a14b_dir):
    return teacher("wan2.2-t2v-a14b", wan22_a14b_dir, 5, 32, 32)


def ours(t, steps, seed=7, solver="unipc", guidance=None):
    method = harness.teacher_method(t, solver, guidance)
    text, negative = t.encode_text([PROMPT]), t.encode_text([NEGATIVE])
    return method.sample(harness.noise_for_seeds(t, [seed]), text, negative, steps, [seed])


def reference(folder, steps, seed=7, output_type="latent", **kw):
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(folder)
    t = pipe.transformer.config
    return pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                output_type=output_type, **kw).frames


def test_presets_and_what_the_checkpoints_say(ti2v, a14b):
    s = registry.TEACHERS["wan2.2-ti2v-5b"]
    assert (s.frames, s.height, s.width, s.fps, s.vae_stride) == (121, 704, 1280, 24, (4, 16, 16))
    assert ti2v.spec.expand_timesteps and ti2v.spec.vae_stride == (4, 16, 16) and ti2v.latent_channels == 48
    assert ti2v.latent_shape(1) == (1, 48, 2, 4, 4) and ti2v.transformer_2 is None
    s = registry.TEACHERS["wan2.2-t2v-a14b"]
    assert (s.frames, s.height, s.width, s.guidance, s.guidance_2) == (81, 720, 1280, 4.0, 3.0)
    assert a14b.spec.boundary_ratio == 0.875 and a14b.boundary_timestep == 875.0 and a14b.transformer_2 is not None
    assert a14b.spec.shift == 12.0  # from the checkpoint's scheduler config


@pytest.mark.parametrize("steps", [4, 12])
def test_ti2v_teacher_equals_wan_pipeline_with_expanded_timesteps(ti2v, wan22_ti2v_dir, steps):
    ref = reference(wan22_ti2v_dir, steps, num_frames=5, height=64, width=64, guidance_scale=5.0)
    out = ours(ti2v, steps)
    assert out.shape == ref.shape == (1, 48, 2, 4, 4)
    assert (out - ref).abs().max().item() <= 1e-4


def test_ti2v_decoded_video_equals_wan_pipeline(ti2v, wan22_ti2v_dir):
    ref = reference(wan22_ti2v_dir, 4, output_type="np", num_frames=5, height=64, width=64, guidance_scale=5.0)
    video = ti2v.decode(ours(ti2v, 4))
    got = ((video.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).numpy()
    assert got.shape == ref.shape == (1, 5, 64, 64, 3)
    assert np.abs(got - ref).max() <= 1e-4


def test_per_token_timesteps_equal_one_per_clip_in_text_to_video(ti2v):
    """In T2V mode every token carries the same timestep, so the distillation code's per-clip timestep
    (one embedding, broadcast) computes the same velocity as WanPipeline's per-token one."""
    x = torch.randn(2, 48, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.9, 0.3])
    text = ti2v.encode_text([PROMPT, "a dog running"])
    tr = ti2v.transformer
    per_token = ti2v.velocity(x, t, text)
    per_clip = tr(x, 1000 * t, text, return_dict=False)[0]
    assert ti2v.timestep_input(x, t).shape == (2, 2 * 2 * 2)
    torch.testing.assert_close(per_token, per_clip, rtol=0, atol=1e-5)


@pytest.mark.parametrize("steps", [4, 10])
def test_a14b_teacher_equals_wan_pipeline_across_both_experts(a14b, wan22_a14b_dir, steps):
    ref = reference(wan22_a14b_dir, steps, num_frames=5, height=32, width=32, guidance_scale=4.0,
                    guidance_scale_2=3.0)
    out = ours(a14b, steps)
    assert (out - ref).abs().max().item() <= 1e-4
    # the second expert is used: the same sampler with the high-noise expert only is another video
    second, a14b.transformer_2 = a14b.transformer_2, None
    try:
        high_only = ours(a14b, steps, guidance=4.0)
    finally:
        a14b.transformer_2 = second
    assert (high_only - ref).abs().max().item() > 1e-3


def test_a14b_counts_nfe_per_expert(a14b):
    """One expert call = one NFE per clip, CFG = 2: the split follows the timesteps at or above 875."""
    from tmd_bench.sampling import unipc_scheduler

    steps = 10
    sched = unipc_scheduler(steps, a14b.spec.shift, a14b.scheduler_config)
    high = int((sched.timesteps >= 875).sum())
    assert 0 < high < steps
    method = harness.teacher_method(a14b, "unipc")
    gen = harness.generate(method, a14b, [PROMPT, "a dog running"], [0, 1], steps)
    assert gen.nfe_counted == 2 * steps and gen.effective_nfe_counted == 2 * steps
    assert gen.nfe_by_network == {"high": 2 * high, "low": 2 * (steps - high)}
    assert method.config(steps)["guidance_2"] == 3.0


def test_a14b_teacher_score_comes_from_the_expert_that_owns_each_timestep(a14b):
    from tmd_bench.distill import critics
    from tmd_bench.distill import wan_parts as wp

    x = torch.randn(2, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.95, 0.2])  # 950 → high-noise expert, 200 → low-noise expert
    text = a14b.encode_text([PROMPT, PROMPT])
    negative = a14b.encode_text([""])
    g = critics.teacher_x0(a14b, x, t, text, negative, 4.0)
    for i, (net, w) in enumerate([(a14b.transformer, 4.0), (a14b.transformer_2, 3.0)]):
        xi, ti = x[i:i + 1], t[i:i + 1]
        v_u = wp.forward(net, xi, ti, negative)
        v_c = wp.forward(net, xi, ti, text[i:i + 1])
        expect = xi - ti.view(-1, 1, 1, 1, 1) * (v_u + w * (v_c - v_u))
        torch.testing.assert_close(g[i:i + 1], expect, rtol=0, atol=1e-5)
    feats = critics.teacher_features(a14b, x, t, text, (1, 3))
    own = critics.teacher_features(a14b, x[1:], t[1:], text[1:], (1, 3))  # one row: its own expert
    torch.testing.assert_close(feats[1][1:], own[1], rtol=0, atol=1e-6)


def test_a14b_refuses_a_missing_second_expert(wan22_a14b_dir, tmp_path):
    import shutil

    broken = tmp_path / "a14b"
    shutil.copytree(wan22_a14b_dir, broken)
    shutil.rmtree(broken / "transformer_2")
    with pytest.raises(registry.TeacherNotFound, match="transformer_2/ is missing"):
        runtime.prepare_teacher("wan2.2-t2v-a14b", broken)


# ---------------------------------------------------------------------------------------------
# Every method distils 2 iterations on each Wan2.2 teacher, evaluates, and opens as a pipeline


@pytest.fixture(scope="module")
def distilled(ti2v, a14b, tmp_path_factory):
    from dataclasses import replace

    from tmd_bench.distill import dmd2, kd, meanflow, rcm, tmd_train

    from tmd_bench import dataset

    out = {}
    for name, t in (("ti2v", ti2v), ("a14b", a14b)):
        root = tmp_path_factory.mktemp(f"distill-{name}")
        prompts = [PROMPT, "a dog running"]
        dataset.generate(t, prompts, root / "data", steps=2, per_prompt=2, shard_size=4, batch_size=2)
        small = dict(batch_size=2, gradient_checkpointing=False, dtype="float32")
        tcfg = replace(tmd_train.preset(t.name), stage1_iterations=2, stage2_iterations=2, head_blocks=2,
                       student_every=1, **small)
        out[name, "tmd"] = tmd_train.run_tmd(t, tcfg, root / "tmd", checkpoint_every=2, data=root / "data")
        dcfg = replace(dmd2.preset(t.name), steps=2, iterations=2, student_every=1, **small)
        out[name, "dmd2"] = dmd2.run_dmd2(t, dcfg, root / "dmd2", checkpoint_every=2, data=root / "data")
        rcfg = replace(rcm.preset(t.name), iterations=2, batch_size=2, dtype="float32")
        out[name, "rcm"] = rcm.run_rcm(t, rcfg, root / "rcm", checkpoint_every=2, data=root / "data")
        mcfg = replace(meanflow.preset(t.name), iterations=2, batch_size=2, dtype="float32")
        out[name, "meanflow"] = meanflow.run_meanflow(t, mcfg, root / "meanflow", checkpoint_every=2,
                                                      data=root / "data")
        kcfg = kd.KDConfig(pairs=2, teacher_steps=2, iterations=2, batch_size=2)
        out[name, "kd"] = kd.run_kd(t, kcfg, root / "kd", checkpoint_every=2, prompts=prompts)
    return out


@pytest.mark.parametrize("kind", ["ti2v", "a14b"])
@pytest.mark.parametrize("method", ["tmd", "dmd2", "rcm", "meanflow", "kd"])
def test_every_method_distils_evaluates_and_opens_in_diffusers(distilled, ti2v, a14b, kind, method):
    from test_pipelines import harness_method, harness_video, pipeline_class

    t = ti2v if kind == "ti2v" else a14b
    folder = distilled[kind, method]
    m = harness_method(folder, t)
    steps = 2
    gen = harness.generate(m, t, [PROMPT], [3], steps)
    assert torch.isfinite(gen.videos).all() and gen.nfe_counted == steps
    size = dict(num_frames=5, height=64, width=64) if kind == "ti2v" else dict(num_frames=5, height=32, width=32)
    pipe = pipeline_class(folder).from_pretrained(folder)
    out = pipe(PROMPT, num_inference_steps=steps, generator=torch.Generator().manual_seed(3), **size).frames
    ref = harness_video(m, t, PROMPT, 3, steps)
    assert np.abs(out - ref).max() <= 1e-5
    if kind == "a14b":  # the single-network student starts from the high-noise expert
        assert registry.read_json(folder / "model_index.json")["teacher"] == "wan2.2-t2v-a14b"


def test_evaluate_cli_on_a14b_writes_nfe_per_expert(wan22_a14b_dir, tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from tmd_bench.cli import app

    suite = tmp_path / "p.txt"
    suite.write_text("a cat on the grass\na dog running in a field\n")
    r = CliRunner().invoke(app, [
        "evaluate", "--teacher", "wan2.2-t2v-a14b", "--teacher-path", str(wan22_a14b_dir), "--prompts", str(suite),
        "--frames", "5", "--height", "32", "--width", "32", "--latency-repeats", "1", "--steps", "4,10",
        "--metrics", "fidelity", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "run" / "results.csv").set_index("steps")
    for steps in (4, 10):
        row = df.loc[steps]
        assert row["nfe_counted"] == 2 * steps and row["nfe_high"] + row["nfe_low"] == 2 * steps
        assert row["nfe_high"] > 0 and row["nfe_low"] > 0 and row["guidance_2"] == 3.0
        # latency inside each expert: both positive, together at most the denoising stage
        assert 0 < row["latency_denoise_high_s"] and 0 < row["latency_denoise_low_s"]
        assert row["latency_denoise_high_s"] + row["latency_denoise_low_s"] <= row["latency_denoise_s"] * 1.001
    r = CliRunner().invoke(app, ["teacher", "list"])
    assert r.exit_code == 0 and "wan2.2-t2v-a14b" in r.output and "wan2.2-ti2v-5b" in r.output


def test_lockstep_runs_both_experts_and_changes_nothing(a14b):
    """Under FSDP2 every process must run both experts at every call (their forward and backward are
    collectives): with ``lockstep`` an expert that owns no row runs anyway, its output entering times
    zero. The values equal the routed ones, and both experts' backward runs."""
    from tmd_bench.distill import critics

    x = torch.randn(2, 16, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.95, 0.9])  # both rows owned by the high-noise expert
    text = a14b.encode_text([PROMPT, PROMPT])
    calls = {0: 0, 1: 0}
    hooks = [net.blocks[0].register_forward_pre_hook(lambda m, a, i=i: calls.__setitem__(i, calls[i] + 1))
             for i, net in enumerate(a14b.experts)]
    try:
        routed = critics.teacher_x0(a14b, x, t, text, a14b.encode_text([""]), 4.0)
        assert calls == {0: 1, 1: 0}
        a14b.lockstep = True
        locked = critics.teacher_x0(a14b, x, t, text, a14b.encode_text([""]), 4.0)
        assert calls == {0: 2, 1: 1}
        torch.testing.assert_close(locked, routed, rtol=0, atol=0)
        xg = x.clone().requires_grad_(True)
        second = a14b.transformer_2.patch_embedding.weight
        second.requires_grad_(True)
        feats = critics.teacher_features(a14b, xg, t, text, (1,))
        feats[0].sum().backward()
        assert second.grad is not None  # the unused expert's backward ran (its gradient is zero)
        assert second.grad.abs().max().item() == 0.0 and xg.grad.abs().max().item() > 0
    finally:
        a14b.lockstep = False
        a14b.transformer_2.patch_embedding.weight.requires_grad_(False)
        a14b.transformer_2.patch_embedding.weight.grad = None
        for h in hooks:
            h.remove()


# bf16: the same drift bound as Wan2.1's (tests/test_wan_reference.py), on each Wan2.2 path


def _drift(name, folder, size, steps, guidance, seeds=(0, 1, 2)):
    """Mean |bf16 − fp32| of our sampler and of diffusers' own bf16 WanPipeline, pooled over seeds."""
    from diffusers import WanPipeline

    frames, height, width = size
    t32, t16 = teacher(name, folder, *size), teacher(name, folder, *size, dtype="bfloat16")
    pipe16 = WanPipeline.from_pretrained(folder, dtype=torch.bfloat16)
    ours_drift = diffusers_drift = 0.0
    for seed in seeds:
        fp32 = ours(t32, steps, seed=seed)
        ours16 = ours(t16, steps, seed=seed)
        assert ours16.dtype == torch.float32  # latents and solver state stay fp32
        ref16 = pipe16(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, num_frames=frames, height=height,
                       width=width, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed),
                       output_type="latent").frames
        ours_drift += (ours16 - fp32).abs().mean().item() / len(seeds)
        diffusers_drift += (ref16.float() - fp32).abs().mean().item() / len(seeds)
    return t16, ours_drift, diffusers_drift


def test_ti2v_in_bf16_drifts_no_more_than_diffusers(wan22_ti2v_dir):
    t16, ours_drift, diffusers_drift = _drift("wan2.2-ti2v-5b", wan22_ti2v_dir, (5, 64, 64), 4, 5.0)
    assert t16.dtype == torch.bfloat16 and t16.transformer.scale_shift_table.dtype == torch.float32
    assert 0 < ours_drift <= 1.25 * diffusers_drift, (ours_drift, diffusers_drift)


def test_a14b_in_bf16_runs_both_experts_in_bf16_and_drifts_no_more_than_diffusers(wan22_a14b_dir):
    t16, ours_drift, diffusers_drift = _drift("wan2.2-t2v-a14b", wan22_a14b_dir, (5, 32, 32), 6, 4.0)
    for net in (t16.transformer, t16.transformer_2):  # both experts cast, their fp32 modules kept
        assert net.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
        assert net.scale_shift_table.dtype == torch.float32
    assert 0 < ours_drift <= 1.25 * diffusers_drift, (ours_drift, diffusers_drift)
