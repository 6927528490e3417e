"""The benchmark: speed and peak memory of each stage, serving latency, search time.

Runs on real photos from the clothing dataset (replicated by hard links to reach
larger N), each measured job in its own process: its peak resident memory comes from
the OS (``os.wait4`` rusage). Prints a summary and writes everything to a JSON file.

Every speed is also given as a ratio against the plain baseline measured in the same
run: one thread and whole-array ``numpy.load``/``numpy.save`` for ETL and feature
engineering, ``model.predict`` (and the ``tf.function`` path) for embedding, a new
process per query for serving, and an in-memory full cosine for search.

Usage::

    python -m bench [--n 500] [--embed-rows 64] [--precision-rows 128] [--serve-n 10000]
                    [--out FILE]
    python -m bench --n 20000 --memory-only --embed-limit 150 --out FILE
    python -m bench --engines [--engine-rows 256] --out FILE   # local vs Ray (bench.ray_engine)
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from bench import ray_engine
from bench.precision_jobs import compare_precisions, print_table
from lib.artifacts import open_npy_writer
from lib.config import IndexConfig, ModellingConfig
from lib.embedding import CACHE_ENV, MODEL_FILE, ResNet50Helper, Vectorizer, write_inference_model
from lib.photos import list_images
from lib.retrieval import build_index, save_augmented, save_index, save_whitening

DATASET = ROOT.parent / "shared" / "datasets" / "clothing-small"
WEIGHTS = ROOT.parent / "shared" / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
DEFAULT_OUT = ROOT / "bench" / "results" / "latest.json"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500,
                        help="photos through ETL, feature engineering and embedding")
    parser.add_argument("--embed-rows", type=int, default=64,
                        help="rows for the side-by-side runtime comparison")
    parser.add_argument("--embed-limit", type=float, default=None,
                        help="stop the embedding stage after this many seconds (SIGINT, as "
                             "a user would) to measure its memory on a large store")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the comparison")
    parser.add_argument("--precision-rows", type=int, default=128,
                        help="rows for the side-by-side precision comparison (tf.function, "
                             "fp32, bf16, int8; int8 calibrated on up to 300 rows); 0 = off")
    parser.add_argument("--large", type=int, default=24,
                        help="12-megapixel photos made by upscaling, for the ETL")
    parser.add_argument("--serve-n", type=int, default=10000,
                        help="collection size for serving latency (rows tiled from the run)")
    parser.add_argument("--queries", type=int, default=20, help="warm serving queries")
    parser.add_argument("--cold", type=int, default=3, help="cold serving runs")
    parser.add_argument("--search-sizes", type=int, nargs="+",
                        default=[1000, 10000, 100000])
    parser.add_argument("--memory-only", action="store_true",
                        help="only the streaming stages (for peak memory vs N): no "
                             "whole-array baselines, runtime comparison, serving or search")
    parser.add_argument("--engines", action="store_true",
                        help="only the embedding engines side by side: local, Ray with 1 and "
                             "2 actors (see bench.ray_engine)")
    parser.add_argument("--engine-rows", type=int, default=256,
                        help="feature-store rows for --engines")
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    return parser.parse_args(argv)


def run_job(job: str, args: Dict[str, Any], limit: Optional[float] = None) -> Dict[str, Any]:
    """Runs ``bench.child`` JOB in a new process; adds its wall time and peak RSS (MiB).

    With ``limit``, the job is interrupted (SIGINT) after that many seconds.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "-m", "bench.child", job, json.dumps(args, default=str)],
            cwd=ROOT, stdout=out, stderr=err)
        if limit is not None:
            try:
                proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                proc.send_signal(2)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        log = err.read()
    result: Dict[str, Any] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {}
    if proc.returncode != 0 and limit is None:
        raise RuntimeError(f"bench job {job} failed ({proc.returncode}):\n{log[-3000:]}")
    result.update({"wall_seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024,
                   "exit_status": proc.returncode})
    if limit is not None:
        done = [line for line in log.splitlines() if "embedding:" in line]
        result["progress"] = done[-1].split("embedding:")[-1].strip() if done else "0"
    return result


