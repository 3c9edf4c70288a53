"""Determinism as a property: every random draw of a distillation run (initialisation of the layers
a method adds, noise, times, data order, dropout) derives from ``--seed``, never from the global
RNG. Two identical ``tmd-bench distill`` commands give bit-identical students, checkpoints and logs
(elapsed time aside); another ``--seed`` gives another student.

Each run starts from a different global RNG state, so a draw from the global RNG anywhere in a
run would show up as a difference."""

import copy
import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import tiny_shapes_teacher
from safetensors.torch import load_file
from typer.testing import CliRunner

from tmd_bench.cli import app
from tmd_bench.distill import dmd2
from tmd_bench.distill.critics import Discriminator
from tmd_bench.distill.meanflow import MeanFlowStudent
from tmd_bench.distill.tmd import TMDConfig, TMDStudent

runner = CliRunner()

TMD = ["--method", "tmd", "--stage", "all", "--outer-steps", "2", "--inner-steps", "2", "--head-blocks", "2",
       "--stage1-iterations", "2", "--stage2-iterations", "5"]  # stage 2: 4 critic updates, then the student's
# method: (distill options, the student folders it writes)
CASES = {
    "tmd": (TMD, ["stage1/student", "stage2/student"]),
    "dmd2-s2": (["--method", "dmd2", "--steps", "2", "--iterations", "5"], ["dmd2/student"]),
    "dmd2-s1": (["--method", "dmd2", "--steps", "1", "--iterations", "5", "--kd-pairs", "4", "--kd-teacher-steps", "1"],
                ["kd-warmup/student", "dmd2/student"]),
    "rcm": (["--method", "rcm", "--iterations", "2"], ["student"]),
    "kd": (["--method", "kd", "--iterations", "2", "--kd-pairs", "4", "--kd-teacher-steps", "1"], ["student"]),
    "meanflow": (["--method", "meanflow", "--steps", "2", "--iterations", "2"], ["student"]),
}


@pytest.fixture(autouse=True)
def _restore_global_rng():
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


