"""The local VBench aggregation: VBench's constants and procedure."""

import json

import pytest
from tmd_bench.metrics import vbench


def full(value_of):
    return {d: value_of(d) for d in vbench.DIMENSIONS}


def test_best_and_worst_scores_map_to_one_and_zero():
    best = vbench.aggregate(full(lambda d: vbench.NORMALIZE[d][1]))
    worst = vbench.aggregate(full(lambda d: vbench.NORMALIZE[d][0]))
    assert best["quality"] == pytest.approx(1) and best["semantic"] == pytest.approx(1) and best["total"] == pytest.approx(1)
    assert worst["total"] == pytest.approx(0)


def test_total_is_four_quality_plus_semantic_over_five_and_dynamic_degree_weighs_half():
    scores = full(lambda d: sum(vbench.NORMALIZE[d]) / 2)  # every dimension at its midpoint → 0.5 normalised
    scores["dynamic degree"] = 1.0  # normalised 1, weight 0.5
    agg = vbench.aggregate(scores)
    quality = (6 * 0.5 + 0.5 * 1.0) / 6.5
    assert agg["quality"] == pytest.approx(quality) and agg["semantic"] == pytest.approx(0.5)
    assert agg["total"] == pytest.approx((4 * quality + 0.5) / 5)


def test_missing_dimensions_and_unknown_names():
    some = {"subject_consistency": 0.95, "color": 0.8}
    with pytest.raises(ValueError, match="missing VBench dimensions"):
        vbench.aggregate(some)
    zero = vbench.aggregate(some, missing="zero")
    assert zero["complete"] == 0 and zero["semantic"] == pytest.approx(0.8 / 9)
    skip = vbench.aggregate(some, missing="skip")
    assert skip["semantic"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="unknown VBench dimension 'beauty'"):
        vbench.aggregate({"beauty": 1.0})


def test_reads_vbench_result_json(tmp_path):
    f = tmp_path / "r_eval_results.json"
    f.write_text(json.dumps({"subject_consistency": [0.96, [{"video_path": "a.mp4"}]], "color": [0.81, []]}))
    assert vbench.from_vbench_json(f) == {"subject consistency": 0.96, "color": 0.81}
