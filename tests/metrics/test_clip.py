"""The CLIP score through the real open_clip code path, on a tiny random model built here."""

import json

import pytest
import torch
from safetensors.torch import save_file
from tmd_bench.metrics import clip

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    folder = tmp_path_factory.mktemp("clip")
    (folder / "tiny-test-clip.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(folder / "tiny-test-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test-clip", pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "w.safetensors"))
    return folder / "w.safetensors"


def test_clip_score_is_frame_averaged_clamped_cosine(tiny_clip):
    scorer = clip.load_clip("tiny-test-clip", tiny_clip)
    videos = torch.rand(2, 3, 4, 24, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    prompts = ["a red circle", "two blue squares"]
    s = scorer.score(videos, prompts)
    cos = torch.einsum("bfd,bd->bf", scorer.frame_features(videos), scorer.text_features(prompts))
    torch.testing.assert_close(s, (100 * cos).clamp_min(0).mean(1))
    assert s.shape == (2,) and (s >= 0).all() and (s <= 100).all()
    assert scorer.weights_sha256 == clip.file_hash(tiny_clip)


def test_missing_and_unsafe_weights_are_clear_errors(tmp_path, monkeypatch, tiny_clip):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(clip.ClipWeightsNotFound, match="huggingface-cli download .*open_clip_model.safetensors"):
        clip.load_clip("ViT-B-32")
    with pytest.raises(clip.ClipWeightsNotFound, match="no such file"):
        clip.load_clip("ViT-B-32", tmp_path / "nope.safetensors")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="only .safetensors"):
        clip.load_clip("ViT-B-32", tmp_path / "w.bin")
    with pytest.raises(ValueError, match="does not fit open_clip ViT-B-32"):
        clip.load_clip("ViT-B-32", tiny_clip)
    with pytest.raises(ValueError, match="unknown open_clip model"):
        clip.load_clip("ViT-Z-99", tiny_clip)


def test_evaluate_with_clip_and_fidelity_metrics(tiny_clip, wan_teacher_dir, tmp_path):
    import json as _json

    import pandas as pd
    from typer.testing import CliRunner

    from tmd_bench.cli import app

    suite = tmp_path / "p.txt"
    suite.write_text("a cat on the grass\na dog running in a field\na red field\n")
    args = ["evaluate", "--teacher", "wan2.1-1.3b", "--teacher-path", str(wan_teacher_dir), "--prompts", str(suite),
            "--frames", "5", "--height", "32", "--width", "32", "--latency-repeats", "1", "--steps", "1,50",
            "--metrics", "clip,fidelity", "--clip-model", "tiny-test-clip", "--clip-weights", str(tiny_clip),
            "--out", str(tmp_path / "run")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    assert df["clip_score"].between(0, 100).all()
    ref = df[df["steps"] == 50].iloc[0]  # the teacher's own 50-step samples are the reference
    assert ref["psnr_teacher"] == 100.0 and ref["ssim_teacher"] == pytest.approx(1.0)
    assert ref["fd_clip_teacher"] == pytest.approx(0.0, abs=1e-6)
    one = df[df["steps"] == 1].iloc[0]
    assert one["psnr_teacher"] < 100 and one["fd_clip_teacher"] > 0
    card = _json.loads((tmp_path / "run" / one["run_card"]).read_text())
    assert card["metrics"]["clip"]["weights_sha256"] == clip.file_hash(tiny_clip)
    r = CliRunner().invoke(app, args[:-2] + ["--metrics", "shapes", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "is not one" in r.output
    r = CliRunner().invoke(app, args[:-2] + ["--metrics", "fvd", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown metric 'fvd'" in r.output


def test_vbench_lite_dimensions(tiny_clip):
    from tmd_bench.metrics import vbench_lite

    scorer = clip.load_clip("tiny-test-clip", tiny_clip)
    still = torch.zeros(2, 3, 6, 24, 24).uniform_(-1, 1, generator=torch.Generator().manual_seed(0))[:, :, :1]
    still = still.expand(-1, -1, 6, -1, -1).contiguous()  # one frame repeated: perfectly static
    dims = vbench_lite.vbench_lite(still, scorer)
    assert dims["vb_temporal_flickering"] == 1.0 and dims["vb_motion_smoothness"] == 1.0
    assert dims["vb_dynamic_degree"] == 0.0 and dims["vb_background_consistency"] == pytest.approx(1.0, abs=1e-5)
    noise = torch.rand(2, 3, 6, 24, 24, generator=torch.Generator().manual_seed(1)) * 2 - 1
    dyn = vbench_lite.vbench_lite(noise, scorer)
    assert dyn["vb_dynamic_degree"] == 1.0 and dyn["vb_temporal_flickering"] < 0.8
    # a linear fade is perfectly smooth to the linear-interpolation substitute, but not static
    fade = torch.linspace(-1, 1, 6).view(1, 1, 6, 1, 1).expand(1, 3, 6, 24, 24)
    assert vbench_lite.motion_smoothness(fade).item() == pytest.approx(1.0, abs=2 / 255)
    assert vbench_lite.temporal_flickering(fade).item() < 1.0


def open_clip_reference(scorer, videos, prompts):
    """The score through open_clip's own eval transform on PIL frames (uint8, as VBench and torchmetrics
    read video frames): Resize(shortest side) → CenterCrop → ToTensor → Normalize, mean/std of the release."""
    import open_clip
    from PIL import Image

    pp = scorer.preprocess
    size = scorer.model.visual.image_size
    transform = open_clip.image_transform(size, is_train=False, mean=pp["mean"], std=pp["std"],
                                          resize_mode=pp["resize_mode"], interpolation=pp["interpolation"])
    b, _, f = videos.shape[:3]
    u8 = ((videos + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    x = torch.stack([transform(Image.fromarray(u8[i, j])) for i in range(b) for j in range(f)])
    with torch.no_grad():
        feats = torch.nn.functional.normalize(scorer.model.encode_image(x).float(), dim=-1).view(b, f, -1)
    cos = torch.einsum("bfd,bd->bf", feats, scorer.text_features(prompts))
    return (100 * cos).clamp_min(0).mean(1)


@pytest.mark.parametrize("h,w", [(32, 32), (30, 52), (52, 30)])
def test_clip_score_equals_open_clips_own_preprocessing(tiny_clip, h, w):
    """Square and non-square frames: shortest-side resize + centre crop as open_clip preprocesses (a squash
    to a square, the old behaviour, is far off on non-square frames with content at the borders)."""
    scorer = clip.load_clip("tiny-test-clip", tiny_clip)
    g = torch.Generator().manual_seed(3)
    videos = torch.rand(3, 3, 2, h, w, generator=g) * 0.4 - 0.2
    videos[..., : w // 4] = 1.0  # bright borders that a centre crop of a wide frame removes
    videos[..., : h // 4, :] = -1.0
    prompts = ["a red circle", "two blue squares", "a green triangle"]
    ours, ref = scorer.score(videos, prompts), open_clip_reference(scorer, videos, prompts)
    assert (ours - ref).abs().max() < 0.25, (ours, ref)
    if h != w:
        squash = clip.CLIPScorer(scorer.model, scorer.tokenizer, scorer.name, scorer.weights, scorer.weights_sha256,
                                 {**scorer.preprocess, "resize_mode": "squash"})
        assert (squash.score(videos, prompts) - ref).abs().max() > 4 * (ours - ref).abs().max()


def test_mean_and_std_skipped_would_be_seen(tiny_clip):
    scorer = clip.load_clip("tiny-test-clip", tiny_clip)
    videos = torch.rand(2, 3, 2, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    prompts = ["a red circle", "two blue squares"]
    unnormalised = clip.CLIPScorer(scorer.model, scorer.tokenizer, scorer.name, scorer.weights, scorer.weights_sha256,
                                   {**scorer.preprocess, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)})
    ref = open_clip_reference(scorer, videos, prompts)
    assert (scorer.score(videos, prompts) - ref).abs().max() < 0.25
    assert (unnormalised.score(videos, prompts) - ref).abs().max() > 1.0


def test_each_release_brings_its_own_preprocessing():
    assert clip.preprocess_config("ViT-L-14")["mean"] == (0.5, 0.5, 0.5)  # laion2b_s32b_b82k
    assert clip.preprocess_config("ViT-L-14")["release"] == "laion2b_s32b_b82k"
    assert clip.preprocess_config("ViT-B-32")["mean"] == clip.OPENAI_MEAN
    assert clip.preprocess_config("ViT-L-14", "openai")["mean"] == clip.OPENAI_MEAN


def test_clips_outside_their_range_are_refused_and_unit_range_is_flagged(tiny_clip):
    scorer = clip.load_clip("tiny-test-clip", tiny_clip)
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\]"):
        scorer.score(torch.full((1, 3, 2, 32, 32), 2.0), ["a red circle"])
    with pytest.warns(UserWarning, match="value_range"):
        scorer.score(torch.rand(1, 3, 2, 32, 32), ["a red circle"])
    unit = torch.rand(1, 3, 2, 32, 32, generator=torch.Generator().manual_seed(5))
    a = scorer.frame_features(unit, value_range=(0.0, 1.0))
    torch.testing.assert_close(a, scorer.frame_features(unit * 2 - 1))


def test_clip_score_equals_torchmetrics_clip_score_on_the_same_model(tiny_clip):
    """torchmetrics' `clip_score` with the same tiny open_clip network, its images preprocessed by
    transformers' own CLIPImageProcessor (shortest-side resize, centre crop, the release's mean/std):
    frame by frame, on square and non-square frames, our score equals it."""
    from torchmetrics.functional.multimodal import clip_score as tm_clip_score
    from transformers import CLIPImageProcessor
    from transformers.image_utils import PILImageResampling

    scorer = clip.load_clip("tiny-test-clip", tiny_clip)
    pp, size = scorer.preprocess, scorer.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    image_processor = CLIPImageProcessor(do_resize=True, size={"shortest_edge": size}, resample=PILImageResampling.BICUBIC,
                                do_center_crop=True, crop_size={"height": size, "width": size}, do_rescale=True,
                                rescale_factor=1 / 255, do_normalize=True, image_mean=list(pp["mean"]),
                                image_std=list(pp["std"]), do_convert_rgb=True)

    class Processor:  # torchmetrics' processor interface: transformers for images, open_clip's tokenizer for text
        def __call__(self, text=None, images=None, return_tensors="pt", padding=True):
            if images is not None:
                return {"pixel_values": image_processor(images=images, return_tensors="pt")["pixel_values"]}
            ids = scorer.tokenizer(text)
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = scorer.model
            self.config = object()

        def get_image_features(self, pixel_values):
            return self.net.encode_image(pixel_values.float())

        def get_text_features(self, input_ids, attention_mask=None):
            return self.net.encode_text(input_ids)

    prompts = ["a red circle", "two blue squares"]
    squash = clip.CLIPScorer(scorer.model, scorer.tokenizer, scorer.name, scorer.weights, scorer.weights_sha256,
                             {**scorer.preprocess, "resize_mode": "squash"})
    errors, squash_errors = [], []
    for h, w in ((32, 32), (30, 52), (64, 40)):
        g = torch.Generator().manual_seed(h * w)
        coarse = torch.rand(4, 3, 5, 7, generator=g) * 2 - 1  # smooth content: resamplers agree on it
        videos = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        videos = videos.view(2, 2, 3, h, w).transpose(1, 2).contiguous()
        if w > h:  # content at the borders: a squash would see it, a centre crop does not
            videos[..., : (w - h) // 2 - 1], videos[..., w - (w - h) // 2 + 1:] = 0.9, -0.9
        elif h > w:
            videos[..., : (h - w) // 2 - 1, :], videos[..., h - (h - w) // 2 + 1:, :] = 0.9, -0.9
        ours = 100 * torch.einsum("bfd,bd->bf", scorer.frame_features(videos), scorer.text_features(prompts))
        other = 100 * torch.einsum("bfd,bd->bf", squash.frame_features(videos), squash.text_features(prompts))
        for i in range(2):
            for f in range(2):
                frame = ((videos[i, :, f] + 1) / 2 * 255).round().to(torch.uint8)
                ref = float(tm_clip_score(frame, prompts[i], model_name_or_path=lambda: (Model(), Processor())))
                errors.append(abs(ref - max(float(ours[i, f]), 0.0)))
                squash_errors.append(abs(ref - max(float(other[i, f]), 0.0)))
                if h == w:  # square frames: the same pixels reach the network
                    assert errors[-1] < 0.3, (h, w, i, f, errors[-1])
    # non-square: transformers crops at ⌊(W − S)/2⌋, torchvision/open_clip at round((W − S)/2) — one pixel, and
    # PIL's and torch's bicubic differ — so equal to within a point; a squash is several times further off
    assert max(errors) < 1.0 and sum(errors) < 0.25 * sum(squash_errors), (errors, squash_errors)


def test_default_release_weights_are_found_in_the_local_hub_cache(tmp_path, monkeypatch):
    """``load_clip(name)`` without a path reads the default release from the Hugging Face cache laid out
    as ``huggingface_hub`` lays it out (refs/main → snapshots/<commit>/); nothing is downloaded."""
    import huggingface_hub.constants
    import open_clip

    repo = open_clip.get_pretrained_cfg("ViT-B-32", clip.DEFAULT_RELEASE["ViT-B-32"])["hf_hub"].rstrip("/")
    root = tmp_path / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("0123abcd")
    weights = root / "snapshots" / "0123abcd" / clip.WEIGHT_FILES[0]
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"not read here")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert clip._hub_weights("ViT-B-32") == weights
    with pytest.raises(clip.ClipWeightsNotFound, match="no default open_clip release known for 'RN50'; pass --clip-weights"):
        clip._hub_weights("RN50")
