"""``python -m bench cold``: a cold command-line query against the bare floor, side by side.

On a built project (the demo by default: run ``dvc repro`` first) it times whole
processes, in turn, round after round (A B A B ...):

- ``query``: ``python stages/serve.py QUERY -n 5 --output PNG``, verified against
  ``dvc.lock`` as a user runs it, picture included;
- ``floor``: the least any such query can cost here: import NumPy, OpenCV and OpenVINO,
  compile the inference model's IR (no cache), decode, resize and preprocess the photo,
  one inference;
- ``baseline`` (with ``--baseline DIR``): the same query in another built checkout
  (e.g. an older version of this code), for a before/after ratio in one run.

It prints each command's median wall time and the ratios pair by pair, with the
machine's load average, and writes them as JSON.

Usage::

    python -m bench cold [--project DIR] [--baseline DIR] [--rounds 5] [--out FILE]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUERY = ROOT / "data/queries/shoes/2be8cf7a-5b2e-400f-a826-785997af532a.jpg"
IR = Path("data/model/inference_model/model.xml")

# The floor: nothing but the libraries and the work every query must do.
FLOOR = """
import sys
import cv2, numpy as np, openvino as ov
core = ov.Core()
model = core.compile_model(core.read_model(sys.argv[1]), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
bgr = cv2.imread(sys.argv[2])
rgb = cv2.cvtColor(cv2.resize(bgr, (224, 224), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
batch = rgb[np.newaxis, :, :, ::-1].astype(np.float32) - np.float32([103.939, 116.779, 123.68])
print(model(batch)[0].shape)
"""


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench cold",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=ROOT, help="a built project")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another built checkout whose query is timed alongside")
    parser.add_argument("--query", type=Path, default=QUERY, help="the query photo")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/cold-query.json")
    return parser.parse_args(argv)


def timed(command: List[str], cwd: Path) -> float:
    """Wall seconds of one run of a command (which must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def commands(args: argparse.Namespace, out: Path) -> Dict[str, List[str]]:
    """Each command timed, by name."""
    query = [sys.executable, "stages/serve.py", str(args.query.resolve()), "-n", "5",
             "--output", str(out)]
    found = {"query": query,
             "floor": [sys.executable, "-c", FLOOR, str(args.project / IR),
                       str(args.query.resolve())]}
    if args.baseline is not None:
        found["baseline"] = [sys.executable, "stages/serve.py", str(args.query.resolve()),
                             "-n", "5", "--output", str(out)]
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the rounds, prints the summary, writes the JSON."""
    args = parse_args(argv)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / "cold-query.png"
    runs = commands(args, out)
    where = {"query": args.project, "floor": args.project, "baseline": args.baseline}
    load_before = os.getloadavg()
    times: Dict[str, List[float]] = {name: [] for name in runs}
    for round_ in range(args.rounds + 1):
        for name, command in runs.items():
            seconds = timed(command, where[name])
            if round_:                                  # round 0 warms the caches up
                times[name].append(seconds)
    results: Dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "query": str(args.query), "rounds": args.rounds,
        "median_s": {name: float(np.median(values)) for name, values in times.items()},
        "runs_s": times,
        "ratio_query_over_floor": [q / f for q, f in zip(times["query"], times["floor"])]}
    if "baseline" in times:
        results["ratio_baseline_over_query"] = [b / q for b, q in
                                                zip(times["baseline"], times["query"])]
    for name, median in results["median_s"].items():
        print(f"{name:9s} median {median:.3f} s  ({', '.join(f'{t:.2f}' for t in times[name])})")
    for key in ("ratio_query_over_floor", "ratio_baseline_over_query"):
        if key in results:
            print(f"{key}: median {np.median(results[key]):.2f} "
                  f"(min {min(results[key]):.2f}, max {max(results[key]):.2f})")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0
