"""The prepared GPU check: the whole tmd-bench path at Wan2.1-1.3B size on one GPU, in ≤ 8 minutes.

    python benchmarks/gpu_check.py --out runs/gpu-check          # one H100/H200, ≈ 8 min
    python benchmarks/gpu_check.py --tiny --out /tmp/gpu-check   # any CPU, well under a minute

It writes a random-weight Wan2.1-1.3B teacher folder in the diffusers layout (the exact
``WAN_TRANSFORMER_CONFIGS["wan2.1-1.3b"]`` transformer, the Wan2.1 VAE, UniPC in flow mode as the
Wan2.1 Diffusers checkpoints ship it, and a one-layer UMT5 stand-in for UMT5-XXL with
``d_model = 4096``), then drives the real command line, each step a ``python -m tmd_bench …``
subprocess (isolated memory), at 81×480×832 in bfloat16:

1. ``bench latency`` (teacher 50 steps × CFG, DMD2-v 4/2/1, TMD M2-N2H5 and M1-N2H5), eager, and
   compiled (``--compile``) last, as far as the time budget allows;
2. ``data generate`` of one clip (the training data of step 3);
3. five iterations each of TMD stage 1, TMD stage 2 and DMD2-v at full size with gradient
   checkpointing: seconds per iteration and peak GiB (``torch.cuda.max_memory_allocated``);
4. ``evaluate --steps 2`` of the two students just trained.

The CLI records neither per-iteration times nor peak memory of training, so each step runs the
CLI's own ``main()`` under a small wrapper (``--_cli``) that times ``method.step`` (synchronised),
reads the peak after each iteration, and times checkpoint writes; nothing else is changed.

It prints a markdown table beside the H100 anchors (device/wan_anchor.py, 2026-11-27) with the GPU
name, torch/diffusers versions and the date, and writes ``gpu_check.json`` and ``gpu_check.md`` (and
each step's log and results.csv) into ``--out``. Exit status 0 when every step it had to run
succeeded; 1 when one failed, timed out, or did not fit the budget (the compiled latency pass is
optional: it is narrowed to the students, or skipped, when the budget is short, and the output says
so; ``--only latency-compiled`` runs it alone).

``--tiny`` runs the same steps with the same code and commands, only with tiny configs (transformer,
VAE, text encoder), 5 frames of 32×32, on the CPU in float32, no compile: the test suite runs it.
There the CLI steps are forked from one warm interpreter (``--launcher fork``: torch, diffusers and
transformers imported once, ~15 s a step saved on two cores); each is still its own process and session
with its own log, exit status and time guard. The GPU run starts every step in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEACHER = "wan2.1-1.3b"
ITERATIONS = 5  # per training stage; DMD2-v updates the student on every 5th iteration, so 5 covers both kinds
HEAD_BLOCKS = 5
STEP_NAMES = ("build", "latency-eager", "data-generate", "tmd-stage1", "tmd-stage2", "dmd2", "evaluate",
              "latency-compiled")
DEPENDS = {"tmd-stage1": ("data-generate",), "tmd-stage2": ("tmd-stage1",), "dmd2": ("data-generate",)}

# Anchors: Wan2.1 shapes on one H100 (shared anchors.md, device/wan_anchor.py and attn_compile.py, 2026-11-27):
# random weights, exact configs, diffusers 0.42.1, torch 2.11 + CUDA 13, bf16, PyTorch SDPA, batch 1.
ANCHORS = {
    "source": "H100, 2026-11-27: device/wan_anchor.py + attn_compile.py (random weights, exact Wan2.1 configs, "
              "diffusers 0.42.1, torch 2.11 + CUDA 13, bf16, PyTorch SDPA, batch 1, median of 5)",
    "forward_s": 0.615,  # 1.3B forward at 480×832×81, B = 1
    "cfg_step_s": 1.227,  # B = 2
    "compiled_forward_s": 0.521,  # torch.compile (default mode), after a 92 s first call
    "vae_decode_fp32_s": 3.24,
    "vae_decode_bf16_s": 2.07,
    "fwd_bwd_ckpt_s": 2.68,  # forward + backward with gradient checkpointing, B = 1
    "fwd_bwd_ckpt_peak_gib": 12.3,
    "teacher_50_cfg_s": 61.4,  # transformer time; 64.6 s end to end with the fp32 VAE
    "teacher_50_cfg_total_s": 64.6,
}

# Full size: Wan2.1-1.3B at 480p. Tiny: same architecture family, a few thousand parameters.
FULL = dict(frames=81, height=480, width=832, dtype="bfloat16", device="cuda",
            text=dict(d_model=4096, d_kv=64, num_heads=8, d_ff=256, num_layers=1),
            vae={})  # AutoencoderKLWan() defaults = the Wan2.1 VAE config
TINY = dict(frames=5, height=32, width=32, dtype="float32", device="cpu",
            text=dict(d_model=32, d_kv=8, num_heads=2, d_ff=32, num_layers=1),
            vae=dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1),
            transformer=dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16,
                             out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=8,
                             cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024))

# Full-size planning figures (H100, from the anchors): seconds a step needs to be started, and its cap.
PLAN_S = {"build": (20, 150), "latency-eager": (100, 220), "data-generate": (30, 120), "tmd-stage1": (45, 150),
          "tmd-stage2": (50, 180), "dmd2": (50, 180), "evaluate": (35, 150)}
TINY_PLAN_S = (10, 240)  # every step in --tiny
# What a step's interpreter spends its first seconds importing (≈ 15 s on two busy cores, 5 s of it
# torch._dynamo through diffusers): `--launcher fork` imports them once, in the fork server.
WARM_IMPORTS = ("torch", "diffusers", "diffusers.models.transformers.transformer_wan",
                "diffusers.models.autoencoders.autoencoder_kl_wan", "diffusers.schedulers", "transformers",
                "transformers.models.umt5.modeling_umt5", "tmd_bench.cli", "tmd_bench.harness",
                "tmd_bench.distill.trainer")
COMPILE_ALLOWANCE_S = {"full": 90, "tiny": 60}  # compiling the blocks (regional), on top of 2 × the eager runs
RESERVE_S = 10  # kept for writing the outputs

PROMPT = "a red fox running through a snowy forest"
WORDS = ("a an the of in on at to with and through over under into near from by is are "
         "red green blue yellow white black orange purple brown gray small large big tiny "
         "fox dog cat bird horse car boat person man woman child city street forest snowy snow "
         "river sea beach mountain sky cloud sun moon night day light water tree flower field "
         "running walking flying swimming jumping driving moving sitting standing dancing slowly fast "
         "camera view close up shot video scene").split()


# ---------------------------------------------------------------------------------------------
# Workers (subprocesses): building the checkpoint, and the CLI with timing hooks


def t5_style_tokenizer(words=WORDS):
    from tmd_bench.teachers import umt5_style_tokenizer

    return umt5_style_tokenizer(list(words))


def build_checkpoint(folder: Path, mode: str, seed: int = 0) -> dict:
    """Write the random-weight teacher with diffusers' and transformers' own classes and
    ``WanPipeline(...).save_pretrained``; returns the environment (GPU, versions)."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from tmd_bench.teachers import WAN_TRANSFORMER_CONFIGS

    size = FULL if mode == "full" else TINY
    if size["device"] == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: the full check needs a CUDA GPU and torch.cuda.is_available() is False on "
                         "this machine; run `python benchmarks/gpu_check.py --tiny` on a CPU")
    tcfg = WAN_TRANSFORMER_CONFIGS[TEACHER] if mode == "full" else size["transformer"]
    tokenizer = t5_style_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), relative_attention_num_buckets=32, relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        **size["text"])).eval()
    assert text_encoder.config.d_model == tcfg["text_dim"]
    torch.manual_seed(seed + 1)
    with torch.device(size["device"]):  # random init of 1.3B parameters is much faster on the GPU
        transformer = WanTransformer3DModel(**tcfg).to(getattr(torch, size["dtype"])).eval()
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLWan(**size["vae"]).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=3.0)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                       scheduler=scheduler)
    pipe.save_pretrained(folder, safe_serialization=True)
    # labels the rows random_weights=True; names no sampling defaults (the checkpoint's scheduler/ does)
    (folder / "tmd_bench.json").write_text(json.dumps({
        "random_weights": True, "built_by": "benchmarks/gpu_check.py", "mode": mode, "seed": seed,
        "text_encoder": f"UMT5 stand-in: {size['text']} (not UMT5-XXL)"}, indent=2))
    from importlib.metadata import version

    return {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "gpu_memory_gib": (torch.cuda.get_device_properties(0).total_memory / 2**30
                           if torch.cuda.is_available() else None),
        "cuda": torch.version.cuda, "torch": torch.__version__, "diffusers": version("diffusers"),
        "transformers": version("transformers"), "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "params_transformer_M": round(sum(p.numel() for p in transformer.parameters()) / 1e6, 2),
        "params_text_encoder_M": round(sum(p.numel() for p in text_encoder.parameters()) / 1e6, 2),
        "params_vae_M": round(sum(p.numel() for p in vae.parameters()) / 1e6, 2),
    }


