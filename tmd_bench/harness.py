"""The sampler harness: every method generates through here, so its costs are measured the same way.

- :class:`Counter` hooks a network and its blocks: **NFE** (network rows ÷ clips) and **effective
  NFE** (block rows ÷ (L · clips)) are counted facts, not declarations. A CFG step's batched
  cond/uncond pass is 2B rows, so it counts 2.
- :func:`measure_latency` times the stages (text encoding, denoising, decoding, total) after
  warm-up, over repeats, with device synchronisation around each stage.
- A :class:`Method` turns (noise, text) into latents at a given step count; teacher solvers
  live here, distilled methods register themselves from ``tmd_bench.distill``.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from tmd_bench import sampling
from tmd_bench.teachers import Teacher


class Counter:
    """Counts rows through a network and through each of its blocks while active.

    ``with Counter(net, blocks) as c: …`` then ``c.network_rows``, ``c.block_rows``.
    """

    def __init__(self, network: torch.nn.Module | list[torch.nn.Module], blocks: list[torch.nn.Module]):
        self.networks = list(network) if isinstance(network, (list, tuple)) else [network]
        self.blocks = list(blocks)
        self.network_rows = 0
        self.rows_by_network = [0] * len(self.networks)  # Wan2.2 A14B: rows through each expert
        self.block_rows = 0
        self._handles: list = []

    @staticmethod
    def _rows(args, kwargs) -> int:
        x = args[0] if args else next(iter(kwargs.values()))
        return int(x.shape[0])

    def _on_network(self, index: int, args, kwargs):
        rows = self._rows(args, kwargs)
        self.network_rows += rows
        self.rows_by_network[index] += rows

    def _on_block(self, module, args, kwargs):
        self.block_rows += self._rows(args, kwargs)

    def __enter__(self) -> "Counter":
        for i, net in enumerate(self.networks):
            self._handles.append(net.register_forward_pre_hook(
                lambda module, args, kwargs, i=i: self._on_network(i, args, kwargs), with_kwargs=True))
        for b in self.blocks:
            self._handles.append(b.register_forward_pre_hook(self._on_block, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


@dataclass
class Method:
    """A way of turning noise into latents at a step count, with its declared costs.

    ``sample(noise, text, negative, steps, seeds) -> latents`` (``seeds``: one per clip, for
    methods that draw fresh noise while sampling); ``network``/``blocks`` are what the counter
    hooks; ``num_blocks`` is L for effective NFE.
    """

    name: str
    sample: Callable[..., torch.Tensor]
    declared_nfe: Callable[[int], float]
    declared_effective_nfe: Callable[[int], float]
    network: torch.nn.Module | list[torch.nn.Module]  # a list: Wan2.2 A14B's experts, counted apart
    blocks: list[torch.nn.Module]
    config: Callable[[int], dict] = field(default=lambda steps: {})
    columns: Callable[[int], dict] = field(default=lambda steps: {})  # extra CSV columns (e.g. inner_steps)
    # (noise, text, negative, steps, seeds) -> {column: value}: method-specific diagnostics (TMD: noise sensitivity)
    diagnostics: Callable[..., dict] | None = None
    depth: int | None = None  # L when ``blocks`` holds several networks' blocks (A14B: one expert's 40)
    network_names: tuple[str, ...] = ()  # per-network NFE columns, ``nfe_<name>`` (A14B: high, low)

    @property
    def num_blocks(self) -> int:
        return self.depth or len(self.blocks)


# euler: tmd-bench's uniform-grid Euler; fmeuler: diffusers' FlowMatchEulerDiscreteScheduler;
# unipc: diffusers' UniPCMultistepScheduler as WanPipeline runs it.
SOLVERS = ("euler", "fmeuler", "unipc")


def teacher_method(teacher: Teacher, solver: str = "euler", guidance: float | None = None,
                   shift: float | None = None) -> Method:
    """The teacher at k steps on the flow ODE, with Wan's shift and CFG: ``euler`` (uniform grid,
    tmd-bench's), ``fmeuler`` or ``unipc`` (diffusers' schedulers, configured from the checkpoint's
    ``scheduler/`` as WanPipeline does; equal to ``WanPipeline.__call__`` on the same noise)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
    w = teacher.spec.guidance if guidance is None else guidance
    gamma = teacher.spec.shift if shift is None else shift
    two = teacher.transformer_2 is not None
    per_step = 2 if two or w != 1.0 else 1
    scale = (lambda t: teacher.guidance_for(t, w)) if two else w

    def sample(noise, text, negative, steps, seeds=None):
        v = sampling.guided(teacher.velocity, text, negative, scale)
        if solver == "euler":
            return sampling.sample_euler(v, noise.float(), sampling.euler_grid(steps, gamma))
        if solver == "fmeuler":
            return sampling.sample_flowmatch_euler(v, noise, steps, gamma, teacher.scheduler_config)
        return sampling.sample_unipc(v, noise, steps, gamma, teacher.scheduler_config)

    name = f"teacher-{solver}" + ("" if w != 1.0 else "-nocfg")
    return Method(
        name=name, sample=sample,
        declared_nfe=lambda steps: steps * per_step,
        declared_effective_nfe=lambda steps: steps * per_step,
        network=teacher.experts if two else teacher.transformer,
        blocks=[b for net in teacher.experts for b in net.blocks], depth=teacher.num_blocks,
        network_names=("high", "low") if two else (),
        config=lambda steps: {"solver": solver, "steps": steps, "guidance": w, "shift": gamma,
                              "sampling_source": "option" if shift is not None else teacher.spec.sampling_source,
                              **({"guidance_2": teacher.guidance_for(torch.zeros(()), w),
                                  "boundary_ratio": teacher.spec.boundary_ratio} if two else {})},
        columns=lambda steps: {"solver": solver, "guidance": w, "shift": gamma,
                               **({"guidance_2": teacher.guidance_for(torch.zeros(()), w)} if two else {})},
    )


