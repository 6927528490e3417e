"""The jobs and table of ``bench.precision``: embedding speed of each precision.

Each runtime embeds the same feature-store rows in its own process (``bench.child``),
so the OS reports each one's peak RSS; rounds alternate between the runtimes so
machine load hits them alike, and the best round counts. The int8 model is made first,
as the modelling stage makes it (``lib.embedding.inference_model.write_inference_model``: NNCF
post-training quantisation calibrated on the store), and its one-off time is reported.
Also reported: images/s, the ratio to ``tf.function``, the achieved GFLOP/s (ResNet50
is about 8.2 GFLOP per 224x224 image) and each photo's cosine to its fp32 vector.

``python -m bench`` (``--precision-rows``) and ``python -m bench.precision`` run it.
"""
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from lib.config import ModellingConfig
from lib.embedding import BF16_MISSING, cpu_has_bf16, MODEL_FILE, Vectorizer, write_inference_model
from lib.retrieval import get_cosine_similarity

GFLOP_PER_IMAGE = 8.2                    # ResNet50 forward pass, 224x224 input
# Name in the table: (runtime, precision).
RUNNERS = {"tf_function": ("tensorflow", "fp32"), "fp32": ("openvino", "fp32"),
           "bf16": ("openvino", "bf16"), "int8": ("openvino", "int8")}
RunJob = Callable[[str, Dict[str, Any]], Dict[str, Any]]


def quantize_job(args: Dict[str, Any]) -> Dict[str, Any]:
    """Child job: writes the int8 inference model as the modelling stage does."""
    config = ModellingConfig(precision="int8", calibration_size=args["calibration_size"])
    start = time.perf_counter()
    write_inference_model(args["out"], Path(args["model"]) / MODEL_FILE, args["store"], config)
    return {"seconds": time.perf_counter() - start}


def embed_job(args: Dict[str, Any]) -> Dict[str, Any]:
    """Child job: embeds ``rows`` store rows at one precision, after a warm-up."""
    features = np.ascontiguousarray(np.load(args["store"], mmap_mode="r")[:args["rows"]])
    vectorizer = Vectorizer.load(args["model"], batch_size=32, runtime=args["runtime"],
                                 precision=args["precision"],
                                 inference_model=args["inference"])
    vectorizer.transform(features[:33])          # compiles (throughput mode) and warms up
    start = time.perf_counter()
    vectors = vectorizer.transform(features)                          # (M, D)
    seconds = time.perf_counter() - start
    np.save(args["vectors"], vectors)
    return {"seconds": seconds, "rows": int(features.shape[0])}


JOBS = {"precision_quantize": quantize_job, "precision_embed": embed_job}


def compare_precisions(store: Path, model: Path, work: Path, rows: int, rounds: int,
                       calibration_size: int, run_job: RunJob) -> Dict[str, Any]:
    """The side-by-side table (see the module docstring).

    Args:
        store: Feature store (N, 224, 224, 3) ``float32``; int8 is calibrated on it.
        model: The saved ``vectorizer_model`` folder.
        work: Scratch folder.
        rows: Rows embedded by each runtime (the first ``rows`` of the store).
        rounds: Rounds of the comparison; the best counts.
        calibration_size: ``modelling.calibration_size`` of the int8 model.
        run_job: ``bench.run.run_job``.
    """
    # pylint: disable=too-many-arguments
    work.mkdir(parents=True, exist_ok=True)
    inference = {"fp32": None, "tf_function": None}
    result: Dict[str, Any] = {"rows": rows, "calibration_size": calibration_size,
                              "gflop_per_image": GFLOP_PER_IMAGE, "runtimes": {}}
    quantize = run_job("precision_quantize", {"model": model, "store": store,
                                              "out": work / "int8",
                                              "calibration_size": calibration_size})
    result["int8_quantize"] = {"seconds": quantize["seconds"],
                               "peak_rss_mib": quantize["peak_rss_mib"]}
    inference["int8"] = work / "int8"
    if cpu_has_bf16():
        write_inference_model(work / "bf16", model / MODEL_FILE, store,
                              ModellingConfig(precision="bf16"))
        inference["bf16"] = work / "bf16"
    else:
        result["bf16_skipped"] = BF16_MISSING
    table = result["runtimes"]
    for _ in range(rounds):
        for name, folder in inference.items():
            runtime, precision = RUNNERS[name]
            job = run_job("precision_embed", {
                "store": store, "model": model, "rows": rows, "runtime": runtime,
                "precision": precision, "inference": folder,
                "vectors": work / f"{name}.npy"})
            speed = job["rows"] / job["seconds"]
            best = table.setdefault(name, {"images_per_s": 0.0, "peak_rss_mib": 0.0})
            best["images_per_s"] = max(best["images_per_s"], speed)
            best["peak_rss_mib"] = max(best["peak_rss_mib"], job["peak_rss_mib"])
    reference = np.load(work / "fp32.npy")                                   # (M, D)
    for name, row in table.items():
        cosines = np.diagonal(get_cosine_similarity(reference, np.load(work / f"{name}.npy")))
        row["cosine_to_fp32"] = {"min": float(cosines.min()), "mean": float(cosines.mean())}
        row["vs_tf_function"] = row["images_per_s"] / table["tf_function"]["images_per_s"]
        row["gflop_per_s"] = row["images_per_s"] * GFLOP_PER_IMAGE
    return result


def print_table(result: Dict[str, Any]) -> None:
    """Prints the comparison."""
    print(f"precision side by side ({result['rows']} rows; int8 calibrated on "
          f"{result['calibration_size']} rows in {result['int8_quantize']['seconds']:.1f} s, "
          f"peak RSS {result['int8_quantize']['peak_rss_mib']:.0f} MiB):")
    for name, row in result["runtimes"].items():
        cosine = row["cosine_to_fp32"]
        print(f"  {name:12s} {row['images_per_s']:7.1f} img/s  {row['vs_tf_function']:5.2f}x "
              f"tf.function  {row['gflop_per_s']:6.0f} GFLOP/s  peak RSS "
              f"{row['peak_rss_mib']:5.0f} MiB  cosine to fp32 min {cosine['min']:.4f} "
              f"mean {cosine['mean']:.4f}")
    if "bf16_skipped" in result:
        print(f"  bf16 skipped: {result['bf16_skipped']}")