def make_master(dataset: Path, target: Path, count: int) -> None:
    """``count`` photos of the dataset as hard links (copies across file systems),
    replicated when it has fewer. Not symbolic links: the ETL never follows those
    (see ``lib.photos.files``)."""
    photos = list_images(dataset)
    for i in range(count):
        source = photos[i % len(photos)]
        link = target / f"r{i // len(photos):03d}" / source.relative_to(dataset)
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, link)
        except OSError:
            shutil.copyfile(source, link)


def make_large(dataset: Path, target: Path, count: int) -> None:
    """``count`` 12-megapixel JPEGs (3000x4000) made by upscaling dataset photos."""
    target.mkdir(parents=True)
    for source in list_images(dataset)[:count]:
        image = cv2.imread(str(source))
        big = cv2.resize(image, (3000, 4000), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(target / source.name), big, [cv2.IMWRITE_JPEG_QUALITY, 92])


def tile_rows(source: Path, target: Path, rows: int, chunk: int = 1024) -> None:
    """Writes ``rows`` rows to ``target`` by repeating the rows of ``source``, streamed."""
    reader = np.load(source, mmap_mode="r")
    with open_npy_writer(target, (rows,) + reader.shape[1:], reader.dtype) as out:
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            out[start:stop] = reader[np.arange(start, stop) % reader.shape[0]]


def rate(job: Dict[str, Any]) -> float:
    """Images per second of a job."""
    return job["rows"] / job["seconds"]


def percentiles(values: List[float]) -> Dict[str, float]:
    """p50 and p95 in milliseconds."""
    return {"p50_ms": 1e3 * float(np.median(values)),
            "p95_ms": 1e3 * float(np.percentile(values, 95)), "runs": len(values)}


