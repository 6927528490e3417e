"""Index benchmark: the exact scan against each FAISS index kind at 100,000 to 1,000,000 rows.

Synthetic collections are made from real ResNet50 vectors of the clothing dataset
(``python -m bench.real_vectors``): each synthetic vector is a real vector moved a
random fraction of the way towards one of its 10 nearest real neighbours, plus noise
shaped like the collection (sigma x the difference of two random real vectors / sqrt
2), normalised. Sigma 0.5 was calibrated so that a synthetic set of the real set's
size has the real set's neighbourhoods (mean cosine to the 1st / 10th neighbour and to
a random vector; printed by every run), so that the synthetic vectors are not clusters
of near-copies of the real ones. Large collections can be projected on the real
vectors' top principal axes (``--dim``) to fit this machine's memory.

Each index kind is built in its own process (time, peak RSS, size on disk) and served
in another: the engine (:class:`lib.retrieval.engine.ImageSearchEngine`, ranking embeddings, no
model) loads the vectors (memory-mapped) and the index, answers held-out queries
(``search_vector``, top 10, candidates re-scored exactly): p50/p95, recall@10 against
the exact top 10, and the serving process's peak RSS.

Usage::

    python -m bench.index_bench --vectors REAL_NPY --n 100000 [--dim 0] [--kinds ...]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from lib.artifacts import open_npy_writer
from lib.config import EtlConfig, IndexConfig
from lib.retrieval import (
    build_index, ImageSearchEngine, l2_normalize, load_index, save_index, top_k)

SIGMA = 0.5
CHUNK = 50000


def neighbourhoods(vectors: np.ndarray, probes: int = 500) -> Dict[str, float]:
    """Mean cosine of sampled rows to their 1st and 10th neighbour and to random rows."""
    rng = np.random.default_rng(1)
    rows = rng.choice(vectors.shape[0], min(probes, vectors.shape[0]), replace=False)
    probe = l2_normalize(np.asarray(vectors[rows]))                         # (P, D)
    best = np.full((rows.shape[0], 11), -2.0, dtype=np.float32)             # (P, 11)
    for start in range(0, vectors.shape[0], CHUNK):
        scores = probe @ l2_normalize(np.asarray(vectors[start:start + CHUNK])).T
        best = np.sort(np.concatenate([best, scores], axis=1), axis=1)[:, -11:]
    others = l2_normalize(np.asarray(vectors[np.sort(rng.choice(vectors.shape[0], 500))]))
    return {"nn1": float(best[:, -2].mean()), "nn10": float(best[:, 0].mean()),
            "random": float((probe @ others.T).mean())}


def synthesize(real: np.ndarray, count: int, seed: int, basis: Optional[np.ndarray],
               out: Optional[Path] = None) -> np.ndarray:
    """``count`` synthetic vectors (see the module docstring), streamed to ``out``."""
    real = l2_normalize(real)                                               # (R, D)
    scores = real @ real.T                                                  # (R, R)
    np.fill_diagonal(scores, -2.0)
    knn = np.argsort(-scores, axis=1)[:, :10]                               # (R, 10)
    rng = np.random.default_rng(seed)
    dim = real.shape[1] if basis is None else basis.shape[1]

    def chunk(size: int) -> np.ndarray:
        anchor = rng.integers(0, real.shape[0], size)
        towards = knn[anchor, rng.integers(0, 10, size)]
        step = rng.random((size, 1), dtype=np.float32)
        noise = (real[rng.integers(0, real.shape[0], size)]
                 - real[rng.integers(0, real.shape[0], size)])
        block = l2_normalize(real[anchor] + step * (real[towards] - real[anchor])
                             + SIGMA * noise / np.sqrt(2))                  # (C, D)
        return block if basis is None else l2_normalize(block @ basis)      # (C, d)

    if out is None:
        return chunk(count)
    with open_npy_writer(out, (count, dim), np.float32) as writer:
        for start in range(0, count, CHUNK):
            writer[start:min(start + CHUNK, count)] = chunk(min(CHUNK, count - start))
    return np.load(out, mmap_mode="r")


def exact_top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(Q, 10) exact top-10 rows of each query, streamed over the collection."""
    unit = l2_normalize(queries)                                            # (Q, D)
    scores = np.empty((queries.shape[0], vectors.shape[0]), dtype=np.float32)
    for start in range(0, vectors.shape[0], CHUNK):
        scores[:, start:start + CHUNK] = unit @ l2_normalize(
            np.asarray(vectors[start:start + CHUNK])).T
    return np.stack([top_k(row, 10)[0] for row in scores])


