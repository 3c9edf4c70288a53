"""The Shapes world: procedural text-to-video clips with known ground truth.

A clip is ``count`` identical objects (shape, colour, size) moving in one direction over a plain
background, rendered with analytic anti-aliasing. The prompt names every attribute; start
position and speed are *not* named, so the conditional distribution p(clip | prompt) is
multimodal — a regression student averages the modes into a blur, a distribution-matching one
does not.

Geometry (why 24×24×8): the teacher patchifies with (2, 4, 4), i.e. 4×6×6 = 144 tokens. An earlier
prototype showed that objects only 5–8 px wide at 16×16 made *shape* the bottleneck; here small
objects are 7 px and large 11 px (≈ 2–3 patches wide), two large objects still fit side by side,
and the slowest move (0.7 px/frame × 7 intervals ≈ 5 px) is far above the oracle's static
threshold.

Clips are tensors ``(B, 3, F, H, W)`` in [−1, 1], the layout of a Wan latent ``(B, C, F, H, W)``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterator

import torch

from tmd_bench.registry import clip_text

FRAMES, HEIGHT, WIDTH = 8, 24, 24

SHAPES = ("circle", "square", "triangle")
# RGB in [0, 1]; object colours are far from every background colour.
COLOURS = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.80, 0.15),
    "blue": (0.15, 0.30, 1.00),
    "yellow": (0.95, 0.85, 0.10),
    "white": (0.95, 0.95, 0.95),
    "magenta": (0.90, 0.10, 0.90),
}
BACKGROUNDS = {
    "black": (0.05, 0.05, 0.05),
    "gray": (0.50, 0.50, 0.50),
    "navy": (0.05, 0.10, 0.35),
}
SIZES = {"small": 7.0, "large": 11.0}  # bounding-box side in pixels
MOTIONS = {  # unit direction in image coordinates (y grows downwards)
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "still": (0.0, 0.0),
}
COUNTS = {1: "a", 2: "two"}
SPEED = (0.7, 1.1)  # pixels per frame, uniform
GAP = 1.0  # minimum free pixels between two objects
MARGIN = 0.5  # keep objects this far inside the frame

# (colour, shape) pairs never shown in training: the compositional-generalisation split.
HELD_OUT_PAIRS = frozenset({("red", "triangle"), ("green", "square"), ("blue", "circle")})

ATTRIBUTES = ("count", "size", "colour", "shape", "motion", "background")


@dataclass(frozen=True)
class Scene:
    """Everything a prompt says about a clip."""

    count: int
    size: str
    colour: str
    shape: str
    motion: str
    background: str

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("count", self.count, COUNTS),
            ("size", self.size, SIZES),
            ("colour", self.colour, COLOURS),
            ("shape", self.shape, SHAPES),
            ("motion", self.motion, MOTIONS),
            ("background", self.background, BACKGROUNDS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(map(str, allowed))}")

    @property
    def prompt(self) -> str:
        noun = self.shape + ("s" if self.count > 1 else "")
        verb = "standing still" if self.motion == "still" else f"moving {self.motion}"
        return f"{COUNTS[self.count]} {self.size} {self.colour} {noun} {verb} on a {self.background} background"

    @property
    def held_out(self) -> bool:
        return (self.colour, self.shape) in HELD_OUT_PAIRS

    def as_dict(self) -> dict:
        return {a: getattr(self, a) for a in ATTRIBUTES}

    @classmethod
    def parse(cls, prompt: str) -> "Scene":
        """Inverse of :attr:`prompt`. Raises ``ValueError`` naming what does not fit the grammar."""
        words = prompt.strip().lower().split()
        expected = "'<a|two> <size> <colour> <shape>[s] <moving DIR|standing still> on a <background> background'"
        if len(words) != 10 or words[-1] != "background" or words[-3] != "a" or words[-4] != "on":
            raise ValueError(f"not a Shapes-world prompt: {clip_text(prompt)!r}; expected {expected}")
        count = {v: k for k, v in COUNTS.items()}.get(words[0])
        if count is None:
            raise ValueError(f"not a Shapes-world prompt: {clip_text(prompt)!r}: count must be 'a' or 'two'")
        shape = words[3][:-1] if count > 1 and words[3].endswith("s") else words[3]
        if words[4:6] == ["standing", "still"]:
            motion = "still"
        elif words[4] == "moving":
            motion = words[5]
        else:
            raise ValueError(f"not a Shapes-world prompt: {clip_text(prompt)!r}; expected {expected}")
        try:
            return cls(count, words[1], words[2], shape, motion, words[8])
        except ValueError as e:
            raise ValueError(f"not a Shapes-world prompt: {clip_text(prompt)!r}: {e}") from None


def all_scenes(held_out: bool | None = None) -> list[Scene]:
    """Every scene of the grammar; ``held_out`` True/False keeps only that split."""
    scenes = [
        Scene(*combo)
        for combo in itertools.product(COUNTS, SIZES, COLOURS, SHAPES, MOTIONS, BACKGROUNDS)
    ]
    return scenes if held_out is None else [s for s in scenes if s.held_out == held_out]


def vocabulary() -> list[str]:
    """Every word a prompt can contain (the text encoder's vocabulary)."""
    words = {w for s in all_scenes() for w in s.prompt.split()}
    return sorted(words)


# ---------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class Layout:
    """The unnamed, random part of a clip: per-object start centres and the common speed."""

    centres: tuple[tuple[float, float], ...]  # (x, y) at frame 0, pixels
    speed: float


def sample_layout(scene: Scene, generator: torch.Generator) -> Layout:
    """Start positions and speed, uniform over every placement that keeps the objects in frame
    for all frames and (for two objects) apart by at least ``GAP`` pixels."""

    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    half = SIZES[scene.size] / 2
    speed = u(*SPEED) if scene.motion != "still" else 0.0
    dx, dy = MOTIONS[scene.motion]
    travel = speed * (FRAMES - 1)
    # Along the motion axis the whole trajectory must stay inside; across it, the object only.
    if scene.motion == "still":
        along_axis = int(torch.randint(0, 2, (), generator=generator))  # split axis for 2 objects
    else:
        along_axis = 0 if dx != 0 else 1
    extent = (WIDTH, HEIGHT)
    lo, hi = half + MARGIN, extent[along_axis] - half - MARGIN - travel
    direction = dx if along_axis == 0 else dy
    cross = 1 - along_axis
    centres = []
    for k in range(scene.count):
        a = u(lo, hi)
        a = a + travel if direction < 0 else a  # moving towards smaller coordinates: start high
        if scene.count == 1:
            c = u(half + MARGIN, extent[cross] - half - MARGIN)
        else:  # one object per half across the motion axis
            mid = extent[cross] / 2
            if k == 0:
                c = u(half + MARGIN, mid - half - GAP / 2)
            else:
                c = u(mid + half + GAP / 2, extent[cross] - half - MARGIN)
        centres.append((a, c) if along_axis == 0 else (c, a))
    return Layout(tuple(centres), speed)


def _coverage(shape: str, size: float, cx: torch.Tensor, cy: torch.Tensor,
              xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Anti-aliased coverage in [0, 1] from a signed distance d: ``clamp(0.5 − d, 0, 1)``.

    cx, cy: (F, 1, 1) centres per frame; xs, ys: (1, H, W) pixel centres. Returns (F, H, W).
    """
    half = size / 2
    px, py = xs - cx, ys - cy
    if shape == "square":
        d = torch.maximum(px.abs(), py.abs()) - half
    elif shape == "circle":
        d = torch.sqrt(px**2 + py**2) - half
    elif shape == "triangle":  # apex up, base at the bottom of the bounding box
        # sides through the apex (0, −half) and (±half, half); outward normals (±2, −1)/√5
        n = 1 / math.sqrt(5.0)
        d = torch.maximum(
            py - half,
            torch.maximum((2 * px - py - half) * n, (-2 * px - py - half) * n),
        )
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return (0.5 - d).clamp(0, 1)


def render(scene: Scene, layout: Layout) -> torch.Tensor:
    """One clip ``(3, F, H, W)`` in [−1, 1]."""
    ys = torch.arange(HEIGHT, dtype=torch.float32).view(1, HEIGHT, 1) + 0.5
    xs = torch.arange(WIDTH, dtype=torch.float32).view(1, 1, WIDTH) + 0.5
    frames = torch.arange(FRAMES, dtype=torch.float32).view(FRAMES, 1, 1)
    dx, dy = MOTIONS[scene.motion]
    bg = torch.tensor(BACKGROUNDS[scene.background]).view(3, 1, 1, 1)
    fg = torch.tensor(COLOURS[scene.colour]).view(3, 1, 1, 1)
    alpha = torch.zeros(FRAMES, HEIGHT, WIDTH)
    for x0, y0 in layout.centres:
        cov = _coverage(scene.shape, SIZES[scene.size], x0 + dx * layout.speed * frames,
                        y0 + dy * layout.speed * frames, xs, ys)
        alpha = torch.maximum(alpha, cov)  # objects never overlap; max keeps coverage ≤ 1
    clip = bg * (1 - alpha) + fg * alpha
    return clip * 2 - 1


def render_batch(scenes: list[Scene], generator: torch.Generator) -> torch.Tensor:
    """Clips ``(B, 3, F, H, W)`` with layouts drawn from ``generator``."""
    return torch.stack([render(s, sample_layout(s, generator)) for s in scenes])


def render_prompts(prompts: list[str], seeds: list[int]) -> torch.Tensor:
    """Reference clips for an evaluation suite: one per (prompt, seed), reproducible."""
    return torch.stack([
        render(s, sample_layout(s, torch.Generator().manual_seed(seed)))
        for s, seed in zip(map(Scene.parse, prompts), seeds)
    ])


class ShapesStream:
    """Infinite, seeded stream of training batches ``(prompts, clips)`` over the training split.

    Deterministic given (seed, position): ``ShapesStream(seed, start=k)`` resumes exactly where a
    stream that already yielded k batches would continue.
    """

    def __init__(self, batch_size: int, seed: int = 0, start: int = 0, include_held_out: bool = False):
        self.batch_size = batch_size
        self.seed = seed
        self.position = start
        self.scenes = all_scenes(None if include_held_out else False)

    def __iter__(self) -> Iterator[tuple[list[str], torch.Tensor]]:
        return self

    def __next__(self) -> tuple[list[str], torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.position)
        self.position += 1
        idx = torch.randint(0, len(self.scenes), (self.batch_size,), generator=g).tolist()
        scenes = [self.scenes[i] for i in idx]
        return [s.prompt for s in scenes], render_batch(scenes, g)
