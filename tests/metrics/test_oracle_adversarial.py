"""Oracle v3 against constructed clips that contradict their prompt.

Each clip is drawn straight into a tensor with the world's own coverage function, colours and
sizes, so everything *except* the contradicted attribute is a clean render. Oracle v2 scored every
one of them all-correct (size had no bounds, motion was the joint centroid's, ties went to list
order, the background was a forced choice, any blob fitted some template); v3 must fail exactly
the attribute each one contradicts.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from tmd_bench.metrics import oracle

from tmd_bench import world

F, H, W = world.FRAMES, world.HEIGHT, world.WIDTH
SMALL, LARGE = world.SIZES["small"], world.SIZES["large"]
_YS = torch.arange(H, dtype=torch.float32).view(1, H, 1) + 0.5
_XS = torch.arange(W, dtype=torch.float32).view(1, 1, W) + 0.5
_T = torch.arange(F, dtype=torch.float32).view(F, 1, 1)


def coverage(shape, size, x, y, vx=0.0, vy=0.0):
    """(F, H, W) anti-aliased coverage of one object starting at (x, y), moving (vx, vy) px/frame."""
    return world._coverage(shape, size, x + vx * _T, y + vy * _T, _XS, _YS)


def compose(background, *layers):
    """A clip (3, F, H, W) in [−1, 1]: ``background`` (a name or an RGB triple) with (colour, α) layers over it."""
    bg = world.BACKGROUNDS.get(background, background) if isinstance(background, str) else background
    clip = torch.tensor(bg, dtype=torch.float32).view(3, 1, 1, 1).expand(3, F, H, W).clone()
    for colour, a in layers:
        clip = clip * (1 - a) + torch.tensor(world.COLOURS[colour]).view(3, 1, 1, 1) * a
    return clip * 2 - 1


def verdict(clip, prompt):
    return oracle.read(clip).matches(world.Scene.parse(prompt))


def assert_fails_only(clip, prompt, *contradicted):
    m = verdict(clip, prompt)
    assert [a for a, ok in m.items() if not ok] == list(contradicted), (prompt, oracle.read(clip).attributes)


def test_version_is_3():
    assert oracle.VERSION == 3
    from tmd_bench.metrics import shapes

    assert "oracle v3" in shapes.IMPLEMENTATION and "oracle v2" in shapes.implementation(2)  # v3 is the default
    assert shapes.DEFAULT_ORACLE == 3


def test_a_world_render_drawn_here_reads_all_correct():
    """The construction itself is faithful: a clean object drawn this way reads back correctly."""
    clip = compose("black", ("red", coverage("square", SMALL, 12.0, 6.0, vx=-0.9)))
    assert all(verdict(clip, "a small red square moving left on a black background").values())
    pair = compose("navy", ("green", coverage("circle", SMALL, 18.0, 6.0, vx=-0.9)),
                   ("green", coverage("circle", SMALL, 18.0, 16.0, vx=-0.9)))
    assert all(verdict(pair, "two small green circles moving left on a navy background").values())


# -- size has bounds ------------------------------------------------------------------------------

@pytest.mark.parametrize("side", [2.0, 3.0, 4.0, 5.0])
def test_a_tiny_square_is_not_small(side):
    clip = compose("black", ("red", coverage("square", side, 12.3, 11.6, vx=0.9)))
    m = verdict(clip, "a small red square moving right on a black background")
    assert not m["size"]
    assert m["count"] and m["colour"] and m["background"]


@pytest.mark.parametrize("side", [20.0, 21.0, 22.0, 23.0])
def test_a_huge_object_is_not_large(side):
    clip = compose("gray", ("blue", coverage("square", side, 12.0, 12.0)))
    m = verdict(clip, "a large blue square standing still on a gray background")
    assert not m["size"]
    assert m["count"] and m["colour"] and m["shape"] and m["motion"]


@pytest.mark.parametrize("side", [5.2, 8.8, 9.0, 9.2, 12.8])
def test_a_side_between_or_beyond_the_nominal_sizes_has_no_size(side):
    r = oracle.read(compose("black", ("white", coverage("square", side, 12.3, 11.7))))
    assert r.attributes["size"] is None and r.attributes["shape"] == "square"


# -- motion is read per object ---------------------------------------------------------------------

def test_one_moving_and_one_still_object_are_not_two_moving_objects():
    clip = compose("black", ("red", coverage("square", SMALL, 18.0, 6.0, vx=-1.0)),
                   ("red", coverage("square", SMALL, 12.0, 17.0)))
    assert_fails_only(clip, "two small red squares moving left on a black background", "motion")
    assert_fails_only(clip, "two small red squares standing still on a black background", "motion")
    r = oracle.read(clip)
    assert sorted(o.attributes["motion"] for o in r.objects) == ["left", "still"]


def test_a_pair_moving_apart_is_not_standing_still():
    clip = compose("gray", ("yellow", coverage("circle", SMALL, 8.0, 6.0, vx=-0.5)),
                   ("yellow", coverage("circle", SMALL, 16.0, 17.0, vx=0.5)))
    for motion in ("standing still", "moving left", "moving right"):
        assert_fails_only(clip, f"two small yellow circles {motion} on a gray background", "motion")


@pytest.mark.parametrize("vx,vy", [(0.15, 0.0), (0.4, 0.0), (1.9, 0.0), (0.8, 0.8)])
def test_motion_outside_the_worlds_range_has_no_direction(vx, vy):
    """Too slow to be a move but not still, faster than the world moves, or diagonal: no motion."""
    x0 = 6.0 if vx < 1 else 4.5
    r = oracle.read(compose("black", ("green", coverage("circle", SMALL, x0, 6.0, vx=vx, vy=vy))))
    assert r.attributes["motion"] is None or (vx < 0.25 and r.attributes["motion"] == "still")
    if vx >= 0.25:
        assert r.attributes["motion"] is None


# -- no ties by list order ------------------------------------------------------------------------

def test_a_square_and_a_circle_are_not_two_squares():
    clip = compose("black", ("magenta", coverage("square", LARGE, 6.0, 6.5, vy=0.9)),
                   ("magenta", coverage("circle", LARGE, 18.0, 6.5, vy=0.9)))
    for shape in ("squares", "circles"):
        assert_fails_only(clip, f"two large magenta {shape} moving down on a black background", "shape")
    assert sorted(o.attributes["shape"] for o in oracle.read(clip).objects) == ["circle", "square"]


def test_a_small_and_a_large_object_are_not_two_small_ones():
    clip = compose("navy", ("white", coverage("triangle", SMALL, 5.0, 12.0)),
                   ("white", coverage("triangle", LARGE, 17.0, 12.0)))
    for size in ("small", "large"):
        assert_fails_only(clip, f"two {size} white triangles standing still on a navy background", "size")


def test_two_colours_are_not_two_of_one_colour():
    clip = compose("black", ("red", coverage("circle", SMALL, 6.0, 12.0)),
                   ("green", coverage("circle", SMALL, 18.0, 12.0)))
    for colour in ("red", "green"):
        assert_fails_only(clip, f"two small {colour} circles standing still on a black background", "colour")


# -- the background must be near a named colour -----------------------------------------------------

def test_an_all_white_clip_has_no_background():
    clip = compose(world.COLOURS["white"])
    r = oracle.read(clip)
    assert r.attributes["background"] is None
    for bg in world.BACKGROUNDS:
        assert not verdict(clip, f"a small red square standing still on a {bg} background")["background"]


@pytest.mark.parametrize("bg", [(0.25, 0.25, 0.25), (0.05, 0.05, 0.20), (0.75, 0.75, 0.75), (0.3, 0.05, 0.05)])
def test_an_off_palette_background_has_no_name(bg):
    clip = compose(bg, ("yellow", coverage("square", SMALL, 12.0, 12.0)))
    assert oracle.read(clip).attributes["background"] is None


def test_a_two_tone_background_has_no_name():
    clip = compose("black", ("blue", coverage("square", SMALL, 12.0, 12.0)))
    clip[:, :, :, :10] = torch.tensor(world.BACKGROUNDS["gray"]).view(3, 1, 1, 1) * 2 - 1
    assert oracle.read(clip).attributes["background"] is None


# -- a shape must fit its template ---------------------------------------------------------------

@pytest.mark.parametrize("hole", [3.0, 5.0, 7.0])
def test_a_ring_is_not_a_circle(hole):
    ring = (coverage("circle", LARGE, 12.0, 12.0) - coverage("circle", hole, 12.0, 12.0)).clamp(0, 1)
    clip = compose("black", ("red", ring))
    assert not verdict(clip, "a large red circle standing still on a black background")["shape"]
    assert oracle.read(clip).attributes["shape"] is None


def test_a_cross_is_no_shape():
    dx, dy = (_XS - 12.0).abs(), (_YS - 12.0).abs()
    plus = (((dx < 4.5) & (dy < 1.5)) | ((dx < 1.5) & (dy < 4.5))).float().expand(F, H, W)  # 9 × 3 px bars
    assert oracle.read(compose("gray", ("red", plus))).attributes["shape"] is None


def test_a_ring_with_a_hole_reads_no_shape_whatever_the_margins():
    """The hole test alone rejects a ring: with the residual margins opened wide, it still has no shape."""
    ring = (coverage("circle", LARGE, 12.0, 12.0) - coverage("circle", 3.0, 12.0, 12.0)).clamp(0, 1)
    r = oracle.read(compose("black", ("red", ring)))
    assert all(b.hole >= oracle.HOLE_MIN_AREA for b in r.objects[0].blobs)
    solid = oracle.read(compose("black", ("red", coverage("circle", LARGE, 12.0, 12.0))))
    assert all(b.hole == 0 for b in solid.objects[0].blobs)


# -- what a model draws around an object is not the object ---------------------------------------

@pytest.mark.parametrize("shape,colour,fringe", [("circle", "red", "white"), ("triangle", "green", "magenta"),
                                                 ("square", "blue", "yellow")])
def test_a_fringe_of_another_colour_does_not_change_shape_or_size(shape, colour, fringe):
    """The teacher's samples carry a faint 1 px fringe of a complementary colour around each object (the
    eye audit of its 50-step samples, README): shape and size are read from the object's own colour."""
    a = coverage(shape, SMALL, 12.0, 12.0, vx=0.9)
    halo = (coverage(shape, SMALL + 3.0, 12.0, 12.0, vx=0.9) - a).clamp(0, 1) * 0.35
    clip = compose("gray", (fringe, halo), (colour, a))
    m = verdict(clip, f"a small {colour} {shape} moving right on a gray background")
    assert all(m.values()), oracle.read(clip).attributes
    (o,) = oracle.read(clip).objects
    assert abs(o.size_px - SMALL) < 0.5