def _device_of(argv: list[str]) -> str:
    return argv[argv.index("--device") + 1] if "--device" in argv else "auto"


def cli_worker(record_path: str, latency_rows: str, argv: list[str]) -> None:
    """Run ``tmd-bench <argv>`` (the CLI's own ``main``) with measuring hooks; write what they saw."""
    import atexit
    import resource

    import torch

    cuda = _device_of(argv).startswith("cuda") or (_device_of(argv) == "auto" and torch.cuda.is_available())
    record: dict = {"argv": argv, "train": [], "saves": [], "data_generate": None}

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def peak_gib():
        if cuda:
            return torch.cuda.max_memory_allocated() / 2**30
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB

    def dump():
        record["peak_kind"] = "cuda_max_allocated" if cuda else "process_peak_rss"
        record["process_peak_gib"] = peak_gib()
        Path(record_path).write_text(json.dumps(record, indent=1))

    atexit.register(dump)

    from tmd_bench import checkpoint, dataset
    from tmd_bench.distill import trainer
    from tmd_bench.distill.dmd import DMDStep

    real_train, real_save, real_generate = trainer.train, checkpoint.save_checkpoint, dataset.generate

    def train(method, data, out, iterations, **kw):
        # DMD2-v steps (TMD stage 2, DMD2-v) alternate critics and student; the others update one network
        every = method.config.student_every if isinstance(method, DMDStep) else None
        entry = {"method": method.name, "student_every": every, "iterations": [], "out": str(out)}
        record["train"].append(entry)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            entry["resident_gib"] = torch.cuda.memory_allocated() / 2**30  # networks built, no optimiser state yet
        real_step = method.step

        def step(batch, iteration):
            sync()
            t0 = time.perf_counter()
            losses = real_step(batch, iteration)
            sync()
            kind = "student" if every is None or iteration % every == every - 1 else "critics"
            entry["iterations"].append({"iteration": iteration, "s": time.perf_counter() - t0, "kind": kind,
                                        "peak_gib": peak_gib()})
            return losses

        method.step = step
        t0 = time.perf_counter()
        try:
            return real_train(method, data, out, iterations, **kw)
        finally:
            entry["train_wall_s"] = time.perf_counter() - t0

    def save_checkpoint(folder, tensors, meta):
        t0 = time.perf_counter()
        name = real_save(folder, tensors, meta)
        size = checkpoint.tensors_path(folder).stat().st_size
        record["saves"].append({"folder": str(folder), "s": time.perf_counter() - t0, "gib": size / 2**30})
        return name

    def generate(*args, **kwargs):
        sync()
        t0 = time.perf_counter()
        index = real_generate(*args, **kwargs)
        sync()
        record["data_generate"] = {"s": time.perf_counter() - t0, "clips": index["count"],
                                   "steps": kwargs.get("steps")}
        return index

    trainer.train, checkpoint.save_checkpoint, dataset.generate = train, save_checkpoint, generate
    if latency_rows == "students":  # `bench latency` has no row option: leave out the 50-step teacher row
        from tmd_bench import bench

        real_bench = bench.bench_latency
        plan = tuple(p for p in bench.LATENCY_PLAN if not p[0].startswith("teacher"))
        bench.bench_latency = lambda teacher, **kw: real_bench(teacher, plan=plan, **kw)
    sys.argv = ["tmd-bench", *argv]
    from tmd_bench.cli import main

    main()


