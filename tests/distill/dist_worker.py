"""Run by tests/distill/test_distributed.py under torchrun (2 processes, gloo): every multi-process
check in one launch, so the suite pays the process start-up once.

argv: TEACHER_DIR OUT [A14B_DIR A14B_DATA]. Writes OUT/a14b-fsdp (TMD stage 2 on the two-expert teacher,
both experts sharded), OUT/ddp, OUT/fsdp (stage 2, 5 iterations), OUT/cut (FSDP stopped after
3 iterations; a copy is kept as OUT/cut-at-3), OUT/cut resumed to 5 by a fresh method, OUT/eval.
"""

import shutil
import sys
from pathlib import Path

import torch
from tmd_bench.distill.tmd_train import TMDTrainConfig, run_tmd

from tmd_bench import distributed
from tmd_bench.evaluate import EvalConfig, evaluate
from tmd_bench.teachers import load_teacher

CFG = TMDTrainConfig(outer_steps=2, inner_steps=2, head_blocks=2, batch_size=4, stage2_lr=1e-3, stage2_iterations=5,
                     teacher_guidance=2.0)


def stage2(teacher_dir, out, iterations, parallel, resume=False):
    teacher = load_teacher("shapes", teacher_dir)
    torch.manual_seed(0)  # the discriminator's initialisation, as in the single-process reference
    cfg = TMDTrainConfig(**{**CFG.__dict__, "stage2_iterations": iterations})
    run_tmd(teacher, cfg, out, stages=(2,), resume=resume, checkpoint_every=3, log_every=1, parallel=parallel)


def a14b_stage2(teacher_dir, data, out, parallel=None):
    """TMD stage 2 on the tiny two-expert (Wan2.2 A14B) teacher: FSDP2 shards both experts."""
    from tmd_bench import runtime

    teacher = runtime.load("wan2.2-t2v-a14b", teacher_dir, "cpu", None, frames=5, height=32, width=32)
    torch.manual_seed(0)
    cfg = TMDTrainConfig(**{**CFG.__dict__, "stage2_iterations": 5, "teacher_guidance": 4.0})
    run_tmd(teacher, cfg, out, stages=(2,), checkpoint_every=5, log_every=1, parallel=parallel, data=data)


def main(teacher_dir: str, out: str, a14b_dir: str | None = None, a14b_data: str | None = None) -> None:
    out = Path(out)
    distributed.init("cpu")
    if a14b_dir:
        a14b_stage2(a14b_dir, a14b_data, out / "a14b-fsdp", distributed.Parallel("fsdp"))
    stage2(teacher_dir, out / "ddp", 5, distributed.Parallel("ddp", accumulation=2))
    stage2(teacher_dir, out / "fsdp", 5, distributed.Parallel("fsdp"))
    stage2(teacher_dir, out / "cut", 3, distributed.Parallel("fsdp"))
    if distributed.is_main():
        shutil.copytree(out / "cut", out / "cut-at-3")
    distributed.barrier()
    stage2(teacher_dir, out / "cut", 5, distributed.Parallel("fsdp"), resume=True)
    evaluate(EvalConfig(teacher="shapes", teacher_path=teacher_dir, methods=["teacher-euler"], steps=[1, 2],
                        prompts="shapes-eval", limit=5, batch_size=2, latency_warmup=0, latency_repeats=1, preview=5,
                        metrics=["shapes"], out=str(out / "eval")))
    distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:5])