def test_the_shape_is_read_from_all_frames_of_an_object():
    """An object keeps its shape: a frame or two that fit no template (a model's jitter) do not unmake it,
    and a shape that fits in only one frame does not make it."""
    a = coverage("triangle", LARGE, 12.0, 12.0, vx=0.9)
    dx, dy = (_XS - 12.0).abs(), (_YS - 12.0).abs()
    plus = (((dx < 4.5) & (dy < 1.5)) | ((dx < 1.5) & (dy < 4.5))).float()
    jitter = a.clone()
    jitter[2] = plus[0]  # one frame of eight is a cross
    r = oracle.read(compose("navy", ("white", jitter)))
    assert r.objects[0].blobs[2].shape is None and r.attributes["shape"] == "triangle"
    mostly = plus.expand(F, H, W).clone()
    mostly[0] = a[0]
    assert oracle.read(compose("navy", ("white", mostly))).attributes["shape"] is None


# -- clean renders stay correct ----------------------------------------------------------------

def test_clean_renders_across_the_grammar_read_at_least_99_percent():
    """Every fourth scene of the whole grammar (270 of 1,080; all 1,080 at two seeds read 100 %)."""
    scenes = world.all_scenes()[::4]
    clips = world.render_batch(scenes, torch.Generator().manual_seed(11))
    hits = {a: 0 for a in world.ATTRIBUTES}
    for s, clip in zip(scenes, clips):
        for a, ok in oracle.read(clip).matches(s).items():
            hits[a] += ok
    for a, n in hits.items():
        assert n / len(scenes) >= 0.99, (a, n)


