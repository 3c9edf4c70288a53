"""Training and evaluation on several processes (one per GPU), with torch's own engines.

- **Launch**: ``torchrun --nproc-per-node K -m tmd_bench distill …`` (or ``tmd-bench distill --nproc K``,
  which runs torchrun). Under torchrun every command finds ``WORLD_SIZE``/``RANK`` and joins the
  process group: NCCL on CUDA, gloo on the CPU.
- **Strategies**: ``ddp`` (``DistributedDataParallel``; the networks fit one GPU) and ``fsdp``
  (``torch.distributed.fsdp.fully_shard``, FSDP2: every transformer block of the frozen teacher,
  the student and the fake score is its own shard group; the discriminator and what lies outside
  the blocks are sharded with the root). A method's networks sit under one root module whose
  ``forward(fn, *args)`` runs a loss computation, so DDP's reducer and FSDP2's unshard/reshard
  hooks see every use of every network, whichever of the networks' methods the loss calls.
- **Global batch**: every process reads the same global batch (the data stream is deterministic)
  and computes rows ``[lo, hi)`` of it, in ``accumulation`` micro-batches; random draws are made for
  the whole global batch and sliced (:class:`ShardGenerator`), so a run on K processes computes the
  same losses and updates as a single process at the same global batch, up to float rounding.
  A stream from a data folder (``distill --data``) reads only this rank's rows (``batch.rows``).
- **Checkpoints**: :func:`save_checkpoint` writes model and optimiser state with
  ``torch.distributed.checkpoint`` (DCP: resumable on a different number of processes, or on one
  without a process group), the per-rank RNG state as safetensors, and the step, config and data
  position in ``state.json``. The exported student is gathered into one full copy on rank 0.
- **Evaluation**: :func:`generate` splits a suite into whole batches per rank and gathers the clips
  and counted rows on rank 0: identical numbers to a single-process run.

Single-process runs never touch this module's collectives: :data:`LOCAL` computes exactly what the
methods computed before (one micro-batch, a plain generator, no wrapper).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

STRATEGIES = ("ddp", "fsdp")


# ---------------------------------------------------------------------------------------------
# Process group


def launched() -> bool:
    """True inside a torchrun worker (its environment names a world)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ and "LOCAL_RANK" in os.environ


def active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: str = "cpu") -> str:
    """Join torchrun's process group (idempotent); returns this process's device."""
    if not launched():
        return device
    local = int(os.environ["LOCAL_RANK"])
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not active():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return device


def shutdown() -> None:
    """Leave the process group (end of a command under torchrun)."""
    if active():
        torch.distributed.destroy_process_group()


def barrier() -> None:
    if active():
        torch.distributed.barrier()


