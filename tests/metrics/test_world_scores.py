"""World Total / Quality / Semantic: VBench's aggregation over the Shapes world's dimensions."""

import math

import pytest
import torch
from tmd_bench.metrics import shapes, vbench
from conftest import blur_clip


def perfect():
    dims = shapes.WORLD_QUALITY + shapes.WORLD_SEMANTIC
    return {d: 1.0 for d in dims} | {"subject_presence": 1.0, "all_correct": 1.0}


def test_perfect_row_scores_one():
    assert shapes.world_scores(perfect()) == {"world_quality": 1.0, "world_semantic": 1.0, "world_total": 1.0}


def test_matches_a_hand_computation():
    row = perfect() | {"subject_consistency": 0.9, "temporal_flicker": 0.8, "dynamic_degree": 0.5,
                       "imaging_quality": 0.7, "sharpness": 0.4, "acc_shape": 0.6, "acc_motion": 0.9,
                       "acc_size": 0.75, "subject_presence": 0.1}
    # quality: weights 1,1,1,1,½,1,1 → (0.9 + 1 + 0.8 + 1 + ½·0.5 + 0.7 + 0.4) / 6.5; presence stays out
    quality = (0.9 + 1 + 0.8 + 1 + 0.25 + 0.7 + 0.4) / 6.5
    semantic = (1 + 0.6 + 1 + 0.9 + 1 + 0.75) / 6  # six attribute accuracies, identity normalisation
    got = shapes.world_scores(row)
    assert got["world_quality"] == pytest.approx(quality)
    assert got["world_semantic"] == pytest.approx(semantic)
    assert got["world_total"] == pytest.approx((4 * quality + semantic) / 5)


def test_same_code_path_as_vbench_and_nan_dimensions_left_out():
    row = perfect() | {"dynamic_degree": math.nan, "motion_smoothness": 0.5}
    got = shapes.world_scores(row)
    assert got["world_quality"] == pytest.approx(5.5 / 6)  # dynamic degree (weight ½) is absent
    direct = vbench.aggregate({k: row[k] for k in shapes.WORLD_QUALITY + shapes.WORLD_SEMANTIC
                               if not math.isnan(row[k])}, missing="skip", spec=shapes.WORLD)
    assert got["world_total"] == direct["total"]
    with pytest.raises(ValueError, match="unknown Shapes-world dimension 'subject_presence'"):
        vbench.aggregate({"subject_presence": 0.9}, spec=shapes.WORLD)


def test_sharpness_is_in_the_quality_group():
    assert "sharpness" in shapes.WORLD_QUALITY and len(shapes.WORLD_QUALITY) == 7
    assert shapes.world_scores(perfect() | {"sharpness": 0.35})["world_quality"] == pytest.approx(1 - 0.65 / 6.5)


def test_clean_renders_score_near_one():
    from tmd_bench import world

    prompts = ["a small red circle moving right on a black background",
               "two large blue squares standing still on a gray background"]
    videos = world.render_prompts(prompts, [0, 1])
    agg, _ = shapes.evaluate_clips(videos, prompts)
    got = shapes.world_scores(agg)
    assert got["world_semantic"] == 1.0 and got["world_total"] > 0.95