def test_objects_carry_their_own_start_and_speed():
    """Per-object tracks give the latent variables the prompt leaves free (start, speed)."""
    scene = world.Scene(2, "small", "blue", "triangle", "up", "black")
    layout = world.sample_layout(scene, torch.Generator().manual_seed(5))
    r = oracle.read(world.render(scene, layout))
    assert len(r.objects) == 2
    starts = sorted(tuple(o.start) for o in r.objects)
    for (x, y), (tx, ty) in zip(starts, sorted(layout.centres)):
        assert abs(x - tx) < 0.3 and abs(y - ty - world.SIZES["small"] / 6) < 0.3  # α-centroid of an apex-up triangle
    for o in r.objects:
        assert o.speed == pytest.approx(layout.speed, abs=0.05)


def test_evaluate_reads_attributes_with_the_oracle_it_is_told():
    """The default reader is v3; `--oracle 2` re-reads with the earlier one, which this clip fools."""
    from tmd_bench.metrics import shapes

    clip = compose("black", ("magenta", coverage("square", LARGE, 6.0, 6.5, vy=0.9)),
                   ("magenta", coverage("circle", LARGE, 18.0, 6.5, vy=0.9)))
    prompt = "two large magenta squares moving down on a black background"
    v2, _ = shapes.evaluate_clips(clip.unsqueeze(0), [prompt], oracle_version=2)
    v3, _ = shapes.evaluate_clips(clip.unsqueeze(0), [prompt])
    assert v2["all_correct"] == 1.0 and v3["acc_shape"] == 0.0
    with pytest.raises(ValueError, match="--oracle must be one of 2, 3"):
        shapes.evaluate_clips(clip.unsqueeze(0), [prompt], oracle_version=4)


