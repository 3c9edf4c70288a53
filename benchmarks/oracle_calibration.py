"""How the Shapes oracle (version 3) reads what it must read, and rejects what it must reject.

    python benchmarks/oracle_calibration.py                 # the whole grammar, clean and blurred (≈ 3 min)
    python benchmarks/oracle_calibration.py --teacher 128   # … and the shipped teacher's 50-step samples, v2 vs v3

Prints, per condition, each attribute's accuracy over every scene of the grammar at two seeds
(clean; blurred with σ = 0.7 and 1 px plus N(0, 0.05²) noise), the largest mean template residual
and runner-up ratio seen on them (the margins ``SHAPE_MAX_ERROR`` / ``SHAPE_RATIO`` keep), the range
of measured sides, and the same quantities on the constructed shapes that must *not* read as a
world shape (rings, a cross) or sit between two (the superellipse halfway between a circle and a
square). With ``--teacher N`` it samples the shipped teacher (Euler, 50 steps, CFG) on the first N
prompts of ``shapes-eval`` and prints where versions 2 and 3 disagree, so they can be looked at.
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np
import torch

from tmd_bench import world
from tmd_bench.metrics import oracle, oracle_v2

F, H, W = world.FRAMES, world.HEIGHT, world.WIDTH
_YS = torch.arange(H, dtype=torch.float32).view(1, H, 1) + 0.5
_XS = torch.arange(W, dtype=torch.float32).view(1, 1, W) + 0.5


def blur(clips: torch.Tensor, sigma: float) -> torch.Tensor:
    x = torch.arange(-4, 5, dtype=torch.float32)
    k = torch.exp(-x**2 / (2 * sigma**2))
    k = k / k.sum()
    flat = clips.reshape(-1, 1, H, W)
    flat = torch.nn.functional.conv2d(torch.nn.functional.pad(flat, (4, 4, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    flat = torch.nn.functional.conv2d(torch.nn.functional.pad(flat, (0, 0, 4, 4), mode="replicate"), k.view(1, 1, -1, 1))
    return flat.view(clips.shape)


def shape_margins(reading) -> list[tuple[float, float]]:
    """(mean residual of the best shape, runner-up / best) per object."""
    out = []
    for o in reading.objects:
        if not o.blobs or not o.blobs[0].errors:
            continue
        mean = sorted(float(np.mean([b.errors[s] for b in o.blobs])) for s in oracle.SHAPES)
        out.append((mean[0], mean[1] / max(mean[0], 1e-12)))
    return out


def grammar(seeds=(0, 1)) -> None:
    scenes = world.all_scenes()
    clean = torch.cat([world.render_batch(scenes, torch.Generator().manual_seed(s)) for s in seeds])
    scenes = scenes * len(seeds)
    noise = 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    for name, clips in (("clean", clean), ("σ = 0.7 px + noise", (blur(clean, 0.7) + noise).clamp(-1, 1)),
                        ("σ = 1 px + noise", (blur(clean, 1.0) + noise).clamp(-1, 1))):
        t0 = time.perf_counter()
        hits, margins, sides = collections.Counter(), [], []
        for s, clip in zip(scenes, clips):
            r = oracle.read(clip)
            hits.update(a for a, ok in r.matches(s).items() if ok)
            margins += shape_margins(r)
            sides += [(s.size, o.size_px) for o in r.objects]
        n = len(scenes)
        acc = "  ".join(f"{a} {100 * hits[a] / n:.2f}%" for a in world.ATTRIBUTES)
        worst_err = max(m[0] for m in margins)
        worst_ratio = min(m[1] for m in margins)
        rng = {k: (min(v for s, v in sides if s == k), max(v for s, v in sides if s == k)) for k in world.SIZES}
        print(f"{name:>20}: {n} clips  {acc}")
        print(f"{'':>20}  largest mean residual {worst_err:.3f}, smallest runner-up ratio {worst_ratio:.2f}, "
              + ", ".join(f"{k} sides {lo:.2f}–{hi:.2f} px" for k, (lo, hi) in rng.items())
              + f"  ({(time.perf_counter() - t0) / n * 1e3:.0f} ms/clip)")


def constructed() -> None:
    def cov(shape, size, x=12.0, y=12.0):
        return world._coverage(shape, size, torch.full((F, 1, 1), x), torch.full((F, 1, 1), y), _XS, _YS)

    def superellipse(p, side, ss=8):
        o = (torch.arange(ss) + 0.5) / ss
        ys = (torch.arange(H).view(H, 1, 1, 1) + o.view(1, 1, ss, 1) - 12.1).abs() / (side / 2)
        xs = (torch.arange(W).view(1, W, 1, 1) + o.view(1, 1, 1, ss) - 12.3).abs() / (side / 2)
        return ((xs**p + ys**p) <= 1).float().mean((-1, -2)).expand(F, H, W)

    def clip(a, colour="red", bg="black"):
        b = torch.tensor(world.BACKGROUNDS[bg]).view(3, 1, 1, 1)
        return (b * (1 - a) + torch.tensor(world.COLOURS[colour]).view(3, 1, 1, 1) * a) * 2 - 1

    dx, dy = (_XS - 12.0).abs(), (_YS - 12.0).abs()
    cases = {f"ring, {h:g} px hole": (cov("circle", 11.0) - cov("circle", h)).clamp(0, 1) for h in (3.0, 5.0, 7.0)}
    cases["cross, 9 × 3 px bars"] = (((dx < 4.5) & (dy < 1.5)) | ((dx < 1.5) & (dy < 4.5))).float().expand(F, H, W)
    for side in (7.0, 11.0):
        cases[f"superellipse p = 4, side {side:g}"] = superellipse(4, side)
    for name, a in cases.items():
        r = oracle.read(clip(a))
        m = shape_margins(r)
        holes = [b.hole for o in r.objects for b in o.blobs]
        print(f"{name:>30}: shape {r.attributes['shape']}  mean residual {m[0][0]:.3f}  ratio {m[0][1]:.2f}  "
              f"hole {max(holes) if holes else 0} px")


def teacher(n: int) -> None:
    from tmd_bench import harness, runtime, suites

    suite = suites.load_suite("shapes-eval")
    prompts, seeds = list(suite.prompts)[:n], suite.seeds(0)[:n]
    t = runtime.load("shapes", None, "cpu", None)
    videos = harness.generate(harness.teacher_method(t, "euler"), t, prompts, seeds, 50).videos
    per = {}
    for name, mod in (("v2", oracle_v2), ("v3", oracle)):
        per[name] = [mod.read(v).matches(world.Scene.parse(p)) for p, v in zip(prompts, videos)]
        fails = collections.Counter(a for m in per[name] for a, ok in m.items() if not ok)
        print(f"teacher s50 {name}: all-correct {100 * np.mean([all(m.values()) for m in per[name]]):.1f}%  "
              f"failures by attribute {dict(fails)}")
    for i, (a, b) in enumerate(zip(per["v2"], per["v3"])):
        if all(a.values()) != all(b.values()):
            r = oracle.read(videos[i])
            wrong = [k for k, ok in b.items() if not ok]
            detail = [(o.attributes, round(o.size_px, 2), np.round(o.velocity, 2).tolist()) for o in r.objects]
            print(f"  v3 differs on #{i} {prompts[i]!r} seed {seeds[i]}: {wrong} read {[r.attributes[k] for k in wrong]}; "
                  f"objects {detail}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", type=int, default=0, help="also sample the shipped teacher on this many prompts")
    ap.add_argument("--seeds", type=int, default=2, help="render seeds per scene of the grammar")
    args = ap.parse_args()
    constructed()
    grammar(tuple(range(args.seeds)))
    if args.teacher:
        teacher(args.teacher)