def test_all_correct_carries_its_standard_error():
    from tmd_bench import world

    prompts = ["a small red circle moving right on a black background"] * 3 + \
              ["two large blue squares standing still on a gray background"]
    videos = world.render_prompts(prompts, [0, 1, 2, 3])
    videos[0] = 0  # an empty clip reads wrong
    agg, _ = shapes.evaluate_clips(videos, prompts)
    assert agg["all_correct"] == 0.75
    assert agg["all_correct_se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))


# -- quality analogues v3: clean > blurred > noise > empty ---------------------------------------

_blur = blur_clip


@pytest.fixture(scope="module")
def variants():
    """Renders of 48 prompts of the evaluation suite and three degradations of them."""
    from tmd_bench import suites, world

    suite = suites.load_suite("shapes-eval")
    prompts = list(suite.prompts)[:48]
    clean = world.render_prompts(prompts, suite.seeds(0)[:48])
    bgs = [torch.tensor(world.BACKGROUNDS[world.Scene.parse(p).background]) * 2 - 1 for p in prompts]
    empty = torch.stack([b.view(3, 1, 1, 1).expand(clean.shape[1:]) for b in bgs])
    noise = torch.rand(clean.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    clips = {"clean": clean, "blurred": _blur(clean, 2.0), "noise": noise, "empty": empty}
    return prompts, {k: shapes.evaluate_clips(v, prompts) for k, v in clips.items()}


def test_world_quality_ranks_clean_blurred_noise_empty(variants):
    _, scored = variants
    q = {k: shapes.world_scores(agg)["world_quality"] for k, (agg, _) in scored.items()}
    assert q["clean"] > 0.99
    assert q["clean"] > q["blurred"] + 0.05  # v2: 0.997 → 0.980 for the same blur
    assert q["blurred"] > q["noise"] + 0.3
    assert q["noise"] > q["empty"]
    assert q["empty"] == 0.0


def test_the_ranking_holds_clip_by_clip(variants):
    prompts, scored = variants
    per = {k: [shapes.world_scores(c)["world_quality"] for c in clips] for k, (_, clips) in scored.items()}
    for i, p in enumerate(prompts):
        assert per["clean"][i] > per["blurred"][i] > per["noise"][i] > per["empty"][i], p


def test_an_empty_clip_scores_zero_on_every_quality_dimension(variants):
    agg, _ = variants[1]["empty"]
    for d in shapes.QUALITY:
        assert agg[d] == 0.0, d


def test_noise_is_neither_consistent_nor_clean(variants):
    agg, _ = variants[1]["noise"]
    assert agg["subject_consistency"] < 0.1  # v2: 0.95 (it measured the stability of the total coverage)
    assert agg["temporal_flicker"] < 0.1 and agg["imaging_quality"] < 0.1
    assert agg["subject_presence"] == 1.0  # there is something in every frame: it is scored, and scores low


def test_blur_is_seen_by_sharpness_and_clean_renders_are_sharp(variants):
    clean, blurred = variants[1]["clean"][0], variants[1]["blurred"][0]
    assert clean["sharpness"] > 0.98
    assert blurred["sharpness"] < 0.5
    for d in ("subject_consistency", "background_consistency", "temporal_flicker", "motion_smoothness",
              "imaging_quality"):
        assert clean[d] > 0.98, d


def test_a_clip_whose_objects_vanish_half_the_time_loses_half_its_quality():
    from tmd_bench import world

    prompt = "a large green square moving right on a navy background"
    clip = world.render_prompts([prompt], [3])
    clip[0, :, 4:] = torch.tensor(world.BACKGROUNDS["navy"]).view(3, 1, 1, 1) * 2 - 1
    full, _ = shapes.evaluate_clips(world.render_prompts([prompt], [3]), [prompt])
    half, _ = shapes.evaluate_clips(clip, [prompt])
    assert half["subject_presence"] == 0.5
    assert half["background_consistency"] == pytest.approx(0.5 * full["background_consistency"], abs=0.01)
    assert shapes.world_scores(half)["world_quality"] < 0.7 * shapes.world_scores(full)["world_quality"]


@pytest.mark.parametrize("cx,cy", [(5.0, 6.0), (4.3, 7.8), (0.2, 11.6), (-2.5, 3.1), (9.9, -0.4)])
def test_subject_patch_is_bilinear_sampling_with_zeros_outside_as_grid_sample(cx, cy):
    """The subject-consistency descriptor's patch against torch's ``grid_sample`` (bilinear, zero padding,
    align_corners=False: continuous coordinate c ↔ 2c/W − 1, pixel centres at i + 0.5), at the centre,
    off the pixel grid, at the frame's edges and partly outside it."""
    import numpy as np
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    img = rng.random((12, 10, 3))
    r = 3
    got = shapes._patch(img, cx, cy, radius=r).reshape(2 * r + 1, 2 * r + 1, 3)
    off = torch.arange(-r, r + 1, dtype=torch.float64)
    gy, gx = torch.meshgrid(cy + off, cx + off, indexing="ij")
    grid = torch.stack([2 * gx / 10 - 1, 2 * gy / 12 - 1], dim=-1)[None]
    ref = F.grid_sample(torch.from_numpy(img).permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_scores_are_clipped_to_the_unit_interval():
    assert [shapes._clip01(v) for v in (-0.3, 0.0, 0.42, 1.0, 1.7)] == [0.0, 0.0, 0.42, 1.0, 1.0]


def test_patch_correlation_of_a_flat_patch_is_zero_not_a_division_by_zero():
    """A patch inside a flat-coloured object has no variance: its correlation is defined as 0."""
    import numpy as np

    assert shapes._rho(np.full(9, 0.4), np.arange(9.0)) == 0.0
    assert shapes._rho(np.arange(9.0), 2 * np.arange(9.0) + 1) == pytest.approx(1.0)
    assert shapes._rho(np.arange(9.0), -np.arange(9.0)) == pytest.approx(-1.0)