# ---------------------------------------------------------------------------------------------
# The orchestrator (no torch in this process)


class Check:
    def __init__(self, args):
        self.args = args
        self.mode = "tiny" if args.tiny else "full"
        self.size = TINY if args.tiny else FULL
        self.out = Path(args.out)
        self.logs = self.out / "logs"
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.teacher_dir = self.work / "teacher"
        self._ctx = None  # --launcher fork: the fork server's context, made at the first forked step
        self.t0 = time.perf_counter()
        self.steps: dict[str, dict] = {}
        self.result: dict = {
            "mode": self.mode, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "teacher": TEACHER, "budget_s": args.budget,
            "video": {k: self.size[k] for k in ("frames", "height", "width")},
            "dtype": self.size["dtype"], "device": self.size["device"], "environment": {},
            "steps": [], "latency": [], "training": [], "data_generate": None, "evaluate": [],
            "anchors": ANCHORS, "notes": [],
        }

    # --- timing -------------------------------------------------------------------------------
    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.t0)

    def limits(self, name: str) -> tuple[float, float]:
        return TINY_PLAN_S if self.mode == "tiny" else PLAN_S[name]

    # --- running one step ---------------------------------------------------------------------
    def common(self, frames=True) -> list[str]:
        s = self.size
        args = ["--teacher", TEACHER, "--teacher-path", str(self.teacher_dir), "--device", s["device"],
                "--dtype", s["dtype"]]
        if frames:
            args += ["--frames", str(s["frames"]), "--height", str(s["height"]), "--width", str(s["width"])]
        return args

    def run(self, name: str, worker: list[str], cap: float, need: float, record: Path | None = None,
            describe: str | None = None, warm: bool = False) -> dict:
        """Run ``gpu_check.py <worker…>`` as step ``name``: a fresh interpreter, or (``warm``, with
        ``--launcher fork``) a fork of the warm interpreter that has torch, diffusers and transformers
        imported; either way its own process group, log, exit status and time guard."""
        cmd = [sys.executable, str(Path(__file__).resolve()), *worker]
        step = {"name": name, "status": None, "wall_s": None, "command": describe or shlex.join(cmd),
                "log": str(self.logs / f"{name}.log")}
        self.steps[name] = step
        self.result["steps"].append(step)
        left = self.left() - RESERVE_S
        if left < need:
            step.update(status="skipped", reason=f"budget: {left:.0f} s left, this step needs about {need:.0f} s")
            print(f"[gpu-check] {name}: SKIPPED ({step['reason']})", flush=True)
            return step
        timeout = min(cap, left)
        print(f"[gpu-check] {name}: running (time guard {timeout:.0f} s) …", flush=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
        env.setdefault("HF_HUB_OFFLINE", "1")
        if self.args.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.args.threads)
        forked = warm and self.args.launcher == "fork"
        step["launcher"] = "fork" if forked else "spawn"
        t0 = time.perf_counter()
        with open(step["log"], "w") as log:
            log.write(f"$ {step['command']}\n")
            log.flush()
            if forked:
                proc = _Forked(self._warm(env), worker, step["log"], env)
            else:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _stop(proc)
                rc = None
            except KeyboardInterrupt:
                _stop(proc)
                raise
        step["wall_s"] = round(time.perf_counter() - t0, 2)
        if rc is None:
            step.update(status="timeout", reason=f"stopped by its time guard after {timeout:.0f} s")
        elif rc != 0:
            step.update(status="failed", reason=f"exit status {rc}", returncode=rc)
        else:
            step["status"] = "ok"
        if record is not None and record.is_file():
            step["record"] = json.loads(record.read_text())
        if step["status"] != "ok":
            print(f"[gpu-check] {name}: {step['status'].upper()} ({step['reason']}); log: {step['log']}\n"
                  + _tail(Path(step["log"])), file=sys.stderr, flush=True)
        else:
            print(f"[gpu-check] {name}: ok in {step['wall_s']:.1f} s", flush=True)
        return step

    def cli(self, name: str, argv: list[str], latency_rows: str = "all", need=None, cap=None) -> dict:
        record = self.work / "records" / f"{name}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        worker = ["--_cli", str(record), latency_rows, "--", *argv]
        default_need, default_cap = self.limits(name) if name in PLAN_S or self.mode == "tiny" else (0, 600)
        describe = "python -m tmd_bench " + shlex.join(argv) + (
            "  [rows: students only]" if latency_rows == "students" else "")
        return self.run(name, worker, cap or default_cap, default_need if need is None else need, record, describe,
                        warm=True)

    def _warm(self, env: dict):
        """The fork server of ``--launcher fork``, started at the first forked step: one interpreter that
        imports the heavy modules once (``WARM_IMPORTS``; no CUDA call) and forks one child per step."""
        if self._ctx is None:
            import multiprocessing

            os.environ.update(env)  # the server, and so every child, starts with the steps' environment
            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload(["__main__", *WARM_IMPORTS])
        return self._ctx

    def ready(self, name: str) -> bool:
        """Whether the steps ``name`` depends on succeeded (else it is recorded as skipped)."""
        missing = [d for d in ("build", *DEPENDS.get(name, ())) if self.steps.get(d, {}).get("status") != "ok"]
        if missing:
            step = {"name": name, "status": "skipped", "wall_s": None, "reason": f"needs {', '.join(missing)}"}
            self.steps[name] = step
            self.result["steps"].append(step)
            print(f"[gpu-check] {name}: SKIPPED ({step['reason']})", flush=True)
            return False
        return True

    # --- the steps ----------------------------------------------------------------------------
    def build(self):
        spec = json.dumps({"folder": str(self.teacher_dir), "mode": self.mode, "seed": self.args.seed,
                           "env": str(self.work / "env.json")})
        need, cap = self.limits("build")
        step = self.run("build", ["--_build", spec], cap, need,
                        describe=f"build random-weight {TEACHER} teacher ({self.mode}) in {self.teacher_dir}")
        if step["status"] == "ok":
            self.result["environment"] = json.loads((self.work / "env.json").read_text())

    def latency(self, name: str, compiled: bool, rows: str = "all", need=None):
        out = self.work / name
        argv = ["bench", "latency", *self.common(), "--head-blocks", str(HEAD_BLOCKS), "--out", str(out),
                "--repeats", str(self.args.repeats), "--warmup", "1" if compiled else "0"]
        if compiled:
            argv.append("--compile")
        step = self.cli(name, argv, rows, need=need, cap=None if not compiled else max(60.0, self.left()))
        if step["status"] == "ok":
            rows_ = _read_csv(out / "results.csv")
            shutil.copy(out / "results.csv", self.out / f"{name}.csv")
            for r in rows_:
                self.result["latency"].append(_latency_row(r, "compiled" if compiled else "eager"))

    def data(self):
        prompts = self.work / "prompts.txt"
        prompts.write_text(PROMPT + "\n")
        argv = ["data", "generate", *self.common(), "--prompts", str(prompts), "--out", str(self.work / "data"),
                "--steps", str(self.args.data_steps), "--batch-size", "1", "--seed", str(self.args.seed)]
        step = self.cli("data-generate", argv)
        if step["status"] == "ok":
            index = json.loads((self.work / "data" / "index.json").read_text())
            rec = (step.get("record") or {}).get("data_generate") or {}
            self.result["data_generate"] = {
                "clips": index["count"], "steps": self.args.data_steps, "generate_s": _r(rec.get("s")),
                "s_per_clip": _r(rec["s"] / index["count"]) if rec.get("s") else None,
                "latent_shape": index.get("latent_shape"), "step_wall_s": step["wall_s"],
                "peak_gib": _r((step.get("record") or {}).get("process_peak_gib")),
                "note": "teacher UniPC with CFG, latents before decoding, plus text embeddings"}

    def distill(self, name: str, argv: list[str], state_dirs: list[Path]):
        step = self.cli(name, ["distill", *self.common(frames=False), "--data", str(self.work / "data"),
                               "--batch-size", "1", "--gradient-checkpointing", "--seed", str(self.args.seed),
                               *argv])
        if step["status"] == "ok":
            self.result["training"].append(_training_row(name, step, state_dirs))
        if not self.args.keep_work:  # the optimiser states are large (≈ 8 GiB per 1.3B network): free the disk
            import shutil

            from tmd_bench import checkpoint

            for d in state_dirs:
                current = checkpoint.current_checkpoint(d)
                if current is not None and current != d:
                    shutil.rmtree(current, ignore_errors=True)

    def evaluate(self):
        ckpts = {"dmd2": self.work / "dmd2" / "dmd2" / "student", "tmd": self.work / "tmd" / "stage2" / "student"}
        ckpts = {k: v for k, v in ckpts.items() if self.steps.get("dmd2" if k == "dmd2" else "tmd-stage2",
                                                                   {}).get("status") == "ok"}
        methods = list(ckpts) or ["teacher"]
        if not ckpts:
            self.result["notes"].append("evaluate: no student trained in this run, so it evaluates the teacher")
        out = self.work / "evaluate"
        argv = ["evaluate", *self.common(), "--methods", ",".join(methods), "--steps", "2", "--limit", "1",
                "--batch-size", "1", "--preview", "1", "--latency-warmup", "0",
                "--latency-repeats", str(self.args.repeats), "--out", str(out)]
        for k, v in ckpts.items():
            argv += ["--checkpoint", f"{k}={v}"]
        step = self.cli("evaluate", argv)
        if step["status"] == "ok":
            shutil.copy(out / "results.csv", self.out / "evaluate.csv")
            self.result["evaluate"] = [_latency_row(r, "evaluate") for r in _read_csv(out / "results.csv")]

    def compiled(self):
        """Compiled rows last, as far as the budget goes: all rows, the students only, or none."""
        name = "latency-compiled"
        if not self.args.compile:
            self._skip(name, "--tiny runs no torch.compile (add --compile to include it; minutes on a CPU)"
                       if self.mode == "tiny" else "--no-compile")
            return
        allowance = COMPILE_ALLOWANCE_S[self.mode]
        eager = self.steps.get("latency-eager", {})
        rows = [r for r in self.result["latency"] if r["pass"] == "eager"]
        if eager.get("status") == "ok" and rows:
            load = max(0.0, eager["wall_s"] - sum(r["total_s"] for r in rows))
            est_all = load + allowance + 2 * sum(r["total_s"] for r in rows)
            est_students = load + allowance + 2 * sum(r["total_s"] for r in rows if not r["row_id"].startswith("teacher"))
        else:  # nothing measured to plan with: full-size guesses
            est_all, est_students = (330.0, 150.0) if self.mode == "full" else (120.0, 90.0)
        left = self.left() - RESERVE_S
        if left >= est_all:
            self.latency(name, True, "all", need=0)
        elif left >= est_students:
            self.result["notes"].append(
                f"compiled pass: students only (the 50×CFG teacher row would need ≈ {est_all:.0f} s, {left:.0f} s "
                "were left); run `--only latency-compiled` for all rows")
            self.latency(name, True, "students", need=0)
        else:
            self._skip(name, f"budget: ≈ {est_students:.0f} s needed even without the teacher row, {left:.0f} s left "
                             "(eager took too long); run it alone: --only latency-compiled")

    def _skip(self, name: str, reason: str):
        step = {"name": name, "status": "skipped", "wall_s": None, "reason": reason, "optional": True}
        self.steps[name] = step
        self.result["steps"].append(step)
        print(f"[gpu-check] {name}: SKIPPED ({reason})", flush=True)

    # --- all of it ----------------------------------------------------------------------------
    def main(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        chosen = _chosen(self.args.only)
        print(f"[gpu-check] {self.mode} mode, {TEACHER} random weights at {self.size['frames']}×{self.size['height']}×"
              f"{self.size['width']} in {self.size['dtype']} on {self.size['device']}; budget {self.args.budget:.0f} s; "
              f"work folder {self.work}", flush=True)
        try:
            self.build()
            if "latency-eager" in chosen and self.ready("latency-eager"):
                self.latency("latency-eager", False)
            if "data-generate" in chosen and self.ready("data-generate"):
                self.data()
            tmd = self.work / "tmd"
            if "tmd-stage1" in chosen and self.ready("tmd-stage1"):
                self.distill("tmd-stage1", ["--method", "tmd", "--stage", "1", "--head-blocks", str(HEAD_BLOCKS),
                                            "--stage1-iterations", str(ITERATIONS), "--out", str(tmd)],
                             [tmd / "stage1"])
            if "tmd-stage2" in chosen and self.ready("tmd-stage2"):
                # its own process (not --stage all): run_tmd keeps stage 1's student and optimiser alive
                # through stage 2, which would inflate stage 2's peak memory
                self.distill("tmd-stage2", ["--method", "tmd", "--stage", "2", "--head-blocks", str(HEAD_BLOCKS),
                                            "--init", str(tmd / "stage1" / "student"),
                                            "--stage2-iterations", str(ITERATIONS), "--out", str(tmd)],
                             [tmd / "stage2"])
            if "dmd2" in chosen and self.ready("dmd2"):
                self.distill("dmd2", ["--method", "dmd2", "--steps", "2", "--iterations", str(ITERATIONS),
                                      "--out", str(self.work / "dmd2")], [self.work / "dmd2" / "dmd2"])
            if "evaluate" in chosen and self.ready("evaluate"):
                self.evaluate()
            if "latency-compiled" in chosen and self.ready("latency-compiled"):
                self.compiled()
        except KeyboardInterrupt:
            self.result["notes"].append("interrupted")
            print("[gpu-check] interrupted: writing what was measured", file=sys.stderr)
        finally:
            self.result["wall_s"] = round(time.perf_counter() - self.t0, 1)
            self.finish()
        bad = [s for s in self.result["steps"] if s["status"] != "ok" and not s.get("optional")]
        if bad:
            print("[gpu-check] FAILED: " + "; ".join(f"{s['name']} {s['status']} ({s.get('reason')})" for s in bad),
                  file=sys.stderr)
            return 1
        print(f"[gpu-check] all steps ok in {self.result['wall_s']:.0f} s: {self.out / 'gpu_check.json'}")
        return 0

    def finish(self):
        notes = self.result["notes"]
        notes += [
            "Random weights with the exact Wan2.1-1.3B transformer and Wan2.1 VAE configs: compute equals the real "
            "checkpoint's. The text encoder is a one-layer UMT5 stand-in (d_model 4096), so text-encoder time is "
            "NOT representative of UMT5-XXL (5.7B).",
            "Each step ran `python -m tmd_bench …` as written in the steps table, through gpu_check's `--_cli` "
            "wrapper (the CLI's own main(), plus timers around training iterations, data generation and checkpoint "
            "writes, and the peak-memory reading).",
            "bench latency students are untrained (timing only); evaluate's are the 5-iteration students of this run.",
            f"latency: eager --warmup 0 --repeats {self.args.repeats} (the 50-step teacher row runs first and warms "
            f"the process), compiled --warmup 1 --repeats {self.args.repeats} (compile_s = first call − timed run).",
            "training: batch 1, gradient checkpointing, seconds per iteration timed around method.step with device "
            "synchronisation (data loading and checkpoint writes apart); DMD2-v and TMD stage 2 update the student "
            "on every 5th iteration and the critics on the other 4: s/iteration weights them 1:4, the first "
            "iteration left out when there are others of its kind.",
        ]
        if self.mode == "tiny":
            notes.append("--tiny: tiny configs on the CPU; the anchors are printed for the layout only, "
                         "the figures are not comparable")
        for s in self.result["steps"]:
            s.pop("record", None)
        md = render_markdown(self.result)
        (self.out / "gpu_check.json").write_text(json.dumps(self.result, indent=2))
        (self.out / "gpu_check.md").write_text(md)
        print(md, flush=True)
        if not self.args.keep_work and not self.args.work:
            shutil.rmtree(self.work, ignore_errors=True)


def _chosen(only: str | None) -> set[str]:
    if not only:
        return set(STEP_NAMES)
    names = {x.strip() for x in only.split(",") if x.strip()}
    unknown = names - set(STEP_NAMES)
    if unknown:
        raise SystemExit(f"gpu_check: unknown --only step(s) {sorted(unknown)}; steps: {', '.join(STEP_NAMES)}")
    todo = list(names)
    while todo:  # with their dependencies
        for d in DEPENDS.get(todo.pop(), ()):
            if d not in names:
                names.add(d)
                todo.append(d)
    return names


class _Forked:
    """One step forked from the warm server: the CLI worker's argv, output to the step's log, its own
    session (so that ``_stop`` stops it and its children); ``wait`` as ``subprocess.Popen.wait``."""

    def __init__(self, ctx, worker: list[str], log: str, env: dict):
        self.process = ctx.Process(target=_forked_main, args=(worker, log, env), daemon=False)
        self.process.start()
        self.pid = self.process.pid

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(["forked step", str(self.pid)], timeout)
        return self.process.exitcode


def _forked_main(worker: list[str], log: str, env: dict) -> None:
    """A forked step: what ``python gpu_check.py <worker…>`` does, in a child of the warm server."""
    import atexit
    import traceback

    os.setsid()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)
    code = 1
    try:
        code = main(list(worker))
    except SystemExit as e:  # the CLI's exit status, as a fresh interpreter would return it
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()  # the worker's record is written at exit; multiprocessing skips atexit
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _stop(proc) -> None:
    """Stop a step's process group (the one this script started), politely first."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # a forked step stopped before its os.setsid(): no group of its own yet
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + x for x in text[-lines:])


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(v):
    if v in (None, ""):
        return None
    try:
        return float(v)
    except ValueError:
        return v


def _r(v, nd=4):
    return None if v is None else round(float(v), nd)


def _latency_row(r: dict, kind: str) -> dict:
    peak = _num(r.get("peak_memory_mb"))
    row = {"pass": kind, "row_id": r["row_id"], "method": r["method"], "steps": int(float(r["steps"])),
           "nfe": _num(r["nfe"]), "nfe_counted": _num(r["nfe_counted"]), "effective_nfe": _num(r["effective_nfe"]),
           "effective_nfe_declared": _num(r["effective_nfe_declared"]),
           "text_s": _num(r["latency_text_s"]), "denoise_s": _num(r["latency_denoise_s"]),
           "decode_s": _num(r["latency_decode_s"]), "total_s": _num(r["latency_total_s"]),
           "peak_gib": _r(peak / 1024) if isinstance(peak, float) else None, "dtype": r.get("dtype")}
    if r.get("compile_s") not in (None, ""):
        row["compile_s"] = _num(r["compile_s"])
    return row


def _training_row(name: str, step: dict, state_dirs: list[Path]) -> dict:
    rec = step.get("record") or {}
    entries = rec.get("train") or []
    if not entries:
        raise RuntimeError(f"{name}: the training loop was not observed (tmd_bench.distill.trainer.train)")
    e = entries[-1]
    its = e["iterations"]
    by_kind: dict[str, list[float]] = {}
    for it in its:
        by_kind.setdefault(it["kind"], []).append(it["s"])
    # steady state per kind: the first iteration of a kind carries one-off costs (optimiser state, allocator)
    steady = {k: statistics.median(v[1:] if len(v) > 1 else v) for k, v in by_kind.items()}
    if e.get("student_every") and {"student", "critics"} <= set(steady):
        n = e["student_every"]
        per_it = (steady["student"] + (n - 1) * steady["critics"]) / n
    else:
        per_it = statistics.mean(x["s"] for x in its[1:]) if len(its) > 1 else its[0]["s"]
    log = state_dirs[0] / "log.csv"
    cli_elapsed = None
    if log.is_file():
        rows = _read_csv(log)
        cli_elapsed = _num(rows[-1].get("elapsed_s")) if rows else None
    saves = [s for s in rec.get("saves") or [] if Path(s["folder"]) in state_dirs]
    return {
        "name": name, "method": e["method"], "iterations": len(its), "s_per_iteration": _r(per_it),
        "first_iteration_s": _r(its[0]["s"]), "critics_iteration_s": _r(steady.get("critics")),
        "student_iteration_s": _r(steady.get("student")), "iteration_s": [_r(x["s"]) for x in its],
        "peak_gib": _r(max(x["peak_gib"] for x in its)), "peak_kind": rec.get("peak_kind"),
        "resident_gib": _r(e.get("resident_gib")),
        "cli_log_elapsed_s": cli_elapsed, "cli_log_s_per_iteration": _r(cli_elapsed / len(its)) if cli_elapsed else None,
        "checkpoint_write_s": _r(sum(s["s"] for s in saves)) if saves else None,
        "checkpoint_gib": _r(sum(s["gib"] for s in saves)) if saves else None,
        "train_wall_s": _r(e.get("train_wall_s")), "step_wall_s": step["wall_s"],
    }


# ---------------------------------------------------------------------------------------------
# The table


def _f(v, unit="", nd=3):
    if v is None or v == "":
        return "—"
    if isinstance(v, str):
        return v
    return f"{v:.{nd}g}{unit}"


def _ratio(measured, anchor):
    return "—" if not measured or not anchor else f"{measured / anchor:.2f}×"


def _anchor_denoise(row: dict) -> tuple[float | None, str]:
    """The anchor's transformer time for a latency row: 50 × CFG step for the teacher, effective NFE ×
    one forward for the students (TMD: derived, as anchors.md does for M2-N2H5)."""
    fwd = ANCHORS["compiled_forward_s"] if row["pass"] == "compiled" else ANCHORS["forward_s"]
    eff = row.get("effective_nfe_declared")
    if row["row_id"].startswith("teacher") and row["steps"] == 50 and row["pass"] == "eager":
        return ANCHORS["teacher_50_cfg_s"], "61.4 s (50 × 1.227 s)"
    if not eff:
        return None, "—"
    a = eff * fwd
    return a, f"{a:.3g} s ({eff:.3g} × {fwd} s)"


def render_markdown(res: dict) -> str:
    env = res.get("environment") or {}
    v = res["video"]
    lines = [
        f"## tmd-bench GPU check — {res['teacher']} (random weights), {v['frames']}×{v['height']}×{v['width']}, "
        f"{res['dtype']}, {res['mode']} mode",
        "",
        f"GPU: **{env.get('gpu') or 'none (CPU)'}** · torch {env.get('torch', '?')} (CUDA {env.get('cuda') or '—'}) · "
        f"diffusers {env.get('diffusers', '?')} · transformers {env.get('transformers', '?')} · "
        f"python {env.get('python', '?')} · date {res['date']} · wall {res.get('wall_s', 0):.0f} s of a "
        f"{res['budget_s']:.0f} s budget",
        "",
        f"Anchors: {ANCHORS['source']}.",
        "",
    ]
    lat = res["latency"]
    by = {(r["pass"], r["row_id"]): r for r in lat}
    teacher = next((r for r in lat if r["pass"] == "eager" and r["row_id"].startswith("teacher")), None)
    one = by.get(("eager", "dmd2-s1"))
    one_c = by.get(("compiled", "dmd2-s1"))
    decodes = [r["decode_s"] for r in lat if r.get("decode_s")]
    spot = [
        ("1.3B forward, B = 1 (DMD2-v 1-step denoise)", one and one["denoise_s"], ANCHORS["forward_s"], "0.615 s"),
        ("one CFG step, B = 2 (teacher denoise / 50)", teacher and teacher["denoise_s"] / 50, ANCHORS["cfg_step_s"],
         "1.227 s"),
        ("teacher 50 steps × CFG, transformer time", teacher and teacher["denoise_s"], ANCHORS["teacher_50_cfg_s"],
         "61.4 s (64.6 s end to end)"),
        ("VAE decode of one clip (tmd-bench decodes in fp32; median over rows)",
         statistics.median(decodes) if decodes else None, ANCHORS["vae_decode_fp32_s"], "3.24 s fp32 (2.07 s bf16)"),
        ("compiled 1.3B forward (compiled DMD2-v 1-step denoise)", one_c and one_c["denoise_s"],
         ANCHORS["compiled_forward_s"], "0.521 s"),
    ]
    lines += ["| figure | measured | anchor (H100) | measured / anchor |", "|---|---|---|---|"]
    for what, m, a, label in spot:
        lines.append(f"| {what} | {_f(m, ' s')} | {label} | {_ratio(m, a)} |")
    lines += ["", "### bench latency (stages in seconds; NFE declared / counted)", "",
              "| pass | row | NFE | counted | eff. NFE | text | denoise | decode | total | peak GiB | compile s | "
              "anchor denoise | denoise / anchor |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in lat:
        a, label = _anchor_denoise(r)
        lines.append(f"| {r['pass']} | {r['row_id']} | {_f(r['nfe'])} | {_f(r['nfe_counted'])} | "
                     f"{_f(r['effective_nfe'])} | {_f(r['text_s'])} | {_f(r['denoise_s'])} | {_f(r['decode_s'])} | "
                     f"{_f(r['total_s'])} | {_f(r['peak_gib'])} | {_f(r.get('compile_s'))} | {label} | "
                     f"{_ratio(r['denoise_s'], a)} |")
    if not lat:
        lines.append("| — | no latency rows | | | | | | | | | | | |")
    lines += ["", f"### training, {ITERATIONS} iterations each, batch 1, gradient checkpointing "
                  f"(anchor: one forward + backward with checkpointing {ANCHORS['fwd_bwd_ckpt_s']} s at "
                  f"{ANCHORS['fwd_bwd_ckpt_peak_gib']} GiB peak, one network alone)", "",
              "| stage | s / iteration | critics it. s | student it. s | first it. s | peak GiB | resident GiB | "
              "CLI log s / it. | checkpoint write s (GiB) | s / it. ÷ 2.68 s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for t in res["training"]:
        write = "—" if t["checkpoint_write_s"] is None else f"{t['checkpoint_write_s']:.3g} ({t['checkpoint_gib']:.3g})"
        lines.append(f"| {t['name']} | {_f(t['s_per_iteration'])} | {_f(t['critics_iteration_s'])} | "
                     f"{_f(t['student_iteration_s'])} | {_f(t['first_iteration_s'])} | {_f(t['peak_gib'])} | "
                     f"{_f(t['resident_gib'])} | {_f(t['cli_log_s_per_iteration'])} | {write} | "
                     f"{_ratio(t['s_per_iteration'], ANCHORS['fwd_bwd_ckpt_s'])} |")
    if not res["training"]:
        lines.append("| no training rows | | | | | | | | | |")
    d = res.get("data_generate")
    lines += ["", "### data generate and evaluate", ""]
    if d:
        lines.append(f"- data generate: {d['clips']} clip at {d['steps']} UniPC steps × CFG in {_f(d['generate_s'], ' s')} "
                     f"(step wall {_f(d['step_wall_s'], ' s')}, peak {_f(d['peak_gib'], ' GiB')}); latent "
                     f"{d.get('latent_shape')}; at 50 steps expect ≈ the teacher row's denoise time")
    for r in res["evaluate"]:
        lines.append(f"- evaluate {r['row_id']}: NFE {_f(r['nfe'])} (counted {_f(r['nfe_counted'])}), text "
                     f"{_f(r['text_s'], ' s')}, denoise {_f(r['denoise_s'], ' s')}, decode {_f(r['decode_s'], ' s')}, "
                     f"total {_f(r['total_s'], ' s')}, peak {_f(r['peak_gib'], ' GiB')}")
    lines += ["", "### steps", "", "| step | status | wall s | note |", "|---|---|---|---|"]
    for s in res["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {_f(s.get('wall_s'))} | {s.get('reason') or ''} |")
    lines += ["", *[f"- {n}" for n in res["notes"]], ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="tmd-bench GPU check: Wan2.1-1.3B size (random weights) through the "
                                "CLI in ≤ 8 min on one H100/H200; --tiny: the same on a CPU in seconds.")
    p.add_argument("--out", required=True, help="Folder for gpu_check.json, gpu_check.md, logs/ and the results.csv files.")
    p.add_argument("--tiny", action="store_true", help="Tiny configs, 5×32×32, CPU, float32, no compile.")
    p.add_argument("--budget", type=float, default=480.0, help="Seconds for the whole check (default 480 = 8 min); "
                   "each step gets a time guard within it, the compiled pass only what is left.")
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="Run the compiled latency pass (default: on, off with --tiny).")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--only", help=f"Comma-separated steps (their dependencies are added): {', '.join(STEP_NAMES[1:])}.")
    p.add_argument("--repeats", type=int, default=1, help="Timed generations per latency row (default 1).")
    p.add_argument("--data-steps", type=int, default=10, help="Teacher steps for `data generate` (default 10).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="OMP/MKL threads of the steps' processes (default: 1 with --tiny, "
                   "whose 8-token tensors gain nothing from threads and lose badly to a busy machine; else the "
                   "environment's).")
    p.add_argument("--launcher", choices=("spawn", "fork"), help="How the CLI steps start: spawn, a fresh "
                   "interpreter each (default on the GPU: nothing shared, CUDA set up by each step), or fork, a "
                   "child of one warm interpreter that imported torch, diffusers and transformers once (default "
                   "with --tiny, where imports are most of a step). The build step is always a fresh interpreter.")
    p.add_argument("--work", help="Folder for the teacher, data and runs (default: a temporary folder, removed).")
    p.add_argument("--keep-work", action="store_true", help="Keep the work folder, optimiser states included.")
    args = p.parse_args(argv)
    if args.compile is None:
        args.compile = not args.tiny
    if args.threads is None and args.tiny:
        args.threads = 1
    if args.launcher is None:
        args.launcher = "fork" if args.tiny else "spawn"
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_build"]:
        spec = json.loads(argv[1])
        env = build_checkpoint(Path(spec["folder"]), spec["mode"], spec["seed"])
        Path(spec["env"]).write_text(json.dumps(env, indent=2))
        return 0
    if argv[:1] == ["--_cli"]:
        cli_worker(argv[1], argv[2], argv[4:])  # argv[3] == "--"
        return 0
    return Check(parse_args(argv)).main()


if __name__ == "__main__":
    sys.exit(main())