def _hole_by_definition(alpha, region):
    """The hole's definition, pixel by pixel: the 4-connected components of coverage ≤ ½, flood-filled
    one pixel at a time, that do not reach the frame's border and lie inside ``region``."""
    low = alpha <= 0.5
    h, w = low.shape
    seen, n = set(), 0
    for start in zip(*low.nonzero()):
        if start in seen:
            continue
        comp, stack = [], [start]
        seen.add(start)
        while stack:
            y, x = stack.pop()
            comp.append((y, x))
            for q in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= q[0] < h and 0 <= q[1] < w and low[q] and q not in seen:
                    seen.add(q)
                    stack.append(q)
        if all(0 < y < h - 1 and 0 < x < w - 1 for y, x in comp) and all(region[p] for p in comp):
            n += len(comp)
    return n


@settings(max_examples=150, deadline=None, database=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.integers(3, 14), st.floats(0.2, 0.8))
def test_hole_counts_what_its_definition_counts(seed, size, fill):
    """``_hole`` grows the border's reach in whole-array steps; it must count exactly the enclosed
    low-coverage pixels that a pixel-by-pixel flood fill finds (mazes, spirals of random masks,
    components that touch the border only at a corner, regions that cover a hole only in part)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    alpha = rng.random((size, size + rng.integers(0, 3)))
    alpha = np.where(rng.random(alpha.shape) < fill, alpha * 0.5 + 0.5, alpha * 0.5)  # fill: share of > ½
    region = rng.random(alpha.shape) < 0.85 if seed % 2 else np.ones(alpha.shape, bool)
    assert oracle._hole(alpha, region) == _hole_by_definition(alpha, region)


def test_hole_of_a_ring_and_of_a_dent():
    import numpy as np

    ring = np.ones((7, 7))
    ring[2:5, 2:5] = 0.0  # a 3 × 3 hole, cut off from the border
    everywhere = np.ones((7, 7), bool)
    assert oracle._hole(ring, everywhere) == 9
    dent = ring.copy()
    dent[0:2, 3] = 0.0  # a channel to the border: a dent, no hole
    assert oracle._hole(dent, everywhere) == 0
    part = everywhere.copy()
    part[3, 3] = False  # the region misses one pixel of the hole: not this object's hole
    assert oracle._hole(ring, part) == 0


# -- the reader's parts, against their definitions -------------------------------------------------

def test_read_shape_needs_a_good_fit_and_a_clear_runner_up():
    """``_read_shape``: the best template's residual at most ``SHAPE_MAX_ERROR``, and the *runner-up*
    (not the worst) at least ``SHAPE_RATIO`` times it; both bounds inclusive of the value they name."""
    best, ratio = oracle.SHAPE_MAX_ERROR, oracle.SHAPE_RATIO
    assert oracle._read_shape({"circle": 0.05, "square": 0.5, "triangle": 0.9}) == "circle"
    assert oracle._read_shape({"circle": 0.9, "square": 0.05, "triangle": 0.5}) == "square"
    assert oracle._read_shape({"circle": 0.30, "square": 0.9, "triangle": 0.95}) is None  # no template fits
    # a close runner-up makes it ambiguous, however far off the third shape is
    assert oracle._read_shape({"circle": 0.05, "square": 0.052, "triangle": 0.9}) is None
    assert oracle._read_shape({"circle": best, "square": 0.9, "triangle": 0.95}) == "circle"  # at the bound: read
    assert oracle._read_shape({"circle": best * 1.001, "square": 0.9, "triangle": 0.95}) is None
    assert oracle._read_shape({"circle": 0.0625, "square": 0.0625 * ratio, "triangle": 0.9}) == "circle"
    assert oracle._read_shape({"circle": 0.0625, "square": 0.0625 * ratio * 0.999, "triangle": 0.9}) is None


def _gaussian_kernel(sigma, dtype):
    """The normalised Gaussian of std ``sigma`` px on the integers −⌈3σ⌉ … ⌈3σ⌉ (the oracle's blur model)."""
    import math

    r = math.ceil(3 * sigma)
    x = torch.arange(-r, r + 1, dtype=dtype)
    k = torch.exp(-x**2 / (2 * sigma * sigma))
    return k / k.sum()


@pytest.mark.parametrize("n,sigma", [(24, 0.5), (24, 1.1), (24, 3.0), (7, 1.8), (24, 0.0), (5, -1.0)])
def test_blur_matrix_is_a_zero_padded_gaussian_convolution(n, sigma):
    """``_blur_matrix(n, σ) @ v`` is v convolved with the normalised Gaussian of radius ⌈3σ⌉, zero outside
    the frame (torch's conv1d as the reference); σ ≤ 0 is the identity. Built without the module's cache."""
    import numpy as np

    m = oracle._blur_matrix(n, sigma)
    v = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    if sigma <= 0:
        assert np.array_equal(m, np.eye(n))
        return
    k = _gaussian_kernel(sigma, torch.float64)
    ref = torch.nn.functional.conv1d(v.view(1, 1, n), k.view(1, 1, -1), padding=len(k) // 2).view(n)  # symmetric
    assert np.allclose(m @ v.numpy(), ref.numpy(), atol=1e-12, rtol=0)


def test_joint_motion_measures_pixel_centres_and_the_slope_over_the_clip():
    """A one-pixel dot at row y, column x has its centroid at the pixel's centre (x + ½, y + ½), the
    world's coordinates; moving one column per frame over F frames it is displaced by F − 1 columns."""
    import numpy as np

    alpha = np.zeros((F, H, W))
    for f in range(F):
        alpha[f, 5, 3 + f] = 3.0  # an area of 3 per frame: above half of MIN_AREA
    areas, centroids, displacement = oracle.joint_motion(alpha)
    assert np.allclose(areas, 3.0)
    assert np.allclose(centroids, [[3 + f + 0.5, 5.5] for f in range(F)])
    assert np.allclose(displacement, [F - 1, 0.0])
    faint = alpha / 3.0  # area 1 per frame: below half of MIN_AREA, no displacement is measured
    assert np.array_equal(oracle.joint_motion(faint)[2], [0.0, 0.0])


def test_each_frame_of_a_clean_object_reads_its_shape():
    """Per frame (``Blob.shape``), not only over the track: a clean render fits its template in every frame."""
    r = oracle.read(compose("navy", ("white", coverage("triangle", LARGE, 12.0, 12.0, vx=0.9))))
    assert [b.shape for b in r.objects[0].blobs] == ["triangle"] * F


def test_a_hole_of_hole_min_area_pixels_unmakes_the_shape():
    """The bound is inclusive: ``HOLE_MIN_AREA`` enclosed pixels make a ring in every frame (no shape per
    frame, none for the object); one pixel fewer leaves a square."""
    for hole_px, expected in ((oracle.HOLE_MIN_AREA, None), (oracle.HOLE_MIN_AREA - 1, "square")):
        solid = torch.zeros(F, H, W)
        solid[:, 6:18, 6:18] = 1.0
        solid[:, 11, 11:11 + hole_px] = 0.0
        r = oracle.read(compose("black", ("red", solid)))
        assert [b.hole for b in r.objects[0].blobs] == [hole_px] * F
        assert {b.shape for b in r.objects[0].blobs} == {expected} and r.attributes["shape"] == expected


def test_the_reader_does_not_assume_square_frames():
    """The same scene with background added below and to the right (30 × 36 frames, not 24 × 24) reads the
    same attributes, size and blur: rows and columns are never mixed up. (Not to the last digit: the
    widest blurred templates reach the frame's edge, where they are zero-padded.)"""
    scene = compose("navy", ("white", coverage("circle", SMALL, 9.0, 10.0, vy=0.8)),
                    ("yellow", coverage("square", SMALL, 17.0, 8.0, vy=0.8)))
    bg = scene[:, :, :1, :1]
    tall = torch.cat([scene, bg.expand(3, F, 6, W)], 2)
    wide = torch.cat([tall, bg.expand(3, F, H + 6, 12)], 3)
    a, b = oracle.read(scene), oracle.read(wide)
    assert b.alpha.shape == (F, H + 6, W + 12)
    assert a.attributes == b.attributes and a.attributes["count"] == 2
    for oa, ob in zip(a.objects, b.objects):
        assert oa.attributes == ob.attributes
        assert oa.size_px == pytest.approx(ob.size_px, rel=1e-3)
        assert [x.blur for x in oa.blobs] == pytest.approx([x.blur for x in ob.blobs], abs=1e-3)
        assert [x.hole for x in oa.blobs] == [x.hole for x in ob.blobs]


def _regions_by_definition(comps, shape, steps=2):
    """Each component grown one 4-neighbour ring per step, pixel by pixel: a free pixel next to exactly one
    component's pixels joins it; next to two or more, it is contested and joins none, ever."""
    import numpy as np

    owner = np.full(shape, -1)
    for k, c in enumerate(comps):
        owner[c[:, 0], c[:, 1]] = k
    h, w = shape
    for _ in range(steps):
        new = owner.copy()
        for y in range(h):
            for x in range(w):
                if owner[y, x] != -1:
                    continue
                near = {owner[q] for q in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1))
                        if 0 <= q[0] < h and 0 <= q[1] < w and owner[q] >= 0}
                if len(near) == 1:
                    new[y, x] = near.pop()
                elif near:
                    new[y, x] = -2
        owner = new
    return [owner == k for k in range(len(comps))]


