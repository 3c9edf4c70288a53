"""Training state on disk: safetensors for every tensor, JSON for everything else. No pickle.

**Distillation runs** (:func:`save_checkpoint`, :func:`load_checkpoint`; the loop in
``tmd_bench.distill.trainer``) keep one checkpoint as one unit, switched to atomically::

    run/
      state.json              the manifest: step, config, optimiser hyper-parameters, stream position,
                              log window and log length — and which checkpoint folder is current, with
                              its tensors' size and sha256 (written last, by an atomic rename)
      ckpt-00000021/          the current checkpoint's tensors (state.safetensors); never modified
      ckpt-00000028.tmp/      a save in progress (or left by a crash: removed by the next save)
      log.csv, student/       the metrics log (truncated on resume to its length at the checkpoint)
                              and the exported student (written to student.tmp/, then swapped in)

A save writes ``ckpt-<step>.tmp/``, fsyncs it, renames it ``ckpt-<step>/``, then replaces
``state.json`` (temporary file, fsync, rename, fsync of the folder) — the commit — and only then
deletes the older checkpoint folder. A process killed at any moment, or a full disk, leaves
``state.json`` naming a complete checkpoint; resume verifies its size and sha256. A folder written
by an older tmd-bench (``state.safetensors`` beside ``state.json``) is read as before.

**The Shapes teacher's training** (``tmd_bench.teacher_train``) keeps ``state.safetensors`` and
``state.json`` side by side (:func:`save_state`, :func:`load_state`), each written to a temporary
file and renamed; the tensors' header carries the JSON state too, and :func:`load_state` reads that
copy, so the two files can never be taken from different saves.

**Fault injection** (tests only; inert unless set): ``TMD_BENCH_CRASH_AT=[METHOD@]ITERATION[:PHASE]``
makes the process SIGKILL itself at that point of a distillation run (``METHOD``: the method's
``name``, e.g. ``tmd-stage2``; any method if left out). Phases, at iteration ``ITERATION``:
``step`` (default; after the optimiser step, before the log row and checkpoint), ``logged`` (after
the log row), ``tensors`` (inside a save: tensors written, folder not yet renamed), ``renamed``
(folder renamed, ``state.json`` not yet replaced), ``committed`` (``state.json`` replaced, the older
checkpoint not yet deleted), ``exporting`` (student written to ``student.tmp/``, not yet swapped in),
``exported`` (student swapped in, not yet marked exported in ``state.json``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import signal
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

STATE_TENSORS = "state.safetensors"
STATE_META = "state.json"
CHECKPOINT_PREFIX = "ckpt-"
CRASH_ENV = "TMD_BENCH_CRASH_AT"
_HEADER_META = "tmd_bench_state"  # save_state: the JSON state in the safetensors header
CRASH_PHASES = ("step", "logged", "tensors", "renamed", "committed", "exporting", "exported")


class IncompatibleCheckpoint(ValueError):
    """A checkpoint that does not belong to the run trying to resume from it."""


class CorruptCheckpoint(IncompatibleCheckpoint):
    """A checkpoint whose files are missing or differ from what its manifest recorded."""


# ---------------------------------------------------------------------------------------------
# Durable writes


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (no-op where directories cannot be fsynced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES, errno.EPERM):
            raise
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*"), reverse=True):
        if p.is_file():
            _fsync_file(p)
        elif p.is_dir():
            _fsync_dir(p)
    _fsync_dir(path)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically and durably (a failure leaves the old file as it was)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        _write_bytes(tmp, text.encode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            h.update(chunk)
    return h.hexdigest()


def crash_point(phase: str, method: str | None, iteration: int) -> None:
    """Fault injection for tests: SIGKILL this process if ``TMD_BENCH_CRASH_AT`` names this point
    (see the module docstring). Does nothing when the variable is unset."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    where, _, want_phase = spec.partition(":")
    want_method, _, want_it = where.rpartition("@")
    if not want_it.isdigit() or (want_phase or "step") not in CRASH_PHASES:
        raise ValueError(f"{CRASH_ENV}={spec!r}: expected [METHOD@]ITERATION[:PHASE], PHASE one of "
                         f"{', '.join(CRASH_PHASES)}")
    if (want_phase or "step") != phase or int(want_it) != iteration or (want_method and want_method != method):
        return
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


# ---------------------------------------------------------------------------------------------
# The Shapes teacher's state (side by side in the folder)


