"""Tiny models built in place: no test downloads anything (HF_HUB_OFFLINE=1 is set by `make test`)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one pytest-xdist worker per core: one thread each
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))  # and for the processes a test launches
    torch.set_num_threads(_threads)

from tmd_bench import world  # noqa: E402
from tmd_bench.teachers import SHAPES_TEXT_CONFIG, TEACHERS, build_teacher  # noqa: E402

TINY_TRANSFORMER = dict(
    patch_size=(2, 4, 4), num_attention_heads=2, attention_head_dim=8, in_channels=3, out_channels=3,
    text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64,
)
TINY_TEXT = {**SHAPES_TEXT_CONFIG, "d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 1, "num_heads": 2}


def tiny_shapes_teacher(seed: int = 0):
    """A random Shapes-world teacher of the real classes, a few thousand parameters."""
    return build_teacher(TEACHERS["shapes"], TINY_TRANSFORMER, TINY_TEXT, world.vocabulary(), seed)


@pytest.fixture
def shapes_teacher():
    return tiny_shapes_teacher()


@pytest.fixture(scope="session")
def shapes_teacher_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-shapes-teacher")
    tiny_shapes_teacher().save(folder)
    return folder


@pytest.fixture(scope="session")
def wan_teacher_dir(tmp_path_factory):
    """A tiny random Wan2.1-style checkpoint in the diffusers layout, VAE included."""
    from diffusers import AutoencoderKLWan

    folder = tmp_path_factory.mktemp("tiny-wan")
    words = "a cat dog sitting running on the grass red blue script alert 1 in field".split()
    spec = replace(TEACHERS["wan2.1-1.3b"], max_sequence_length=12, negative_prompt="blurry")
    cfg = {**TINY_TRANSFORMER, "patch_size": (1, 2, 2), "in_channels": 4, "out_channels": 4}
    teacher = build_teacher(spec, cfg, TINY_TEXT, words, seed=1)
    teacher.save(folder)
    (folder / "tmd_bench.json").unlink()  # a real Wan checkpoint has no tmd-bench metadata
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                           latents_mean=[0.1, -0.2, 0.0, 0.3], latents_std=[1.5, 0.5, 1.0, 2.0])
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    return folder


WAN_WORDS = ("a cat dog sitting running on the grass red blue in field & amp ; bright tones static blurry fox "
             "snowy forest through").split()


def umt5_style_tokenizer(words=WAN_WORDS):
    """A real T5/UMT5-style tokenizer (SentencePiece Unigram), built offline: tmd_bench.teachers'."""
    from tmd_bench.teachers import umt5_style_tokenizer as build

    return build(list(words))


def chromium() -> str:
    """Debian's chromium for the report's browser tests (`make test` installs it)."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("TMD_BENCH_SKIP_BROWSER"):
            pytest.skip("TMD_BENCH_SKIP_BROWSER is set")
        pytest.fail("the report's browser test needs Debian's chromium: `make test` installs it "
                    "(apt-get install chromium), or set TMD_BENCH_SKIP_BROWSER=1 to skip")
    return path


def _tiny_text(seed: int):
    """A UMT5-style tokenizer and a tiny UMT5EncoderModel (transformers' classes), seeded."""
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = umt5_style_tokenizer()
    torch.manual_seed(seed)
    return tokenizer, UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).eval()


def _tiny_wan_transformer(channels: int, num_layers: int):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=channels,
        out_channels=channels, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64)


def build_wan_pipeline(folder=None, seed: int = 0, flow_shift: float = 3.0, z_dim: int = 16, num_layers: int = 4):
    """A tiny Wan2.1 checkpoint made the way a real one is: diffusers' ``WanPipeline`` of diffusers' and
    transformers' own classes (WanTransformer3DModel, AutoencoderKLWan with 16 latent channels and Wan's
    default latent statistics, UMT5EncoderModel, a UMT5-style tokenizer, UniPC in flow mode as the Wan2.1
    Diffusers checkpoints ship it), written with ``save_pretrained``. No tmd-bench helper is involved."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    tokenizer, text_encoder = _tiny_text(seed)
    transformer = _tiny_wan_transformer(z_dim, num_layers)
    vae = AutoencoderKLWan(base_dim=8, z_dim=z_dim, dim_mult=[1, 2, 2, 2], num_res_blocks=1)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=flow_shift)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                       scheduler=scheduler)
    if folder is not None:
        pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


@pytest.fixture(scope="session")
def wan_pipeline_dir(tmp_path_factory):
    """A tiny Wan2.1 checkpoint written by ``WanPipeline(...).save_pretrained`` (see build_wan_pipeline).
    Sample it at 5 frames of 32×32 (latent 16×2×4×4)."""
    folder = tmp_path_factory.mktemp("wan-pipeline")
    build_wan_pipeline(folder)
    return folder


def blur_clip(clip, sigma):
    """A separable Gaussian blur of σ px over the last two dimensions (replicate padding): the degraded
    render the quality and oracle tests compare against."""
    import math

    import torch
    import torch.nn.functional as F

    r = int(math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-x**2 / (2 * sigma**2))
    k = k / k.sum()
    h, w = clip.shape[-2:]
    flat = clip.reshape(-1, 1, h, w)
    flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return flat.reshape(clip.shape)


def build_wan22_pipeline(folder=None, kind: str = "ti2v", seed: int = 0):
    """A tiny Wan2.2 checkpoint made the way the real ones are: diffusers' ``WanPipeline`` of diffusers'
    and transformers' own classes, written with ``save_pretrained``.

    - ``ti2v`` (TI2V-5B's shape): ``expand_timesteps=True``, 48 latent channels, the Wan2.2 VAE layout
      (residual, 2×2 pixel patching, 16× spatial and 4× temporal compression), UniPC with shift 5.
    - ``a14b``: two experts, ``transformer`` (high noise) and ``transformer_2`` (low noise), switched at
      ``boundary_ratio`` 0.875, the Wan2.1 VAE (16 channels), UniPC with shift 12.
    """
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    tokenizer, text_encoder = _tiny_text(seed)
    z = 48 if kind == "ti2v" else 16

    def transformer():
        return _tiny_wan_transformer(z, 4)

    if kind == "ti2v":
        g = torch.Generator().manual_seed(seed + 1)
        vae = AutoencoderKLWan(base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                               is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                               scale_factor_spatial=16, scale_factor_temporal=4,
                               latents_mean=(torch.randn(48, generator=g) * 0.5).tolist(),
                               latents_std=(torch.rand(48, generator=g) + 0.5).tolist())
        pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer(), vae=vae,
                           scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                             num_train_timesteps=1000, flow_shift=5.0),
                           expand_timesteps=True)
    else:
        vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1)
        pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer(), vae=vae,
                           scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                             num_train_timesteps=1000, flow_shift=12.0),
                           transformer_2=transformer(), boundary_ratio=0.875)
    if folder is not None:
        pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


@pytest.fixture(scope="session")
def wan22_ti2v_dir(tmp_path_factory):
    """Tiny TI2V-5B-shaped checkpoint; sample it at 5 frames of 64×64 (latent 48×2×4×4)."""
    folder = tmp_path_factory.mktemp("wan22-ti2v")
    build_wan22_pipeline(folder, "ti2v")
    return folder


@pytest.fixture(scope="session")
def wan22_a14b_dir(tmp_path_factory):
    """Tiny A14B-shaped checkpoint (two experts); sample it at 5 frames of 32×32 (latent 16×2×4×4)."""
    folder = tmp_path_factory.mktemp("wan22-a14b")
    build_wan22_pipeline(folder, "a14b")
    return folder
