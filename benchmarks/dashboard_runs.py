"""The dashboard's runs list over a folder of N runs: first load (every row and checklist computed) and later loads
(rows cached per file mtime), against `tunewise runs`' own listing (tunewise.monitor.runs.list_runs) of the same folder.

    python benchmarks/dashboard_runs.py --run runs/quickstart --copies 200

The N runs are copies of one real run directory (its data, metrics, eval and report; checkpoints and model weights
left out), renamed; one of them gets a metrics line appended between loads, as a running training would.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="A finished run directory to copy")
    parser.add_argument("--copies", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from tunewise.monitor.runs import list_runs
    from tunewise.ui.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "runs"
        folder.mkdir()
        skip = shutil.ignore_patterns("checkpoints", "*.safetensors", "run.lock")
        for i in range(args.copies):
            shutil.copytree(args.run, folder / f"{args.run.name}-{i:03d}", ignore=skip)
        client = TestClient(create_app(folder))
        first = timed(lambda: client.get("/api/runs").raise_for_status(), 1)[0]
        warm = timed(lambda: client.get("/api/runs").raise_for_status(), args.repeat)
        metrics = folder / f"{args.run.name}-000" / "metrics.jsonl"

        def one_changed() -> None:
            with metrics.open("a") as f:
                f.write('{"kind": "train", "step": 999, "loss": 1.0, "learning_rate": 0.0001, "peak_rss_mb": 1.0}\n')
            client.get("/api/runs").raise_for_status()

        changed = timed(one_changed, args.repeat)
        cli = timed(lambda: list_runs(folder), args.repeat)
        assert len(client.get("/api/runs").json()["runs"]) == args.copies
    print(f"{args.copies} runs (copies of {args.run})")
    print(f"  tunewise runs listing (baseline, no checklist): median {statistics.median(cli) * 1000:.0f} ms")
    print(f"  dashboard /api/runs first load (rows + checklists): {first * 1000:.0f} ms "
          f"({first / statistics.median(cli):.1f}x the baseline)")
    print(f"  dashboard /api/runs cached: median {statistics.median(warm) * 1000:.0f} ms "
          f"({statistics.median(warm) / statistics.median(cli):.2f}x the baseline)")
    print(f"  dashboard /api/runs with one run's metrics changed: median {statistics.median(changed) * 1000:.0f} ms "
          f"({statistics.median(changed) / statistics.median(cli):.2f}x the baseline)")


if __name__ == "__main__":
    main()
