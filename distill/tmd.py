"""TMD: the backbone + flow-head student and its sampler (spec tmd.md §3–§6).

The teacher's ``WanTransformer3DModel`` is split at block L − H:

- **backbone** ``m = backbone(x_t, t, c)``: patch/rotary/time/text embedding and blocks
  ``[0, L−H)``; runs once per outer step;
- **flow head** ``head(y_s, s, r; m, c)``: ``y_s`` through the *shared* patch embedding, a gated
  AdaLN fusion block into ``m``, blocks ``[L−H, L)`` and the output layers, with Wan's time
  embedding of s plus a zero-initialised embedding of (s − r); runs N times per outer step.

At initialisation the fusion adds nothing and the (s − r) embedding is zero, so the head computes
what the teacher's last H blocks compute on the backbone features (tested: split forward equals
the stock forward).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tmd_bench.distill import wan_parts as wp
from tmd_bench.teachers import compute_dtype
from torch import nn

from tmd_bench import flow


@dataclass(frozen=True)
class TMDConfig:
    """How the student is built and sampled. Names follow the paper: "M2-N2H5"."""

    outer_steps: int = 2  # M
    inner_steps: int = 2  # N
    head_blocks: int = 5  # H
    outer_shift: float = 10.0  # γ of the outer grid (5 for M ≥ 4)
    inner_shift: float = 10.0  # γ of the inner grid

    def validate(self, num_blocks: int) -> None:
        if self.outer_steps < 1 or self.inner_steps < 1:
            raise ValueError(f"TMD needs M ≥ 1 and N ≥ 1, got M={self.outer_steps}, N={self.inner_steps}")
        if not 1 <= self.head_blocks < num_blocks:
            raise ValueError(f"head blocks H must satisfy 1 ≤ H < L = {num_blocks} (the backbone needs at "
                             f"least one block), got H={self.head_blocks}")

    @property
    def label(self) -> str:
        return f"M{self.outer_steps}-N{self.inner_steps}H{self.head_blocks}"

    def outer_grid(self, steps: int | None = None) -> torch.Tensor:
        m = steps or self.outer_steps
        return flow.time_grid(m, self.outer_shift if m < 4 else min(self.outer_shift, 5.0))

    def inner_grid(self, steps: int | None = None) -> torch.Tensor:
        return flow.time_grid(steps or self.inner_steps, self.inner_shift)


# ---------------------------------------------------------------------------------------------
# Seeded initialisation of the layers a method adds (determinism: everything derives from --seed)

# One fixed salt per new module; the slot 9·100_003 is used by no per-iteration generator (those
# take seed·1_000_003 + stage·100_003 + iteration with stages 1–5), so no stream is shared below
# 400_000 iterations.
INIT_SALTS = {"tmd.fusion": 1, "tmd.delta_time": 2, "discriminator": 3, "meanflow.delta_time": 4}


def init_seed(seed: int, salt: int) -> int:
    """The seed of a new module's initialisation: ``seed·1_000_003 + 9·100_003 + salt``."""
    return seed * 1_000_003 + 9 * 100_003 + salt