def serve_latency(project: Path, queries: List[Path], cold: int) -> Dict[str, Any]:
    """Cold (a new process per query) and warm (``serve.py -``) latency."""
    command = [sys.executable, str(ROOT / "stages" / "serve.py")]
    cold_times = []
    for query in queries[:cold]:
        start = time.perf_counter()
        subprocess.run(command + [str(query), "--params", str(project / "params.yaml"),
                                  "--no-verify",
                                  "--output", str(project / "cold.png")],
                       check=True, capture_output=True, cwd=project)
        cold_times.append(time.perf_counter() - start)
    with subprocess.Popen(command + ["-", "--params", str(project / "params.yaml"),
                                     "--no-verify"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, cwd=project) as proc:
        warm_times = []
        for query in [queries[0]] + queries:                     # the first one warms up
            start = time.perf_counter()
            proc.stdin.write(f"{query}\n")
            proc.stdin.flush()
            while proc.stdout.readline().strip():
                pass
            warm_times.append(time.perf_counter() - start)
        proc.stdin.close()
    return {"cold": percentiles(cold_times), "first_warm_query_ms": 1e3 * warm_times[0],
            "warm": percentiles(warm_times[1:])}


def main(argv: Optional[Sequence[str]] = None) -> int:  # pylint: disable=too-many-locals,too-many-statements
    """Runs the benchmark, prints a summary, writes the JSON."""
    args = parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # A fresh conversion cache: the embedding stage converts (its load time), serving
    # then finds the conversion cached, as after `dvc repro` on the same machine.
    os.environ[CACHE_ENV] = str(work / "cache")
    results: Dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(), "python": platform.python_version()},
        "n": args.n, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        if args.engines:
            compare_engines(work, args, results)
            return write_results(args.out, results)
        print(f"bench: N={args.n} in {work}", flush=True)
        make_master(args.dataset, work / "master", args.n)
        make_large(args.dataset, work / "large", args.large)
        land, store = work / "landing", work / "features.npy"
        land.mkdir()
        stages = results["stages"] = {}
        stages["etl"] = run_job("etl", {"master": work / "master", "out": land,
                                        "reduced_decode": True, "workers": 4})
        if not args.memory_only:
            stages["etl_plain"] = run_job("etl_plain", {"master": work / "master", "out": land})
        for name, reduced in (("etl_12mp", True), ("etl_12mp_full_decode", False)):
            (work / name).mkdir()
            stages[name] = run_job("etl", {"master": work / "large", "out": work / name,
                                           "reduced_decode": reduced, "workers": 4})
        big = [np.load(work / name / "resized_rgb.npy").astype(np.int16)
               for name in ("etl_12mp", "etl_12mp_full_decode")]
        results["reduced_decode"] = {"max_abs_pixel_diff": int(np.abs(big[0] - big[1]).max()),
                                     "mean_abs_pixel_diff": float(np.abs(big[0] - big[1]).mean())}
        stages["fe"] = run_job("fe", {"images": land / "resized_rgb.npy", "features": store})
        model = work / "model"
        Vectorizer(ResNet50Helper(weights=str(args.weights)).build()).save(model)
        if not args.memory_only:
            stages["fe_plain"] = run_job("fe_plain", {"images": land / "plain_rgb.npy",
                                                      "features": work / "plain_features.npy"})
            (work / "plain_features.npy").unlink()
            (land / "plain_rgb.npy").unlink()
            compare = results["embedding_compare"] = run_job("embed_compare", {
                "features": store, "model": model, "rows": args.embed_rows,
                "rounds": args.rounds,
                "large_full": work / "etl_12mp_full_decode" / "resized_rgb.npy",
                "large_reduced": work / "etl_12mp" / "resized_rgb.npy"})
            results["reduced_decode"]["min_embedding_cosine"] = compare.pop(
                "reduced_decode_min_cosine", None)
            if args.precision_rows:
                results["precision_compare"] = compare_precisions(
                    store, model, work / "precision", min(args.precision_rows, args.n),
                    args.rounds, min(300, args.n), run_job)
        stages["embed"] = run_job("embed", {"features": store, "model": model,
                                            "vectors": work / "vectors.npy", "runtime": "auto"},
                                  limit=args.embed_limit)
        if "seconds" in stages["embed"] and not args.memory_only:
            serve_project(work, args, results)
            results["search"] = run_job("search", {
                "vectors": work / "vectors.npy", "model": model, "out": work,
                "sizes": args.search_sizes, "queries": 50})["table"]
        store.unlink()
        summarise(results)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return write_results(args.out, results)


def write_results(out: Path, results: Dict[str, Any]) -> int:
    """Stamps the finish time and writes the JSON file."""
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"bench: results in {out}")
    return 0


def compare_engines(work: Path, args: argparse.Namespace, results: Dict[str, Any]) -> None:
    """Local vs Ray embedding engines on one feature store (``bench.ray_engine``)."""
    print(f"bench: engines on {args.engine_rows} rows in {work}", flush=True)
    make_master(args.dataset, work / "master", args.engine_rows)
    land, store, model = work / "landing", work / "features.npy", work / "model"
    land.mkdir()
    run_job("etl", {"master": work / "master", "out": land, "reduced_decode": True,
                    "workers": 4})
    run_job("fe", {"images": land / "resized_rgb.npy", "features": store})
    Vectorizer(ResNet50Helper(weights=str(args.weights)).build()).save(model)
    vectorizer = Vectorizer.load(model, runtime="auto")       # converted once, then cached
    vectorizer.transform(np.zeros((1,) + vectorizer.input_shape, np.float32))
    results["engines"] = ray_engine.compare(work, store, model, args.rounds, run_job)
    ray_engine.summarise(results["engines"])


def serve_project(work: Path, args: argparse.Namespace, results: Dict[str, Any]) -> None:
    """Serving latency on a collection of ``--serve-n`` rows tiled from the run's."""
    project = make_serve_project(work, args.serve_n)
    queries = list_images(args.dataset / "test")[:args.queries]
    results["serve"] = {"n": args.serve_n, **serve_latency(project, queries, args.cold)}


