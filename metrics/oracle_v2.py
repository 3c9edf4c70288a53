"""The analytic oracle, version 2 — kept as the default reader of the shipped comparison until
version 3 (:mod:`tmd_bench.metrics.oracle`) is audited on model samples (see README, "The Shapes world").

Version 2 reads the joint centroid's motion and picks the best template without an ambiguity margin,
so constructed clips can fool it (tests/metrics/test_oracle_adversarial.py targets version 3); on the
teacher's and students' samples it agrees with a reading by eye. Reads a Shapes-world clip back into
the attributes its prompt names.

It never sees the prompt. Steps, per clip:

1. background = the background palette colour that most pixels sit close to;
2. object colour = the object palette colour most of the clearly-non-background pixels are
   nearest to;
3. coverage ``α = ((p − b)·(c − b)) / ‖c − b‖²`` per pixel (exact for the renderer's
   anti-aliased blend of background b and object colour c);
4. per frame, connected components of ``α > 0.5`` — or of ``α > 0.7`` where that finds more, as
   when a blur joins two objects across the world's 1 px minimum gap — → count; for each component the coverage
   profile gives its extent (→ size), and the shape is the template (square, circle, apex-up
   triangle of the component's area, placed at its α-centroid, blurred with σ ∈ {0, 0.7, 1.4} px)
   that fits the component's coverage best in least squares;
5. the α-weighted centroid per frame, fitted with constant velocity → motion direction.

The quantities it measures along the way feed the quality analogues in ``metrics/shapes.py``.

Shape is read by template fit (version 2) rather than by the fill ratio ``Σα / (extent_x·extent_y)``
against fixed thresholds (version 1): mild blur lowers every fill ratio (the extent grows, the area
does not), so version 1 read a blurred square as a circle — its clean-render score was 100%, but a
σ = 1 px blur dropped squares to 0%. Blur is a quality defect, measured by ``sharpness`` and
``imaging_quality``; the semantic reading should not depend on it. Version 2 reads clean renders
and renders blurred with σ ≤ 1 px plus noise of the suites at 100% (``tests/test_world.py``); the
thresholds were chosen on those, never on a model's samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from tmd_bench import world
from tmd_bench.metrics.oracle import components, joint_motion  # shared with version 3

_BG = np.array(list(world.BACKGROUNDS.values()), dtype=np.float32)
_FG = np.array(list(world.COLOURS.values()), dtype=np.float32)
_BG_NAMES = list(world.BACKGROUNDS)
_FG_NAMES = list(world.COLOURS)
STILL_THRESHOLD = 2.0  # px of displacement over the clip; the slowest move is ≈ 4.9 px
MIN_AREA = 4  # pixels; smaller blobs are noise, not objects
SIZE_THRESHOLD = sum(world.SIZES.values()) / 2
FILL_SQUARE, FILL_TRIANGLE = (1 + np.pi / 4) / 2, (np.pi / 4 + 0.5) / 2  # version 1's thresholds
VERSION = 2
COUNT_SPLIT = 0.7  # a second, higher coverage threshold that separates objects a blur has joined
SHAPES = ("square", "circle", "triangle")
_AREA_PER_SIZE2 = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}  # area = k · size²
_CENTROID_BELOW_CENTRE = {"square": 0.0, "circle": 0.0, "triangle": 1 / 6}  # × size (apex-up triangle)
TEMPLATE_SIGMAS = (0.0, 0.7, 1.4)


@dataclass
class Reading:
    """What the oracle read from one clip (attributes) and what it measured on the way."""

    attributes: dict
    alpha: np.ndarray  # (F, H, W) object coverage
    background_rgb: np.ndarray  # (3,)
    object_rgb: np.ndarray  # (3,)
    centroids: np.ndarray  # (F, 2) x, y; NaN where no object
    areas: np.ndarray  # (F,) Σα per frame
    counts: list[int] = field(default_factory=list)  # components per frame
    displacement: np.ndarray = field(default_factory=lambda: np.zeros(2))

    def matches(self, scene: world.Scene) -> dict[str, bool]:
        return {a: self.attributes.get(a) == getattr(scene, a) for a in world.ATTRIBUTES}


def _gaussian_kernels(sigmas: tuple[float, ...], radius: int = 4) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    ks = []
    for s in sigmas:
        k = torch.exp(-x**2 / (2 * s * s)) if s > 0 else (x == 0).float()
        ks.append(k / k.sum())
    return torch.stack(ks)  # (S, 2r+1)


_KERNELS = _gaussian_kernels(TEMPLATE_SIGMAS)


def _shape_by_template(frame: np.ndarray, comp: np.ndarray) -> str:
    """The shape whose blurred template, matched in area and α-centroid, fits ``frame`` best
    on the pixels within 2 px of the component ``comp`` (so a second object does not count)."""
    h, w = frame.shape
    near = np.zeros((h, w), dtype=bool)
    near[comp[:, 0], comp[:, 1]] = True
    for _ in range(2):  # dilate by 2 px (4-neighbourhood)
        grown = near.copy()
        grown[1:] |= near[:-1]
        grown[:-1] |= near[1:]
        grown[:, 1:] |= near[:, :-1]
        grown[:, :-1] |= near[:, 1:]
        near = grown
    a = np.where(near, frame, 0.0)
    area = float(a.sum())
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    cx, cy = float((a * xs).sum() / area), float((a * ys).sum() / area)
    gx = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
    gy = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
    templates = []
    for shape in SHAPES:
        size = float(np.sqrt(area / _AREA_PER_SIZE2[shape]))
        centre_y = cy - _CENTROID_BELOW_CENTRE[shape] * size
        templates.append(world._coverage(shape, size, torch.tensor(cx).view(1, 1, 1),
                                         torch.tensor(centre_y).view(1, 1, 1), gx, gy)[0])
    n_s, k = len(TEMPLATE_SIGMAS), _KERNELS
    r = k.shape[1] // 2
    t = torch.stack(templates)[:, None].expand(-1, n_s, -1, -1)  # (3, S, H, W)
    # separable blur, one σ per channel
    t = F.conv2d(F.pad(t, (r, r, 0, 0)), k.view(n_s, 1, 1, -1), groups=n_s)
    blurred = F.conv2d(F.pad(t, (0, 0, r, r)), k.view(n_s, 1, -1, 1), groups=n_s)
    err = ((blurred.numpy() - a) ** 2 * near).sum((2, 3))  # (3, S)
    return SHAPES[int(np.argmin(err.min(1)))]


def _nearest(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    return np.argmin(((rgb[..., None, :] - palette) ** 2).sum(-1), axis=-1)


def read(clip: torch.Tensor) -> Reading:
    """Read one clip ``(3, F, H, W)`` in [−1, 1]."""
    if clip.ndim != 4 or clip.shape[0] != 3:
        raise ValueError(f"expected a clip of shape (3, F, H, W), got {tuple(clip.shape)}")
    x = ((clip.detach().float().cpu().numpy() + 1) / 2).clip(0, 1).transpose(1, 2, 3, 0)  # F,H,W,3
    pixels = x.reshape(-1, 3)

    # 1. background: the palette entry most pixels are close to; its rendered colour is their mean
    d_bg = np.sqrt(((pixels[:, None, :] - _BG) ** 2).sum(-1))  # P, nbg
    close = d_bg < 0.2
    b_idx = int(np.argmax(close.sum(0)))
    b_pix = pixels[close[:, b_idx]]
    b_rgb = b_pix.mean(0) if len(b_pix) else _BG[b_idx]

    # 2. object colour: among clearly-non-background pixels, the most common nearest colour
    far = np.sqrt(((pixels - b_rgb) ** 2).sum(-1)) > 0.3
    if far.sum() >= MIN_AREA:
        names = _nearest(pixels[far], _FG)
        c_idx = int(np.bincount(names, minlength=len(_FG)).argmax())
        c_pix = pixels[far][names == c_idx]
        # the core of the objects: the half of those pixels farthest from the background
        dist = np.sqrt(((c_pix - b_rgb) ** 2).sum(-1))
        c_rgb = np.median(c_pix[dist >= np.median(dist)], axis=0)
        colour = _FG_NAMES[c_idx]
    else:
        c_idx, c_rgb, colour = None, _FG[0], None

    # 3. coverage
    diff = c_rgb - b_rgb
    alpha = ((x - b_rgb) @ diff / max(float(diff @ diff), 1e-6)).clip(0, 1)  # F,H,W
    if colour is None:
        alpha = np.zeros_like(alpha)

    # 4. components → count, size, shape
    counts, extents, shapes = [], [], []
    for f in range(alpha.shape[0]):
        comps = [c for c in components(alpha[f] > 0.5) if len(c) >= MIN_AREA]
        if COUNT_SPLIT:
            core = [c for c in components(alpha[f] > COUNT_SPLIT) if len(c) >= MIN_AREA]
            if len(core) > len(comps):
                comps = core
        counts.append(len(comps))
        for comp in comps:
            (y0, x0), (y1, x1) = comp.min(0), comp.max(0)
            y0, x0 = max(y0 - 1, 0), max(x0 - 1, 0)
            a = alpha[f, y0:y1 + 2, x0:x1 + 2]
            ex, ey = a.max(0).sum(), a.max(1).sum()
            extents.append(max(ex, ey))
            shapes.append(_shape_by_template(alpha[f], comp))
    count = int(np.bincount(counts).argmax()) if counts else 0
    attrs: dict = {"background": _BG_NAMES[b_idx], "colour": colour, "count": count}
    if extents:
        size_px = float(np.median(extents))
        attrs["size"] = "large" if size_px > SIZE_THRESHOLD else "small"
        attrs["shape"] = max(SHAPES, key=shapes.count)  # the majority over components and frames
    else:
        attrs["size"] = attrs["shape"] = None

    # 5. motion from the α-weighted centroid, least-squares constant velocity
    areas, centroids, displacement = joint_motion(alpha, MIN_AREA)
    if (areas > MIN_AREA / 2).sum() >= 2:
        ax = int(np.argmax(np.abs(displacement)))
        if abs(displacement[ax]) < STILL_THRESHOLD:
            attrs["motion"] = "still"
        elif ax == 0:
            attrs["motion"] = "right" if displacement[0] > 0 else "left"
        else:
            attrs["motion"] = "down" if displacement[1] > 0 else "up"
    else:
        attrs["motion"] = None
    return Reading(attrs, alpha, b_rgb, c_rgb, centroids, areas, counts, displacement)
