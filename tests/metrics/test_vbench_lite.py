"""VBench-lite's four dimensions against their definitions, on clips whose answer is known in closed form
(VBench's consistency formula on drifting unit vectors; 8-bit frame levels for the pixel dimensions)."""

import math

import pytest
import torch

from tmd_bench.metrics import vbench_lite


def drifting(angles_per_frame: list[float], frames: int) -> torch.Tensor:
    """(B, F, 3) unit vectors turning by a fixed angle per frame: cos(f_1, f_k) = cos(θ·(k − 1))."""
    rows = [[[math.cos(a * k), math.sin(a * k), 0.0] for k in range(frames)] for a in angles_per_frame]
    return torch.tensor(rows, dtype=torch.float64)


def vbench_consistency(theta: float, frames: int) -> float:
    """VBench: per frame k ≥ 2, ½·(max(cos(f_1, f_k), 0) + max(cos(f_{k−1}, f_k), 0)), averaged over k."""
    per = [(max(math.cos(theta * k), 0.0) + max(math.cos(theta), 0.0)) / 2 for k in range(1, frames)]
    return sum(per) / len(per)


def test_feature_consistency_is_vbench_formula_with_both_clamps():
    thetas = [0.3, 0.7, 2.0]  # 0.7: cos(θk) < 0 from k = 3 on (first-frame term clamped); 2.0: both clamped
    got = vbench_lite.feature_consistency(drifting(thetas, 6))
    assert got.shape == (3,)
    for g, theta in zip(got.tolist(), thetas):
        assert g == pytest.approx(vbench_consistency(theta, 6), abs=1e-9)
    assert got[2] < 0.25 < got[1] < got[0] < 1
    # a single frame has nothing to be inconsistent with
    assert vbench_lite.feature_consistency(drifting([0.5, 1.0], 1)).tolist() == [1.0, 1.0]
    # a still clip is perfectly consistent, whatever its frame count
    assert vbench_lite.feature_consistency(drifting([0.0], 2)).item() == pytest.approx(1.0)


def levels_clip(levels: list[list[int]], h: int = 4, w: int = 4) -> torch.Tensor:
    """(B, 3, F, H, W) in [−1, 1] whose frame k is the flat 8-bit level ``levels[b][k]``."""
    x = torch.tensor(levels, dtype=torch.float32) / 255 * 2 - 1
    return x.view(len(levels), 1, -1, 1, 1).expand(-1, 3, -1, h, w).contiguous()


def test_temporal_flickering_is_one_minus_mean_8bit_difference():
    clip = levels_clip([[0, 10, 40, 40], [100, 100, 100, 100]])
    got = vbench_lite.temporal_flickering(clip)
    assert got[0].item() == pytest.approx(1 - (10 + 30 + 0) / 3 / 255, abs=1e-6)
    assert got[1].item() == 1.0


def test_motion_smoothness_compares_each_interior_frame_with_its_neighbours_mean():
    clip = levels_clip([[0, 10, 40, 70], [0, 20, 40, 60]])  # the second is linear: perfectly smooth
    got = vbench_lite.motion_smoothness(clip)
    # interior frames: 10 vs (0 + 40)/2 = 20, and 40 vs (10 + 70)/2 = 40
    assert got[0].item() == pytest.approx(1 - (10 + 0) / 2 / 255, abs=1e-6)
    assert got[1].item() == pytest.approx(1.0, abs=1e-6)
    assert vbench_lite.motion_smoothness(levels_clip([[0, 200]])).tolist() == [1.0]  # under 3 frames: nothing to interpolate


@pytest.mark.parametrize("step,moved,dynamic", [
    (7, 60, 1.0),   # 60 = the top 5 % of 1,200 differences, all 7/255 > 6/255
    (5, 60, 0.0),   # 5/255: below the threshold
    (7, 30, 0.0),   # half of the top 5 % change by 7, the rest not at all: their mean, 3.5/255, is below
    (255, 1, 0.0),  # one large change: the maximum is far above, the mean of the top 5 % (4.25/255) is not
    (255, 3, 1.0),  # three: 12.75/255
])
def test_dynamic_degree_thresholds_the_mean_of_the_top_five_percent(step, moved, dynamic):
    x = torch.zeros(1, 3, 2, 20, 20)  # two frames: 3·20·20 = 1,200 differences
    second = x[:, :, 1].reshape(-1).clone()
    second[:moved] = step / 255
    x[:, :, 1] = second.view(1, 3, 20, 20)
    assert vbench_lite.dynamic_degree(x * 2 - 1).item() == dynamic


