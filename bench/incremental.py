"""``python -m bench incremental``: a living library, full build vs. an O(k) update.

Builds a real DVC project of N *distinct* photos made from the clothing dataset by
deterministic augmentation (crop, flip, colour shift, re-encoded as JPEG), tracked with
``dvc add`` as the README says for a real collection. Runs every stage with
``dvc repro -s STAGE`` in its own process (wall time and peak RSS of the process tree
from ``os.wait4``), then adds 10 photos, replaces 5 and removes 5 and runs the stages
again; then adds 10 more and runs what a user runs, one ``dvc repro``. Reports the times
and their ratios, the DVC cache's growth per update, the O(N) I/O share of the rerun, and disk
per photo (workspace + DVC cache, hard links counted once, and as if copied) after the
build, after the update, and after ``dvc gc -w`` drops the previous versions.

Usage::

    nice -n 10 python -m bench incremental --n 10000 [--workdir DIR] [--out FILE]
"""
import argparse
import hashlib
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
from lib.incremental import content_key
from lib.photos import list_images

DATASET = ROOT.parent / "shared" / "datasets" / "clothing-small"
WEIGHTS = ROOT.parent / "shared" / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
STAGES = ("weights", "etl", "feature_engineering", "modelling", "whitening", "index", "evaluate")
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", "stages", "lib", "data/queries")
ARRAYS = ("data/landing/resized_rgb.npy", "data/feature_store/feature_engineered.npy",
          "data/model/embedded_image_vectors.npy")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench incremental",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="distinct photos in the library")
    parser.add_argument("--add", type=int, default=10)
    parser.add_argument("--replace", type=int, default=5)
    parser.add_argument("--remove", type=int, default=5)
    parser.add_argument("--shard-rows", type=int, default=0,
                        help="storage.shard_rows of the library (0: one .npy per array)")
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results (default bench/results/incremental-N.json)")
    return parser.parse_args(argv)


