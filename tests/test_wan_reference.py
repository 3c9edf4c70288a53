"""The teacher samplers against diffusers' own WanPipeline, on a checkpoint WanPipeline itself wrote.

References are code: ``WanPipeline.__call__`` with the same checkpoint, prompt, negative prompt, noise
(a CPU generator seeded as the harness seeds clip s), CFG, shift and step count. fp32 must agree to
≤ 1e-4 max abs; bf16 must stay at least as close to fp32 as diffusers' own bf16 run does."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from tmd_bench import harness, registry, runtime
from tmd_bench.teachers import load_teacher

PROMPT = "a  cat &amp; a dog\nsitting on the grass "  # HTML entity, doubled and trailing whitespace
NEGATIVE = "blurry static"
SIZE = dict(num_frames=5, height=32, width=32)
SEED = 7


@pytest.fixture(scope="module")
def pipe(wan_pipeline_dir):
    from diffusers import WanPipeline

    return WanPipeline.from_pretrained(wan_pipeline_dir)


def teacher_of(folder, dtype=torch.float32):
    t = load_teacher("wan2.1-1.3b", folder, dtype=dtype)
    t.spec = replace(t.spec, frames=5, height=32, width=32)
    return t


def ours(teacher, solver, steps, guidance=5.0, shift=None, seed=SEED):
    method = harness.teacher_method(teacher, solver, guidance, shift)
    text, negative = teacher.encode_text([PROMPT]), teacher.encode_text([NEGATIVE])
    return method.sample(harness.noise_for_seeds(teacher, [seed]), text, negative, steps, [seed])


def reference(pipe, steps, output_type="latent", guidance=5.0, seed=SEED):
    return pipe(PROMPT, negative_prompt=NEGATIVE, **SIZE, num_inference_steps=steps, guidance_scale=guidance,
                generator=torch.Generator().manual_seed(seed), output_type=output_type).frames


def test_sampling_defaults_come_from_the_checkpoints_scheduler(wan_pipeline_dir):
    t = teacher_of(wan_pipeline_dir)
    # the preset says shift 5; the checkpoint's UniPC config says flow_shift 3, and WanPipeline would use 3
    assert registry.TEACHERS["wan2.1-1.3b"].shift == 5.0
    assert t.spec.shift == 3.0 and t.spec.solver == "unipc"
    assert t.spec.sampling_source == "checkpoint scheduler/scheduler_config.json"
    cfg = harness.teacher_method(t, "unipc", shift=4.0).config(4)
    assert cfg["shift"] == 4.0 and cfg["sampling_source"] == "option"


@pytest.mark.parametrize("steps", [4, 50])
def test_teacher_unipc_equals_wan_pipeline(pipe, wan_pipeline_dir, steps):
    t = teacher_of(wan_pipeline_dir)
    ref = reference(pipe, steps)
    out = ours(t, "unipc", steps)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 1e-4, (out - ref).abs().max().item()
    # the default teacher method (no solver named) is the checkpoint's own scheduler: the same sampler
    assert torch.equal(ours(t, t.spec.solver, steps), out)


def test_decoded_video_equals_wan_pipeline(pipe, wan_pipeline_dir):
    """Latents → video through the Wan VAE with Wan's per-channel de-normalisation, as WanPipeline decodes."""
    t = teacher_of(wan_pipeline_dir)
    ref = reference(pipe, 4, output_type="np")  # (B, F, H, W, 3) in [0, 1]
    video = t.decode(ours(t, "unipc", 4))  # (B, 3, F, H, W) in [−1, 1]
    ours_np = ((video.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).cpu().numpy()
    assert ours_np.shape == ref.shape
    assert np.abs(ours_np - ref).max() <= 1e-4


def test_teacher_fmeuler_equals_wan_pipeline_with_flowmatch_euler(pipe, wan_pipeline_dir):
    from diffusers import FlowMatchEulerDiscreteScheduler

    t = teacher_of(wan_pipeline_dir)
    original = pipe.scheduler
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    try:
        ref = reference(pipe, 4)
    finally:
        pipe.scheduler = original
    assert (ours(t, "fmeuler", 4, shift=3.0) - ref).abs().max().item() <= 1e-4
    # tmd-bench's uniform-grid Euler is another sampler (its grid ends at 0, not at shift(1/1000)):
    assert (ours(t, "euler", 4, shift=3.0) - ref).abs().max().item() > 1e-3


def test_prompts_are_cleaned_as_wan_pipeline_cleans_them(pipe, wan_pipeline_dir):
    t = teacher_of(wan_pipeline_dir)
    ref, _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False, max_sequence_length=512)
    torch.testing.assert_close(t.encode_text([PROMPT]), ref, rtol=0, atol=1e-6)
    # cleaned as WanPipeline cleans: HTML entities (unescaped twice) and whitespace do not reach the tokenizer
    clean = t.encode_text(["a cat & a dog sitting on the grass"])
    for raw in ("a cat &amp; a dog sitting on the grass", " a  cat &amp;amp; a dog\tsitting on the grass\n"):
        assert torch.equal(t.encode_text([raw]), clean)


