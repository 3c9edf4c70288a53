"""Training data for real teachers (`tmd-bench data generate/encode`): shards and index, resume,
encoding a folder of videos, the training stream's order, resume and rank slicing. Tiny random Wan
checkpoint in the diffusers layout (VAE included), 5 frames of 32×32, 1 sampling step."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tmd_bench.distill.data import Batch
from typer.testing import CliRunner

from tmd_bench import dataset, distributed, harness
from tmd_bench.cli import app
from tmd_bench.teachers import load_teacher

PROMPTS = ["a cat sitting on the grass", "a dog running", "a red field", "a blue cat in the field", "a dog"]
SIZE = dict(frames=5, height=32, width=32)


def wan(folder):
    t = load_teacher("wan2.1-1.3b", folder)
    t.spec = replace(t.spec, **SIZE)
    return t


def gen(teacher, out, **kw):
    return dataset.generate(teacher, PROMPTS, out, **{"steps": 1, "shard_size": 2, "batch_size": 2, **kw})


def test_generate_cli_writes_index_and_shards(wan_teacher_dir, tmp_path):
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS[:3]) + "\n")
    r = CliRunner().invoke(app, ["data", "generate", "--teacher", "wan2.1-1.3b", "--teacher-path", str(wan_teacher_dir),
                                 "--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "d"), "--steps", "1",
                                 "--frames", "5", "--height", "32", "--width", "32", "--shard-size", "2",
                                 "--per-prompt", "2", "--seed", "10", "--guidance", "3"])
    assert r.exit_code == 0, r.output
    ix = json.loads((tmp_path / "d" / "index.json").read_text())
    assert ix["count"] == 6 and ix["complete"] and ix["kind"] == "generated"
    assert [s["file"] for s in ix["shards"]] == [f"shard-0000{k}.safetensors" for k in range(3)]
    assert ix["latent_shape"] == [4, 2, 4, 4] and ix["text_shape"] == [512, 16] and ix["dtype"] == "float32"
    teacher = wan(wan_teacher_dir)
    assert ix["teacher"] == {"name": "wan2.1-1.3b", "hashes": dataset.teacher_hashes(teacher)}
    # no --solver, no --shift: the checkpoint's own scheduler/ (a FlowMatchEuler one, shift 5), and the index says so
    assert ix["sampler"] == {"solver": "fmeuler", "steps": 1, "guidance": 3.0, "shift": 5.0,
                             "sampling_source": "checkpoint scheduler/scheduler_config.json"}
    assert ix["command"].startswith("tmd-bench data generate --teacher wan2.1-1.3b") and "--per-prompt 2" in ix["command"]
    # shard 1 = clips 2, 3: prompt 1 twice, seeds 12, 13; latents are the teacher's samples before decoding
    shard = load_file(str(tmp_path / "d" / "shard-00001.safetensors"))
    with safe_open(str(tmp_path / "d" / "shard-00001.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["tmd_bench"])["prompts"] == [PROMPTS[1]] * 2
    assert shard["seed"].tolist() == [12, 13] and shard["id"].tolist() == [2, 3]
    assert shard["latents"].shape == (2, 4, 2, 4, 4) and shard["text"].shape[1] < 512  # trailing zeros trimmed
    method = harness.teacher_method(teacher, "fmeuler", 3.0)
    text = teacher.encode_text([PROMPTS[1]] * 2)
    ref = method.sample(harness.noise_for_seeds(teacher, [12, 13]), text,
                        teacher.encode_text([teacher.spec.negative_prompt]), 1)
    torch.testing.assert_close(shard["latents"], ref)
    prompts, latents, text_read = dataset.LatentDataset(tmp_path / "d").rows([3, 2])
    assert prompts == [PROMPTS[1]] * 2
    torch.testing.assert_close(text_read, text, rtol=0, atol=0)  # padded back to 512 exactly
    torch.testing.assert_close(latents, ref.flip(0))


def test_interrupted_generate_resumes_to_identical_shards(wan_teacher_dir, tmp_path):
    teacher = wan(wan_teacher_dir)
    full = gen(teacher, tmp_path / "full")

    def stop(k):
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gen(teacher, tmp_path / "cut", on_shard=stop)
    part = json.loads((tmp_path / "cut" / "index.json").read_text())
    assert not part["complete"] and [s["file"] for s in part["shards"]] == ["shard-00000.safetensors",
                                                                          "shard-00001.safetensors"]
    (tmp_path / "cut" / "shard-00002.safetensors.tmp").write_bytes(b"half a shard")  # killed mid-write
    written = []
    resumed = gen(teacher, tmp_path / "cut", on_shard=written.append)
    assert written == [2]  # only the missing shard
    assert resumed == full
    for s in full["shards"]:
        assert (tmp_path / "cut" / s["file"]).read_bytes() == (tmp_path / "full" / s["file"]).read_bytes()
    with pytest.raises(dataset.DataError, match="holds another dataset.*sampler"):
        gen(teacher, tmp_path / "cut", steps=2)


def _gif(path, frames):
    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=40, loop=0)


def test_encode_a_folder_of_captioned_videos_and_tensors(wan_teacher_dir, tmp_path):
    rng = np.random.default_rng(0)
    vids = tmp_path / "videos"
    vids.mkdir()
    gif_frames = (rng.random((6, 40, 48, 3)) * 255).astype(np.uint8)  # resized to cover 32×32, centre-cropped
    _gif(vids / "a.gif", gif_frames)
    (vids / "a.txt").write_text("a cat sitting\n")
    save_file({"frames": torch.from_numpy((rng.random((5, 32, 32, 3)) * 255).astype(np.uint8))}, str(vids / "b.safetensors"))
    (vids / "b.txt").write_text("a dog running")
    save_file({"video": torch.rand(3, 7, 32, 32) * 2 - 1}, str(vids / "c.safetensors"))
    (vids / "c.txt").write_text("a red field")
    r = CliRunner().invoke(app, ["data", "encode", "--teacher", "wan2.1-1.3b", "--teacher-path", str(wan_teacher_dir),
                                 "--videos", str(vids), "--out", str(tmp_path / "d"), "--frames", "5",
                                 "--height", "32", "--width", "32", "--shard-size", "2"])
    assert r.exit_code == 0, r.output
    ix = json.loads((tmp_path / "d" / "index.json").read_text())
    assert ix["kind"] == "encoded" and ix["count"] == 3 and ix["complete"] and ix["latent_shape"] == [4, 2, 4, 4]
    data = dataset.LatentDataset(tmp_path / "d")
    prompts, latents, text = data.rows([0, 1, 2])
    assert prompts == ["a cat sitting", "a dog running", "a red field"]
    teacher = wan(wan_teacher_dir)
    assert dataset.read_video(vids / "a.gif").shape == (3, 6, 40, 48)
    for i, name in enumerate(["a.gif", "b.safetensors", "c.safetensors"]):
        clip = dataset.fit_video(dataset.read_video(vids / name), 5, 32, 32)
        torch.testing.assert_close(latents[i:i + 1], teacher.encode(clip.unsqueeze(0)))
        torch.testing.assert_close(text[i:i + 1], teacher.encode_text([prompts[i]]), rtol=0, atol=0)
    # the other caption convention, and errors that say what to fix
    (vids / "captions.jsonl").write_text(json.dumps({"video": "b.safetensors", "caption": "a blue cat"}) + "\n")
    assert dataset.list_videos(vids) == [(vids / "b.safetensors", "a blue cat")]
    (vids / "captions.jsonl").unlink()
    (vids / "c.txt").unlink()
    with pytest.raises(dataset.DataError, match="c.safetensors has no caption"):
        dataset.list_videos(vids)
    (vids / "e.pt").write_bytes(b"")
    with pytest.raises(dataset.DataError, match=r"\.pt is not a video format.*never does"):
        dataset.read_video(vids / "e.pt")
    (vids / "e.pt").unlink()
    with pytest.raises(dataset.DataError, match="fewer than --frames 9"):
        dataset.fit_video(dataset.read_video(vids / "b.safetensors"), 9, 32, 32, name="b.safetensors")
    try:
        import av  # noqa: F401
    except ImportError:
        (vids / "d.mp4").write_bytes(b"")
        with pytest.raises(dataset.DataError, match="needs PyAV"):
            dataset.read_video(vids / "d.mp4")


def test_the_stream_is_epochs_of_seeded_permutations_and_resumes_mid_epoch():
    n, b = 5, 2
    batches = [dataset.global_batch_ids(p, b, n, seed=3) for p in range(10)]
    flat = [i for batch in batches for i in batch]
    for e in range(4):  # every epoch is a permutation of the clips; epochs differ
        assert sorted(flat[e * n:(e + 1) * n]) == list(range(n))
    assert flat[:n] != flat[n:2 * n]
    assert [dataset.global_batch_ids(p, b, n, seed=4) for p in range(10)] != batches  # the seed picks the order
    assert [dataset.global_batch_ids(p, b, n, seed=3) for p in range(10)] == batches  # a pure function of it


@pytest.fixture(scope="module")
def small_data(wan_teacher_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    gen(wan(wan_teacher_dir), out)
    return out


def test_shard_batches_resume_equals_uninterrupted(wan_teacher_dir, small_data):
    teacher = wan(wan_teacher_dir)
    stream = dataset.open_for(teacher, small_data, 2, seed=1)
    whole = [next(stream) for _ in range(6)]  # 12 clips of 5: crosses two epoch boundaries
    resumed = dataset.open_for(teacher, small_data, 2, seed=1)
    resumed.position = 3  # what the trainer restores from a checkpoint
    for ref in whole[3:]:
        got = next(resumed)
        assert got.prompts == ref.prompts
        torch.testing.assert_close(got.clips, ref.clips, rtol=0, atol=0)
        torch.testing.assert_close(got.text, ref.text, rtol=0, atol=0)
    assert resumed.position == stream.position == 6


@pytest.mark.parametrize("world,accumulation", [(2, 1), (2, 2), (4, 1)])
def test_rank_slices_cover_the_global_batch_exactly_once(wan_teacher_dir, small_data, world, accumulation):
    teacher = wan(wan_teacher_dir)
    full = dataset.open_for(teacher, small_data, 4, seed=2)
    ranks = [dataset.ShardBatches(full.data, teacher, 4, seed=2, rank=r, world=world) for r in range(world)]
    for position in range(4):
        ids = full.ids(position)
        assert [i for s in ranks for i in s.ids(position)] == ids  # in order, each row once
        glob = next(full)
        for r, s in enumerate(ranks):
            local = next(s)
            assert local.rows == (r * 4 // world, (r + 1) * 4 // world, 4)
            # the distributed step sees the same micro-batches and the same global-batch draws
            rep = distributed.Replica(rank=r, world_size=world, accumulation=accumulation)
            for (pa, ga, wa, la), (pb, gb, wb, lb) in zip(rep.micro_batches(local, 7), rep.micro_batches(glob, 7)):
                assert pa.prompts == pb.prompts and pa.rows is None and (wa, la) == (wb, lb)
                torch.testing.assert_close(pa.clips, pb.clips, rtol=0, atol=0)
                assert (ga.lo, ga.hi, ga.total) == (gb.lo, gb.hi, gb.total)
    wrong = Batch(["a"], torch.zeros(1), torch.zeros(1), rows=(0, 1, 4))
    with pytest.raises(ValueError, match="its share is"):
        list(distributed.Replica(rank=1, world_size=4).micro_batches(wrong, 0))


def test_unusable_data_is_a_clear_error(wan_teacher_dir, shapes_teacher_dir, small_data, tmp_path):
    shapes = load_teacher("shapes", shapes_teacher_dir)
    with pytest.raises(dataset.DataError, match="written by teacher 'wan2.1-1.3b'; this run distills 'shapes'"):
        dataset.open_for(shapes, small_data, 2)
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(small_data, bad)
    ix = json.loads((bad / "index.json").read_text())
    (bad / "index.json").write_text(json.dumps({**ix, "latent_shape": [16, 2, 4, 4]}))
    with pytest.raises(dataset.DataError, match="latents have 16 channels"):
        dataset.open_for(wan(wan_teacher_dir), bad, 2)
    (bad / "index.json").write_text(json.dumps({**ix, "complete": False}))
    with pytest.raises(dataset.DataError, match="incomplete"):
        dataset.open_for(wan(wan_teacher_dir), bad, 2)
    with pytest.raises(dataset.DataError, match="no index.json"):
        dataset.open_for(wan(wan_teacher_dir), tmp_path / "nothing", 2)


def test_generate_on_two_processes_writes_the_same_shards(shapes_teacher_dir, tmp_path):
    """`--nproc 2`: rank r writes shards r, r + 2, …; the folder equals a single-process one."""
    import os
    import subprocess
    import sys

    (tmp_path / "p.txt").write_text("a small red circle moving left on a black background\n"
                                    "two large blue squares moving up on a navy background\n")
    args = ["data", "generate", "--teacher-path", str(shapes_teacher_dir), "--prompts", str(tmp_path / "p.txt"),
            "--per-prompt", "3", "--steps", "1", "--shard-size", "2", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "tmd_bench", *args, "--out", str(tmp_path / "two"), "--nproc", "2"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert r.exit_code == 0, r.output
    one, two = (json.loads((tmp_path / d / "index.json").read_text()) for d in ("one", "two"))
    tail = " --steps 1 --solver euler --per-prompt 3 --shard-size 2 --batch-size 8 --seed 0 --dtype float32"  # no --nproc
    assert one.pop("command").endswith("/one" + tail) and two.pop("command").endswith("/two" + tail)
    assert one == two and one["complete"] and len(one["shards"]) == 3
    for s in one["shards"]:
        assert (tmp_path / "one" / s["file"]).read_bytes() == (tmp_path / "two" / s["file"]).read_bytes()