def save_state(folder: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """``state.safetensors`` (which carries a copy of the JSON state in its header: the unit) and
    ``state.json`` (for people and older readers), each replaced atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (STATE_TENSORS + ".tmp")
    text = json.dumps(meta, indent=2)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={_HEADER_META: text})
        _fsync_file(tmp)
        os.replace(tmp, folder / STATE_TENSORS)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _atomic_write_text(folder / STATE_META, text)


def load_state(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A crash between the two files of :func:`save_state` leaves ``state.json`` one save behind: the
    copy in the tensors' header, written with them, is the one that holds."""
    from safetensors import safe_open

    folder = Path(folder)
    if not (folder / STATE_META).exists() or not (folder / STATE_TENSORS).exists():
        raise FileNotFoundError(f"no checkpoint in {folder} (expected {STATE_META} and {STATE_TENSORS})")
    with safe_open(str(folder / STATE_TENSORS), "pt") as f:
        header = (f.metadata() or {}).get(_HEADER_META)
    meta = json.loads(header) if header is not None else json.loads((folder / STATE_META).read_text())
    return load_file(str(folder / STATE_TENSORS)), meta


def save_meta(folder: str | Path, meta: dict) -> None:
    """Only ``state.json`` (a DCP checkpoint keeps its tensors in the folder it names)."""
    _atomic_write_text(Path(folder) / STATE_META, json.dumps(meta, indent=2))


def load_meta(folder: str | Path) -> dict:
    path = Path(folder) / STATE_META
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint in {folder} (expected {STATE_META})")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptCheckpoint(f"{path}: not a readable checkpoint manifest ({e})") from None


def has_state(folder: str | Path) -> bool:
    return (Path(folder) / STATE_META).exists()


# ---------------------------------------------------------------------------------------------
# Distillation checkpoints: one folder per checkpoint, named by the manifest


def current_checkpoint(folder: str | Path) -> Path | None:
    """The folder holding the current checkpoint's tensors (None for DCP or a folder without one)."""
    folder = Path(folder)
    if not has_state(folder):
        return None
    meta = load_meta(folder)
    if "checkpoint" in meta:
        return folder / meta["checkpoint"]["dir"]
    return folder if meta.get("format") != "dcp" else None


def tensors_path(folder: str | Path) -> Path | None:
    """The current checkpoint's tensor file (either layout), or None."""
    cur = current_checkpoint(folder)
    return cur / STATE_TENSORS if cur is not None else None


def save_checkpoint(folder: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> str:
    """Write a checkpoint beside the current one and switch ``state.json`` to it; returns its folder's
    name. Any failure (a full disk, an interruption) before the switch leaves the previous checkpoint
    current and intact and removes the partial one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    method, it = meta.get("method"), int(meta["iteration"])
    try:
        current = current_checkpoint(folder)
    except IncompatibleCheckpoint:
        current = None
    name = f"{CHECKPOINT_PREFIX}{it:08d}"
    if current is not None and current.name == name:  # never write over the current checkpoint
        n = 1
        while (folder / f"{name}-{n}").exists():
            n += 1
        name = f"{name}-{n}"
    tmp, final = folder / f"{name}.tmp", folder / name
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        path = tmp / STATE_TENSORS
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
        _fsync_file(path)
        record = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        _fsync_dir(tmp)
        crash_point("tensors", method, it)
        if final.exists():  # left by an earlier save of this step that never committed
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(folder)
        crash_point("renamed", method, it)
        manifest = {**meta, "exported": False, "checkpoint": {"dir": name, "tensors": {STATE_TENSORS: record}}}
        _atomic_write_text(folder / STATE_META, json.dumps(manifest, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            committed = current_checkpoint(folder) == final
        except Exception:  # noqa: BLE001 - cleaning up after a failure: keep what might be current
            committed = True
        if not committed:
            shutil.rmtree(final, ignore_errors=True)
        raise
    crash_point("committed", method, it)
    _prune(folder, keep=name)
    return name


def _prune(folder: Path, keep: str) -> None:
    """Delete every checkpoint folder but ``keep`` (older ones, and partial ones left by crashes), and
    the tensors of an old-layout checkpoint."""
    for p in folder.glob(CHECKPOINT_PREFIX + "*"):
        if p.name != keep and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
    for legacy in (STATE_TENSORS, STATE_TENSORS + ".tmp"):
        (folder / legacy).unlink(missing_ok=True)


def load_checkpoint(folder: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, meta)`` of the current checkpoint in ``folder``: the one ``state.json`` names, its
    size and sha256 checked; or an old-layout one (``state.safetensors`` beside ``state.json``)."""
    folder = Path(folder)
    meta = load_meta(folder)
    ref = meta.get("checkpoint")
    if ref is None:
        if meta.get("format") == "dcp":
            raise IncompatibleCheckpoint(f"{folder} holds a DCP checkpoint ({meta.get('dcp')}); it is read by "
                                         "tmd_bench.distributed.load_checkpoint")
        path = folder / STATE_TENSORS
        if not path.is_file():
            raise CorruptCheckpoint(f"{folder}: {STATE_META} has no tensors beside it (expected {STATE_TENSORS})")
        return load_file(str(path)), meta
    path = folder / ref["dir"] / STATE_TENSORS
    want = ref["tensors"][STATE_TENSORS]
    if not path.is_file():
        raise CorruptCheckpoint(f"{folder}: the checkpoint {STATE_META} names is missing ({path})")
    size = path.stat().st_size
    if size != want["bytes"]:
        raise CorruptCheckpoint(f"{path}: {size} bytes, the manifest recorded {want['bytes']} (truncated or replaced)")
    if verify and _sha256(path) != want["sha256"]:
        raise CorruptCheckpoint(f"{path}: its sha256 differs from the manifest's (the file is corrupt)")
    return load_file(str(path)), meta


def export_folder(final: str | Path, write: Callable[[Path], object], method: str | None = None,
                  iteration: int = -1) -> None:
    """``write(tmp)`` into ``<final>.tmp/``, fsynced, then swapped in for ``final`` (the previous
    export stays whole until the swap; a failure removes the partial one)."""
    final = Path(final)
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    crash_point("exporting", method, iteration)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def mark_exported(folder: str | Path, iteration: int) -> None:
    """Record in ``state.json`` that the student export of the current checkpoint is complete."""
    folder = Path(folder)
    meta = load_meta(folder)
    if meta.get("iteration") == iteration and not meta.get("exported"):
        save_meta(folder, {**meta, "exported": True})


def rng_tensors() -> dict[str, torch.Tensor]:
    """The global RNG states (CPU; CUDA's current device once initialised), for a checkpoint."""
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["rng.cuda"] = torch.cuda.get_rng_state()
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


# ---------------------------------------------------------------------------------------------
# Modules and optimisers as flat tensor dicts


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
    """Append-only CSV of training metrics; survives resume.

    On resume the log is cut back to what it held at the checkpoint: to ``resume_bytes`` (its length
    when the checkpoint was saved, recorded by :meth:`sync`), else to the rows up to ``resume_step``
    (a row half-written by a killed process is dropped)."""

    def __init__(self, path: str | Path, resume_step: int | None = None, resume_bytes: int | None = None):
        self.path = Path(path)
        self.columns: list[str] | None = None
        if not self.path.exists():
            return
        if resume_step is None:
            # a fresh run: rows left by a run that stopped before its first checkpoint are not its own
            self.path.unlink()
            return
        if resume_bytes is not None and self.path.stat().st_size >= resume_bytes:
            if resume_bytes == 0:
                self.path.unlink()
                return
            with open(self.path, "r+b") as f:
                f.truncate(resume_bytes)
                f.flush()
                os.fsync(f.fileno())
            self.columns = self.path.read_text().splitlines()[0].split(",")
            return
        text = self.path.read_text()
        lines = text.splitlines()
        if text and not text.endswith("\n"):
            lines = lines[:-1]  # cut short by a kill
        if not lines:
            self.path.unlink()
            return
        self.columns = lines[0].split(",")
        # forget what happened after the checkpoint
        kept = [lines[0]] + [ln for ln in lines[1:] if _row_step(ln) is not None and _row_step(ln) <= resume_step]
        self.path.write_text("\n".join(kept) + "\n")

    def append(self, row: dict) -> None:
        if self.columns is None:
            self.columns = list(row)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(",".join(self.columns) + "\n")
        with open(self.path, "a") as f:
            f.write(",".join(_fmt(row.get(c, "")) for c in self.columns) + "\n")

    def sync(self) -> int:
        """Flush the log to disk; its length in bytes (what a checkpoint records)."""
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as f:
            os.fsync(f.fileno())
        return self.path.stat().st_size


def _row_step(line: str) -> int | None:
    try:
        return int(line.split(",", 1)[0])
    except ValueError:
        return None


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