def test_bf16_keeps_fp32_modules_and_latents_and_drifts_no_more_than_diffusers(pipe, wan_pipeline_dir):
    """A bf16 teacher computes in bf16 (diffusers keeps its norms, time embedder and modulation tables
    in fp32) with float32 latents and solver state: its drift from fp32 is at most diffusers' own."""
    from diffusers import WanPipeline

    t16 = teacher_of(wan_pipeline_dir, torch.bfloat16)
    assert t16.dtype == torch.bfloat16
    assert t16.transformer.scale_shift_table.dtype == torch.float32  # a _keep_in_fp32_modules member
    assert next(t16.transformer.parameters()).dtype == torch.float32  # why "the first parameter" was wrong
    steps, seeds = 10, (0, 1, 2, 3)
    pipe16 = WanPipeline.from_pretrained(wan_pipeline_dir, dtype=torch.bfloat16)
    t32 = teacher_of(wan_pipeline_dir)
    ours_drift = diffusers_drift = 0.0
    for seed in seeds:  # one draw is noisy at this size: the mean |drift| pooled over four
        fp32 = ours(t32, "unipc", steps, seed=seed)
        ours16 = ours(t16, "unipc", steps, seed=seed)
        assert ours16.dtype == torch.float32
        ours_drift += (ours16 - fp32).abs().mean().item() / len(seeds)
        diffusers_drift += (reference(pipe16, steps, seed=seed).float() - fp32).abs().mean().item() / len(seeds)
    assert 0 < ours_drift <= 1.25 * diffusers_drift, (ours_drift, diffusers_drift)


def test_the_wan_timestep_is_exact_in_every_compute_dtype():
    from tmd_bench.teachers import wan_timestep

    ts = torch.tensor([999, 875, 501, 3], dtype=torch.int64)
    assert wan_timestep(ts.to(torch.float64) / 1000).tolist() == [999.0, 875.0, 501.0, 3.0]
    assert torch.tensor(999.0).to(torch.bfloat16).item() == 1000.0  # what a bf16 timestep would have been


@pytest.mark.parametrize("frames,height,width,msg", [
    (8, 32, 32, "--frames 8 is not 4k + 1 (nearest: 5 or 9)"),
    (5, 40, 32, "--height 40 is not a multiple of 16 (nearest: 32 or 48)"),
    (5, 32, 50, "--width 50 is not a multiple of 16 (nearest: 48 or 64)"),
])
def test_sizes_are_checked_against_the_vae_strides_and_patch(wan_pipeline_dir, frames, height, width, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        runtime.prepare_teacher("wan2.1-1.3b", wan_pipeline_dir, frames, height, width)
    folder, spec = runtime.prepare_teacher("wan2.1-1.3b", wan_pipeline_dir, 9, 48, 64)
    assert (spec.frames, spec.height, spec.width) == (9, 48, 64)


def test_encoded_latents_equal_diffusers_video_to_video_normalisation(wan_pipeline_dir):
    """Videos → latents as diffusers' own WanVideoToVideoPipeline forms them before noising: the VAE
    posterior's mode, then ``(z − latents_mean) / latents_std`` per channel (16 channels, Wan's default
    statistics). A codec that skips the normalisation in this direction is off by the statistics
    (|mean| up to 1.7, std down to 1.9), far above the tolerance."""
    from diffusers import WanVideoToVideoPipeline

    class KeepClean:  # a scheduler that noises nothing: prepare_latents returns the clean latents
        def scale_noise(self, sample, timestep, noise):
            return sample

    t = teacher_of(wan_pipeline_dir)
    v2v = WanVideoToVideoPipeline.from_pretrained(wan_pipeline_dir)
    v2v.scheduler = KeepClean()
    g = torch.Generator().manual_seed(3)
    video = torch.rand(2, 3, 5, 32, 32, generator=g) * 2 - 1
    ref = v2v.prepare_latents(video, batch_size=2, num_channels_latents=16, height=32, width=32,
                              dtype=torch.float32, device=torch.device("cpu"), timestep=None)
    ours = t.encode(video)
    assert ours.shape == ref.shape == (2, 16, 2, 4, 4)
    assert (ours - ref).abs().max().item() <= 1e-5
    raw = t.codec.vae.encode(video, return_dict=False)[0].mode()  # what a codec without normalisation returns
    assert (raw - ref).abs().max().item() > 0.5
    # and decode inverts encode's normalisation: decoding our latents equals decoding diffusers' latents
    torch.testing.assert_close(t.decode(ours), t.decode(ref), rtol=0, atol=1e-5)
