import json

import pytest
import torch

from tmd_bench import teachers
from tmd_bench.evaluate import EvalConfig, evaluate
from tmd_bench.teachers import TeacherNotFound, load_teacher


def test_unknown_teacher_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown teacher 'wan3'.*shapes, wan2.1-1.3b, wan2.1-14b"):
        load_teacher("wan3")


@pytest.mark.parametrize("name,repo", [("wan2.1-1.3b", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"),
                                       ("wan2.1-14b", "Wan-AI/Wan2.1-T2V-14B-Diffusers")])
def test_missing_wan_files_fail_at_once_naming_repo_and_command(name, repo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(TeacherNotFound) as e:
        load_teacher(name)
    assert repo in str(e.value) and "huggingface-cli download" in str(e.value)


def test_teacher_path_must_be_a_wan_layout(tmp_path):
    with pytest.raises(TeacherNotFound, match="no such folder"):
        load_teacher("wan2.1-1.3b", tmp_path / "nope")
    (tmp_path / "transformer").mkdir()
    with pytest.raises(TeacherNotFound, match="missing transformer/config.json, text_encoder, tokenizer"):
        load_teacher("wan2.1-1.3b", tmp_path)


def test_saved_teacher_round_trips_bit_exactly(shapes_teacher, tmp_path):
    shapes_teacher.save(tmp_path / "t")
    assert not list((tmp_path / "t").rglob("*.bin")) and list((tmp_path / "t").rglob("*.safetensors"))
    loaded = load_teacher("shapes", tmp_path / "t")
    x = torch.randn(2, 3, 8, 24, 24, generator=torch.Generator().manual_seed(0))
    prompts = ["a small red circle moving left on a black background", ""]
    t = torch.tensor([0.3, 0.9])
    with torch.no_grad():
        a = shapes_teacher.velocity(x, t, shapes_teacher.encode_text(prompts))
        b = loaded.velocity(x, t, loaded.encode_text(prompts))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.spec.world == "shapes" and loaded.spec.frames == 8


def test_text_embeddings_are_zero_past_the_prompt(shapes_teacher):
    e = shapes_teacher.encode_text(["a small red circle moving left on a black background", ""])
    assert e.shape == (2, shapes_teacher.spec.max_sequence_length, 16)
    assert e[0, :11].abs().sum(-1).min() > 0  # 10 words + </s>
    assert e[0, 11:].abs().max() == 0 and e[1, 1:].abs().max() == 0


def test_tiny_wan_checkpoint_loads_through_the_wan_path_and_evaluates(wan_teacher_dir, tmp_path):
    teacher = load_teacher("wan2.1-1.3b", wan_teacher_dir)
    assert isinstance(teacher.codec, teachers.WanCodec) and teacher.spec.world is None
    suite = tmp_path / "p.txt"
    suite.write_text("a cat sitting on the grass\n<script>alert(1)</script> a dog running\na red field\n")
    df = evaluate(EvalConfig(teacher="wan2.1-1.3b", teacher_path=str(wan_teacher_dir), steps=[2],
                             methods=["teacher-euler", "teacher-unipc"], prompts=str(suite), frames=5, height=32,
                             width=32, latency_repeats=1, out=str(tmp_path / "run")))
    assert list(df["nfe_counted"]) == [4.0, 4.0] and (df["nfe"] == df["nfe_counted"]).all()
    card = json.loads((tmp_path / "run" / df["run_card"][0]).read_text())
    assert card["teacher"]["name"] == "wan2.1-1.3b" and card["video"] == {"frames": 5, "height": 32, "width": 32, "fps": 16}
    assert card["teacher"]["dtype"] == "float32" and card["precision"]["latents"] == "float32"
    assert "shapes" not in card["metrics"]  # no oracle for a real teacher


def test_weights_hash_changes_with_the_weights(shapes_teacher, tmp_path):
    shapes_teacher.save(tmp_path / "a")
    h1 = teachers.weights_hash(tmp_path / "a" / "transformer")
    with torch.no_grad():
        next(shapes_teacher.transformer.parameters()).add_(1.0)
    shapes_teacher.save(tmp_path / "b")
    assert h1 != teachers.weights_hash(tmp_path / "b" / "transformer")
