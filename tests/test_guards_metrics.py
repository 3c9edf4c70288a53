"""Guards for measurement code the rest of the suite only smoke-tests: latency stage arithmetic, each Shapes
quality analogue on a targeted degradation, SSIM against an independent formula, and the report's Pareto
front for a lower-is-better metric. Every reference comes from outside the code under test (a fake clock,
hand-built degradations, a hand-written SSIM, hand-written run folders)."""

from __future__ import annotations

import math
import statistics
import time
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_shapes_teacher, blur_clip
from tmd_bench.metrics import shapes

from tmd_bench import harness, world

PROMPT = "a small red circle moving left on a black background"


# -- 1. latency: total = text + denoise + decode ------------------------------------------------------------

def test_latency_total_is_the_median_of_per_run_stage_sums_on_a_fake_clock(monkeypatch):
    """A fake clock advanced by known amounts inside each stage: the stage medians and the total (median of
    per-run text + denoise + decode) are known exactly. Leaving text encoding out of the total, or
    overcounting it, moves ``latency_total_s`` off the reference."""
    teacher = tiny_shapes_teacher()
    method = harness.teacher_method(teacher, "euler")
    # per run (warm-up first): text (two encode_text calls per run), denoise, decode, in seconds
    text = [5.0, 0.5, 0.7, 0.6]
    denoise = [9.0, 3.0, 2.0, 9.0]
    decode = [1.0, 0.4, 0.2, 0.3]
    now, run = [100.0], [0]
    monkeypatch.setattr(harness, "time", SimpleNamespace(perf_counter=lambda: now[0]))

    encode, sample, dec = teacher.encode_text, method.sample, teacher.decode

    def timed_encode(prompts):
        now[0] += text[run[0]] / 2
        return encode(prompts)

    def timed_sample(*a, **k):
        now[0] += denoise[run[0]]
        return sample(*a, **k)

    def timed_decode(latents):
        now[0] += decode[run[0]]
        run[0] += 1
        return dec(latents)

    monkeypatch.setattr(teacher, "encode_text", timed_encode)
    monkeypatch.setattr(teacher, "decode", timed_decode)
    method.sample = timed_sample
    lat = harness.measure_latency(method, teacher, PROMPT, 0, 1, warmup=1, repeats=3)
    assert run[0] == 4
    timed = range(1, 4)
    sums = [text[i] + denoise[i] + decode[i] for i in timed]  # 3.9, 2.9, 9.9
    assert lat.text_s == pytest.approx(statistics.median(text[i] for i in timed), abs=1e-9)
    assert lat.denoise_s == pytest.approx(statistics.median(denoise[i] for i in timed), abs=1e-9)
    assert lat.decode_s == pytest.approx(statistics.median(decode[i] for i in timed), abs=1e-9)
    assert lat.total_s == pytest.approx(statistics.median(sums), abs=1e-9)  # 3.9, text included
    assert lat.total_spread_s == pytest.approx(max(sums) - min(sums), abs=1e-9)
    assert lat.first_total_s == pytest.approx(text[0] + denoise[0] + decode[0], abs=1e-9)
    cols = lat.columns(frames=8)
    assert cols["latency_total_s"] == pytest.approx(3.9, abs=1e-9)
    assert cols["latency_text_s"] == pytest.approx(0.6, abs=1e-9)
    assert cols["fps"] == pytest.approx(8 / 3.9)


def test_latency_total_is_the_stage_sum_and_close_to_wall_clock():
    """Real clock, one timed run (medians of one value): total = text + denoise + decode to rounding, and a
    direct wall-clock measurement of the whole call bounds it (no 100× overcount, no stage missing)."""
    teacher = tiny_shapes_teacher()
    method = harness.teacher_method(teacher, "euler")
    harness.measure_latency(method, teacher, PROMPT, 0, 2, warmup=1, repeats=1)  # warm the caches
    t0 = time.perf_counter()
    lat = harness.measure_latency(method, teacher, PROMPT, 0, 2, warmup=0, repeats=1)
    wall = time.perf_counter() - t0
    assert lat.text_s > 0 and lat.denoise_s > 0 and lat.decode_s > 0
    assert lat.total_s == pytest.approx(lat.text_s + lat.denoise_s + lat.decode_s, rel=1e-9, abs=1e-12)
    assert lat.total_s <= wall
    assert lat.total_s >= 0.3 * wall  # the call is little more than the one generation it times
    assert lat.columns(8)["latency_total_s"] == lat.total_s