def torchrun(nproc: int, args: list[str]) -> int:
    """Run ``python -m tmd_bench <args>`` under torchrun on ``nproc`` local processes; its exit status."""
    if nproc < 1:
        raise ValueError(f"--nproc must be ≥ 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "tmd_bench", *args]
    return subprocess.call(cmd)


def strip_option(argv: list[str], name: str, takes_value: bool = True) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE`` (to relaunch a command under torchrun)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = takes_value
        elif not a.startswith(name + "="):
            out.append(a)
    return out


# ---------------------------------------------------------------------------------------------
# Random draws over the global batch


class ShardGenerator(torch.Generator):
    """A generator for rows ``[lo, hi)`` of a global batch of ``total`` rows: the draws of
    :func:`randn`, :func:`rand` and :func:`randint` are made for all ``total`` rows and sliced."""

    @classmethod
    def rows(cls, seed: int, lo: int, hi: int, total: int) -> "ShardGenerator":
        g = cls()
        g.manual_seed(seed)
        g.lo, g.hi, g.total = lo, hi, total
        return g


def _rows(g: torch.Generator, n: int) -> tuple[int, slice]:
    if isinstance(g, ShardGenerator):
        if n != g.hi - g.lo:
            raise ValueError(f"a draw of {n} rows on a shard of {g.hi - g.lo} rows")
        return g.total, slice(g.lo, g.hi)
    return n, slice(None)


def randn(shape, g: torch.Generator) -> torch.Tensor:
    """``torch.randn(shape, generator=g)`` whose first dimension is the batch."""
    n, rows = _rows(g, shape[0])
    return torch.randn((n, *shape[1:]), generator=g)[rows]


def rand(n: int, g: torch.Generator) -> torch.Tensor:
    total, rows = _rows(g, n)
    return torch.rand(total, generator=g)[rows]


def randint(high: int, n: int, g: torch.Generator) -> torch.Tensor:
    total, rows = _rows(g, n)
    return torch.randint(0, high, (total,), generator=g)[rows]


# ---------------------------------------------------------------------------------------------
# The optimisation step of a method on this process's share of the batch


class _Root(nn.Module):
    """All networks of a method under one module whose forward runs a loss computation."""

    def __init__(self, nets: dict[str, nn.Module]):
        super().__init__()
        self.nets = nn.ModuleDict(nets)

    def forward(self, fn: Callable, *args):
        return fn(*args)


def slice_batch(batch, lo: int, hi: int):
    """Rows ``[lo, hi)`` of a batch dataclass (every field is a list or a tensor of rows, but ``rows``,
    the span of a global batch a rank read alone, which the part drops)."""
    return dataclasses.replace(batch, **{f.name: None if f.name == "rows" else getattr(batch, f.name)[lo:hi]
                                         for f in dataclasses.fields(batch)})


@dataclass
class Replica:
    """Where a method's step runs: this process's rank in a world, micro-batches, the wrapped root."""

    rank: int = 0
    world_size: int = 1
    accumulation: int = 1
    strategy: str | None = None
    root: nn.Module | None = None
    autocast: torch.dtype | None = None
    device_type: str = "cpu"
    shell: nn.Module | None = None  # rank 0 (FSDP): an unsharded copy of the student, for exports

    def micro_batches(self, batch, seed: int) -> Iterator[tuple[object, torch.Generator, float, bool]]:
        """``(part, generator, weight, last)`` per micro-batch; weights sum to 1 on each rank."""
        if self.world_size == 1 and self.accumulation == 1:
            yield batch, torch.Generator().manual_seed(seed), 1.0, True
            return
        span = getattr(batch, "rows", None)  # (lo, hi, total): the batch is this rank's rows only
        total = span[2] if span else len(batch.prompts)
        per = self.world_size * self.accumulation
        if total % per:
            raise ValueError(f"the global batch ({total}) must be divisible by processes × accumulation ({per})")
        local, micro = total // self.world_size, total // per
        if span and (span[0], span[1]) != (self.rank * local, (self.rank + 1) * local):
            raise ValueError(f"rank {self.rank} read rows {span[:2]} of the global batch; its share is "
                             f"{(self.rank * local, (self.rank + 1) * local)}")
        base = span[0] if span else 0
        for k in range(self.accumulation):
            lo = self.rank * local + k * micro
            yield (slice_batch(batch, lo - base, lo - base + micro), ShardGenerator.rows(seed, lo, lo + micro, total),
                   1.0 / self.accumulation, k == self.accumulation - 1)

    def call(self, fn: Callable, *args):
        ctx = torch.autocast(self.device_type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        with ctx:
            return self.root(fn, *args) if self.root is not None else fn(*args)

    def sync(self, last: bool):
        """DDP: gradients are all-reduced on the last micro-batch only (FSDP2 accumulates sharded grads)."""
        if self.strategy == "ddp" and not last:
            return self.root.no_sync()
        return contextlib.nullcontext()

    def average(self, values: dict[str, float]) -> dict[str, float]:
        """Loss values averaged over the ranks (for the log: every rank then sees the same numbers)."""
        if self.world_size == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64,
                         device="cuda" if self.device_type == "cuda" else "cpu")
        torch.distributed.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def finish(self) -> None:
        """After a step: FSDP2 leaves the root unsharded after a forward without backward; reshard."""
        if self.strategy == "fsdp":
            self.root.reshard()


LOCAL = Replica()


def replica_of(method) -> Replica:
    return getattr(method, "replica", None) or LOCAL


def optimise(method, batch, seed: int, names: tuple[str, ...], losses: Callable, grad_clip: float) -> dict[str, float]:
    """One optimiser step of the networks ``names`` of ``method`` on ``batch`` (the global batch).

    ``losses(part, generator) -> (total, {name: value})`` computes a (micro-)batch's loss; it runs
    inside the method's root module. Gradients of the micro-batches are accumulated (weighted to a
    mean over the global batch), the gradient norm of each network clipped, each network stepped.
    Single-process: zero_grad, one backward, clip, step — as ``trainer.update`` does."""
    rep = replica_of(method)
    opts, modules = method.optimizers(), method.modules()
    for n in names:
        opts[n].zero_grad(set_to_none=True)
    logged: dict[str, float] = {}
    for part, g, weight, last in rep.micro_batches(batch, seed):
        with rep.sync(last):
            total, values = rep.call(losses, part, g)
            (total if weight == 1.0 else total * weight).backward()
        for k, v in values.items():
            v = v.item() if torch.is_tensor(v) else float(v)
            logged[k] = logged.get(k, 0.0) + (v if weight == 1.0 else weight * v)
    for n in names:
        torch.nn.utils.clip_grad_norm_(modules[n].parameters(), grad_clip)
        opts[n].step()
    rep.finish()
    return rep.average(logged)


# ---------------------------------------------------------------------------------------------
# Wrapping a method's networks


@dataclass(frozen=True)
class Parallel:
    """How a training run uses the processes torchrun started."""

    strategy: str = "ddp"
    accumulation: int = 1  # micro-batches per process and optimiser step
    mixed_precision: bool = False  # bf16 compute (FSDP2: bf16 params in compute, fp32 master and reduce)

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.accumulation < 1:
            raise ValueError(f"--grad-accumulation must be ≥ 1, got {self.accumulation}")


def _blocks(module: nn.Module) -> list[nn.Module]:
    """The transformer blocks inside ``module`` (every ``blocks`` ModuleList), each a shard group."""
    out = []
    for m in module.modules():
        blocks = getattr(m, "blocks", None)
        if isinstance(blocks, nn.ModuleList):
            out.extend(blocks)
    return out


def setup(method, parallel: Parallel) -> Replica:
    """Wrap ``method``'s networks for this process group (DDP or FSDP2) and attach the replica.

    FSDP2 replaces the parameters by sharded ones: the (still empty) optimisers are pointed at them."""
    from torch.distributed.device_mesh import init_device_mesh

    parallel.validate()
    if not getattr(method, "shardable", False):
        raise ValueError(f"{method.name} does not run on several processes (tmd and dmd2 do)")
    device = next(iter(method.modules().values())).parameters().__next__().device
    rep = Replica(rank=rank(), world_size=world_size(), accumulation=parallel.accumulation,
                  strategy=parallel.strategy, device_type=device.type)
    nets = dict(method.modules())
    if parallel.mixed_precision:  # FSDP2 casts parameters; autocast covers what mixes dtypes (fp32 time embeddings)
        rep.autocast = torch.bfloat16
    if parallel.strategy == "ddp":
        root = _Root(nets)
        # the critics' turn leaves the student without gradients, the student's the fake score
        rep.root = nn.parallel.DistributedDataParallel(root, device_ids=[device.index] if device.type == "cuda" else None,
                                                       find_unused_parameters=True)
    else:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        nets["teacher"] = method.teacher.transformer
        if getattr(method.teacher, "transformer_2", None) is not None:  # Wan2.2 A14B: both experts sharded,
            nets["teacher_2"] = method.teacher.transformer_2  # so every process runs both at every call
            method.teacher.lockstep = True
        if rep.rank == 0:
            rep.shell = copy.deepcopy(method.student).cpu()
        mesh = init_device_mesh(device.type, (rep.world_size,))
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if parallel.mixed_precision else MixedPrecisionPolicy()
        root = _Root(nets)
        _vectorise_scalars(root)  # FSDP2 shards no 0-dim parameter (the TMD fusion gate α)
        for block in _blocks(root):
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(root, mesh=mesh, mp_policy=mp)
        rep.root = root
        for name, opt in method.optimizers().items():  # fresh optimisers: point them at the sharded parameters
            if len(opt.param_groups) != 1 or opt.state:
                raise ValueError(f"optimiser {name!r}: FSDP2 set-up needs a fresh single-group optimiser")
            opt.param_groups[0]["params"] = list(method.modules()[name].parameters())
    method.replica = rep
    return rep


def _vectorise_scalars(module: nn.Module) -> None:
    """Every 0-dim parameter becomes a 1-element vector (it broadcasts where the scalar did)."""
    for m in module.modules():
        for name, p in list(m.named_parameters(recurse=False)):
            if p.ndim == 0:
                setattr(m, name, nn.Parameter(p.detach().reshape(1), requires_grad=p.requires_grad))


# ---------------------------------------------------------------------------------------------
# Checkpoints (DCP) and exports


def _dcp_state(method, fresh: list[str]) -> dict:
    """Model and optimiser state dicts by name; optimisers in ``fresh`` (never stepped) are left out:
    DCP's ``get_optimizer_state_dict`` would initialise their state with a zero-gradient step, and
    Adam's first real step would then be its second (another bias correction)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    modules = method.modules()
    state = {f"module.{n}": get_model_state_dict(m) for n, m in modules.items()}
    state.update({f"optim.{n}": get_optimizer_state_dict(modules[n], o) for n, o in method.optimizers().items()
                  if n not in fresh})
    return state


def _on_disk(state, key: str = ""):
    """The DCP form of a state: 0-dim tensors (but optimiser steps) as 1-element views, as FSDP2
    holds them (:func:`_vectorise_scalars`); loading into the views fills the original tensors."""
    if isinstance(state, dict):
        return {k: _on_disk(v, str(k)) for k, v in state.items()}
    if isinstance(state, list):
        return [_on_disk(v) for v in state]
    if torch.is_tensor(state) and state.ndim == 0 and key != "step":
        return state.view(1)
    return state


def save_checkpoint(folder: Path, method, iteration: int) -> tuple[str, list[str]]:
    """Model and optimiser state (DCP) and this rank's RNG state; returns the checkpoint's
    folder relative to ``folder`` (``dcp/step-<iteration>``) and the optimisers that have not
    stepped yet (not saved), both to be named in ``state.json``."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file

    rel = f"dcp/step-{iteration:08d}"
    path = folder / rel
    if is_main() and path.exists():
        shutil.rmtree(path)
    barrier()
    fresh = sorted(n for n, o in method.optimizers().items() if not o.state)
    dcp.save(_on_disk(_dcp_state(method, fresh)), checkpoint_id=str(path))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(path / f"rng-rank{rank()}.safetensors"))
    barrier()
    return rel, fresh