def distill(teacher_dir, out: Path, args, seed: int, global_seed: int) -> Path:
    torch.manual_seed(global_seed)  # a different global state per run: a draw from it would show
    r = runner.invoke(app, ["distill", "--teacher-path", str(teacher_dir), "--device", "cpu", "--batch-size", "2",
                            "--seed", str(seed), "--out", str(out), *args])
    assert r.exit_code == 0, r.output
    return out


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file under ``folder``: students (transformer, TMD's fusion and
    (s − r) weights, MeanFlow's delta embedding), checkpoints (critics, optimiser state), KD pairs.
    Not the checkpoints' record of the process's global RNG (``rng.*``): no draw of a run comes from
    it (that is the property), and each run here starts from a different global state on purpose."""
    return {f"{p.relative_to(folder)}::{k}": v for p in sorted(folder.rglob("*.safetensors"))
            for k, v in load_file(str(p)).items() if not k.startswith("rng.")}


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys() and a
    return [k for k in a if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or not torch.equal(bits(a[k]), bits(b[k]))]


def logs(folder: Path) -> dict[str, list[dict]]:
    """Every log.csv under ``folder``, without the wall-clock column."""
    out = {}
    for p in sorted(folder.rglob("log.csv")):
        with p.open() as f:
            out[str(p.relative_to(folder))] = [{k: v for k, v in row.items() if k != "elapsed_s"}
                                               for row in csv.DictReader(f)]
    return out


def jsons(folder: Path) -> dict[str, object]:
    """Every JSON file of a student folder (its configs), without diffusers' record of the folder a
    transformer was loaded from (TMD stage 2 starts from the run's own stage-1 student)."""
    return {str(p.relative_to(folder)): {k: v for k, v in json.loads(p.read_text()).items() if k != "_name_or_path"}
            for p in sorted(folder.rglob("*.json"))}


@pytest.mark.parametrize("case", list(CASES))
def test_same_seed_same_student_other_seed_other_student(case, shapes_teacher_dir, tmp_path, monkeypatch):
    # one-step dmd2: a 2-iteration KD warm-up instead of the preset's 200 (the CLI has no flag for it)
    monkeypatch.setitem(dmd2.PRESETS, "shapes", replace(dmd2.PRESETS["shapes"], kd_warmup_iterations=2))
    args, students = CASES[case]
    a = distill(shapes_teacher_dir, tmp_path / "a", args, seed=0, global_seed=1)
    b = distill(shapes_teacher_dir, tmp_path / "b", args, seed=0, global_seed=2)
    for s in students:
        assert list((a / s).rglob("*.safetensors")), f"{case}: no student in {a / s}"
    ta, tb = tensors(a), tensors(b)
    assert not differing(ta, tb), f"{case}: same --seed, different tensors: {differing(ta, tb)[:10]}"
    assert logs(a) == logs(b) and logs(a), f"{case}: the logs differ"
    for s in students:
        assert jsons(a / s) == jsons(b / s) and jsons(a / s)

    c = distill(shapes_teacher_dir, tmp_path / "c", args, seed=1, global_seed=1)
    for s in students:  # the test can fail: another seed gives another student
        changed = differing(tensors(a / s), tensors(c / s))
        assert changed, f"{case}: --seed 1 gave the same {s} as --seed 0"
    if case == "tmd":  # the fusion block / (s − r) embedding follow the seed
        assert differing(tensors(a / "stage2/student"), tensors(c / "stage2/student")) and any(
            "tmd_head" in k for k in differing(tensors(a / "stage1/student"), tensors(c / "stage1/student")))
    if case.startswith(("tmd", "dmd2")):  # so does the discriminator
        state = "stage2" if case == "tmd" else "dmd2"
        da = {k: v for k, v in tensors(a / state).items() if "discriminator" in k and "optim" not in k}
        dc = {k: v for k, v in tensors(c / state).items() if "discriminator" in k and "optim" not in k}
        assert da and differing(da, dc)


def new_layers(tr, seed: int) -> dict[str, torch.Tensor]:
    """The layers the methods add to a copy of the teacher's transformer ``tr``, built with ``seed``."""
    dim = tr.config.num_attention_heads * tr.config.attention_head_dim
    tmd = TMDStudent(copy.deepcopy(tr), TMDConfig(head_blocks=2), seed=seed)
    disc = Discriminator(dim, 3, seed=seed)
    mf = MeanFlowStudent(copy.deepcopy(tr), {}, seed=seed)
    return {**{f"tmd.{k}": v for k, v in tmd.extra_state_dict().items()},
            **{f"disc.{k}": v for k, v in disc.state_dict().items()},
            **{f"mf.{k}": v for k, v in mf.delta_time.state_dict().items()}}


ZERO_INIT = ("tmd.fusion.modulation.", "tmd.fusion.out.", "tmd.fusion.alpha", "tmd.delta_time.embed.linear_2.",
             "mf.embed.linear_2.")


def test_new_layers_neither_read_nor_advance_the_global_rng():
    tr = tiny_shapes_teacher().transformer
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = new_layers(tr, 0)  # TMDStudent, Discriminator, MeanFlowStudent
    assert torch.equal(before, torch.get_rng_state()), "building the new layers advanced the global RNG"

    torch.manual_seed(456)  # another global state, the same layers: the init does not read it
    b = new_layers(tr, 0)
    assert not differing(a, b)
    c = new_layers(tr, 1)  # another seed: other random layers; the zero-initialised ones stay zero
    changed = set(differing(a, c))
    for k, v in c.items():
        if k.startswith(ZERO_INIT):
            assert not v.any() and not a[k].any(), k
        elif v.ndim > 1:  # every random weight moved with the seed
            assert k in changed, k
    assert {k for k in changed if not k.startswith(ZERO_INIT)} == changed
    for prefix in ("disc.", "tmd.fusion.mlp.", "tmd.delta_time.embed.linear_1.", "mf.embed.linear_1."):
        assert any(k.startswith(prefix) for k in changed), prefix