# -- 2. every Shapes quality analogue reacts to its own degradation ---------------------------------------

SCENES = [world.Scene(1, "large", "red", "circle", "right", "gray"),
          world.Scene(2, "small", "yellow", "square", "down", "navy")]


def _clean(scene, seed=0):
    return world.render(scene, world.sample_layout(scene, torch.Generator().manual_seed(seed)))


def _quality(clip, prompt):
    _, per_clip = shapes.evaluate_clips(clip[None], [prompt])
    return per_clip[0]


_blur = blur_clip


def _object_mask(clip, scene):
    """Pixels (F, H, W) that differ from the scene's background colour: where an object covers them."""
    bg = torch.tensor(world.BACKGROUNDS[scene.background]).view(3, 1, 1, 1) * 2 - 1
    return (clip - bg).abs().sum(0) > 1e-6


def _degrade(dimension, scene, clip):
    """A clip degraded in (mainly) ``dimension``, and the prompt it is scored against."""
    prompt = scene.prompt
    x = (clip + 1) / 2
    if dimension == "subject_consistency":  # the object changes colour every other frame
        swap = {"red": "green", "yellow": "blue"}[scene.colour]  # appearance against the background uncorrelated
        other = world.Scene(scene.count, scene.size, swap, scene.shape, scene.motion, scene.background)
        layout = world.sample_layout(scene, torch.Generator().manual_seed(0))
        out = clip.clone()
        out[:, 1::2] = world.render(other, layout)[:, 1::2]
        return out, prompt
    if dimension == "background_consistency":  # background colour changed in two frames
        bg = torch.tensor(world.BACKGROUNDS[scene.background]).view(3, 1, 1)
        y, obj = x.clone(), _object_mask(clip, scene)
        for f in (2, 5):
            y[:, f] = torch.where(obj[f], x[:, f], bg + 0.1)
        return y * 2 - 1, prompt
    if dimension == "temporal_flicker":  # every other frame brighter
        y = x.clone()
        y[:, 1::2] = (y[:, 1::2] + 0.05).clamp(0, 1)
        return y * 2 - 1, prompt
    if dimension == "motion_smoothness":  # positions jitter ±1.5 px across the motion axis
        layout = world.sample_layout(scene, torch.Generator().manual_seed(0))
        dx, dy = world.MOTIONS[scene.motion]
        frames = []
        for f in range(world.FRAMES):
            off = 1.5 if f % 2 else -1.5
            shifted = world.Layout(tuple((cx + off * abs(dy), cy + off * abs(dx)) for cx, cy in layout.centres),
                                   layout.speed)
            frames.append(world.render(scene, shifted)[:, f])
        return torch.stack(frames, 1), prompt
    if dimension == "imaging_quality":  # pixel noise
        g = torch.Generator().manual_seed(1)
        return (clip + 0.1 * torch.randn(clip.shape, generator=g)).clamp(-1, 1), prompt
    if dimension == "sharpness":  # Gaussian blur σ = 1 px
        return _blur(clip, 1.0), prompt
    if dimension == "dynamic_degree":  # the prompt asks for motion, the clip stands still
        still = world.Scene(scene.count, scene.size, scene.colour, scene.shape, "still", scene.background)
        layout = world.sample_layout(scene, torch.Generator().manual_seed(0))
        return world.render(still, world.Layout(layout.centres, 0.0)), prompt
    raise KeyError(dimension)


