"""KD (spec baselines.md): regress a one-step student on cached teacher ODE pairs.

``make_pairs`` runs the teacher (its shift and CFG; Euler on the Shapes teacher, the checkpoint's
own solver, ``teacher.spec.solver``, on a Wan teacher) from seeded noise and caches (noise, endpoint)
pairs on disk as safetensors shards with an index; ``KD`` minimises
``½·MSE(g_θ(noise, 0.999), x_teacher)``. Prompts: the Shapes teacher draws them from the Shapes
world stream; a Wan teacher has no world, so its pairs cycle a prompt list (:func:`pair_prompts`: a
prompt file, or the prompts recorded in a data folder), pair ``k`` taking prompt ``k mod n``. Noise
and targets are float32 (the latents' precision); only the networks run in the compute dtype.
Averaging over the modes the noise does not determine, a regression student blurs multimodal
outputs — on the Shapes world the oracle and the sharpness metric see it. KD is also the warm-up of one-step DMD2-v.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tmd_bench.distill import losses
from tmd_bench.distill.data import Batch
from tmd_bench.distill.trainer import SingleNetwork, update

from tmd_bench import flow, harness, world
from tmd_bench.progress import progress_bar
from tmd_bench.teacher_train import TextCache


@dataclass
class PairBatch(Batch):
    noise: torch.Tensor = field(default=None)  # the teacher ODE's starting noise; clips = its endpoint


@dataclass(frozen=True)
class KDConfig:
    pairs: int = 1024
    teacher_steps: int = 25
    batch_size: int = 16
    iterations: int = 400
    lr: float = 1e-4
    seed: int = 0
    grad_clip: float = 1.0


def data_prompts(folder: str | Path) -> list[str]:
    """The distinct prompts recorded in a data folder (``tmd-bench data generate/encode``), in clip order.

    The folder is opened with :class:`~tmd_bench.dataset.LatentDataset` (format and completeness
    checked); the prompts are read from each shard's ``tmd_bench`` metadata entry, as the format
    documents (no latents are read)."""
    from safetensors import safe_open

    from tmd_bench.dataset import DataError, LatentDataset

    data = LatentDataset(folder)
    prompts: list[str] = []
    for shard in sorted(data.index["shards"], key=lambda s: s["first"]):
        with safe_open(str(data.folder / shard["file"]), "pt") as f:
            prompts += json.loads(f.metadata()["tmd_bench"])["prompts"]
    if not prompts:
        raise DataError(f"--data {data.folder} records no prompts")
    return list(dict.fromkeys(prompts))


def pair_prompts(teacher, prompts: list[str] | None = None, data: str | Path | None = None) -> list[str] | None:
    """The prompts a teacher's KD pairs cycle: ``None`` for the Shapes teacher (its world stream);
    for a Wan teacher ``prompts``, else the prompts recorded in the data folder ``data``."""
    if teacher.spec.world == "shapes":
        if prompts is not None:
            raise ValueError("--prompts: the Shapes teacher's KD pairs take their prompts from the Shapes world "
                             "(--prompts is for Wan teachers)")
        return None
    if prompts is not None:
        prompts = list(prompts)
        if not prompts:
            raise ValueError(f"KD pairs for {teacher.name!r}: the prompt list is empty")
        return prompts
    if data is not None:
        return data_prompts(data)
    raise ValueError(f"KD pairs for {teacher.name!r} need prompts: pass --prompts FILE (or a suite name) or "
                     "--data FOLDER (written by `tmd-bench data generate/encode`)")


def prompts_identity(prompts: list[str]) -> dict:
    """What a pair cache records of its prompt list (a different list is a different cache)."""
    return {"count": len(prompts), "sha256": hashlib.sha256(json.dumps(prompts).encode()).hexdigest()}


def make_pairs(teacher, cfg: KDConfig, folder: str | Path, shard_size: int = 256,
               prompts: list[str] | None = None, teacher_batch: int | None = None) -> Path:
    """Generate (or reuse) the teacher's ODE pairs in ``folder``: ``index.json`` + shards.

    Shapes teacher: prompts from the Shapes world stream, Euler (``prompts`` must be ``None``). Any
    other teacher: ``prompts`` (required) cycled, pair ``k`` = prompt ``k mod len(prompts)``, sampled
    with the checkpoint's solver ``teacher.spec.solver``; targets are latents (before decoding).
    Pair ``k``'s noise seed is ``cfg.seed·1_000_003 + k`` either way. ``teacher_batch``: clips per
    teacher call (default 64 on Shapes, 4 on Wan; not part of the cache key)."""
    folder = Path(folder)
    index_path = folder / "index.json"
    shapes = teacher.spec.world == "shapes"
    if shapes and prompts is not None:
        raise ValueError("the Shapes teacher's KD pairs take their prompts from the Shapes world stream")
    if not shapes and not prompts:
        raise ValueError(f"KD pairs for {teacher.name!r} need prompts: pass --prompts FILE or --data FOLDER")
    solver = "euler" if shapes else teacher.spec.solver
    key = {"teacher": teacher.name, "teacher_sha256": teacher.checkpoint_hash(), "pairs": cfg.pairs,
           "teacher_steps": cfg.teacher_steps, "seed": cfg.seed, "solver": solver, "guidance": teacher.spec.guidance,
           "shift": teacher.spec.shift}
    if not shapes:
        spec = teacher.spec
        key |= {"prompts": prompts_identity(prompts), "video": [spec.frames, spec.height, spec.width],
                "latent_shape": list(teacher.latent_shape(1)[1:]), "negative_prompt": spec.negative_prompt,
                "dtype": str(teacher.dtype).removeprefix("torch.")}
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        if index["key"] == key and all((folder / s).is_file() for s in index["shards"]):
            return folder
    folder.mkdir(parents=True, exist_ok=True)
    method = harness.teacher_method(teacher, solver)
    stream = world.ShapesStream(shard_size, seed=cfg.seed + 31) if shapes else None
    negative = None if shapes else teacher.encode_text([teacher.spec.negative_prompt])
    batch = teacher_batch or (64 if shapes else 4)
    shards = []
    with progress_bar() as bar:
        task = bar.add_task("KD pairs (teacher ODE)", total=cfg.pairs, status="")
        for k in range(0, cfg.pairs, shard_size):
            n = min(shard_size, cfg.pairs - k)
            seeds = [cfg.seed * 1_000_003 + k + i for i in range(n)]
            if shapes:
                shard_prompts = next(stream)[0][:n]
                gen = harness.generate(method, teacher, shard_prompts, seeds, cfg.teacher_steps, batch_size=batch,
                                       on_batch=lambda m: bar.advance(task, m))
                noise, target = harness.noise_for_seeds(teacher, seeds), gen.videos
            else:
                shard_prompts = [prompts[(k + i) % len(prompts)] for i in range(n)]
                noise, target = _teacher_latents(method, teacher, shard_prompts, seeds, negative, cfg.teacher_steps,
                                                 batch, lambda m: bar.advance(task, m))
            name = f"pairs-{k // shard_size:05d}.safetensors"
            save_file({"noise": noise.float().cpu().contiguous(), "target": target.float().cpu().contiguous()},
                      str(folder / name), metadata={"prompts": json.dumps(shard_prompts)})
            shards.append(name)
    index_path.write_text(json.dumps({"key": key, "shards": shards, "count": cfg.pairs}, indent=2))
    return folder


@torch.no_grad()
def _teacher_latents(method, teacher, prompts, seeds, negative, steps, batch_size, on_batch):
    """(noise, endpoint latents), float32 on the CPU, of the teacher's ODE for each (prompt, seed)."""
    noise, target = [], []
    for i in range(0, len(prompts), batch_size):
        p, s = prompts[i:i + batch_size], seeds[i:i + batch_size]
        x = harness.noise_for_seeds(teacher, s)
        target.append(method.sample(x, teacher.encode_text(p), negative, steps, s).float().cpu())
        noise.append(x.cpu())
        on_batch(len(p))
    return torch.cat(noise), torch.cat(target)


