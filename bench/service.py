"""Load scenario for the HTTP service: 1 and 8 concurrent clients against ``--http``.

Builds a collection of ``--n`` rows (real embeddings of ``--embed-n`` photos, tiled),
measures the embedding stage's own images/s on those photos in the same run (before
and after the loads, as the machine's load drifts), starts
``stages/serve.py --http`` on it, and then runs each client count for ``--seconds``:
every client uploads real test photos in a loop (each goes through the real model).
Reports queries/s, p50/p95/p99 latency, errors, the service's mean batch size, its CPU
time per query (against the embedding stage's per image: a ratio that machine load
does not skew), and its resident memory during the loads. Prints a summary, writes JSON.

Usage::

    python -m bench service [--n 10000] [--seconds 60] [--clients 1 8] [--out FILE]
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import httpx
import numpy as np

from bench.run import DATASET, ROOT, WEIGHTS, make_master, make_serve_project, run_job
from lib.embedding import CACHE_ENV, ResNet50Helper, Vectorizer
from lib.photos import list_images

DEFAULT_OUT = ROOT / "bench" / "results" / "service-latest.json"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench service",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="collection size (tiled rows)")
    parser.add_argument("--embed-n", type=int, default=256,
                        help="photos through ETL, feature engineering and embedding")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of each load")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--top-n", type=int, default=5, help="results per query")
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                        help="modelling.precision of the served inference model")
    parser.add_argument("--streams", choices=["on", "off"], nargs="+", default=["on"],
                        help="service.throughput_streams of each run (side by side: on off)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    return parser.parse_args(argv)


def rss_mib(pid: int) -> Dict[str, float]:
    """Resident memory of a process now and at its peak (MiB), from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return {"rss_mib": fields["VmRSS"], "peak_rss_mib": fields["VmHWM"]}


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far, all its threads (user + system)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_service(project: Path, log: Path) -> tuple:
    """``serve.py --http --port 0 --no-verify`` on the project: (process, base URL)."""
    command = [sys.executable, str(ROOT / "stages" / "serve.py"), "--http", "--port", "0",
               "--no-verify", "--params", str(project / "params.yaml")]
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            command, cwd=project, stdout=subprocess.PIPE, stderr=err, text=True)
    for line in proc.stdout:
        if line.startswith("serving "):
            return proc, line.split(" on ", 1)[1].split()[0].rstrip("/")
    raise RuntimeError(f"the service did not start:\n{log.read_text(encoding='utf-8')}")


