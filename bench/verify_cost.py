"""What full verification (``--verify-full``) costs serving, against the default check.

Builds a real DVC project of the serving layout at N photos with synthetic artifacts of
the real sizes (names, (N, 2048) float32 vectors, (N, 224, 224, 3) uint8 landing
images, a model file the size of the saved ResNet50, N small files in ``data/master``),
runs ``dvc repro`` once, then times ``lib.pinning.verify.verify_workspace`` both ways, each
including the lock, the snapshot and its release: the default check (DVC's stat cache
warm, as after ``dvc repro``/``pull``/``checkout``) and full verification (every served
byte read and hashed), beside the baseline of reading and md5-hashing the same bytes
with ``hashlib`` alone (what any full check must at least do). The files were just
written, so they are mostly read from the page cache: a cold disk adds its read time.

Usage::

    nice -n 10 python bench/verify_cost.py [--n 10000] [--repeat 3] [--out FILE]
"""
import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from lib.config import Config
from lib.pinning import SERVED, verify_workspace

MODEL_BYTES = 94_800_000           # the saved ResNet50 vectorizer's model.keras
MAKE = '''
import sys
from pathlib import Path
import numpy as np
n = int(sys.argv[1])
rng = np.random.default_rng(0)
out = Path("out")
(out / "model").mkdir(parents=True, exist_ok=True)
np.save(out / "names.npy", np.array([f"class{i % 10}/{i:08d}.jpg" for i in range(n)]))
np.save(out / "vectors.npy", rng.random((n, 2048), dtype=np.float32))
images = np.lib.format.open_memmap(out / "images.npy", "w+", np.uint8, (n, 224, 224, 3))
for start in range(0, n, 500):
    stop = min(start + 500, n)
    images[start:stop] = rng.integers(0, 256, (stop - start, 224, 224, 3), dtype=np.uint8)
images.flush()
(out / "model" / "model.keras").write_bytes(rng.bytes(MODEL_BYTES))
'''


def build(project: Path, n: int) -> float:
    """The project with N photos, built by ``dvc repro``; returns the repro seconds."""
    master = project / "data" / "master"
    for i in range(n):
        folder = master / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:08d}.jpg").write_bytes(os.urandom(2048))
    (project / "make.py").write_text(MAKE.replace("MODEL_BYTES", str(MODEL_BYTES)),
                                     encoding="utf-8")
    params = Config().to_dict()
    params["paths"].update({"images": "out/images.npy", "names": "out/names.npy",
                            "vectors": "out/vectors.npy", "model": "out/model",
                            "whitening": "out/none.npz"})
    (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    stage = {"cmd": f"python make.py {n}", "deps": ["data/master", "make.py"],
             "params": ["etl"],
             "outs": ["out/names.npy", "out/vectors.npy", "out/images.npy", "out/model"]}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": stage}}),
                                      encoding="utf-8")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"]):
        started = time.perf_counter()
        subprocess.run(cmd, cwd=project, env=env, check=True)
    return time.perf_counter() - started


def timed(project: Path, config: Config, full: bool) -> float:
    """Seconds of one verification (lock, checks, snapshot, release)."""
    started = time.perf_counter()
    verify_workspace(project, config, full=full).release()
    return time.perf_counter() - started


def plain_md5(files) -> float:
    """Seconds to read and md5 every byte of ``files`` with hashlib (the floor)."""
    started = time.perf_counter()
    for path in files:
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):  # pylint: disable=cell-var-from-loop
                digest.update(block)
    return time.perf_counter() - started


def main() -> int:
    """Prints the timings and writes them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="verify-cost-") as folder:
        project = Path(folder)
        repro = build(project, args.n)
        config = Config.from_dict(yaml.safe_load((project / "params.yaml").read_text()))
        files = [item for key, path in config.paths.resolve(project).items() if key in SERVED
                 for item in ([path] if path.is_file() else sorted(path.rglob("*")))]
        served = sum(path.stat().st_size for path in files)
        first = timed(project, config, full=False)
        default, full, plain = [], [], []
        for _ in range(args.repeat):          # interleaved: the same load for each
            default.append(timed(project, config, full=False))
            full.append(timed(project, config, full=True))
            plain.append(plain_md5(files))
    result = {
        "n": args.n, "served_bytes": served, "dvc_repro_s": round(repro, 1),
        "first_check_s": round(first, 3),
        "default_check_s": round(statistics.median(default), 3),
        "full_check_s": round(statistics.median(full), 3),
        "full_mb_per_s": round(served / 1e6 / statistics.median(full), 1),
        "plain_md5_s": round(statistics.median(plain), 3),
        "full_over_plain": round(statistics.median(full) / statistics.median(plain), 2),
        "repeat": args.repeat, "load_average": os.getloadavg(), "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    print(f"N={args.n}: {served / 1e6:.0f} MB served; default check "
          f"{result['default_check_s']} s, full verification {result['full_check_s']} s "
          f"({result['full_mb_per_s']} MB/s; plain read + md5 of the same bytes "
          f"{result['plain_md5_s']} s; first check in the process {first:.2f} s; "
          f"load average {os.getloadavg()[0]:.1f})")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