@pytest.mark.parametrize("seed", range(12))
def test_regions_grow_each_object_two_pixels_and_leave_contested_pixels_out(seed):
    """``_regions`` against its definition on random blobs (some close enough to contest pixels)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mask = rng.random((12, 15)) < 0.12
    comps = oracle.components(mask)
    got, want = oracle._regions(comps, mask.shape), _regions_by_definition(comps, mask.shape)
    assert len(got) == len(want)
    for g, wnt in zip(got, want):
        assert np.array_equal(g, wnt)


def test_regions_of_one_pixel_and_of_two_close_pixels():
    import numpy as np

    (one,) = oracle._regions([np.array([[4, 4]])], (9, 9))
    ys, xs = np.mgrid[0:9, 0:9]
    assert np.array_equal(one, np.abs(ys - 4) + np.abs(xs - 4) <= 2)  # a diamond of radius 2
    a, b = oracle._regions([np.array([[4, 2]]), np.array([[4, 6]])], (9, 9))
    assert not a[4, 4] and not b[4, 4]  # reached by both in the same step: nobody's
    assert a[4, 3] and b[4, 5] and not (a & b).any()


def _gaussian_blur(a, sigma):
    """(F, H, W) coverage blurred by a separable Gaussian of std ``sigma`` px (torch's conv2d, zero padding)."""
    k = _gaussian_kernel(sigma, torch.float32)
    r = len(k) // 2
    a = torch.nn.functional.conv2d(a.unsqueeze(1), k.view(1, 1, -1, 1), padding=(r, 0))
    return torch.nn.functional.conv2d(a, k.view(1, 1, 1, -1), padding=(0, r)).squeeze(1)


def test_the_blur_estimate_finds_a_blur_between_the_template_grid_points():
    """σ̂ (``sharpness`` = 1 / (1 + σ̂²)) of an object blurred by a known σ that lies *between* the templates'
    σ grid (0.5, 0.8, 1.1, 1.4): the parabola refinement must land within 0.06 px, nearer than any grid
    point (0.15 px away at σ = 0.65). Larger blurs are underestimated (their tails leave the object's
    region) but still rank in order."""
    for shape in ("circle", "square"):
        for sigma in (0.65, 1.0, 1.25):
            r = oracle.read(compose("gray", ("red", _gaussian_blur(coverage(shape, LARGE, 12.0, 12.0), sigma))))
            assert r.attributes["shape"] == shape
            assert all(abs(b.blur - sigma) < 0.06 for b in r.objects[0].blobs), (shape, sigma, r.objects[0].blobs[0].blur)
    blurs = [oracle.read(compose("gray", ("red", _gaussian_blur(coverage("triangle", LARGE, 12.0, 12.0), s))))
             .objects[0].blobs[0].blur for s in (0.65, 1.0, 1.25, 1.6, 2.0)]
    assert blurs == sorted(blurs) and blurs[0] > 0.5 and blurs[-1] > 1.4
    clean = oracle.read(compose("gray", ("red", coverage("circle", LARGE, 12.0, 12.0))))
    assert all(b.blur == 0.0 and b.sharpness == 1.0 for b in clean.objects[0].blobs)


@pytest.mark.parametrize("curve,expected", [
    (lambda v: (v - 1.2) ** 2 + 0.1, 1.2 ** 0.5),  # a parabola in σ²: any three of its points give its vertex
    (lambda v: 3 * (v - 5.0) ** 2, 5.0 ** 0.5),  # between 1.8² and 2.3²
    (lambda v: (v + 0.5) ** 2, 0.0),  # vertex below σ = 0: the grid's first point, not the square root of a negative
    (lambda v: (v - 12.0) ** 2, 3.0),  # vertex beyond the largest template (σ² = 9): clipped to σ = 3
    (lambda v: 10 - (v - 2.0) ** 2, 3.0),  # concave: no vertex to trust, the grid minimum (the last point)
    (lambda v: 0 * v + 1.0, 0.0),  # flat: the grid minimum (the first of equals)
])
def test_the_blur_refinement_is_the_parabola_vertex_clipped_to_the_grid(curve, expected):
    import numpy as np

    v = np.array(oracle.TEMPLATE_SIGMAS) ** 2
    assert oracle.refine_blur(curve(v)) == pytest.approx(expected, abs=1e-9)


def test_a_concave_triple_falls_back_to_the_grid_minimum_not_the_triple_centre():
    """The minimum at the grid's end with the triple beside it concave: σ̂ is that end's σ (3.0), not the
    triple's centre (2.3)."""
    import numpy as np

    e = np.array([5.0, 4.0, 3.0, 2.5, 2.2, 2.0, 1.9, 0.5])  # last three: (2.0, 1.9, 0.5) in σ² 3.24, 5.29, 9
    assert oracle.refine_blur(e) == pytest.approx(3.0)


def test_own_coverage_is_the_projection_on_the_blend_segment_clipped_to_0_and_1():
    import numpy as np

    b, c = np.array([0.1, 0.2, 0.3]), np.array([0.9, 0.4, 0.3])
    x = np.stack([b, c, b + 0.25 * (c - b), c + 0.5 * (c - b), b - 0.5 * (c - b),
                  b + 0.25 * (c - b) + np.array([0.0, 0.0, 0.7])])  # the last: off the segment, orthogonal to it
    assert oracle.own_coverage(x, b, c) == pytest.approx([0.0, 1.0, 0.25, 1.0, 0.0, 0.25])


def test_shape_residuals_are_relative_to_the_coverage_energy():
    """``_fit_shapes``' error of each shape: min over the σ grid of Σ_region (blurred template − α)² / Σ α²,
    against a separate computation (torch conv2d blur). A clean circle fits its own template exactly; the
    other shapes' errors are what the shape bounds (SHAPE_MAX_ERROR, SHAPE_RATIO) are compared with."""
    import numpy as np

    a = coverage("circle", LARGE, 12.3, 11.6)[0].double().numpy()
    area, cy, cx = a.sum(), (a * _YS[0].numpy()).sum() / a.sum(), (a * _XS[0].numpy()).sum() / a.sum()
    region = np.ones_like(a)
    region[:, :3] = 0  # a region that is not the whole frame
    errors, blur = oracle._fit_shapes(a, region, area, cx, cy)
    assert errors["circle"] < 1e-3 and blur < 0.3
    for shape in ("square", "triangle"):
        t = torch.from_numpy(oracle.template(shape, area, cx, cy, H, W)).unsqueeze(0)
        residuals = []
        for sigma in oracle.TEMPLATE_SIGMAS:
            blurred = t if sigma == 0 else _gaussian_blur(t.float(), sigma).double()
            residuals.append(float((((blurred[0].numpy() - a) ** 2) * region).sum() / (a ** 2).sum()))
        assert errors[shape] == pytest.approx(min(residuals), rel=1e-4)
        assert errors[shape] > 10 * errors["circle"]
