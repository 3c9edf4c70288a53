"""Start-up and fail-fast figures: wall seconds of `tmd-bench --help`, `teacher list` and the errors a
user meets first (a teacher not in the cache, a folder without weights, a size the VAE cannot take).

    python benchmarks/startup.py [--repeats 5]

Each command runs as a fresh process (what a user waits for); the median and the range are printed,
beside the 1.5 s budget of issue 11. Figures, not assertions: speed targets live here, not in tests
(tests/test_startup.py checks the property behind them — no torch import on these paths)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 1.5


def cases(tmp: Path) -> list[tuple[str, list[str]]]:
    no_weights = tmp / "no-weights"
    (no_weights / "transformer").mkdir(parents=True)
    (no_weights / "transformer" / "config.json").write_text(json.dumps({"patch_size": [1, 2, 2]}))
    for sub in ("text_encoder", "tokenizer"):
        (no_weights / sub).mkdir()
    return [
        ("tmd-bench --help", ["--help"]),
        ("tmd-bench teacher list", ["teacher", "list"]),
        ("evaluate: teacher not in the cache", ["evaluate", "--teacher", "wan2.1-1.3b"]),
        ("evaluate: folder without weights", ["evaluate", "--teacher", "wan2.1-1.3b", "--teacher-path",
                                              str(no_weights)]),
        ("distill: folder without weights", ["distill", "--teacher", "wan2.1-1.3b", "--teacher-path",
                                             str(no_weights)]),
        ("evaluate: --height 40 (not a multiple of 16)", ["evaluate", "--teacher", "shapes", "--height", "40"]),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    exe = shutil.which("tmd-bench", path=str(Path(sys.executable).parent)) or "tmd-bench"
    tmp = Path(tempfile.mkdtemp())
    env = {**os.environ, "HF_HUB_CACHE": str(tmp / "empty-cache"), "HF_HUB_OFFLINE": "1"}
    print(f"{'command':48} {'median s':>9} {'min–max s':>13}  exit  within {BUDGET_S} s")
    for label, argv in cases(tmp):
        walls, code = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            code = subprocess.run([exe, *argv], env=env, capture_output=True).returncode
            walls.append(time.perf_counter() - t0)
        med = statistics.median(walls)
        print(f"{label:48} {med:9.2f} {min(walls):6.2f}–{max(walls):<6.2f} {code:5}  "
              f"{'yes' if med <= BUDGET_S else 'NO'}")
    print(f"\n{os.cpu_count()} CPU cores; python {sys.version.split()[0]}; each figure: {args.repeats} fresh processes")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