@contextlib.contextmanager
def seeded_init(seed: int, salt: str):
    """Build modules inside: PyTorch's default initialisation (kaiming-uniform weights, uniform
    biases, …) then draws from the CPU generator seeded with ``init_seed(seed, INIT_SALTS[salt])``.
    The global CPU RNG is saved and restored (``fork_rng``), so construction neither depends on it
    nor advances it. Build on the CPU (the default device) and move afterwards: only the CPU
    generator is forked (the CUDA ones are left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(init_seed(seed, INIT_SALTS[salt]))
        yield


def effective_nfe(outer: int, inner: int, head: int, blocks: int) -> float:
    """Spec §6: DiT blocks executed ÷ L = ``M · (1 + (N − 1)·H / L)``."""
    return outer * (1 + (inner - 1) * head / blocks)


class FusionBlock(nn.Module):
    """Brings ``y_s`` into the head input (the paper's gated fusion).

    ``e = patch_embed(y_s)``; ``h = e + g(s)·MLP(LN(e)·(1 + a(s)) + b(s))`` (AdaLN, gated residual);
    ``fused = m + σ(α)·W·h`` with W zero-initialised, so ``fused = m`` at initialisation.
    """

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 2 * dim
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(dim, 3 * dim)  # shift, scale, gate from the embedding of s
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.out = nn.Linear(dim, dim)
        self.alpha = nn.Parameter(torch.zeros(()))  # gate σ(α)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def modulate(self, temb_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(shift, scale, gate), each ``(B, 1, D)``: depends on s only, so a sampler computes it once."""
        return self.modulation(nn.functional.silu(temb_s)).unsqueeze(1).chunk(3, dim=-1)

    def forward(self, m: torch.Tensor, e: torch.Tensor, temb_s: torch.Tensor | None = None,
                mod: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        shift, scale, gate = self.modulate(temb_s) if mod is None else mod
        h = e + gate * self.mlp(self.norm(e) * (1 + scale) + shift)
        return m + torch.sigmoid(self.alpha) * self.out(h)


class DeltaTimeEmbedding(nn.Module):
    """Embedding of (s − r), added to Wan's time embedding of s; output layer zero-initialised."""

    def __init__(self, freq_dim: int, dim: int):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.proj = Timesteps(num_channels=freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.embed = TimestepEmbedding(in_channels=freq_dim, time_embed_dim=dim)
        nn.init.zeros_(self.embed.linear_2.weight)
        nn.init.zeros_(self.embed.linear_2.bias)

    def forward(self, delta: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.embed(self.proj(1000 * delta).to(self.embed.linear_1.weight.dtype)).to(dtype)


@dataclass
class Features:
    """What the backbone hands the head: m plus everything the head reuses (text, rotary, grid)."""

    m: torch.Tensor
    cond: wp.Condition
    rotary: object
    grid: tuple[int, int, int]


@dataclass
class HeadTime:
    """The head's conditioning at one inner step (s, r): a function of (s, r) alone, so the sampler
    computes it once per inner-grid point and reuses it at every outer step and for every clip."""

    temb: torch.Tensor  # (B, D): Wan's embedding of s plus the (s − r) embedding; output modulation
    tproj: torch.Tensor  # (B, 6, D): the head blocks' AdaLN modulation
    fusion: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # the fusion block's (shift, scale, gate)

    def expand(self, b: int) -> "HeadTime":
        return HeadTime(self.temb.expand(b, -1), self.tproj.expand(b, -1, -1),
                        tuple(v.expand(b, -1, -1) for v in self.fusion))


class Backbone(nn.Module):
    """Blocks [0, L − H) with Wan's embeddings. One call = one counted NFE of the TMD sampler."""

    def __init__(self, student: "TMDStudent"):
        super().__init__()
        self._student = [student]  # not a submodule: parameters belong to the student

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, reuse: Features | None = None) -> Features:
        """``reuse``: the features of an earlier outer step on the same clips and text: their text
        projection and rotary embedding are taken instead of recomputed (the sampler's shortcut)."""
        s = self._student[0]
        tr = s.transformer
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if reuse is None:
            tok = wp.embed(tr, x)
            cond = wp.condition(tr, t, text)  # t stays float32: Wan embeds 1000·t in float32
        else:
            tok = wp.Tokens(wp.patchify(tr, x), reuse.rotary, reuse.grid)
            temb = wp.time_embedding(tr, t, tok.hidden.dtype)
            cond = wp.Condition(temb, wp.time_projection(tr, temb), reuse.cond.text)
        m = wp.run_blocks(tr, s.backbone_blocks, tok.hidden, cond, tok.rotary)
        return Features(m, cond, tok.rotary, tok.grid)


class TMDStudent(nn.Module):
    """The TMD student: a Wan transformer split into backbone and flow head (module docstring)."""

    def __init__(self, transformer: nn.Module, config: TMDConfig, seed: int = 0):
        """``seed``: the run's seed; the new layers (fusion block, (s − r) embedding) are initialised
        from it (:func:`seeded_init`), never from the global RNG. A loaded student overwrites them."""
        super().__init__()
        config.validate(len(transformer.blocks))
        self.transformer = transformer
        self.config = config
        dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        with seeded_init(seed, "tmd.fusion"):
            self.fusion = FusionBlock(dim)
        with seeded_init(seed, "tmd.delta_time"):
            self.delta_time = DeltaTimeEmbedding(transformer.config.freq_dim, dim)
        self.fusion.to(compute_dtype(transformer))  # the new layers follow the compute dtype; diffusers'
        self.delta_time.to(compute_dtype(transformer))  # fp32-kept modules of the transformer stay fp32
        self.backbone = Backbone(self)

    @property
    def num_blocks(self) -> int:
        return len(self.transformer.blocks)

    @property
    def split(self) -> int:
        return self.num_blocks - self.config.head_blocks

    @property
    def backbone_blocks(self):
        return self.transformer.blocks[: self.split]

    @property
    def head_blocks(self):
        return self.transformer.blocks[self.split:]

    def head_time(self, s: torch.Tensor, r: torch.Tensor, dtype: torch.dtype) -> HeadTime:
        """The head's conditioning for times ``s``, ``r`` of shape ``(B,)``."""
        tr = self.transformer
        temb_s = wp.time_embedding(tr, s, dtype)
        temb = temb_s + self.delta_time(s - r, dtype)
        return HeadTime(temb, wp.time_projection(tr, temb), self.fusion.modulate(temb_s))

    def head(self, y_s: torch.Tensor, s: torch.Tensor, r: torch.Tensor, feats: Features,
             time: HeadTime | None = None) -> torch.Tensor:
        """The flow head's output (the role of the teacher's velocity: predicted ``y1 − y``).
        ``time``: the precomputed :meth:`head_time` of (s, r), which the sampler caches."""
        tr = self.transformer
        b = y_s.shape[0]
        if time is None:
            s, r = s.expand(b) if s.ndim == 0 else s, r.expand(b) if r.ndim == 0 else r
            time = self.head_time(s, r, feats.m.dtype)
        fused = self.fusion(feats.m, wp.patchify(tr, y_s), mod=time.fusion)
        h = wp.run_blocks(tr, self.head_blocks, fused, feats.cond, feats.rotary, tproj=time.tproj)
        return wp.output(tr, h, time.temb, feats.grid)

    # -- persistence ---------------------------------------------------------------------------
    def extra_state_dict(self) -> dict[str, torch.Tensor]:
        return {**{f"fusion.{k}": v for k, v in self.fusion.state_dict().items()},
                **{f"delta_time.{k}": v for k, v in self.delta_time.state_dict().items()}}

    def save(self, folder: str | Path, teacher_name: str, teacher_hash: str, meta: dict | None = None) -> Path:
        """Diffusers layout: ``transformer/`` and the TMD layers as the ``tmd_head/`` component of
        :class:`tmd_bench.pipelines.TMDPipeline`, plus the JSON config tmd-bench reads."""
        from tmd_bench.pipelines import TMDHead, added_layers_config, write_component

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(folder / "transformer", safe_serialization=True)
        write_component(folder / "tmd_head", TMDHead, added_layers_config(self.transformer), self.extra_state_dict())
        (folder / "tmd_config.json").write_text(json.dumps({
            "method": "tmd", **asdict(self.config), "teacher": teacher_name, "teacher_sha256": teacher_hash,
            "num_blocks": self.num_blocks,
            "sampling": "tmd_bench.distill.tmd.sample_tmd (spec tmd.md §5), no CFG", **(meta or {}),
        }, indent=2))
        return folder


def load_student(folder: str | Path, teacher, device="cpu") -> TMDStudent:
    """Load a TMD student saved by :meth:`TMDStudent.save`, checking it belongs to ``teacher``."""
    from safetensors.torch import load_file
    from tmd_bench.distill.students import read_student

    meta, tr = read_student(folder, teacher, "tmd", "tmd_config.json")
    cfg = TMDConfig(**{k: meta[k] for k in ("outer_steps", "inner_steps", "head_blocks", "outer_shift", "inner_shift")})
    student = TMDStudent(tr, cfg)
    extra = load_file(str(component_weights(Path(folder), "tmd_head")))
    student.fusion.load_state_dict({k[7:]: v for k, v in extra.items() if k.startswith("fusion.")})
    student.delta_time.load_state_dict({k[11:]: v for k, v in extra.items() if k.startswith("delta_time.")})
    return student.to(device).eval().requires_grad_(False)


def component_weights(folder: Path, name: str) -> Path:
    """The weights of an added component: ``<name>/diffusion_pytorch_model.safetensors`` (the diffusers
    layout), or ``<name>.safetensors`` as tmd-bench wrote them before students were pipelines."""
    for path in (folder / name / "diffusion_pytorch_model.safetensors", folder / f"{name}.safetensors"):
        if path.is_file():
            return path
    raise FileNotFoundError(f"{folder}: no {name}/ weights (a student folder has {name}/ beside transformer/)")


# ---------------------------------------------------------------------------------------------
# Inner flow and sampler


def inner_step(y: torch.Tensor, y1: torch.Tensor, h: torch.Tensor, s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Flow-map update ``y_r = y_s − (s − r)·u`` with ``u = y1 − h`` (spec §3, minus sign)."""
    return y - (s - r).to(y.dtype) * (y1 - h)


def rollout(student: TMDStudent, feats: Features, y1: torch.Tensor, inner: torch.Tensor,
            times: list[HeadTime] | None = None) -> torch.Tensor:
    """The head's N inner steps from ``y = y1`` at ``s_N`` down to ``s_0 = 0``: returns y (≈ x1 − x).

    Differentiable: gradients flow through every inner step into head, fusion and backbone.
    ``times``: the head's conditioning per inner step (:func:`head_times`), computed here if absent."""
    y = y1
    for i, (s, r) in enumerate(zip(inner[:-1], inner[1:])):
        s32, r32 = s.to(torch.float32).to(y.device), r.to(torch.float32).to(y.device)
        h = student.head(y, s32, r32, feats, None if times is None else times[i])
        y = inner_step(y, y1, h, s32, r32)
    return y


def head_times(student: TMDStudent, inner: torch.Tensor, batch: int, device, dtype) -> list[HeadTime]:
    """:meth:`TMDStudent.head_time` at every (s, r) of the inner grid, computed once for one clip and
    expanded to ``batch`` (the conditioning does not depend on the clip)."""
    grid = inner.to(torch.float32).to(device)
    return [student.head_time(s.view(1), r.view(1), dtype).expand(batch) for s, r in zip(grid[:-1], grid[1:])]


DIAGNOSTIC_SEED_OFFSET = 7_777_777  # the redrawn noises of the sensitivity diagnostic come from seed + this


def inner_noise(seeds: list[int] | None, outer_index: int, shape, device, dtype, generator=None) -> torch.Tensor:
    """Fresh y1 per outer step; per clip from its seed, so a clip's sample does not depend on its batch."""
    if seeds is None:
        return torch.randn(shape, generator=generator, device="cpu").to(device, dtype)
    return torch.stack([torch.randn(shape[1:], generator=torch.Generator().manual_seed(s * 1009 + 7919 * (outer_index + 1)))
                        for s in seeds]).to(device, dtype)


@torch.no_grad()
def sample_tmd(student: TMDStudent, x: torch.Tensor, text: torch.Tensor, outer: torch.Tensor,
               inner: torch.Tensor, seeds: list[int] | None = None) -> torch.Tensor:
    """Spec §5: for each outer step, one backbone pass, N head steps, one outer update.

    What does not change between passes is computed once per call: the head's conditioning at each
    inner-grid point, and (after the first outer step) the text projection and rotary embedding."""
    feats = None
    times = head_times(student, inner, x.shape[0], x.device, compute_dtype(student.transformer))
    for i, (t, t_prev) in enumerate(zip(outer[:-1], outer[1:])):
        t32 = t.to(torch.float32).to(x.device)
        feats = student.backbone(x, t32, text, reuse=feats)
        y1 = inner_noise(seeds, i, x.shape, x.device, x.dtype)
        y = rollout(student, feats, y1, inner, times)
        x = x - (t - t_prev).to(x.dtype) * y
    return x


def tmd_method(student: TMDStudent, inner_steps: int | None = None):
    """The TMD sampler as a harness method: ``steps`` = M; N from the checkpoint unless overridden."""
    from tmd_bench.harness import Method

    n = inner_steps or student.config.inner_steps
    h, blocks = student.config.head_blocks, student.num_blocks
    if n < 1:
        raise ValueError(f"inner steps N must be ≥ 1, got {n}")

    def sample(noise, text, negative, steps, seeds=None):
        return sample_tmd(student, noise, text, student.config.outer_grid(steps), student.config.inner_grid(n), seeds)

    def label(m: int) -> str:
        return f"M{m}-N{n}H{h}"

    def diagnostics(noise, text, negative, steps, seeds):
        """How much of a sample the flow head's own noise decides: the relative L2 change of the latent
        sample when only the inner noise y1 is redrawn (every outer step), against when only the initial
        (outer) noise is. A head that ignores y1 (a collapsed transition) scores ≈ 0."""
        outer, inner = student.config.outer_grid(steps), student.config.inner_grid(n)
        base = sample_tmd(student, noise, text, outer, inner, seeds)
        other = [s + DIAGNOSTIC_SEED_OFFSET for s in seeds]
        y1_only = sample_tmd(student, noise, text, outer, inner, other)
        fresh = torch.stack([torch.randn(noise.shape[1:], generator=torch.Generator().manual_seed(s))
                             for s in other]).to(noise.device, noise.dtype)
        outer_only = sample_tmd(student, fresh, text, outer, inner, seeds)

        def rel(a):
            d = (a.float() - base.float()).flatten(1).norm(dim=1) / base.float().flatten(1).norm(dim=1).clamp_min(1e-12)
            return float(d.mean())

        return {"tmd_inner_noise_sensitivity": rel(y1_only), "tmd_outer_noise_sensitivity": rel(outer_only)}

    return Method(
        name="tmd", sample=sample,
        declared_nfe=lambda m: m,
        declared_effective_nfe=lambda m: effective_nfe(m, n, h, blocks),
        network=student.backbone, blocks=list(student.transformer.blocks),
        config=lambda m: {**asdict(student.config), "outer_steps": m, "inner_steps": n, "guidance": "distilled"},
        columns=lambda m: {"config_label": label(m), "inner_steps": n, "head_blocks": h},
        diagnostics=diagnostics,
    )