class FixedFeatures:
    """A scorer whose frame features are given: vbench_lite normalises them before the consistency."""

    def __init__(self, feats):
        self.feats = feats

    def frame_features(self, videos):
        return self.feats


def test_vbench_lite_normalises_the_features_and_averages_each_dimension_over_clips():
    thetas = [0.3, 0.7]
    feats = drifting(thetas, 4) * torch.tensor([5.0, 0.2]).view(2, 1, 1)  # unnormalised on purpose
    clip = levels_clip([[0, 10, 40, 40], [0, 20, 40, 60]])
    dims = vbench_lite.vbench_lite(clip, FixedFeatures(feats.float()))
    assert set(dims) == {"vb_background_consistency", "vb_temporal_flickering", "vb_motion_smoothness",
                         "vb_dynamic_degree"}
    want = sum(vbench_consistency(t, 4) for t in thetas) / 2
    assert dims["vb_background_consistency"] == pytest.approx(want, abs=1e-6)
    # clip 1 steps by 10, 30, 0 levels; clip 2 by 20 each frame
    assert dims["vb_temporal_flickering"] == pytest.approx(((1 - 40 / 3 / 255) + (1 - 20 / 255)) / 2, abs=1e-6)
    # clip 1's interior frames: 10 vs 20, 40 vs 25; clip 2 is linear
    assert dims["vb_motion_smoothness"] == pytest.approx(((1 - 12.5 / 255) + 1) / 2, abs=1e-6)
    assert dims["vb_dynamic_degree"] == 1.0  # both clips change by ≥ 10/255 everywhere


def test_the_shortest_clips_each_dimension_still_computes():
    """Two frames are enough for consistency and flicker, three for smoothness (not a constant 1)."""
    assert vbench_lite.feature_consistency(drifting([0.5], 2)).item() == pytest.approx(math.cos(0.5))
    three = levels_clip([[0, 30, 0]])
    assert vbench_lite.motion_smoothness(three).item() == pytest.approx(1 - 30 / 255, abs=1e-6)
    assert vbench_lite.temporal_flickering(levels_clip([[0, 30]])).item() == pytest.approx(1 - 30 / 255, abs=1e-6)


def test_frames_are_clamped_to_the_valid_range_and_quantised_to_8_bits():
    # out-of-range values read as the range's ends; 250/255 stays level 250 (a 256 scale would make it 251)
    over = levels_clip([[0, 250]])
    over[:, :, 0] = -1.7  # below black
    assert vbench_lite.temporal_flickering(over).item() == pytest.approx(1 - 250 / 255, abs=1e-6)
    top = levels_clip([[0, 255]])
    top[:, :, 1] = 1.9  # above white: still 255
    assert vbench_lite.temporal_flickering(top).item() == pytest.approx(0.0, abs=1e-6)
    between = levels_clip([[0, 10]])
    between[:, :, 1] += 0.4 / 255 * 2  # 10.4 levels: quantised to 10
    assert vbench_lite.temporal_flickering(between).item() == pytest.approx(1 - 10 / 255, abs=1e-6)


@pytest.mark.parametrize("level,dynamic", [(7, 1.0), (6, 0.0)])  # exactly 6/255 is not above the threshold
def test_dynamic_degree_on_a_tiny_clip_uses_its_single_largest_difference(level, dynamic):
    x = torch.zeros(1, 3, 2, 2, 2)  # 12 differences: the top 5 % is one value
    x[0, 0, 1, 0, 0] = level / 255
    assert vbench_lite.dynamic_degree(x * 2 - 1).item() == dynamic


def test_dynamic_degree_compares_consecutive_frames_and_scores_each_clip():
    clip = levels_clip([[0, 20, 20, 20], [0, 0, 0, 0]])  # clip 1 moves once, then stays; clip 2 is still
    assert vbench_lite.dynamic_degree(clip).tolist() == [1.0, 0.0]
    # 3 levels per step: never above 6/255 between consecutive frames (against the first frame it reaches 9)
    slow = levels_clip([[0, 3, 6, 9]])
    assert vbench_lite.dynamic_degree(slow).tolist() == [0.0]