def noise_for_seeds(teacher: Teacher, seeds: list[int]) -> torch.Tensor:
    """Initial noise per clip from its own seed: a clip's sample does not depend on its batch. float32
    whatever the compute dtype (WanPipeline's ``prepare_latents`` draws float32 from a CPU generator
    the same way: ``generator=torch.Generator().manual_seed(s)`` gives clip s the same noise there)."""
    shape = teacher.latent_shape(1)[1:]
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(
        teacher.device, torch.float32)


@dataclass
class Generation:
    videos: torch.Tensor  # (B, 3, F, H, W) in [−1, 1], on the CPU
    nfe_counted: float
    effective_nfe_counted: float
    nfe_by_network: dict[str, float] = field(default_factory=dict)  # A14B: {"high": …, "low": …} per clip


def generate(method: Method, teacher: Teacher, prompts: list[str], seeds: list[int], steps: int,
             batch_size: int = 32, on_batch: Callable[[int], None] | None = None) -> Generation:
    """Sample one clip per (prompt, seed) in batches, counting every network and block row."""
    negative = teacher.encode_text([teacher.spec.negative_prompt])
    out = []
    with Counter(method.network, method.blocks) as count:
        for i in range(0, len(prompts), batch_size):
            p, s = prompts[i:i + batch_size], seeds[i:i + batch_size]
            latents = method.sample(noise_for_seeds(teacher, s), teacher.encode_text(p), negative, steps, s)
            out.append(teacher.decode(latents).float().cpu())
            if on_batch:
                on_batch(len(p))
    n = len(prompts)
    by = {name: rows / n for name, rows in zip(method.network_names, count.rows_by_network)}
    return Generation(torch.cat(out), count.network_rows / n, count.block_rows / (method.num_blocks * n), by)


DIAGNOSTIC_CLIPS = 16  # clips a method's diagnostics are measured on (the first of the suite)


