"""World Total / Quality / Semantic: VBench's aggregation over the Shapes world's dimensions."""

import math

import pytest
from tmd_bench.metrics import shapes, vbench


def perfect():
    return {d: 1.0 for d in shapes.WORLD_QUALITY + shapes.WORLD_SEMANTIC} | {"sharpness": 0.9, "all_correct": 1.0}


def test_perfect_row_scores_one():
    assert shapes.world_scores(perfect()) == {"world_quality": 1.0, "world_semantic": 1.0, "world_total": 1.0}


def test_matches_a_hand_computation():
    row = perfect() | {"subject_consistency": 0.9, "temporal_flicker": 0.8, "dynamic_degree": 0.5,
                       "imaging_quality": 0.7, "acc_shape": 0.6, "acc_motion": 0.9, "acc_size": 0.75}
    # quality: weights 1,1,1,1,½,1 → (0.9 + 1 + 0.8 + 1 + ½·0.5 + 0.7) / 5.5
    quality = (0.9 + 1 + 0.8 + 1 + 0.25 + 0.7) / 5.5
    semantic = (1 + 0.6 + 1 + 0.9 + 1 + 0.75) / 6  # six attribute accuracies, identity normalisation
    got = shapes.world_scores(row)
    assert got["world_quality"] == pytest.approx(quality)
    assert got["world_semantic"] == pytest.approx(semantic)
    assert got["world_total"] == pytest.approx((4 * quality + semantic) / 5)


def test_same_code_path_as_vbench_and_nan_dimensions_left_out():
    row = perfect() | {"dynamic_degree": math.nan, "motion_smoothness": 0.5}
    got = shapes.world_scores(row)
    assert got["world_quality"] == pytest.approx(4.5 / 5)  # dynamic degree (weight ½) is absent
    direct = vbench.aggregate({k: row[k] for k in shapes.WORLD_QUALITY + shapes.WORLD_SEMANTIC
                               if not math.isnan(row[k])}, missing="skip", spec=shapes.WORLD)
    assert got["world_total"] == direct["total"]
    with pytest.raises(ValueError, match="unknown Shapes-world dimension 'sharpness'"):
        vbench.aggregate({"sharpness": 0.9}, spec=shapes.WORLD)


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