def load_checkpoint(folder: Path, rel: str, method, saved_world: int, fresh: list[str]) -> None:
    """Load a DCP checkpoint into ``method`` (sharded or not; any number of processes)."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    path = folder / rel
    state = _dcp_state(method, fresh)
    dcp.load(_on_disk(state), checkpoint_id=str(path))
    modules = method.modules()
    for n, m in modules.items():
        set_model_state_dict(m, state[f"module.{n}"])
    for n, o in method.optimizers().items():
        if n not in fresh:
            set_optimizer_state_dict(modules[n], o, state[f"optim.{n}"])
    own = path / f"rng-rank{rank()}.safetensors"
    rng = load_file(str(own if own.exists() and saved_world == world_size() else path / "rng-rank0.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def prune_checkpoints(folder: Path, keep: str) -> None:
    """Remove every DCP checkpoint in ``folder/dcp`` but ``keep`` (rank 0, after state.json names it)."""
    for p in (folder / "dcp").glob("step-*"):
        if f"dcp/{p.name}" != keep:
            shutil.rmtree(p, ignore_errors=True)


def export(method, folder: Path, write=None) -> None:
    """``write(folder)`` (default ``method.export``) on rank 0 with the full student (FSDP2: gathered
    from the shards)."""
    write = write or method.export
    rep = replica_of(method)
    if rep.strategy != "fsdp":
        if is_main():
            write(folder)
        barrier()
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(method.student, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if is_main():
        shapes = {k: v.shape for k, v in rep.shell.state_dict().items()}
        rep.shell.load_state_dict({k: v.reshape(shapes[k]) for k, v in full.items()})
        student, method.student = method.student, rep.shell
        try:
            write(folder)
        finally:
            method.student = student
    barrier()


# ---------------------------------------------------------------------------------------------
# Sharded evaluation


def batch_span(n: int, batch_size: int, rank_: int, world: int) -> tuple[int, int]:
    """Clips ``[lo, hi)`` of ``n`` for a rank: whole batches, contiguous, as even as they come
    (a rank's batches are exactly the single-process run's batches, so its clips are identical)."""
    batches = -(-n // batch_size)
    b_lo, b_hi = batches * rank_ // world, batches * (rank_ + 1) // world
    return min(b_lo * batch_size, n), min(b_hi * batch_size, n)


def generate(method, teacher, prompts: list[str], seeds: list[int], steps: int, batch_size: int = 32,
             on_batch: Callable[[int], None] | None = None):
    """``harness.generate`` over the processes: each generates its share, rank 0 gets the whole
    :class:`~tmd_bench.harness.Generation` (other ranks get None). Single-process: the harness."""
    from tmd_bench import harness

    if world_size() == 1:
        return harness.generate(method, teacher, prompts, seeds, steps, batch_size, on_batch)
    lo, hi = batch_span(len(prompts), batch_size, rank(), world_size())
    if hi > lo:
        gen = harness.generate(method, teacher, prompts[lo:hi], seeds[lo:hi], steps, batch_size, on_batch)
        n = hi - lo
        part = (gen.videos, round(gen.nfe_counted * n), round(gen.effective_nfe_counted * method.num_blocks * n),
                {k: round(v * n) for k, v in gen.nfe_by_network.items()})
    else:
        part = (None, 0, 0, {})
    parts = [None] * world_size() if is_main() else None
    torch.distributed.gather_object(part, parts, dst=0)
    if not is_main():
        return None
    videos = torch.cat([p[0] for p in parts if p[0] is not None])
    n = len(prompts)
    by = {k: sum(p[3].get(k, 0) for p in parts) / n for k in method.network_names}
    return harness.Generation(videos, sum(p[1] for p in parts) / n, sum(p[2] for p in parts) / (method.num_blocks * n),
                              by)
