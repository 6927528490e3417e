"""One measured job, run in its own process so the OS reports its own peak memory.

``python -m bench.child JOB JSON_ARGS`` prints one JSON line: the job's timings.
Each job calls the project's real code (``lib.photos.etl``, ``lib.embedding.vectorizer``), or for
the ``*_plain`` baselines the plain whole-array way: load everything, transform,
``numpy.save``, and ``model.predict``.
"""
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from bench.precision_jobs import JOBS as PRECISION_JOBS
from bench.ray_engine import embed_engine
from lib import cli
from lib.config import EtlConfig
from lib.embedding import preprocess, run_embedding, run_feature_engineering, Vectorizer
from lib.photos import etl_transform, list_images, read_image_bgr, run_etl
from lib.retrieval import get_cosine_similarity, ImageSearchEngine, top_k


def etl(args: Dict[str, Any]) -> Dict[str, Any]:
    """The ETL stage as the pipeline runs it (threads, chunks, reduced JPEG decode)."""
    config = EtlConfig(reduced_decode=args["reduced_decode"], workers=args["workers"])
    out = Path(args["out"])
    start = time.perf_counter()
    report = run_etl(args["master"], out / "resized_rgb.npy", out / "image_names.npy",
                     out / "etl_report.json", config)
    return {"seconds": time.perf_counter() - start, "rows": report["images_kept"]}


def etl_plain(args: Dict[str, Any]) -> Dict[str, Any]:
    """Baseline ETL: one thread, full decode, the whole array in memory, ``numpy.save``."""
    config = EtlConfig(reduced_decode=False)
    start = time.perf_counter()
    files = list_images(args["master"])
    rows = np.stack([etl_transform(read_image_bgr(path), config) for path in files])
    np.save(Path(args["out"]) / "plain_rgb.npy", rows)
    return {"seconds": time.perf_counter() - start, "rows": len(files)}


def fe(args: Dict[str, Any]) -> Dict[str, Any]:  # pylint: disable=invalid-name
    """The feature-engineering stage as the pipeline runs it."""
    preprocess(np.zeros((1, 1, 1, 3), np.uint8))          # imports Keras outside the clock
    start = time.perf_counter()
    rows = run_feature_engineering(args["images"], args["features"], chunk_size=128)
    return {"seconds": time.perf_counter() - start, "rows": rows}


def fe_plain(args: Dict[str, Any]) -> Dict[str, Any]:
    """Baseline feature engineering: ``numpy.load`` all, preprocess all, ``numpy.save``."""
    preprocess(np.zeros((1, 1, 1, 3), np.uint8))
    start = time.perf_counter()
    images = np.load(args["images"])
    np.save(args["features"], preprocess(images))
    return {"seconds": time.perf_counter() - start, "rows": int(images.shape[0])}


def embed(args: Dict[str, Any]) -> Dict[str, Any]:
    """The modelling stage's embedding: saved model loaded, runtime chosen, streamed."""
    cli.setup_logging()                            # progress lines tell how far it got
    start = time.perf_counter()
    vectorizer = Vectorizer.load(args["model"], batch_size=32, runtime=args["runtime"])
    vectorizer.transform(np.zeros((1,) + vectorizer.input_shape, np.float32))  # convert
    loaded, cpu = time.perf_counter(), time.process_time()
    rows = run_embedding(args["features"], args["vectors"], vectorizer, chunk_size=256)
    return {"seconds": time.perf_counter() - loaded, "load_seconds": loaded - start,
            "cpu_seconds": time.process_time() - cpu,             # all threads
            "rows": rows, "runtime": vectorizer.runtime}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, D) arrays."""
    return np.diagonal(get_cosine_similarity(a, b))


def embed_compare(args: Dict[str, Any]) -> Dict[str, Any]:
    """Side by side on the same rows: ``model.predict``, ``tf.function``, OpenVINO.

    Rounds alternate between the runtimes so machine load hits them alike.
    """
    features = np.load(args["features"], mmap_mode="r")[:args["rows"]]
    features = np.ascontiguousarray(features)                         # (M, S, S, 3)
    tf_vec = Vectorizer.load(args["model"], batch_size=32, runtime="tensorflow")
    runners: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "predict": lambda x: tf_vec.model.predict(x, batch_size=32, verbose=0),
        "tf_function": tf_vec.transform}
    result: Dict[str, Any] = {"rows": int(features.shape[0])}
    try:
        ov_vec = Vectorizer.load(args["model"], batch_size=32, runtime="openvino")
        start = time.perf_counter()
        ov_vec.transform(features[:1])
        result["openvino_convert_seconds"] = time.perf_counter() - start
        runners["openvino"] = ov_vec.transform
    except ValueError as err:
        result["openvino_error"] = str(err)
    outputs: Dict[str, np.ndarray] = {}
    seconds = {name: 0.0 for name in runners}
    for name, run in runners.items():                                 # warm-up
        run(features[:2])
    for _ in range(args["rounds"]):
        for name, run in runners.items():
            start = time.perf_counter()
            outputs[name] = np.asarray(run(features))
            seconds[name] += time.perf_counter() - start
    total = features.shape[0] * args["rounds"]
    result["images_per_s"] = {name: total / value for name, value in seconds.items()}
    result["min_cosine_vs_predict"] = {
        name: float(_cosines(out, outputs["predict"]).min()) for name, out in outputs.items()}
    if args.get("large_full") and args.get("large_reduced"):
        full = preprocess(np.load(args["large_full"]))
        reduced = preprocess(np.load(args["large_reduced"]))
        vec = ov_vec if "openvino" in runners else tf_vec
        result["reduced_decode_min_cosine"] = float(
            _cosines(vec.transform(full), vec.transform(reduced)).min())
    return result


def search(args: Dict[str, Any]) -> Dict[str, Any]:
    """Search time alone (no embedding) vs N, and the plain whole-array baseline."""
    vectors = np.load(args["vectors"])                                # (n0, D)
    vectorizer = Vectorizer.load(args["model"], runtime="tensorflow")
    rng = np.random.default_rng(0)
    queries = vectors[rng.integers(0, vectors.shape[0], args["queries"])]
    table = []
    for size in args["sizes"]:
        path = Path(args["out"]) / f"vectors_{size}.npy"
        reps = -(-size // vectors.shape[0])
        np.save(path, np.tile(vectors, (reps, 1))[:size])
        names = np.array([str(i) for i in range(size)])
        engine = ImageSearchEngine(np.load(path, mmap_mode="r"), names, vectorizer,
                                   EtlConfig())
        times = []
        for query in queries:
            start = time.perf_counter()
            engine.search_vector(query, 5)
            times.append(time.perf_counter() - start)
        plain_times = []
        for query in queries[:10]:                 # baseline: whole array, full cosine
            start = time.perf_counter()
            top_k(get_cosine_similarity(query[np.newaxis], np.load(path))[0], 5)
            plain_times.append(time.perf_counter() - start)
        path.unlink()
        table.append({"n": size, "p50_ms": 1e3 * float(np.median(times)),
                      "p95_ms": 1e3 * float(np.percentile(times, 95)),
                      "plain_p50_ms": 1e3 * float(np.median(plain_times))})
    return {"table": table}


JOBS = {"etl": etl, "etl_plain": etl_plain, "fe": fe, "fe_plain": fe_plain, "embed": embed,
        "embed_compare": embed_compare, "search": search, "embed_engine": embed_engine,
        **PRECISION_JOBS}


def main() -> int:
    """Runs the job named on the command line and prints its JSON result."""
    job, args = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(JOBS[job](args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