def diagnose(method: Method, teacher: Teacher, prompts: list[str], seeds: list[int], steps: int,
             n: int = DIAGNOSTIC_CLIPS) -> dict:
    """The method's own diagnostics on the first ``n`` clips (none for methods without them)."""
    if method.diagnostics is None or not prompts:
        return {}
    p, s = prompts[:n], seeds[:n]
    negative = teacher.encode_text([teacher.spec.negative_prompt])
    return method.diagnostics(noise_for_seeds(teacher, s), teacher.encode_text(p), negative, steps, s)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op elsewhere. Timers call it around what they time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Latency:
    """Median seconds per stage over the timed repeats, plus spread (max − min) of the total."""

    text_s: float
    denoise_s: float
    decode_s: float
    total_s: float
    total_spread_s: float
    repeats: int
    warmup: int
    batch_size: int
    peak_memory_mb: float
    memory_kind: str
    first_total_s: float = float("nan")  # the first (warm-up) generation: includes torch.compile's compilation
    denoise_by_network_s: dict = field(default_factory=dict)  # A14B: median seconds inside each expert

    def columns(self, frames: int) -> dict:
        """Latency columns; ``frames``: the frames each clip actually has (what fps counts)."""
        return {
            "latency_text_s": self.text_s, "latency_denoise_s": self.denoise_s,
            "latency_decode_s": self.decode_s, "latency_total_s": self.total_s,
            "latency_total_spread_s": self.total_spread_s,
            "fps": frames * self.batch_size / self.total_s if self.total_s > 0 else float("nan"),
            "peak_memory_mb": self.peak_memory_mb,
            **{f"latency_denoise_{k}_s": v for k, v in self.denoise_by_network_s.items()},
        }


def measure_latency(method: Method, teacher: Teacher, prompt: str, seed: int, steps: int,
                    warmup: int = 1, repeats: int = 3, batch_size: int = 1) -> Latency:
    """Time one generation end to end, stage by stage (evaluation spec §1)."""
    device = teacher.device
    prompts, seeds = [prompt] * batch_size, [seed] * batch_size
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs, per_network = [], []
    nets = list(method.network) if isinstance(method.network, (list, tuple)) else [method.network]
    inside = [0.0] * len(nets)  # seconds inside each network (A14B's experts), synchronised at entry and exit
    handles = []
    if method.network_names:
        def enter(module, args, kwargs):
            sync(device)
            module._tmd_bench_t0 = time.perf_counter()

        def leave(k):
            def hook(module, args, kwargs, output):
                sync(device)
                inside[k] += time.perf_counter() - module._tmd_bench_t0
            return hook

        for k, net in enumerate(nets):
            handles.append(net.register_forward_pre_hook(enter, with_kwargs=True))
            handles.append(net.register_forward_hook(leave(k), with_kwargs=True))
    for i in range(warmup + repeats):
        sync(device)
        t0 = time.perf_counter()
        text = teacher.encode_text(prompts)
        negative = teacher.encode_text([teacher.spec.negative_prompt])
        sync(device)
        t1 = time.perf_counter()
        inside[:] = [0.0] * len(nets)
        latents = method.sample(noise_for_seeds(teacher, seeds), text, negative, steps, seeds)
        sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            per_network.append(list(inside))
        teacher.decode(latents)
        sync(device)
        t3 = time.perf_counter()
        if i == 0:
            first = t3 - t0
        if i >= warmup:
            runs.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
    for h in handles:
        h.remove()
    med = [statistics.median(r[k] for r in runs) for k in range(4)]
    by_network = {name: statistics.median(r[k] for r in per_network) for k, name in enumerate(method.network_names)}
    totals = [r[3] for r in runs]
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak, kind = rss / (2**20 if sys.platform == "darwin" else 2**10), "process_peak_rss"
    return Latency(*med, max(totals) - min(totals), repeats, warmup, batch_size, peak, kind, first, by_network)


def compile_blocks(blocks: list[torch.nn.Module], **options) -> int:
    """Regional ``torch.compile`` (diffusers' ``compile_repeated_blocks`` idea): each transformer
    block's ``forward`` goes through torch.compile; identical blocks share one compiled graph, and
    the modules' hooks (the NFE counter) run outside the compiled region, so counts stay exact.
    Blocks shared between a teacher and a student are compiled once. Returns how many were new.
    ``TMD_BENCH_COMPILE_BACKEND`` picks torch.compile's backend (default inductor; the tests use
    "eager", which traces without code generation)."""
    import os

    options.setdefault("backend", os.environ.get("TMD_BENCH_COMPILE_BACKEND", "inductor"))
    n = 0
    for block in blocks:
        if not getattr(block, "_tmd_bench_compiled", False):
            block.forward = torch.compile(block.forward, **options)
            block._tmd_bench_compiled = True
            n += 1
    return n
