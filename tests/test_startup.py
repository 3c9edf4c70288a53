"""Fast failure: `--help`, `teacher list` and the first errors a user meets resolve and validate from
JSON alone — torch, diffusers and transformers are never imported on these paths (the figures are in
benchmarks/startup.py; this checks the property behind them)."""

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import sys
from tmd_bench.cli import app
try:
    app(sys.argv[1:], prog_name="tmd-bench")
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "diffusers", "transformers", "pandas") if m in sys.modules)
print("EXIT", code, "HEAVY", ",".join(heavy) or "-")
"""


def probe(args, tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=60)
    last = r.stdout.strip().splitlines()[-1].split()
    return int(last[1]) if last[1] != "None" else 0, last[3], r.stdout + r.stderr


def no_weights(tmp_path):
    folder = tmp_path / "no-weights"
    (folder / "transformer").mkdir(parents=True)
    (folder / "transformer" / "config.json").write_text(json.dumps({"patch_size": [1, 2, 2]}))
    (folder / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    for sub in ("text_encoder", "tokenizer"):
        (folder / sub).mkdir()
    return folder


@pytest.mark.parametrize("args,code,message", [
    (["--help"], 0, "distill"),
    (["teacher", "list"], 0, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"),
    (["evaluate", "--teacher", "wan2.1-1.3b"], 2, "not in the local Hugging Face cache"),
    (["distill", "--teacher", "wan2.1-14b"], 2, "huggingface-cli download Wan-AI/Wan2.1-T2V-14B-Diffusers"),
    (["evaluate", "--teacher", "shapes", "--height", "40"], 2, "trained size"),
    (["evaluate", "--device", "gpu0"], 2, "is not a device"),
    (["evaluate", "--dtype", "fp8"], 2, "--dtype must be one of"),
    (["data", "generate", "--teacher", "sora", "--prompts", "x.txt", "--out", "o"], 2, "unknown teacher 'sora'"),
])
def test_fast_paths_import_no_model_library(args, code, message, tmp_path):
    exit_code, heavy, output = probe(args, tmp_path)
    assert exit_code == code and message in output, output
    assert heavy == "-", f"{args} imported {heavy}"


def test_a_folder_without_safetensors_is_refused_before_loading(tmp_path):
    exit_code, heavy, output = probe(["evaluate", "--teacher", "wan2.1-1.3b", "--teacher-path", no_weights(tmp_path)],
                                     tmp_path)
    assert exit_code == 2 and "no .safetensors weights" in output and "pickle formats are never loaded" in output
    assert heavy == "-"


def test_sizes_the_vae_cannot_take_fail_before_loading(wan_pipeline_dir, tmp_path):
    exit_code, heavy, output = probe(["evaluate", "--teacher", "wan2.1-1.3b", "--teacher-path", wan_pipeline_dir,
                                      "--frames", "8", "--height", "40", "--width", "32"], tmp_path)
    assert exit_code == 2 and "--frames 8 is not 4k + 1 (nearest: 5 or 9)" in output
    assert "--height 40 is not a multiple of 16 (nearest: 32 or 48)" in output and heavy == "-"
