"""Shapes-CLIP: the shipped model separates matching from shuffled prompts and real from degraded
clips; training lowers the contrastive loss; damaged or missing files are clear errors."""

import json
import shutil

import pytest
import torch
from tmd_bench.metrics import shapes_clip as sc
from tmd_bench.metrics.clip import ClipWeightsNotFound, file_hash
from tmd_bench.metrics.fidelity import frechet_distance

from tmd_bench import world

N = 64  # clips per set: the first N prompts of shapes-eval, clip i with seed i


@pytest.fixture(scope="module")
def scorer():
    return sc.load_shapes_clip()


@pytest.fixture(scope="module")
def real():
    from tmd_bench import suites

    suite = suites.load_suite("shapes-eval").head(N)
    prompts, seeds = list(suite.prompts), suite.seeds(0)
    return prompts, seeds, world.render_prompts(prompts, seeds)


def test_shipped_model_is_small_and_recorded():
    size = (sc.ASSET_DIR / sc.WEIGHTS).stat().st_size
    assert size < 5 * 2**20
    record = json.loads((sc.ASSET_DIR / sc.RECORD).read_text())
    assert record["steps"] > 0 and record["wall_time_s"] > 0 and "seed" in record["train"]
    assert record["command"].startswith("tmd-bench metrics train-shapes-clip")
    assert record["model_sha256"] == file_hash(sc.ASSET_DIR / sc.WEIGHTS)
    assert record["zero_shot_accuracy"]["all_static"] >= 0.95  # count, size, colour, shape, background


def test_clip_score_of_own_prompts_far_above_shuffled(scorer, real):
    prompts, _, clips = real
    own = scorer.score(clips, prompts)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = scorer.score(clips, [prompts[i] for i in perm])
    assert own.mean() > 80 and shuffled.mean() < own.mean() - 40, (own.mean(), shuffled.mean())
    # the interface of metrics/clip.py: frame-averaged max(100·cos, 0)
    cos = torch.einsum("bfd,bd->bf", scorer.frame_features(clips), scorer.text_features(prompts))
    torch.testing.assert_close(own, (100 * cos).clamp_min(0).mean(1))
    m = sc.ShapesClipMetrics(scorer)
    assert m.clip_score(clips, prompts) == pytest.approx(float(own.mean()), abs=1e-4)


def test_fd_real_separates_real_renders_from_one_step_teacher(scorer, real):
    from tmd_bench import harness
    from tmd_bench.teachers import load_teacher

    prompts, seeds, clips = real
    again = world.render_prompts(prompts, [s + 10_000 for s in seeds])  # same prompts, other layouts
    teacher = load_teacher("shapes")
    one_step = harness.generate(harness.teacher_method(teacher, "euler"), teacher, prompts, seeds, 1, N).videos
    feats = scorer.video_features(clips).numpy()
    fd_real_real = frechet_distance(scorer.video_features(again).numpy(), feats)
    m = sc.ShapesClipMetrics(scorer)
    fd_one = m.fd_real(one_step, prompts, seeds)
    assert fd_one == pytest.approx(frechet_distance(scorer.video_features(one_step).numpy(), feats), rel=1e-6)
    assert fd_real_real * 5 < fd_one, (fd_real_real, fd_one)
    assert m.fd_real(clips, prompts, seeds) == pytest.approx(0.0, abs=1e-6)
    assert m.clip_score(one_step, prompts) < m.clip_score(clips, prompts) - 10


TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 24, "patch_size": 6, "layers": 1, "width": 32, "head_width": 16, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": 16, "vocab_size": 4 + len(sc.world_bpe_ids()), "width": 32, "heads": 2,
                     "layers": 1, "mlp_ratio": 2.0, "pool_type": "eos", "eos_id": sc.EOT, "pad_id": sc.PAD}}


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    cfg = sc.ShapesClipTrainConfig(steps=60, batch_size=32, lr=3e-3, warmup=5, seed=3)
    model, tok, record = sc.train_shapes_clip(cfg, config=TINY, progress=False)
    folder = sc.save_shapes_clip(tmp_path_factory.mktemp("tiny-shapes-clip"), model, tok, TINY, record)
    return model, tok, record, folder


