"""What verifying pinned artifact versions costs serving, per query.

Times ``lib.pinning.verify.verify_workspace`` on a built project: DVC's import and repository
opening (paid once per process), the check with DVC's stat cache warm (the usual case:
``dvc repro``, ``pull`` and ``checkout`` fill it), and the check with the stat cache
cold for the served artifacts (their mtime changed, so DVC re-reads and re-hashes them).
Each includes the private copy of the served artifacts (every byte hashed);
``bench/verify_cost.py`` times the check and the copy apart.

Usage::

    python bench/pinning_cost.py [PROJECT_ROOT] [--repeat 5]
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib.config import load_config
from lib.pinning import SERVED, verify_workspace


def _timed(func) -> float:
    """Seconds one call of ``func`` takes."""
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def _touch_all(paths) -> int:
    """Bumps the mtime of every file under ``paths``; returns the bytes they hold."""
    total = 0
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            os.utime(file)
            total += file.stat().st_size
    return total


def main() -> int:
    """Prints the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=Path("."))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    config = load_config(args.root / "params.yaml")
    started = time.perf_counter()
    import dvc.repo  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    print(f"import dvc:                         {time.perf_counter() - started:.3f} s")
    first = _timed(lambda: verify_workspace(args.root, config).release())
    print(f"first check (opens repo, index):    {first:.3f} s")
    warm = [_timed(lambda: verify_workspace(args.root, config).release())
            for _ in range(args.repeat)]
    print(f"check, stat cache warm:             {statistics.median(warm):.3f} s "
          f"(median of {args.repeat})")
    paths = config.paths.resolve(args.root)
    cold = []
    for _ in range(args.repeat):
        size = _touch_all([paths[key] for key in SERVED])
        cold.append(_timed(lambda: verify_workspace(args.root, config).release()))
    print(f"check, stat cache cold ({size / 1e6:.1f} MB re-hashed): "
          f"{statistics.median(cold):.3f} s (median of {args.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