class PairBatches:
    """Cycles over cached pairs in batches; ``position`` counts batches (resume continues)."""

    def __init__(self, teacher, folder: Path, batch_size: int):
        index = json.loads((Path(folder) / "index.json").read_text())
        noise, target, prompts = [], [], []
        for name in index["shards"]:
            with safe_open(str(Path(folder) / name), "pt") as f:
                noise.append(f.get_tensor("noise"))
                target.append(f.get_tensor("target"))
                prompts += json.loads(f.metadata()["prompts"])
        self.noise, self.target, self.prompts = torch.cat(noise), torch.cat(target), prompts
        self.teacher, self.batch_size, self.position = teacher, batch_size, 0
        self.text_of = TextCache(teacher)

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        n = len(self.prompts)
        idx = [(self.position * self.batch_size + i) % n for i in range(self.batch_size)]
        self.position += 1
        dev = self.teacher.device  # latents stay float32; the student casts to its compute dtype
        prompts = [self.prompts[i] for i in idx]
        return PairBatch(prompts, self.target[idx].to(dev, torch.float32), self.text_of(prompts),
                         self.noise[idx].to(dev, torch.float32))


class KD(SingleNetwork):
    """One-step regression onto the teacher's ODE endpoint."""

    name = "kd"
    loss_names = ("kd",)

    def __init__(self, teacher, student, cfg: KDConfig):
        super().__init__(teacher, student, cfg, cfg.lr)

    def step(self, batch, iteration: int) -> dict[str, float]:
        t = torch.full((batch.noise.shape[0],), flow.T_MAX, device=batch.noise.device)
        loss = losses.regression_loss(self.student.x0(batch.noise, t, batch.text), batch.clips)
        update(self.opt, loss, self.student.parameters(), self.config.grad_clip)
        return {"kd": loss.item()}

    def export(self, folder: Path) -> Path:
        return self.student.save(folder, self.teacher.name, self.teacher.checkpoint_hash(),
                                 {"train_config": asdict(self.config)})


def run_kd(teacher, cfg: KDConfig, out: str | Path, resume: bool = False, student=None,
           checkpoint_every: int = 100, log_every: int = 10, prompts: list[str] | None = None,
           data: str | Path | None = None) -> Path:
    """Cache the pairs in ``out/pairs``, train in ``out``; returns the student folder.
    ``prompts`` / ``data``: the prompt source of a Wan teacher's pairs (:func:`pair_prompts`)."""
    from tmd_bench.distill.dmd2 import DMD2Config, new_student
    from tmd_bench.distill.trainer import train

    from tmd_bench import checkpoint as ckpt

    out = Path(out)
    pairs = make_pairs(teacher, cfg, out / "pairs", prompts=pair_prompts(teacher, prompts, data))
    student = student or new_student(teacher, DMD2Config(steps=1), method="kd")
    train(KD(teacher, student, cfg), PairBatches(teacher, pairs, cfg.batch_size), out, cfg.iterations,
          resume=resume and ckpt.has_state(out), checkpoint_every=checkpoint_every, log_every=log_every,
          description="KD (ODE-pair regression)")
    return out / "student"