def augmented(source: Path, seed: int) -> bytes:
    """A distinct photo made from ``source``: crop, maybe flip, colour shift, as JPEG."""
    rng = np.random.default_rng(seed)
    image = cv2.imread(str(source))                                     # (H, W, 3) BGR
    height, width = image.shape[:2]
    scale = rng.uniform(0.75, 1.0)
    crop_h, crop_w = max(8, int(height * scale)), max(8, int(width * scale))
    top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
    image = image[top:top + crop_h, left:left + crop_w]                 # (h, w, 3)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    shift = rng.integers(-20, 21, size=3)                               # per channel
    image = np.clip(image.astype(np.int16) + shift, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image),
                               [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok, source
    return encoded.tobytes()


def photo_path(master: Path, dataset: Path, photos: List[Path], index: int) -> Path:
    """Where photo ``index`` lives: ``<label>/<index>-<source name>``."""
    source = photos[index % len(photos)]
    label = source.relative_to(dataset).parts[-2]
    return master / label / f"{index:06d}-{source.name}"


def write_photo(master: Path, dataset: Path, photos: List[Path], index: int, seed: int) -> Path:
    """Writes photo ``index`` (made with ``seed``) as a new file; returns its path."""
    path = photo_path(master, dataset, photos, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)              # never into a file DVC links into its cache
    path.write_bytes(augmented(photos[index % len(photos)], seed))
    return path


def sh(cmd: Sequence[str], cwd: Path, log: Path) -> Dict[str, float]:
    """Runs a command, appending its output to ``log``: wall seconds and peak RSS (MiB)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DVC_NO_ANALYTICS="1")
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out,  # pylint: disable=consider-using-with
                                stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: see {log}")
    return {"seconds": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def build(project: Path, log: Path) -> Dict[str, Any]:
    """``dvc add data/master`` then every stage, each in its own process."""
    steps = {"dvc_add": sh(["dvc", "add", "-q", "data/master"], project, log),
             # `dvc add` copies into the cache when reflink is listed but unsupported
             "relink_photos": sh(["dvc", "checkout", "-q", "--relink", "data/master.dvc"],
                                 project, log)}
    for stage in STAGES:
        steps[stage] = sh(["dvc", "repro", "-s", stage], project, log)
    return {"steps": steps, "seconds": round(sum(s["seconds"] for s in steps.values()), 2)}


def one_repro(project: Path, log: Path) -> Dict[str, Any]:
    """What a user runs: ``dvc add data/master`` (+ relink), then one ``dvc repro``."""
    steps = {"dvc_add": sh(["dvc", "add", "-q", "data/master"], project, log),
             "relink_photos": sh(["dvc", "checkout", "-q", "--relink", "data/master.dvc"],
                                 project, log),
             "dvc_repro": sh(["dvc", "repro"], project, log)}
    return {"steps": steps, "seconds": round(sum(s["seconds"] for s in steps.values()), 2)}


def disk(project: Path, photos: int) -> Dict[str, Any]:
    """Bytes on disk of ``data/`` + ``.dvc/cache``: links counted once, and as copies."""
    seen, unique, as_copies = set(), 0, 0
    for folder in (project / "data", project / ".dvc" / "cache"):
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                stat = path.stat()
                as_copies += stat.st_blocks * 512
                if (stat.st_dev, stat.st_ino) not in seen:
                    seen.add((stat.st_dev, stat.st_ino))
                    unique += stat.st_blocks * 512
    mib = 1024 * 1024
    return {"bytes": unique, "bytes_as_copies": as_copies,
            "mib_per_photo": round(unique / photos / mib, 3),
            "mib_per_photo_as_copies": round(as_copies / photos / mib, 3)}


def cache_bytes(project: Path) -> int:
    """Bytes on disk of DVC's cache."""
    return sum(path.stat().st_blocks * 512 for path in (project / ".dvc" / "cache").rglob("*")
               if path.is_file() and not path.is_symlink())


def sequential_io(project: Path) -> Dict[str, float]:
    """The rerun's O(N) I/O done alone: photo hashing, array rewrite and DVC's md5."""
    start = time.perf_counter()
    for path in list_images(project / "data" / "master"):
        content_key(path)                       # the ETL hashes every photo
    hashing = time.perf_counter() - start
    start = time.perf_counter()
    files = [path for name in ARRAYS for path in
             (sorted((project / name).glob("*.npy")) if (project / name).is_dir()
              else [project / name])]                                      # shards or files
    for path in files:
        with tempfile.TemporaryDirectory(dir=project) as scratch:
            shutil.copyfile(path, Path(scratch) / "copy.npy")              # rows rewritten
    copying = time.perf_counter() - start
    start = time.perf_counter()
    for path in files:
        with open(path, "rb") as handle:                                   # DVC hashes outputs
            hashlib.file_digest(handle, "md5")
    md5 = time.perf_counter() - start
    return {"photo_hashing_seconds": round(hashing, 2), "array_copy_seconds": round(copying, 2),
            "array_md5_seconds": round(md5, 2), "seconds": round(hashing + copying + md5, 2)}


def make_project(project: Path, args: argparse.Namespace, log: Path) -> List[Path]:
    """The project with N augmented photos; returns the source photos used."""
    project.mkdir(parents=True)
    for name in PROJECT_FILES:
        source, target = ROOT / name, project / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(source, target)
    params = project / "params.yaml"
    params.write_text(params.read_text(encoding="utf-8").replace(
        "weights: imagenet", f"weights: {args.weights}").replace(
        "shard_rows: 0 ", f"shard_rows: {args.shard_rows} "), encoding="utf-8")
    sh(["git", "init", "-q"], project, log)
    sh(["dvc", "init", "-q"], project, log)
    cache_type = [line.split("=", 1)[1].strip().strip('"') for line in
                  (ROOT / ".dvc" / "config").read_text(encoding="utf-8").splitlines()
                  if line.strip().startswith("type")]
    sh(["dvc", "config", "cache.type", cache_type[0]], project, log)
    photos = list_images(args.dataset)
    master = project / "data" / "master"
    for index in range(args.n):
        write_photo(master, args.dataset, photos, index, seed=index)
    return photos


def update(project: Path, photos: List[Path], args: argparse.Namespace) -> None:
    """Adds ``--add`` new photos, replaces ``--replace`` and removes ``--remove``."""
    master = project / "data" / "master"
    for index in range(args.n, args.n + args.add):
        write_photo(master, args.dataset, photos, index, seed=index)
    for index in range(1, 1 + args.replace):
        write_photo(master, args.dataset, photos, index * (args.n // (args.replace + 2)),
                    seed=10 ** 9 + index)
    for index in range(1, 1 + args.remove):
        photo_path(master, args.dataset, photos, args.n - 1 - 7 * index).unlink()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the scenario, prints a summary and writes the JSON."""
    args = parse_args(argv)
    out = args.out or ROOT / "bench" / "results" / f"incremental-{args.n}.json"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    project, log = work / "project", work / "bench.log"
    work.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        photos = make_project(project, args, log)
        results: Dict[str, Any] = {
            "n": args.n, "machine": platform.platform(), "cpus": os.cpu_count(),
            "load_before": os.getloadavg(),
            "make_photos_seconds": round(time.perf_counter() - start, 1)}
        results["full"] = build(project, log)
        if args.shard_rows:     # once after the first sharded build, as docs/your-photos.md says
            results["relink_after_full"] = sh(["dvc", "checkout", "-q", "--relink"], project, log)
        results["disk_full"] = disk(project, args.n)
        results["shard_rows"] = args.shard_rows
        cache_before = cache_bytes(project)
        update(project, photos, args)
        results["update"] = {"added": args.add, "replaced": args.replace,
                             "removed": args.remove}
        results["incremental"] = build(project, log)
        results["ratio"] = round(results["incremental"]["seconds"] / results["full"]["seconds"], 4)
        results["cache_growth_mib"] = round((cache_bytes(project) - cache_before) / 2 ** 20, 1)
        results["o_n_io"] = sequential_io(project)
        results["o_n_io"]["share_of_rerun"] = round(
            results["o_n_io"]["seconds"] / results["incremental"]["seconds"], 4)
        results["disk_after_update"] = disk(project, args.n + args.add - args.remove)
        for index in range(args.n + args.add, args.n + 2 * args.add):      # a second update
            write_photo(project / "data" / "master", args.dataset, photos, index, seed=index)
        cache_before = cache_bytes(project)
        results["second_update_one_repro"] = one_repro(project, log)
        results["second_update_one_repro"]["added"] = args.add
        results["second_update_one_repro"]["cache_growth_mib"] = round(
            (cache_bytes(project) - cache_before) / 2 ** 20, 1)
        results["ratio_one_repro"] = round(
            results["second_update_one_repro"]["seconds"] / results["full"]["seconds"], 4)
        sh(["dvc", "gc", "-q", "-w", "-f"], project, log)         # drop the previous versions
        results["disk_after_update_and_gc"] = disk(project, args.n + 2 * args.add - args.remove)
        results["load_after"] = os.getloadavg()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(results, indent=2))
        print(f"results: {out}")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0
