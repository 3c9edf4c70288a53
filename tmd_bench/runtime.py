"""Where and in what precision a command runs: one rule for ``--device`` and ``--dtype`` everywhere.

- ``--device auto`` (the default) is CUDA when a GPU is visible, else the CPU. Device strings are
  checked before torch is imported, so a typo fails at once.
- ``--dtype`` (float32, bfloat16, float16) is the *compute* dtype of the networks. Default:
  bfloat16 for Wan teachers on CUDA, float32 on the CPU and for the Shapes teacher. Whatever it is,
  latents and solver state stay float32 and diffusers' fp32-kept modules stay float32 (as
  WanPipeline does); only the network calls run in the compute dtype.
- :func:`prepare_teacher` resolves the teacher's folder and checks the video size against its VAE
  strides and patch size from JSON alone, before any model is loaded.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from tmd_bench import registry

DEVICE_HELP = "torch device: auto (CUDA when available, else cpu), cpu, cuda or cuda:N."
DTYPE_HELP = ("Compute dtype: float32, bfloat16 or float16 (default: bfloat16 for Wan teachers on CUDA, float32 on "
              "the CPU and for shapes). Latents and solver state stay float32.")
_DEVICE = re.compile(r"^(auto|cpu|meta|mps|cuda(:\d{1,2})?)$")


def check_device(value: str, allow_meta: bool = False) -> str:
    """The ``--device`` string, checked for form (not for availability) without importing torch."""
    if not _DEVICE.match(value or "") or (value == "meta" and not allow_meta):
        choices = "auto, cpu, cuda, cuda:N" + (", meta" if allow_meta else "")
        raise ValueError(f"--device {registry.clip_text(value)!r} is not a device; use one of {choices}")
    return value


def resolve_device(value: str, allow_meta: bool = False) -> str:
    """``auto`` → ``cuda`` or ``cpu``; a CUDA device that is not there is a clear error."""
    import os

    check_device(value, allow_meta)
    if value == "auto":
        forced = os.environ.get("TMD_BENCH_DEVICE")
        if forced:
            return check_device(forced)
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"--device {value}: no CUDA device is visible on this machine (use --device cpu)")
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return value


def check_dtype(value: str | None) -> str | None:
    if value is not None and value not in registry.DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(registry.DTYPES)}, got {registry.clip_text(value)!r}")
    return value


def default_dtype(device: str, teacher: str) -> str:
    return "bfloat16" if device.startswith("cuda") and teacher != "shapes" else "float32"


def resolve_dtype(value: str | None, device: str, teacher: str):
    """``--dtype`` (or its default for this device and teacher) as a ``torch.dtype``."""
    import torch

    return getattr(torch, check_dtype(value) or default_dtype(device, teacher))


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def prepare_teacher(name: str, path: str | Path | None, frames: int | None = None, height: int | None = None,
                    width: int | None = None) -> tuple[Path, registry.TeacherSpec]:
    """Resolve the teacher and check the video size it will sample at, from JSON alone (no torch).

    ``frames``/``height``/``width`` override the teacher's size (Wan teachers only; the Shapes teacher
    samples at its trained size). Returns the folder and the spec with the size applied."""
    folder, spec, _ = registry.resolve_spec(name, path)
    size = {k: v for k, v in (("frames", frames), ("height", height), ("width", width)) if v is not None}
    if size and spec.world == "shapes":
        raise ValueError("the Shapes teacher samples at its trained size; --frames/--height/--width are for Wan teachers")
    spec = replace(spec, **size)
    registry.check_size(spec.frames, spec.height, spec.width, registry.read_geometry(folder, spec))
    return folder, spec


def load(name: str, path: str | Path | None, device: str, dtype: str | None, frames: int | None = None,
         height: int | None = None, width: int | None = None):
    """Validate (fast, :func:`prepare_teacher`), then load the teacher on ``device`` in its compute dtype."""
    folder, spec = prepare_teacher(name, path, frames, height, width)
    device = resolve_device(device)
    from tmd_bench.teachers import load_teacher

    t = load_teacher(name, folder, device=device, dtype=resolve_dtype(dtype, device, name))
    t.spec = replace(t.spec, frames=spec.frames, height=spec.height, width=spec.width)
    return t


# ---------------------------------------------------------------------------------------------
# Option checks: every number a command takes is finite and in a sane range before any work.

MAX_STEPS = 1000  # a sampler step count above Wan's 1000 training timesteps means nothing
MAX_SEED = 2**31 - 1  # seeds are combined (seed·1_000_003 + i…) and must stay inside int64


def check_number(flag: str, value, lo=None, hi=None, *, lo_open: bool = False, integer: bool = False) -> None:
    """``value`` finite and within [lo, hi] (``lo_open``: strictly above lo); None means unset."""
    import math

    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number, got {value}")
    if integer and not isinstance(value, int):
        raise ValueError(f"{flag} must be an integer, got {registry.clip_text(value)}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{flag} must be {'>' if lo_open else '≥'} {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{flag} must be ≤ {hi}, got {value}")


def check_seed(value: int | None, flag: str = "--seed") -> None:
    check_number(flag, value, 0, MAX_SEED)


def check_sampling(guidance: float | None, shift: float | None) -> None:
    """CFG scale finite and ≥ 0 (1: no guidance); shift finite and > 0 (the shift map needs γ > 0)."""
    check_number("--guidance", guidance, 0, 100)
    check_number("--shift", shift, 0, 1000, lo_open=True)


def parse_indices(flag: str, text: str, n: int) -> list[int]:
    """``"0,2,3"`` → [0, 2, 3], each in [0, n): a one-line error otherwise."""
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not out or out[0] < 0 or out[-1] >= n:
        raise ValueError(f"{flag} must name draws between 0 and {n - 1}, got {text!r}")
    return out
