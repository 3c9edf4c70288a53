"""Diversity: does a distilled generator still cover the modes, or has it collapsed?

Distribution-matching distillation (DMD2, TMD's stage 2) is known to drop modes, and neither VBench
nor a per-clip correctness rate sees it: a student that draws the same clip for every seed of a prompt
can score perfectly. These measures need several samples per prompt (``evaluate --per-prompt K``,
K = 8 by default when diversity is asked for, as distillation papers do).

On features ``(P, K, D)`` — P prompts, K samples each (clip-level CLIP features: the mean of the
frames' normalised image features):

- :func:`pairwise_diversity`: ``1 − mean cos(f_i, f_j)`` over the K(K − 1)/2 pairs of a prompt,
  averaged over prompts. 0: every sample of a prompt is the same clip.
- :func:`vendi_score`: the Vendi score (Friedman & Dieng, 2023), ``exp(−Σ λ log λ)`` with λ the
  eigenvalues of ``S / K``, S the K × K cosine-similarity matrix: the effective number of distinct
  samples, from 1 (all alike) to K (mutually orthogonal), averaged over prompts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(feats: torch.Tensor) -> torch.Tensor:
    if feats.ndim != 3 or feats.shape[1] < 2:
        raise ValueError(f"diversity needs features (prompts, K ≥ 2 samples, dim), got {tuple(feats.shape)}")
    if not torch.isfinite(feats).all():
        raise ValueError("diversity: the features have NaN or inf values")
    return F.normalize(feats.double(), dim=-1)


def pairwise_per_prompt(feats: torch.Tensor) -> torch.Tensor:
    """``1 − mean pairwise cosine`` of each prompt's K samples: one value per prompt, ``(P,)``."""
    x = _check(feats)
    k = x.shape[1]
    sim = x @ x.transpose(1, 2)  # (P, K, K)
    off = ~torch.eye(k, dtype=torch.bool)
    return 1 - sim[:, off].mean(1)


def pairwise_diversity(feats: torch.Tensor) -> float:
    """``1 − mean pairwise cosine`` of each prompt's K samples, averaged over prompts."""
    return float(pairwise_per_prompt(feats).mean())


def vendi_per_prompt(feats: torch.Tensor) -> torch.Tensor:
    """The Vendi score of each prompt's K samples (cosine kernel): one value per prompt, ``(P,)``."""
    x = _check(feats)
    k = x.shape[1]
    lam = torch.linalg.eigvalsh(x @ x.transpose(1, 2) / k).clamp_min(0)  # (P, K), sums to 1
    entropy = -(lam * torch.where(lam > 0, lam.log(), torch.zeros_like(lam))).sum(1)
    return entropy.exp()


def vendi_score(feats: torch.Tensor) -> float:
    """The Vendi score of each prompt's K samples (cosine kernel), averaged over prompts."""
    return float(vendi_per_prompt(feats).mean())


