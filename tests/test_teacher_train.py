import pytest
import torch
from conftest import tiny_shapes_teacher
from safetensors.torch import load_file

from tmd_bench import checkpoint as ckpt
from tmd_bench import teacher_train
from tmd_bench.teacher_train import TeacherTrainConfig, train_teacher
from tmd_bench.teachers import load_teacher


def cfg(**kw):
    base = dict(steps=6, batch_size=4, lr=3e-3, warmup=1, checkpoint_every=3, log_every=1, threads=0)
    return TeacherTrainConfig(**{**base, **kw})


def params(teacher):
    return torch.cat([p.detach().flatten() for p in teacher.transformer.parameters()])


def test_loss_falls(tmp_path):
    train_teacher(tmp_path, cfg(steps=60, batch_size=8, log_every=10), teacher=tiny_shapes_teacher())
    losses = [float(r["loss"]) for r in teacher_train.load_log(tmp_path)]
    assert len(losses) == 6 and losses[-1] < 0.85 * losses[0], losses


def test_resume_continues_exactly_where_an_uninterrupted_run_ends(tmp_path):
    full = train_teacher(tmp_path / "full", cfg(), teacher=tiny_shapes_teacher())
    train_teacher(tmp_path / "cut", cfg(steps=3), teacher=tiny_shapes_teacher())
    resumed = train_teacher(tmp_path / "cut", cfg(), resume=True, teacher=tiny_shapes_teacher())
    torch.testing.assert_close(params(full), params(resumed), rtol=0, atol=0)
    a, b = ckpt.load_state(tmp_path / "full")[0], ckpt.load_state(tmp_path / "cut")[0]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    steps = [int(r["step"]) for r in teacher_train.load_log(tmp_path / "cut")]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_checkpoints_are_safetensors_and_the_export_loads(tmp_path):
    train_teacher(tmp_path, cfg(steps=3), teacher=tiny_shapes_teacher())
    assert set(load_file(str(tmp_path / "state.safetensors"))) >= {"ema.0", "optim.0.exp_avg"}
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt")]
    teacher = load_teacher("shapes", tmp_path / "teacher")
    assert teacher.meta["train"]["steps"] == 3


def test_resume_refuses_a_different_config_and_a_fresh_run_refuses_to_overwrite(tmp_path):
    train_teacher(tmp_path, cfg(steps=3), teacher=tiny_shapes_teacher())
    with pytest.raises(ckpt.IncompatibleCheckpoint, match="lr"):
        train_teacher(tmp_path, cfg(lr=1e-2), resume=True, teacher=tiny_shapes_teacher())
    with pytest.raises(FileExistsError, match="--resume"):
        train_teacher(tmp_path, cfg(), teacher=tiny_shapes_teacher())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_teacher(tmp_path / "empty", cfg(), resume=True, teacher=tiny_shapes_teacher())


def test_nan_loss_stops_before_the_update_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    train_teacher(tmp_path, cfg(steps=3), teacher=tiny_shapes_teacher())
    before = load_file(str(tmp_path / "state.safetensors"))
    monkeypatch.setattr(teacher_train, "rectified_flow_loss", lambda *a: torch.tensor(float("nan")))
    with pytest.raises(FloatingPointError, match="step 3"):
        train_teacher(tmp_path, cfg(), resume=True, teacher=tiny_shapes_teacher())
    after = load_file(str(tmp_path / "state.safetensors"))
    for k in before:
        assert torch.equal(before[k], after[k])


def test_the_toolkit_never_unpickles():
    """Checkpoints are safetensors and JSON; nothing loads with pickle (torch.load, pickle.load)."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent
    offenders = []
    for f in root.glob("*/**/*.py"):
        if ".venv" in f.parts or f.parent.name == "tests":
            continue
        text = f.read_text()
        if "torch.load(" in text or "pickle.load" in text or "weights_only=False" in text:
            offenders.append(str(f))
    assert offenders == []


def test_lr_schedule_warms_up_holds_then_decays_to_the_floor():
    cfg = TeacherTrainConfig(steps=1000, lr=1e-3, warmup=100, decay_from=600, final_lr_ratio=0.05)
    lrs = [teacher_train.lr_at(cfg, s) for s in range(1000)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[99] == pytest.approx(1e-3)
    assert lrs[300] == lrs[600] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[600:], lrs[601:]))
    assert teacher_train.lr_at(cfg, 1000) == pytest.approx(5e-5)
    assert teacher_train.lr_at(TeacherTrainConfig(steps=1000, warmup=100), 999) == pytest.approx(1e-3)


def test_resume_may_add_a_decay_to_a_constant_lr_run(tmp_path):
    train_teacher(tmp_path, TeacherTrainConfig(steps=2, batch_size=2, checkpoint_every=2), teacher=tiny_shapes_teacher())
    cfg = TeacherTrainConfig(steps=4, batch_size=2, checkpoint_every=2, decay_from=2)
    train_teacher(tmp_path, cfg, resume=True, teacher=tiny_shapes_teacher())
    assert ckpt.load_state(tmp_path)[1]["step"] == 4
