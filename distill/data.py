"""Training batches for distillation: (prompts, clean latents, text embeddings).

On the Shapes world the clips come from the world's infinite seeded stream (the analogue of
the paper's teacher-generated training videos); the frozen text encoder embeds each distinct
prompt once. ``position`` counts batches consumed, so a resumed run continues the stream.
With ``--data DIR`` (any teacher) the batches stream from a folder of latents instead
(:class:`tmd_bench.dataset.ShardBatches`); :func:`training_batches` picks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tmd_bench import world
from tmd_bench.teacher_train import TextCache
from tmd_bench.teachers import Teacher


@dataclass
class Batch:
    prompts: list[str]
    clips: torch.Tensor
    text: torch.Tensor
    # (lo, hi, total): the batch holds only rows [lo, hi) of a global batch of `total` (one rank's
    # share, read alone: tmd_bench.dataset.ShardBatches under torchrun); None: the whole global batch
    rows: tuple[int, int, int] | None = field(default=None, kw_only=True)  # keyword-only: subclasses add fields


class WorldBatches:
    def __init__(self, teacher: Teacher, batch_size: int, seed: int = 0):
        if teacher.spec.world != "shapes":
            raise ValueError(
                f"teacher {teacher.name!r} has no built-in training world; distilling it needs a folder of "
                "latents: --data DIR, written by `tmd-bench data generate` (teacher samples) or "
                "`tmd-bench data encode` (captioned videos)")
        self.teacher = teacher
        self.stream = world.ShapesStream(batch_size, seed=seed + 17)  # not the teacher's own stream
        self.text_of = TextCache(teacher)

    @property
    def position(self) -> int:
        return self.stream.position

    @position.setter
    def position(self, value: int) -> None:
        self.stream.position = value

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        prompts, clips = next(self.stream)
        dev = self.teacher.device
        return Batch(prompts, clips.to(dev, torch.float32), self.text_of(prompts))  # latents float32


def training_batches(teacher: Teacher, batch_size: int, seed: int = 0, data=None, sharded: bool = False):
    """The Shapes-world stream, or with ``data`` (a folder from ``tmd-bench data generate/encode``) its
    shards, checked against ``teacher``; ``sharded`` (under torchrun): each rank reads its rows only."""
    if data is None:
        return WorldBatches(teacher, batch_size, seed)
    from tmd_bench.dataset import open_for

    return open_for(teacher, data, batch_size, seed, sharded=sharded)
