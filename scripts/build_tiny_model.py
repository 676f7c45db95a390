#!/usr/bin/env python
"""Build the tiny pretrained Llama that tests and demos use, into tunewise/models/tiny_model/.

Deterministic: fixed seeds, torch.manual_seed, torch.use_deterministic_algorithms(True), and a fixed thread
count (float reductions depend on it). The recipe lives in tunewise.models.tiny.RECIPE; this script runs it,
writes the fixture via a temporary directory, and prints the stats to paste into tiny_model/README.md.

    python scripts/build_tiny_model.py [--out DIR] [--steps N] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from tunewise.models import tiny

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=tiny.FIXTURE_DIR)
    parser.add_argument("--steps", type=int, default=tiny.RECIPE["steps"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(tiny.RECIPE["seed"])
    torch.use_deterministic_algorithms(True)

    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny_model-", dir=out.parent))
    t0 = time.perf_counter()
    try:
        stats = tiny.build_tiny_model(tmp, steps=args.steps)
        readme = out / "README.md"
        if readme.exists():  # the model card is maintained by hand; keep it across rebuilds
            shutil.copy2(readme, tmp / "README.md")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        out.chmod(0o755)  # mkdtemp made it 0700
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    stats.pop("log", None)
    stats.update(recipe=tiny.RECIPE | {"steps": args.steps}, threads=args.threads,
                 total_seconds=round(time.perf_counter() - t0, 1),
                 size_bytes=sum(p.stat().st_size for p in out.iterdir() if p.is_file()))
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
