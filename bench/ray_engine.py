"""The embedding engines side by side: local, and Ray with 1 and 2 actors, same rows.

Each run is the engine as the modelling stage runs it (``run_embedding``, or
``ray_session`` + ``run_ray_embedding`` on a local Ray instance with this machine's
cores), in its own process (``bench.child``), rounds alternating so machine load hits
the engines alike. Reported per engine: start-up (Ray instance, actors loading the
model), the steady rate (rows after the first block over the time from the first block
to the last, from the stage's own progress lines), end-to-end img/s, the driver's peak
RSS, and the ratios: Ray's overhead against the local engine, and 2 actors against 1.

Usage::

    python -m bench --engines [--engine-rows 256] [--rounds 2] [--out FILE]
"""
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from lib import cli
from lib.config import ModellingConfig
from lib.embedding import ray_session, run_embedding, run_ray_embedding, Vectorizer

CHUNK = 32                      # rows per block (one progress line each) and per batch
ENGINES = (("local", 0), ("ray", 1), ("ray", 2))


class _Progress(logging.Handler):
    """Times each ``embedding: k/M images`` line the engines log."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.marks: List[tuple] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("embedding: "):
            done = int(message.split()[1].split("/")[0])
            self.marks.append((time.perf_counter(), done))


def embed_engine(args: Dict[str, Any]) -> Dict[str, Any]:
    """``bench.child`` job: one engine over the store, timed from its progress lines."""
    cli.setup_logging()
    progress = _Progress()
    logging.getLogger("lib").addHandler(progress)
    start = time.perf_counter()
    vectorizer = Vectorizer.load(args["model"], batch_size=CHUNK, runtime="auto")
    modelling = ModellingConfig(batch_size=CHUNK, chunk_size=CHUNK, engine=args["engine"],
                                ray_actors=args["actors"])
    cpus = None
    if args["engine"] == "local":
        vectorizer.transform(np.zeros((1,) + vectorizer.input_shape, np.float32))
        ready = time.perf_counter()
        rows = run_embedding(args["features"], args["vectors"], vectorizer, CHUNK)
    else:
        with ray_session(None) as ray:
            ready = time.perf_counter()
            rows = run_ray_embedding(args["features"], args["vectors"], vectorizer, modelling)
            cpus = ray.cluster_resources().get("CPU")
    end = time.perf_counter()
    (first, first_rows), (last, _) = progress.marks[0], progress.marks[-1]
    return {"engine": args["engine"], "actors": args["actors"], "rows": rows,
            "setup_seconds": ready - start, "first_block_seconds": first - ready,
            "steady_images_per_s": (rows - first_rows) / (last - first),
            "end_to_end_images_per_s": rows / (end - start), "seconds": end - start,
            "cluster_cpus": cpus}


def compare(work: Path, features: Path, model: Path, rounds: int,
            run_job) -> Dict[str, Any]:
    """Runs every engine ``rounds`` times, alternating; medians, ratios, equal vectors."""
    runs: Dict[str, List[Dict[str, Any]]] = {}
    reference: Optional[np.ndarray] = None
    min_cosine = 1.0
    for _ in range(rounds):
        for engine, actors in ENGINES:
            name = engine if engine == "local" else f"ray_{actors}_actor{'s' * (actors > 1)}"
            out = work / f"{name}.npy"
            runs.setdefault(name, []).append(run_job("embed_engine", {
                "engine": engine, "actors": actors, "features": features, "model": model,
                "vectors": out}))
            vectors = np.load(out)                                         # (M, D)
            if reference is None:
                reference = vectors
            unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
            min_cosine = min(min_cosine, float((unit * ref).sum(axis=1).min()))
            out.unlink()
    table = {name: {key: float(np.median([run[key] for run in items]))
                    for key in ("setup_seconds", "first_block_seconds", "steady_images_per_s",
                                "end_to_end_images_per_s", "peak_rss_mib")}
             for name, items in runs.items()}
    local, one, two = (table[name]["steady_images_per_s"]
                       for name in ("local", "ray_1_actor", "ray_2_actors"))
    return {"rows": runs["local"][0]["rows"], "rounds": rounds, "chunk": CHUNK,
            "engines": table, "runs": runs, "min_cosine_vs_local": min_cosine,
            "ratios": {"ray_1_actor_overhead": 1 - one / local,
                       "ray_2_actors_overhead": 1 - two / local,
                       "ray_2_vs_1_actor": two / one}}


def summarise(result: Dict[str, Any]) -> None:
    """Prints the table and the ratios."""
    print(f"engines on {result['rows']} rows, {result['rounds']} rounds (medians):")
    for name, row in result["engines"].items():
        print(f"  {name:13s} steady {row['steady_images_per_s']:6.2f} img/s, end-to-end "
              f"{row['end_to_end_images_per_s']:6.2f} img/s, set-up {row['setup_seconds']:5.1f}"
              f" s, first block {row['first_block_seconds']:5.1f} s, driver RSS "
              f"{row['peak_rss_mib']:5.0f} MiB")
    print("  ratios:", ", ".join(f"{k} {v:.3f}" for k, v in result["ratios"].items()),
          f"; min cosine vs local {result['min_cosine_vs_local']:.6f}")
