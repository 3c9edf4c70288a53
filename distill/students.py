"""Reading a saved student back: its JSON config, its transformer, and the checks that it belongs
to the teacher it is evaluated or trained against (method, teacher id, depth, architecture)."""

from __future__ import annotations

import json
from pathlib import Path


def architecture(config) -> tuple:
    """The transformer config fields a student must share with its teacher."""
    keys = ("patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "num_layers", "text_dim")
    return tuple(tuple(config[k]) if isinstance(config[k], (list, tuple)) else config[k] for k in keys)


def read_student(folder: str | Path, teacher, method: str, config_file: str):
    """``(meta, transformer)`` of the student in ``folder``; a clear error when it is not a
    ``method`` student distilled from ``teacher``."""
    from diffusers import WanTransformer3DModel

    folder = Path(folder)
    path = folder / config_file
    if not path.is_file():
        other = next((f for f in ("tmd_config.json", "student_config.json") if (folder / f).is_file()), None)
        hint = f" (it holds {other})" if other else ""
        raise FileNotFoundError(f"{folder} is not a {method} checkpoint (no {config_file}){hint}")
    meta = json.loads(path.read_text())
    if meta.get("method") != method:
        raise ValueError(f"{folder} holds a {meta.get('method')!r} student, not a {method!r} one")
    if meta["teacher"] != teacher.name or meta["num_blocks"] != teacher.num_blocks:
        raise ValueError(f"{folder} was distilled from teacher {meta['teacher']!r} ({meta['num_blocks']} blocks), "
                         f"not from {teacher.name!r} ({teacher.num_blocks} blocks)")
    transformer = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=teacher.dtype)
    if architecture(transformer.config) != architecture(teacher.transformer.config):
        raise ValueError(f"{folder}: the student's transformer does not match the teacher's architecture")
    return meta, transformer