def job_build(args: Dict[str, Any]) -> Dict[str, Any]:
    """Builds and saves one index (in its own process)."""
    vectors = np.load(args["vectors"], mmap_mode="r")
    config = IndexConfig(**args["config"])
    start = time.perf_counter()
    index, action = build_index(vectors, None, config)
    seconds = time.perf_counter() - start
    save_index(args["index"], index)
    size = sum(path.stat().st_size for path in Path(args["index"]).iterdir())
    return {"build_seconds": seconds, "index_mib": size / 2 ** 20, "action": action,
            "peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's peak resident memory since it started (``VmHWM``, reset by exec)."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def job_serve(args: Dict[str, Any]) -> Dict[str, Any]:
    """Loads the engine with the index and answers the queries (in its own process)."""
    vectors = np.load(args["vectors"], mmap_mode="r")
    queries = np.load(args["queries"])
    truth = np.load(args["truth"])
    config = IndexConfig(**args["config"])
    start = time.perf_counter()
    index = load_index(args["index"], vectors, None, config)
    names = np.char.mod("%d", np.arange(vectors.shape[0])).astype(str)
    engine = ImageSearchEngine(vectors, names, None, EtlConfig(), index=index,
                               index_config=config)
    load_seconds = time.perf_counter() - start
    for query in queries[:5]:                                   # warm-up
        engine.search_vector(query, 10)
    times, recall = [], []
    for query, expected in zip(queries, truth):
        started = time.perf_counter()
        rows = [row for _, row in engine.search_vector(query, 10)]
        times.append(time.perf_counter() - started)
        recall.append(len(set(rows) & set(expected.tolist())) / 10)
    return {"load_seconds": load_seconds, "p50_ms": 1e3 * float(np.median(times)),
            "p95_ms": 1e3 * float(np.percentile(times, 95)), "recall@10": float(np.mean(recall)),
            "peak_rss_mib": peak_rss_mib()}


JOBS = {"build": job_build, "serve": job_serve}


def set_threads(threads: int) -> None:
    """FAISS's OpenMP threads (0: its default, all cores). On a machine shared with other
    jobs, OpenMP threads that wait for a busy core cost far more than they bring."""
    if threads:
        import faiss  # pylint: disable=import-outside-toplevel
        faiss.omp_set_num_threads(threads)


def run_child(job: str, args: Dict[str, Any]) -> Dict[str, Any]:
    """Runs a job in a new process (which reports its own peak RSS)."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "-m", "bench.index_bench", "--child", job,
             json.dumps(args, default=str)], cwd=ROOT, stdout=out)
        status = proc.wait()
        out.seek(0)
        lines = out.read().strip().splitlines()
    if status != 0:
        raise RuntimeError(f"index bench job {job} failed")
    return json.loads(lines[-1])


def kind_configs(kinds: Sequence[str], dim: int) -> Dict[str, Any]:
    """Per kind: its build settings (the defaults, ``pq_m`` dividing ``dim``) and the
    search-time settings served (each answered by the same built index)."""
    configs = {"exact": ({"kind": "exact"}, [{}]),
               "hnsw": ({"kind": "hnsw"}, [{"ef_search": ef} for ef in (32, 64, 128)]),
               "ivfpq": ({"kind": "ivfpq", "pq_m": min(64, dim // 4)},
                         [{"nprobe": probes} for probes in (8, 32)])}
    return {name: configs[name] for name in kinds}


def main(argv: Optional[Sequence[str]] = None) -> int:  # pylint: disable=too-many-locals
    """Makes the collection, builds and serves each kind, prints and writes the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.index_bench")
    parser.add_argument("--vectors", type=Path, help="real embeddings .npy")
    parser.add_argument("--n", type=int, default=100000)
    parser.add_argument("--dim", type=int, default=0,
                        help="project on the real vectors' top principal axes (0: keep D)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--kinds", nargs="+", default=["exact", "hnsw", "ivfpq"])
    parser.add_argument("--threads", type=int, default=0,
                        help="FAISS threads in the measured jobs (0: all cores)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        job = json.loads(args.child[1])
        set_threads(job["threads"])
        print(json.dumps(JOBS[args.child[0]](job)), flush=True)
        return 0
    work = args.workdir or Path(tempfile.mkdtemp(prefix="index-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    real = np.load(args.vectors)                                            # (R, 2048)
    basis = None
    if args.dim:
        basis = np.linalg.svd(l2_normalize(real), full_matrices=False)[2][:args.dim].T
    result: Dict[str, Any] = {"n": args.n, "dim": args.dim or real.shape[1], "sigma": SIGMA,
                              "real_rows": int(real.shape[0]), "cpus": os.cpu_count(),
                              "load_before": os.getloadavg(), "threads": args.threads}
    start = time.perf_counter()
    existing = work / "vectors.npy"
    if existing.is_file() and np.load(existing, mmap_mode="r").shape == (args.n, result["dim"]):
        vectors = np.load(existing, mmap_mode="r")                # made by an earlier run
    else:
        vectors = synthesize(real, args.n, 0, basis, existing)
    queries = synthesize(real, args.queries, 99, basis)
    np.save(work / "queries.npy", queries)
    result["make_seconds"] = time.perf_counter() - start
    real_space = l2_normalize(real) if basis is None else l2_normalize(real) @ basis
    result["neighbourhoods"] = {"real": neighbourhoods(real_space),
                                "synthetic_at_real_size": neighbourhoods(
                                    synthesize(real, real.shape[0], 5, basis)),
                                "synthetic_full": neighbourhoods(vectors)}
    np.save(work / "truth.npy", exact_top10(vectors, queries))
    print(json.dumps(result), flush=True)
    rows = result["kinds"] = {}
    for name, (config, searches) in kind_configs(args.kinds, result["dim"]).items():
        common = {"vectors": work / "vectors.npy", "index": work / f"index-{name}",
                  "config": config, "threads": args.threads}
        built = run_child("build", common)
        rows[name] = {"build": built, "serve": []}
        print(f"{name:6s} build {built['build_seconds']:7.1f} s, {built['index_mib']:8.1f} MiB on "
              f"disk, peak RSS {built['peak_rss_mib']:.0f} MiB", flush=True)
        for search in searches:
            served = run_child("serve", {**common, "config": {**config, **search},
                                         "queries": work / "queries.npy",
                                         "truth": work / "truth.npy"})
            rows[name]["serve"].append({**search, **served})
            print(f"  {json.dumps(search):20s} p50 {served['p50_ms']:7.2f} ms  p95 "
                  f"{served['p95_ms']:7.2f} ms  recall@10 {served['recall@10']:.3f}  serving "
                  f"RSS {served['peak_rss_mib']:.0f} MiB", flush=True)
        shutil.rmtree(work / f"index-{name}", ignore_errors=True)
    result["load_after"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