def test_training_lowers_the_contrastive_loss(trained_tiny):
    model, tok, record, folder = trained_tiny
    prompts, frames = sc._frames_batch(world.ShapesStream(64, seed=99, include_held_out=True),
                                       torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    untrained = sc.build_model(TINY)  # the same initialisation train_shapes_clip starts from
    with torch.no_grad():
        before = sc.batch_loss(untrained, tok, prompts, frames).item()
        after = sc.batch_loss(model, tok, prompts, frames).item()
    assert after < before - 0.5, (before, after)
    assert record["steps"] == 60 and record["train"]["seed"] == 3 and record["wall_time_s"] > 0
    loaded = sc.load_shapes_clip(folder)  # round trip through safetensors + config.json
    with torch.no_grad():
        assert sc.batch_loss(loaded.model, loaded.tokenizer, prompts, frames).item() == pytest.approx(after, abs=1e-5)


def test_tokenizer_is_open_clips_bpe_remapped():
    tok = sc.ShapesTokenizer(sc.world_bpe_ids())
    ids = tok(["two large yellow triangles moving up on a navy background", "a purple dog"])
    assert ids.shape == (2, sc.CONTEXT_LENGTH) and ids.max() < tok.vocab_size
    assert ids[0, 0] == sc.SOT and sc.UNK not in ids[0].tolist() and sc.EOT in ids[0].tolist()
    assert ids[1].tolist()[:5] == [sc.SOT, ids[0, 9].item(), sc.UNK, sc.UNK, sc.EOT]  # "a" known, the rest not


def test_missing_and_damaged_files_are_clear_errors(tmp_path, trained_tiny):
    with pytest.raises(ClipWeightsNotFound, match="train-shapes-clip"):
        sc.load_shapes_clip(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    shutil.copytree(trained_tiny[3], bad)
    data = (bad / sc.WEIGHTS).read_bytes()
    (bad / sc.WEIGHTS).write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="damaged: SHA-256"):
        sc.load_shapes_clip(bad)
    (bad / sc.RECORD).unlink()  # without the recorded hash, safetensors itself refuses the file
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        sc.load_shapes_clip(bad)
    (bad / sc.WEIGHTS).write_bytes(data)
    cfg = json.loads((bad / sc.CONFIG).read_text())
    cfg["model"]["embed_dim"] = 8
    (bad / sc.CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not fit the Shapes-CLIP config"):
        sc.load_shapes_clip(bad)
    (bad / sc.CONFIG).write_text("{")
    with pytest.raises(ValueError, match="not a Shapes-CLIP config"):
        sc.load_shapes_clip(bad)


def test_evaluate_on_shapes_defaults_to_shapes_clip_and_fd(shapes_teacher_dir, wan_teacher_dir, tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from tmd_bench.cli import app

    base = ["evaluate", "--teacher-path", str(shapes_teacher_dir), "--steps", "1", "--limit", "3",
            "--latency-repeats", "1"]
    r = CliRunner().invoke(app, base + ["--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    row = pd.read_csv(tmp_path / "run" / "results.csv").iloc[0]
    assert 0 <= row["clip_score"] <= 100 and row["fd_real"] > 0 and "all_correct" in row
    assert row["fd_n"] == 3 and row["fd_real_floor"] > 0  # FD carries its N and the renders' floor at that N
    assert row["metrics_time_s"] > 0
    card = json.loads((tmp_path / "run" / row["run_card"]).read_text())
    for name in ("shapes-clip", "fd"):
        assert card["metrics"][name]["weights_sha256"] == file_hash(sc.ASSET_DIR / sc.WEIGHTS)
        assert card["metrics"][name]["wall_s"] >= 0
    r = CliRunner().invoke(app, base + ["--metrics", "clip,shapes-clip", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "both write clip_score" in r.output
    r = CliRunner().invoke(app, ["evaluate", "--teacher", "wan2.1-1.3b", "--teacher-path", str(wan_teacher_dir),
                                 "--frames", "5", "--height", "32", "--width", "32", "--steps", "1",
                                 "--metrics", "fd", "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "is not one" in r.output


def test_fd_real_floor_is_the_renders_own_fd_at_the_same_n(scorer, real):
    """The floor: the world's renders (same prompts, other seeds) against the real renders, at the same N —
    positive, larger at small N (FD is biased upwards there), and what a perfect generator scores."""
    prompts, seeds, clips = real
    m = sc.ShapesClipMetrics(scorer)
    floor_all, floor_16 = m.fd_real_floor(prompts, seeds), m.fd_real_floor(prompts[:16], seeds[:16])
    assert 0 < floor_all < floor_16, (floor_all, floor_16)
    perfect = world.render_prompts(prompts, [s + m.FLOOR_SEED_OFFSET for s in seeds])
    assert m.fd_real(perfect, prompts, seeds) == pytest.approx(floor_all, rel=1e-9)
    assert m.fd_real(clips, prompts, seeds) == pytest.approx(0.0, abs=1e-6)  # the renders themselves
