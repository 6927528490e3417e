"""Search quality of each ``modelling.precision``, measured by the evaluate stage.

Builds a real project from the clothing dataset (train + validation photos as the
collection, test photos as the labelled query set; ``--every`` / ``--query-every``
take every k-th photo of each, in sorted order, to fit the time), then for each
precision sets ``modelling.precision`` and runs ``dvc repro``: the evaluate stage
embeds every query through the serving path. Reports mAP, P@1, P@10 and the cosine of
each photo's vector to its fp32 vector (min / mean), and writes them as JSON.

Usage::

    python -m bench.precision_quality [--every 3] [--query-every 2] \\
        [--precisions fp32 int8 bf16] [--calibration-size 300] [--out FILE]
"""
import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from lib.embedding import BF16_MISSING, cpu_has_bf16
from lib.retrieval import get_cosine_similarity
from tests.support.helpers import dataset_rows, make_project, run, set_params

VECTORS = "data/model/embedded_image_vectors.npy"
DEFAULT_OUT = ROOT / "bench" / "results" / "precision-quality.json"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.precision_quality",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=3,
                        help="every k-th train + validation photo joins the collection")
    parser.add_argument("--query-every", type=int, default=2,
                        help="every k-th test photo is a query")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8", "bf16"])
    parser.add_argument("--calibration-size", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    return parser.parse_args(argv)


def measure(project: Path, precision: str, reference: Optional[np.ndarray]) -> Dict[str, Any]:
    """Runs ``dvc repro`` at ``precision``; its evaluation metrics and cosines to fp32."""
    if precision == "bf16" and not cpu_has_bf16():
        return {"skipped": BF16_MISSING}
    set_params(project, {"modelling.precision": precision})
    started = time.perf_counter()
    run(["dvc", "repro"], project)
    row: Dict[str, Any] = {"repro_seconds": round(time.perf_counter() - started, 1)}
    metrics = json.loads((project / "metrics" / "evaluation.json").read_text(encoding="utf-8"))
    row.update({key: metrics[key] for key in ("mAP", "P@1", "P@10", "queries",
                                              "seconds_per_query")})
    record = project / "data" / "model" / "inference_model" / "precision.json"
    row["record"] = json.loads(record.read_text(encoding="utf-8"))
    if reference is not None:
        vectors = np.load(project / VECTORS)                                  # (N, D)
        cosines = np.diagonal(get_cosine_similarity(reference, vectors))     # (N,)
        row["cosine_to_fp32"] = {"min": float(cosines.min()), "mean": float(cosines.mean())}
    return row


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Builds the project, measures each precision, prints and writes the table."""
    args = parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="precision-quality-"))
    collection = (dataset_rows("train") + dataset_rows("validation"))[::args.every]
    queries = dataset_rows("test")[::args.query_every]
    results: Dict[str, Any] = {"collection": len(collection), "queries": len(queries),
                               "every": args.every, "query_every": args.query_every,
                               "calibration_size": args.calibration_size, "precisions": {}}
    try:
        project = make_project(work / "project", collection, queries=queries)
        set_params(project, {"modelling.calibration_size": args.calibration_size})
        reference = None
        order: List[str] = sorted(args.precisions, key=lambda p: p != "fp32")  # fp32 first
        for precision in order:
            print(f"precision_quality: {precision} ...", flush=True)
            row = results["precisions"][precision] = measure(project, precision, reference)
            if precision == "fp32":
                reference = np.load(project / VECTORS)
            print(f"  {json.dumps(row)}", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"precision_quality: results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
