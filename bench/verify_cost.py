"""What verifying and privately copying the served artifacts costs serving.

Builds a real DVC project of the serving layout at N photos with synthetic artifacts of
the real sizes (names, (N, 2048) float32 vectors, (N, 224, 224, 3) uint8 landing
images, a model file the size of the saved ResNet50, N small files in ``data/master``),
runs ``dvc repro`` once, then times what serving pays before it loads:

- ``check``: the checks against ``dvc.lock`` alone (DVC's stat cache warm, as after
  ``dvc repro``/``pull``/``checkout``), under DVC's repository lock;
- ``pin``: the check plus the private snapshot (a reflink where the file system has
  them, else a real copy; every byte md5-hashed as it is copied and compared with
  ``dvc.lock``) and its release: what ``lib.pinning.verify.verify_workspace`` costs
  now; ``pin - check`` is the copy;

beside three floors on the same bytes: reading and md5-hashing them with ``hashlib``
(what any byte-level check must at least do), copying them with ``shutil.copyfile``,
and hard-linking them (what the old snapshot cost, and why it was not private). The
files were just written, so they are mostly read from the page cache: a cold disk adds
its read time. ``--dir`` builds the project in another folder (e.g. on XFS or Btrfs, to
measure reflinks).

Usage::

    nice -n 10 python bench/verify_cost.py [--n 10000] [--repeat 3] [--dir DIR] [--out FILE]
"""
import argparse
import hashlib
import json
import logging
import os
import platform
import shutil
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


def timed(func) -> float:
    """Seconds one call of ``func`` takes."""
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def plain_md5(files) -> None:
    """Reads and md5-hashes every byte of ``files`` with hashlib (the floor)."""
    for path in files:
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):  # pylint: disable=cell-var-from-loop
                digest.update(block)


def plain_copy(files, target: Path, link: bool = False) -> None:
    """Copies (or hard-links) ``files`` into ``target``, then removes them."""
    target.mkdir()
    for number, path in enumerate(files):
        if link:
            os.link(path, target / str(number))
        else:
            shutil.copyfile(path, target / str(number))
    shutil.rmtree(target)


def used_bytes(folder: Path) -> int:
    """Bytes the file system holds for what is under ``folder`` (``du``: a reflink
    shares its blocks, but ``du`` counts them for each file)."""
    proc = subprocess.run(["du", "-sB1", str(folder)], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout.split()[0])


def main() -> int:  # pylint: disable=too-many-locals
    """Prints the timings and writes them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None,
                        help="build the project under this folder (default: the system's "
                             "temporary folder)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="verify-cost-", dir=args.dir) as folder:
        project = Path(folder)
        repro = build(project, args.n)
        config = Config.from_dict(yaml.safe_load((project / "params.yaml").read_text()))
        files = [item for key, path in config.paths.resolve(project).items() if key in SERVED
                 for item in ([path] if path.is_file() else sorted(path.rglob("*")))]
        served = sum(path.stat().st_size for path in files)
        first = timed(lambda: verify_workspace(project, config).release())
        held = verify_workspace(project, config)
        logging.getLogger("lib.pinning").setLevel(logging.DEBUG)
        stats = []
        handler = _Collect(stats)
        logging.getLogger("lib.pinning.snapshot").addHandler(handler)
        verify_workspace(project, config).release()
        logging.getLogger("lib.pinning.snapshot").removeHandler(handler)
        snapshot_bytes = used_bytes(held.snapshot)
        check, pinned, md5, copy, link = [], [], [], [], []
        for _ in range(args.repeat):          # interleaved: the same load for each
            check.append(timed(lambda: verify_workspace(project, config, reuse=held)))
            pinned.append(timed(lambda: verify_workspace(project, config).release()))
            md5.append(timed(lambda: plain_md5(files)))
            copy.append(timed(lambda: plain_copy(files, project / "plain-copy")))
            link.append(timed(lambda: plain_copy(files, project / "plain-link", link=True)))
        held.release()
    median = {name: statistics.median(values) for name, values in
              {"check": check, "pin": pinned, "md5": md5, "copy": copy, "link": link}.items()}
    result = {
        "n": args.n, "served_bytes": served, "dvc_repro_s": round(repro, 1),
        "folder": str(args.dir or tempfile.gettempdir()), "snapshot": stats[-1] if stats else "",
        "snapshot_du_bytes": snapshot_bytes, "first_pin_s": round(first, 3),
        "check_s": round(median["check"], 3), "pin_s": round(median["pin"], 3),
        "copy_and_md5_s": round(median["pin"] - median["check"], 3),
        "copy_mb_per_s": round(served / 1e6 / max(median["pin"] - median["check"], 1e-9), 1),
        "plain_md5_s": round(median["md5"], 3), "plain_copy_s": round(median["copy"], 3),
        "hard_links_s": round(median["link"], 4),
        "repeat": args.repeat, "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    print(f"N={args.n}: {served / 1e6:.0f} MB served ({result['snapshot']}); check "
          f"{result['check_s']} s, check + private copy + md5 {result['pin_s']} s (the copy "
          f"{result['copy_and_md5_s']} s, {result['copy_mb_per_s']} MB/s); floors: read + "
          f"md5 {result['plain_md5_s']} s, plain copy {result['plain_copy_s']} s, hard "
          f"links {result['hard_links_s']} s; snapshot on disk {snapshot_bytes / 1e6:.0f} MB "
          f"(du); load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


class _Collect(logging.Handler):
    """Keeps the snapshot's own description (files, MB, reflinked or copied, seconds)."""

    def __init__(self, into: list):
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("serving snapshot "):
            self.into.append(record.getMessage().split(": ", 1)[1])


if __name__ == "__main__":
    sys.exit(main())
