"""Run by tests/distill/test_data_distill.py under torchrun (2 processes, gloo): TMD stages 1 and 2 on a
latents folder under DDP, each rank reading only its rows of the global batch.

argv: TEACHER_DIR DATA OUT.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
from tmd_bench.distill.tmd_train import TMDTrainConfig, run_tmd

from tmd_bench import dataset, distributed
from tmd_bench.teachers import load_teacher

CFG = TMDTrainConfig(outer_steps=2, inner_steps=2, head_blocks=2, batch_size=4, stage1_iterations=2,
                     stage2_iterations=2, stage1_lr=1e-3, stage2_lr=1e-3, teacher_guidance=2.0)


def run(teacher_dir, data, out, parallel=None):
    teacher = load_teacher("wan2.1-1.3b", teacher_dir)
    teacher.spec = replace(teacher.spec, frames=5, height=32, width=32)
    torch.manual_seed(0)  # the student's new layers and the discriminator, as in the single-process reference
    run_tmd(teacher, CFG, out, checkpoint_every=2, log_every=1, parallel=parallel, data=data)


if __name__ == "__main__":
    distributed.init("cpu")
    read = []  # the rows of every batch this rank read from the shards
    plain_next = dataset.ShardBatches.__next__

    def next_batch(self):
        batch = plain_next(self)
        read.append([len(batch.prompts), *batch.rows])
        return batch

    dataset.ShardBatches.__next__ = next_batch
    run(*sys.argv[1:4], parallel=distributed.Parallel("ddp"))
    Path(sys.argv[3], f"rows-rank{distributed.rank()}.json").write_text(json.dumps(read))
    distributed.shutdown()