# degraded value must fall at least this far below the clean one (clean renders score ≥ 0.95 everywhere)
MARGIN = {"subject_consistency": 0.5, "background_consistency": 0.15, "temporal_flicker": 0.15,
          "motion_smoothness": 0.3, "imaging_quality": 0.15, "sharpness": 0.35, "dynamic_degree": 0.9}


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: f"{s.count}{s.shape}")
@pytest.mark.parametrize("dimension", shapes.WORLD_QUALITY)
def test_each_quality_analogue_falls_on_its_own_degradation(dimension, scene):
    clip = _clean(scene)
    clean = _quality(clip, scene.prompt)[dimension]
    bad_clip, prompt = _degrade(dimension, scene, clip)
    bad = _quality(bad_clip, prompt)[dimension]
    assert clean >= 0.95, (dimension, clean)
    assert bad <= clean - MARGIN[dimension], (dimension, clean, bad)


def test_sharpness_follows_its_documented_blur_curve():
    """Docstring: ``1/(1 + σ̂²)``: ½ for σ = 1 px, ≈ 0.3 for 2 px; monotone in the blur."""
    scene = SCENES[0]
    clip = _clean(scene)
    got = [_quality(_blur(clip, s), scene.prompt)["sharpness"] for s in (0.5, 1.0, 2.0)]
    assert got[0] > got[1] > got[2]
    assert got[1] == pytest.approx(0.5, abs=0.06)
    assert 0.2 <= got[2] <= 0.36


def test_dynamic_degree_is_nan_for_still_prompts_and_one_for_moving_renders():
    still = world.Scene(1, "large", "blue", "square", "still", "black")
    assert math.isnan(_quality(_clean(still), still.prompt)["dynamic_degree"])
    assert _quality(_clean(SCENES[1]), SCENES[1].prompt)["dynamic_degree"] == 1.0


# -- 3. SSIM: a real SSIM, not 1 − mean|error| ---------------------------------------------------------------

