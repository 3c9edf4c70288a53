"""KD (spec baselines.md): regress a one-step student on cached teacher ODE pairs.

``make_pairs`` runs the teacher (Euler, its shift and CFG) from seeded noise and caches
(noise, endpoint) pairs on disk as safetensors shards with an index; ``KD`` minimises
``½·MSE(g_θ(noise, 0.999), x_teacher)``. Averaging over the modes the noise does not determine,
a regression student blurs multimodal outputs — on the Shapes world the oracle and the sharpness
metric see it. KD is also the warm-up of one-step DMD2-v.
"""

from __future__ import annotations

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


def make_pairs(teacher, cfg: KDConfig, folder: str | Path, shard_size: int = 256) -> Path:
    """Generate (or reuse) the teacher's ODE pairs in ``folder``: ``index.json`` + shards."""
    folder = Path(folder)
    index_path = folder / "index.json"
    key = {"teacher": teacher.name, "teacher_sha256": teacher.checkpoint_hash(), "pairs": cfg.pairs,
           "teacher_steps": cfg.teacher_steps, "seed": cfg.seed, "solver": "euler", "guidance": teacher.spec.guidance,
           "shift": teacher.spec.shift}
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        if index["key"] == key and all((folder / s).is_file() for s in index["shards"]):
            return folder
    if teacher.spec.world != "shapes":
        raise ValueError(f"KD pairs for {teacher.name!r} need prompts from a data folder (tmd-bench data generate)")
    folder.mkdir(parents=True, exist_ok=True)
    method = harness.teacher_method(teacher, "euler")
    stream = world.ShapesStream(shard_size, seed=cfg.seed + 31)
    shards = []
    with progress_bar() as bar:
        task = bar.add_task("KD pairs (teacher ODE)", total=cfg.pairs, status="")
        for k in range(0, cfg.pairs, shard_size):
            n = min(shard_size, cfg.pairs - k)
            prompts = next(stream)[0][:n]
            seeds = [cfg.seed * 1_000_003 + k + i for i in range(n)]
            gen = harness.generate(method, teacher, prompts, seeds, cfg.teacher_steps, batch_size=64,
                                   on_batch=lambda m: bar.advance(task, m))
            noise = harness.noise_for_seeds(teacher, seeds)
            name = f"pairs-{k // shard_size:05d}.safetensors"
            save_file({"noise": noise.cpu().contiguous(), "target": gen.videos.contiguous()}, str(folder / name),
                      metadata={"prompts": json.dumps(prompts)})
            shards.append(name)
    index_path.write_text(json.dumps({"key": key, "shards": shards, "count": cfg.pairs}, indent=2))
    return folder


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
        dev, dt = self.teacher.device, self.teacher.dtype
        prompts = [self.prompts[i] for i in idx]
        return PairBatch(prompts, self.target[idx].to(dev, dt), self.text_of(prompts), self.noise[idx].to(dev, dt))


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
           checkpoint_every: int = 100, log_every: int = 10) -> Path:
    """Cache the pairs in ``out/pairs``, train in ``out``; returns the student folder."""
    from tmd_bench.distill.dmd2 import DMD2Config, new_student
    from tmd_bench.distill.trainer import train

    from tmd_bench import checkpoint as ckpt

    out = Path(out)
    pairs = make_pairs(teacher, cfg, out / "pairs")
    student = student or new_student(teacher, DMD2Config(steps=1), method="kd")
    train(KD(teacher, student, cfg), PairBatches(teacher, pairs, cfg.batch_size), out, cfg.iterations,
          resume=resume and ckpt.has_state(out), checkpoint_every=checkpoint_every, log_every=log_every,
          description="KD (ODE-pair regression)")
    return out / "student"