class Client(threading.Thread):
    """Uploads photos in a loop until ``stop``; keeps each request's latency."""

    def __init__(self, url: str, photos: List[bytes], offset: int, top_n: int,
                 stop: threading.Event):
        # pylint: disable=too-many-arguments
        super().__init__(daemon=True)
        self.url, self.photos, self.offset, self.top_n = url, photos, offset, top_n
        self.stop = stop
        self.latencies: List[float] = []
        self.errors: List[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            i = self.offset
            while not self.stop.is_set():
                photo = self.photos[i % len(self.photos)]
                i += 1
                start = time.perf_counter()
                try:
                    response = client.post("/search", params={"n": self.top_n},
                                           files={"image": ("query.jpg", photo)})
                except httpx.HTTPError as err:
                    self.errors.append(f"{type(err).__name__}: {err}")
                    continue
                if response.status_code != 200:
                    self.errors.append(f"{response.status_code} {response.text[:200]}")
                    continue
                self.latencies.append(time.perf_counter() - start)


def first_answer(url: str, photo: bytes, top_n: int) -> None:
    """Waits for the first answer to a search (the clock runs from the service's start)."""
    response = httpx.post(f"{url}/search", params={"n": top_n},
                          files={"image": ("query.jpg", photo)}, timeout=120)
    response.raise_for_status()


def set_params(project: Path, section: str, key: str, value: str) -> None:
    """Sets ``section.key`` in the project's ``params.yaml`` (a line edit)."""
    params = project / "params.yaml"
    lines, inside = [], False
    for line in params.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(" "):
            inside = line.startswith(f"{section}:")
        if inside and line.strip().startswith(f"{key}:"):
            line = f"  {key}: {value}"
        lines.append(line)
    params.write_text("\n".join(lines) + "\n", encoding="utf-8")


def serve_run(project: Path, work: Path, photos: List[bytes], args: argparse.Namespace,
              streams: str) -> Dict[str, Any]:
    """Starts the service with ``service.throughput_streams`` on or off, times its first
    answer, runs each client count, stops it."""
    set_params(project, "service", "throughput_streams", "true" if streams == "on" else "false")
    started = time.perf_counter()
    proc, url = start_service(project, work / f"service-{streams}.log")
    try:
        run: Dict[str, Any] = {"streams": streams,
                               "service_start_seconds": time.perf_counter() - started}
        first_answer(url, photos[0], args.top_n)
        run["first_answer_seconds"] = time.perf_counter() - started
        load(url, photos, 2, 5.0, args.top_n, proc.pid)                # warm-up
        run["rss_start"] = rss_mib(proc.pid)
        run["loads"] = [load(url, photos, clients, args.seconds, args.top_n, proc.pid)
                        for clients in args.clients]
        run["rss_end"] = rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    return run


def load(url: str, photos: List[bytes], clients: int, seconds: float, top_n: int,
         pid: int) -> Dict[str, Any]:
    """``clients`` concurrent clients for ``seconds``: rate, latency, errors, batching,
    and the service's memory every tenth of the time."""
    # pylint: disable=too-many-arguments
    before = httpx.get(f"{url}/health").json()["batching"]
    cpu = cpu_seconds(pid)
    stop = threading.Event()
    threads = [Client(url, photos, k * 7, top_n, stop) for k in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    rss = []
    for _ in range(10):
        time.sleep(seconds / 10)
        rss.append(round(rss_mib(pid)["rss_mib"]))
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu
    after = httpx.get(f"{url}/health").json()["batching"]
    latencies = np.array([value for thread in threads for value in thread.latencies])
    errors = [error for thread in threads for error in thread.errors]
    batches = after["batches"] - before["batches"]
    return {"clients": clients, "seconds": elapsed, "queries": int(latencies.size),
            "queries_per_s": latencies.size / elapsed,
            "service_cpu_ms_per_query": 1e3 * cpu / max(latencies.size, 1),
            "service_cores_used": cpu / elapsed,
            "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
            "p95_ms": 1e3 * float(np.percentile(latencies, 95)),
            "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
            "errors": len(errors), "first_errors": errors[:5], "rss_mib_during": rss,
            "mean_batch": (after["queries"] - before["queries"]) / batches if batches else 0}


def main(argv: Optional[Sequence[str]] = None) -> int:  # pylint: disable=too-many-locals
    """Runs the scenario, prints a summary, writes the JSON."""
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    os.environ[CACHE_ENV] = str(work / "cache")
    results: Dict[str, Any] = {"n": args.n, "cpus": os.cpu_count(), "precision": args.precision,
                               "load_average_start": os.getloadavg(),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        print(f"bench service: N={args.n}, embedding {args.embed_n} photos, in {work}",
              flush=True)
        make_master(args.dataset, work / "master", args.embed_n)
        (work / "landing").mkdir()
        run_job("etl", {"master": work / "master", "out": work / "landing",
                        "reduced_decode": True, "workers": 4})
        run_job("fe", {"images": work / "landing" / "resized_rgb.npy",
                       "features": work / "features.npy"})
        Vectorizer(ResNet50Helper(weights=str(args.weights)).build()).save(work / "model")
        embed_args = {"features": work / "features.npy", "model": work / "model",
                      "vectors": work / "vectors.npy", "runtime": "auto"}
        embed = run_job("embed", embed_args)
        results["embedding_stage"] = {"images_per_s_before": embed["rows"] / embed["seconds"],
                                      "cpu_ms_per_image": 1e3 * embed["cpu_seconds"]
                                      / embed["rows"],
                                      "rows": embed["rows"], "runtime": embed["runtime"]}
        project = make_serve_project(work, args.n, args.precision)
        set_params(project, "modelling", "precision", args.precision)
        photos = [path.read_bytes() for path in list_images(args.dataset / "test")[:64]]
        results["runs"] = [serve_run(project, work, photos, args, streams)
                           for streams in args.streams]
        # Measured again after the loads: the machine's load drifts; the ratio uses both.
        embed = run_job("embed", embed_args)
        results["embedding_stage"]["images_per_s_after"] = embed["rows"] / embed["seconds"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_average_end"] = os.getloadavg()
    summarise(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"bench service: results in {args.out}")
    return 0


def summarise(results: Dict[str, Any]) -> None:
    """Prints the table, with each load's rate against the embedding stage's."""
    stage = results["embedding_stage"]
    embed = stage["images_per_s"] = (stage["images_per_s_before"]
                                     + stage["images_per_s_after"]) / 2
    print(f"embedding stage: {embed:.1f} img/s ({stage['runtime']}; "
          f"{stage['images_per_s_before']:.1f} before the loads, "
          f"{stage['images_per_s_after']:.1f} after), CPU "
          f"{stage['cpu_ms_per_image']:.0f} ms per image")
    for run in results["runs"]:
        print(f"throughput streams {run['streams']}: started in "
              f"{run['service_start_seconds']:.2f} s, first answer at "
              f"{run['first_answer_seconds']:.2f} s")
        summarise_loads(run, embed, stage)
    print(f"load average {results['load_average_start'][0]:.1f} -> "
          f"{results['load_average_end'][0]:.1f}")


def summarise_loads(run: Dict[str, Any], embed: float, stage: Dict[str, Any]) -> None:
    """Prints one run's loads, each rate against the embedding stage's."""
    for row in run["loads"]:
        row["vs_embedding_stage"] = row["queries_per_s"] / embed
        # Queries per CPU-second against the stage's images per CPU-second.
        row["cpu_efficiency_vs_stage"] = stage["cpu_ms_per_image"] / \
            row["service_cpu_ms_per_query"]
        print(f"{row['clients']} client(s): {row['queries_per_s']:.1f} q/s "
              f"({row['vs_embedding_stage']:.0%} of the embedding stage), p50 "
              f"{row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms, p99 {row['p99_ms']:.0f} "
              f"ms, mean batch {row['mean_batch']:.1f}, errors {row['errors']}, service CPU "
              f"{row['service_cpu_ms_per_query']:.0f} ms per query on "
              f"{row['service_cores_used']:.2f} cores ({row['cpu_efficiency_vs_stage']:.0%} of "
              "the stage's images per CPU-second), RSS "
              f"{row['rss_mib_during'][0]}-{row['rss_mib_during'][-1]} MiB")
    print(f"service RSS: {run['rss_start']['rss_mib']:.0f} MiB after warm-up, "
          f"{run['rss_end']['rss_mib']:.0f} MiB at the end")