def _gaussian_ssim(x, y, data_range=2.0, sigma=1.5, k1=0.01, k2=0.03):
    """Wang et al. (2004) SSIM per image (N, C, H, W), written out: 11-tap Gaussian window (σ = 1.5),
    reflect padding, the SSIM map averaged over channels and pixels (torchmetrics' conventions)."""
    size = int(3.5 * sigma + 0.5) * 2 + 1
    d = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(d / sigma) ** 2 / 2)
    g = g / g.sum()
    c = x.shape[1]
    kernel = (g[:, None] * g[None, :]).expand(c, 1, size, size)
    pad = (size - 1) // 2
    x, y = x.double(), y.double()

    def filt(a):
        return F.conv2d(F.pad(a, (pad, pad, pad, pad), mode="reflect"), kernel, groups=c)

    mx, my = filt(x), filt(y)
    vx = (filt(x * x) - mx**2).clamp_min(0)
    vy = (filt(y * y) - my**2).clamp_min(0)
    cxy = filt(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    m = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return m.flatten(1).mean(1)


def _pair():
    prompts = [PROMPT, "two large blue squares standing still on a gray background"]
    ref = world.render_prompts(prompts, [0, 1])
    g = torch.Generator().manual_seed(3)
    out = (_blur(ref, 0.8) + 0.15 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    return out, ref


def test_ssim_matches_an_independent_ssim_frame_by_frame():
    from tmd_bench.metrics.fidelity import paired_psnr_ssim
    from torchmetrics.functional import structural_similarity_index_measure as tm_ssim

    out, ref = _pair()
    b, c, f, h, w = out.shape
    frames_x = out.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    frames_y = ref.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    by_hand = _gaussian_ssim(frames_x, frames_y)
    by_torchmetrics = torch.stack([tm_ssim(frames_x[i:i + 1], frames_y[i:i + 1], data_range=2.0)
                                   for i in range(b * f)]).double()
    torch.testing.assert_close(by_torchmetrics, by_hand, rtol=0, atol=5e-5)  # float32 vs float64
    # the project's value, one frame at a time and over the whole batch (mean over frames)
    for i in (0, 5, 11):
        x1 = out[i // f:i // f + 1, :, i % f:i % f + 1]
        y1 = ref[i // f:i // f + 1, :, i % f:i % f + 1]
        assert paired_psnr_ssim(x1, y1)[1] == pytest.approx(float(by_hand[i]), abs=5e-5)
    psnr, ssim = paired_psnr_ssim(out, ref)
    assert ssim == pytest.approx(float(by_hand.mean()), abs=5e-5)
    mse = (frames_x.double() - frames_y.double()).pow(2).flatten(1).mean(1)
    assert psnr == pytest.approx(float((10 * torch.log10(4.0 / mse)).mean()), abs=1e-3)
    # a stand-in 1 − mean|error| is far from the real SSIM on this pair
    l1 = 1 - (frames_x - frames_y).abs().flatten(1).mean(1).double()
    assert (l1 - by_hand).abs().mean() > 0.1
    assert abs(ssim - float(l1.mean())) > 0.1


# -- 8. the report's Pareto front for a lower-is-better metric ----------------------------------------------

def _run(folder, rows):
    folder.mkdir(parents=True)
    base = {"method": "m", "steps": 2, "nfe": 2, "nfe_counted": 2, "teacher": "shapes", "suite": "p"}
    pd.DataFrame([{**base, **r} for r in rows]).to_csv(folder / "results.csv", index=False)
    return folder


def _report(tmp_path, metric):
    tmp_path = tmp_path / metric
    a = _run(tmp_path / "run-a", [
        {"row_id": "a-fast-bad", "latency_total_s": 0.1, "effective_nfe": 1.0, "fd_real": 50.0, "all_correct": 0.9},
        {"row_id": "a-slow-good", "latency_total_s": 1.0, "effective_nfe": 8.0, "fd_real": 2.0, "all_correct": 0.1}])
    b = _run(tmp_path / "run-b", [
        {"row_id": "b-mid", "latency_total_s": 0.5, "effective_nfe": 4.0, "fd_real": 10.0, "all_correct": 0.5},
        # as slow as a-slow-good and worse on every metric: dominated whichever direction is better
        {"row_id": "b-slow-worse", "latency_total_s": 1.0, "effective_nfe": 8.0, "fd_real": 40.0,
         "all_correct": 0.05}])
    from tmd_bench.reports.html import build_report

    csv_path, _ = build_report([a, b], tmp_path / f"rep-{metric}", metric=metric, warn=lambda m: None)
    df = pd.read_csv(csv_path)
    return {r["row_id"]: (bool(r["pareto_latency"]), bool(r["pareto_nfe"])) for _, r in df.iterrows()}


def test_pareto_front_of_a_lower_is_better_metric_keeps_the_low_fd_rows(tmp_path):
    from tmd_bench.reports.html import LOWER_IS_BETTER

    assert "fd_real" in LOWER_IS_BETTER
    front = _report(tmp_path, "fd_real")
    # lower FD is better: fast-bad (fastest), mid (10 < 50), slow-good (lowest FD) are undominated
    assert front == {"a-fast-bad": (True, True), "b-mid": (True, True), "a-slow-good": (True, True),
                     "b-slow-worse": (False, False)}


def test_pareto_front_direction_flips_for_lower_vs_higher_is_better(tmp_path):
    """The same numbers read as higher-is-better (all_correct is FD's mirror image here): the slow row is
    then dominated by the fast one, which has the best value at the lowest cost."""
    fd = _report(tmp_path, "fd_real")
    # fd_real with the sign ignored (higher = better) would put only a-fast-bad on the front: guard both ways
    assert fd["a-slow-good"] == (True, True)
    hi = _report(tmp_path, "all_correct")
    assert hi == {"a-fast-bad": (True, True), "b-mid": (False, False), "a-slow-good": (False, False),
                  "b-slow-worse": (False, False)}