def _prompt_groups(frame_features: torch.Tensor, per_prompt: int) -> torch.Tensor:
    n = frame_features.shape[0]
    if per_prompt < 2 or n % per_prompt:
        raise ValueError(f"diversity needs --per-prompt ≥ 2 dividing the {n} clips, got {per_prompt}")
    return F.normalize(frame_features.float().mean(1), dim=-1).view(n // per_prompt, per_prompt, -1)


def clip_diversity_per_prompt(frame_features: torch.Tensor, per_prompt: int) -> dict[str, torch.Tensor]:
    """Both measures for every prompt, ``(P,)`` each, from frame features ``(P·K, F, D)`` ordered prompt-major
    (K samples of prompt 0, then prompt 1, …), as ``evaluate --per-prompt K`` generates them: the unit a
    paired comparison of two rows pairs on (the same prompt, the same K seeds)."""
    clips = _prompt_groups(frame_features, per_prompt)
    return {"div_pairwise": pairwise_per_prompt(clips), "div_vendi": vendi_per_prompt(clips)}


def clip_diversity(frame_features: torch.Tensor, per_prompt: int) -> dict[str, float]:
    """Both measures of :func:`clip_diversity_per_prompt`, averaged over prompts."""
    return {m: float(v.mean()) for m, v in clip_diversity_per_prompt(frame_features, per_prompt).items()}


# ---------------------------------------------------------------------------------------------
# Shapes world, exact: the prompt names every attribute but start position and speed, so the K
# samples of a prompt should spread over those the way the world's own sampler spreads them.

GRID = 3  # bins per latent dimension for mode coverage
REFERENCE_PER_PROMPT = 16  # world renders per prompt that define the prior's spread
REFERENCE_SEED = 20_000_003  # reference renders use seeds no evaluation draw uses


def world_latents(clip: torch.Tensor, prompt: str):
    """The unnamed latent variables of one clip, read by the oracle, in [0, 1] units: each object's start
    (x / width, y / height; objects ordered by start), then the speed scaled over the world's range
    (moving scenes). None when the clip does not show the prompt's object count (unreadable)."""
    import numpy as np

    from tmd_bench import world
    from tmd_bench.metrics import oracle

    scene = world.Scene.parse(prompt)
    objects = oracle.read(clip).objects
    if len(objects) != scene.count or any(not np.isfinite(o.start).all() for o in objects):
        return None
    starts = sorted((float(o.start[0]) / world.WIDTH, float(o.start[1]) / world.HEIGHT) for o in objects)
    z = [c for s in starts for c in s]
    if scene.motion != "still":
        lo, hi = world.SPEED
        z.append((float(np.mean([o.speed for o in objects])) - lo) / (hi - lo))
    return np.asarray(z)


def _cells(zs: list) -> set:
    import numpy as np

    return {tuple(np.clip((z * GRID).astype(int), 0, GRID - 1)) for z in zs}


def energy_distance(a, b) -> float:
    """Unbiased (U-statistic) energy distance ``2E|X − Y| − E|X − X'| − E|Y − Y'|`` between two samples
    ``(n, d)``, ``(m, d)``; its expectation is 0 when both come from one distribution."""
    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")

    def mean_dist(x, y, same):
        d = np.linalg.norm(x[:, None] - y[None], axis=-1)
        return d[~np.eye(len(x), dtype=bool)].mean() if same else d.mean()

    return float(2 * mean_dist(a, b, False) - mean_dist(a, a, True) - mean_dist(b, b, True))


class WorldDiversity:
    """Mode coverage and energy distance of each prompt's K samples against the world's own sampler,
    on the latent variables the prompt leaves free (:func:`world_latents`).

    - ``div_world_coverage``: distinct latent cells (a GRID^d partition) the K samples reach, relative to
      what K renders of the world reach (the mean over disjoint K-subsets of REFERENCE_PER_PROMPT
      renders): ≈ 1 for the world itself, 1/(cells K renders reach) for a generator that collapsed.
    - ``div_world_energy``: energy distance between the readable samples and the renders (≈ 0 for the
      world itself; grows as the samples concentrate or shift).
    - ``div_world_readable``: the fraction of samples whose object count the oracle could read.
    References are read once per prompt list and reused for every row."""

    def __init__(self, reference: int = REFERENCE_PER_PROMPT):
        self.reference = reference
        self._cache: dict[str, list] = {}

    def reference_seeds(self, index: int) -> list[int]:
        """The world seeds of prompt ``index``'s reference renders: ``reference`` consecutive seeds from
        REFERENCE_SEED, a block per prompt, so no two prompts of a suite share one."""
        return [REFERENCE_SEED + index * self.reference + r for r in range(self.reference)]

    def reference_latents(self, prompt: str, index: int) -> list:
        from tmd_bench import world

        key = f"{index}:{prompt}"
        if key not in self._cache:
            clips = world.render_prompts([prompt] * self.reference, self.reference_seeds(index))
            self._cache[key] = [z for z in (world_latents(c, prompt) for c in clips) if z is not None]
        return self._cache[key]

    def per_prompt(self, videos: torch.Tensor, prompts: list[str], per_prompt: int) -> dict[str, list[float]]:
        """Each measure for every prompt's K samples (``div_world_energy`` NaN where fewer than 2 were readable;
        ``div_world_readable``: that prompt's readable fraction)."""
        import numpy as np

        if per_prompt < 2 or len(prompts) % per_prompt:
            raise ValueError(f"diversity needs --per-prompt ≥ 2 dividing the {len(prompts)} clips, got {per_prompt}")
        coverage, energy, readable = [], [], []
        for i in range(0, len(prompts), per_prompt):
            prompt = prompts[i]
            zs = [world_latents(videos[j], prompt) for j in range(i, i + per_prompt)]
            got = [z for z in zs if z is not None]
            readable.append(len(got) / per_prompt)
            ref = self.reference_latents(prompt, i // per_prompt)
            subsets = [ref[s:s + per_prompt] for s in range(0, len(ref) - per_prompt + 1, per_prompt)]
            expected = np.mean([len(_cells(s)) for s in subsets]) if subsets else float("nan")
            coverage.append(len(_cells(got)) / expected)
            energy.append(energy_distance(got, ref) if len(got) >= 2 else float("nan"))
        return {"div_world_coverage": coverage, "div_world_energy": energy, "div_world_readable": readable}

    def __call__(self, videos: torch.Tensor, prompts: list[str], per_prompt: int) -> dict[str, float]:
        return self.summary(self.per_prompt(videos, prompts, per_prompt))

    @staticmethod
    def summary(values: dict[str, list[float]]) -> dict[str, float]:
        """The row's measures from :meth:`per_prompt`'s: means over prompts (energy over those it is defined for)."""
        import numpy as np

        energy = [e for e in values["div_world_energy"] if e == e]
        return {"div_world_coverage": float(np.mean(values["div_world_coverage"])),
                "div_world_energy": float(np.mean(energy)) if energy else float("nan"),
                "div_world_readable": float(np.mean(values["div_world_readable"]))}