def make_serve_project(work: Path, size: int, precision: str = "fp32") -> Path:
    """A servable folder ``work/serve`` of ``size`` rows tiled from the run's artifacts.

    Reads ``work/vectors.npy``, ``work/landing`` and ``work/model``; the folder's
    ``params.yaml`` points at the tiled copies (serve it with ``--no-verify``).
    """
    project = work / "serve"
    data = project / "data"
    data.mkdir(parents=True)
    tile_rows(work / "vectors.npy", data / "vectors.npy", size)
    tile_rows(work / "landing" / "resized_rgb.npy", data / "images.npy", size)
    names = np.load(work / "landing" / "image_names.npy")
    np.save(data / "names.npy", np.array([f"{i // len(names)}/{names[i % len(names)]}"
                                          for i in range(size)]))
    shutil.copytree(work / "model", data / "model")
    # The inference model (the IR serving runs), made from that saved model.
    write_inference_model(data / "inference_model", data / "model" / MODEL_FILE,
                          work / "features.npy", ModellingConfig(precision=precision))
    # Whitening off, as params.yaml has it, and the index it asks for (serving refuses a
    # missing artifact).
    vectors = np.load(data / "vectors.npy", mmap_mode="r")
    save_whitening(data / "model" / "whitening.npz", None, vectors.shape[1], size)
    save_augmented(data / "model" / "augmented.npy", None, vectors.shape[1])
    save_index(data / "model" / "index", build_index(vectors, None, IndexConfig())[0])
    params = (ROOT / "params.yaml").read_text(encoding="utf-8")
    for key, value in (("images", "data/images.npy"), ("names", "data/names.npy"),
                       ("vectors", "data/vectors.npy"), ("model", "data/model"),
                       ("inference_model", "data/inference_model")):
        params = "\n".join(f"  {key}: {value}" if line.startswith(f"  {key}:") else line
                           for line in params.splitlines())
    (project / "params.yaml").write_text(params + "\n", encoding="utf-8")
    return project


def summarise(results: Dict[str, Any]) -> None:
    """Adds the ratios against the baselines and prints a summary."""
    stages = results["stages"]
    ratios = results["ratios"] = {
        "etl_12mp_vs_full_decode": rate(stages["etl_12mp"]) / rate(stages["etl_12mp_full_decode"])}
    for name in ("etl", "fe"):
        if f"{name}_plain" in stages:
            ratios[f"{name}_vs_plain"] = rate(stages[name]) / rate(stages[f"{name}_plain"])
    if "serve" in results:
        serve = results["serve"]
        ratios["serve_warm_vs_cold_p50"] = serve["cold"]["p50_ms"] / serve["warm"]["p50_ms"]
    for name, job in stages.items():
        speed = f"{rate(job):8.1f} img/s" if "seconds" in job else "   (stopped)     "
        print(f"{name:22s} {speed}  peak RSS {job['peak_rss_mib']:7.0f} MiB")
    if "embedding_compare" in results:
        compare = results["embedding_compare"]["images_per_s"]
        best = compare.get("openvino", compare["tf_function"])
        ratios["embedding_vs_predict"] = best / compare["predict"]
        ratios["embedding_vs_tf_function"] = best / compare["tf_function"]
        print("embedding img/s side by side:",
              ", ".join(f"{k} {v:.2f}" for k, v in compare.items()))
    if "precision_compare" in results:
        print_table(results["precision_compare"])
    if "serve" in results:
        serve = results["serve"]
        print(f"serve N={serve['n']}: cold p50 {serve['cold']['p50_ms']:.0f} ms, warm p50 "
              f"{serve['warm']['p50_ms']:.0f} ms p95 {serve['warm']['p95_ms']:.0f} ms")
        for row in results["search"]:
            print(f"search N={row['n']:>7}: p50 {row['p50_ms']:.2f} ms "
                  f"(plain {row['plain_p50_ms']:.2f} ms)")
    print("ratios:", ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
