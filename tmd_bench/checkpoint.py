"""Training state on disk: safetensors for every tensor, JSON for everything else. No pickle.

A training folder holds ``state.safetensors`` (model, EMA, optimiser tensors) and ``state.json``
(step, config, optimiser hyper-parameters, stream position). Both are written to temporary files
and renamed, so an interruption mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

STATE_TENSORS = "state.safetensors"
STATE_META = "state.json"


class IncompatibleCheckpoint(ValueError):
    """A checkpoint that does not belong to the run trying to resume from it."""


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_state(folder: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (STATE_TENSORS + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, folder / STATE_TENSORS)
    _atomic_write_text(folder / STATE_META, json.dumps(meta, indent=2))


def load_state(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    folder = Path(folder)
    if not (folder / STATE_META).exists() or not (folder / STATE_TENSORS).exists():
        raise FileNotFoundError(f"no checkpoint in {folder} (expected {STATE_META} and {STATE_TENSORS})")
    return load_file(str(folder / STATE_TENSORS)), json.loads((folder / STATE_META).read_text())


def save_meta(folder: str | Path, meta: dict) -> None:
    """Only ``state.json`` (a DCP checkpoint keeps its tensors in the folder it names)."""
    _atomic_write_text(Path(folder) / STATE_META, json.dumps(meta, indent=2))


def load_meta(folder: str | Path) -> dict:
    path = Path(folder) / STATE_META
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint in {folder} (expected {STATE_META})")
    return json.loads(path.read_text())


def has_state(folder: str | Path) -> bool:
    return (Path(folder) / STATE_META).exists()


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def load_module_tensors(prefix: str, module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    missing, unexpected = module.load_state_dict(sub, strict=False)
    if missing or unexpected:
        raise IncompatibleCheckpoint(
            f"checkpoint part {prefix!r} does not fit the model: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state dict into tensors (for safetensors) and JSON-able hyper-parameters."""
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for k, v in state.items():
            tensors[f"{prefix}.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class MetricsLog:
    """Append-only CSV of training metrics; survives resume (rows past the resumed step are dropped)."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.columns: list[str] | None = None
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            if resume_step is None or not lines:
                # a fresh run: rows left by a run that stopped before its first checkpoint are not its own
                self.path.unlink()
            else:
                self.columns = lines[0].split(",")
                # forget what happened after the checkpoint
                kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split(",", 1)[0]) <= resume_step]
                self.path.write_text("\n".join(kept) + "\n")

    def append(self, row: dict) -> None:
        if self.columns is None:
            self.columns = list(row)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(",".join(self.columns) + "\n")
        with open(self.path, "a") as f:
            f.write(",".join(_fmt(row.get(c, "")) for c in self.columns) + "\n")


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def check_finite(loss: torch.Tensor, step: int, what: str = "loss") -> None:
    if not torch.isfinite(loss).all():
        raise FloatingPointError(
            f"{what} is {loss.item()} at step {step}; training stopped before the update so the last "
            f"checkpoint is intact. Lower the learning rate or resume from the checkpoint with --resume."
        )
