"""Tiny models built in place: no test downloads anything (HF_HUB_OFFLINE=1 is set by `make test`)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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
