"""Embedding speed of each precision, side by side: tf.function, fp32, bf16, int8.

Builds a feature store from real photos (ETL and feature engineering as the pipeline
runs them), saves the real ResNet50, and runs :func:`bench.precision_jobs.compare_precisions`:
each runtime embeds the same rows in its own process (peak RSS from the OS), rounds
alternate, the best counts; the int8 model is made first as the modelling stage makes it,
and its one-off quantisation time is reported. Prints the table and writes it as JSON.

Usage (``python -m bench`` runs the same comparison, ``--precision-rows``)::

    python -m bench.precision [--rows 128] [--calibration-size 300] [--rounds 2]
"""
import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from bench.precision_jobs import compare_precisions, print_table
from bench.run import make_master, run_job
from lib.config import EtlConfig
from lib.embedding import ResNet50Helper, run_feature_engineering, Vectorizer
from lib.photos import run_etl

DEFAULT_OUT = ROOT / "bench" / "results" / "precision.json"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.precision",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=128, help="rows each runtime embeds")
    parser.add_argument("--calibration-size", type=int, default=300,
                        help="int8 calibration rows (the store holds at least these)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "datasets"
                        / "clothing-small")
    parser.add_argument("--weights", type=Path, default=ROOT.parent / "shared" / "models"
                        / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Builds a feature store from real photos, runs the comparison, writes the JSON."""
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    try:
        make_master(args.dataset, work / "master", max(args.rows, args.calibration_size))
        run_etl(work / "master", work / "rgb.npy", work / "names.npy", work / "etl.json",
                EtlConfig())
        run_feature_engineering(work / "rgb.npy", work / "store.npy")
        Vectorizer(ResNet50Helper(weights=str(args.weights)).build()).save(work / "model")
        result = compare_precisions(work / "store.npy", work / "model", work / "compare",
                                    args.rows, args.rounds, args.calibration_size, run_job)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"bench.precision: results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
