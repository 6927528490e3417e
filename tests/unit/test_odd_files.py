"""Odd files and names in the collection, interrupted stages, a full disk: the ETL and
the stages with real photos, real files and real processes (no DVC, no TensorFlow)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib.config import Config, EtlConfig
from lib.errors import printable
from lib.photos.etl import run_etl
from stages.serve import format_results
from tests.support.helpers import DATASET, REPO_ROOT, pick_per_class, run, tool_env

TIMEOUT_S = 120
PHOTOS = [DATASET / path for path, _ in pick_per_class("train", 1)[:3]]
ETL = EtlConfig(image_size=16, workers=2, chunk_size=4)


def etl(master: Path, out: Path) -> dict:
    """Runs the ETL in a child process with a timeout (a FIFO must not hang it)."""
    code = ("import sys\nfrom lib.config import EtlConfig\nfrom lib.photos.etl import run_etl\n"
            "run_etl(sys.argv[1], sys.argv[2] + '/rgb.npy', sys.argv[2] + '/names.npy', "
            "sys.argv[2] + '/report.json', EtlConfig(image_size=16, workers=2))")
    subprocess.run([sys.executable, "-c", code, str(master), str(out)], cwd=REPO_ROOT,
                   env=tool_env(), capture_output=True, text=True, timeout=TIMEOUT_S,
                   check=True)
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_5_links_and_special_files_are_skipped_by_policy_and_reported(tmp_path):
    master, outside = tmp_path / "master", tmp_path / "outside"
    (master / "shirts").mkdir(parents=True)
    outside.mkdir()
    shutil.copyfile(PHOTOS[0], master / "shirts" / "a.jpg")
    shutil.copyfile(PHOTOS[1], outside / "b.jpg")
    shutil.copyfile(PHOTOS[2], outside / "c.jpg")
    (master / "linked-folder").symlink_to(outside)                 # a folder elsewhere
    (master / "outside.jpg").symlink_to(outside / "b.jpg")         # a file elsewhere
    (master / "inside.jpg").symlink_to(master / "shirts" / "a.jpg")
    (master / "loop.jpg").symlink_to("loop.jpg")
    os.mkfifo(master / "pipe.jpg")
    os.mkfifo(master / "notes")                                    # any name: DVC hangs on it
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(master / "sock.png"))
        report = etl(master, tmp_path / "out")
        # The pre-flight of `make repro` names what DVC would hang or fail on.
        check = subprocess.run([sys.executable, str(REPO_ROOT / "stages/check_master.py"),
                                str(master)], env=tool_env(), capture_output=True, text=True,
                               timeout=TIMEOUT_S, check=False)
    assert check.returncode == 1
    assert "loop.jpg: symbolic link loop" in check.stderr and "notes: FIFO" in check.stderr
    assert "pipe.jpg: FIFO" in check.stderr and "sock.png: socket" in check.stderr
    reasons = {item["name"]: item["reason"] for item in report["skipped"]}
    assert sorted(reasons) == ["inside.jpg", "linked-folder", "loop.jpg", "notes",
                               "outside.jpg", "pipe.jpg", "sock.png"]
    assert "symbolic link to a folder, not followed" in reasons["linked-folder"]
    assert "symbolic link to a file, not followed" in reasons["outside.jpg"]
    assert "symbolic link loop" in reasons["loop.jpg"]
    assert "not a file (FIFO" in reasons["pipe.jpg"] and "socket" in reasons["sock.png"]
    names = np.load(tmp_path / "out" / "names.npy", allow_pickle=False)
    assert names.tolist() == ["shirts/a.jpg"]                      # regular files only
    assert report["images_kept"] == 1 and report["files_skipped"] == 7


def test_6_odd_names_are_kept_raw_and_printed_on_one_line(tmp_path):
    master = tmp_path / "master"
    master.mkdir()
    odd = ["new\nline.jpg", "bell\x07\x1b[2J.jpg", "back\\slash.jpg", "café.jpg"]
    for name, photo in zip(odd, PHOTOS + PHOTOS):
        shutil.copyfile(photo, master / name)
    run_etl(master, tmp_path / "rgb.npy", tmp_path / "names.npy", tmp_path / "report.json",
            ETL)
    names = np.load(tmp_path / "names.npy", allow_pickle=False).tolist()
    assert sorted(names) == sorted(odd)                             # the raw names
    printed = format_results([(0.9, name) for name in names]).split("\n")
    assert len(printed) == len(names)
    shown = {line.split("  ")[-1] for line in printed}
    assert shown == {"new\\nline.jpg", "bell\\x07\\x1b[2J.jpg", "back\\\\slash.jpg",
                     "café.jpg"}
    assert all(text.isprintable() for text in shown)
    # Escaping is unambiguous: what is printed decodes back to the raw name.
    assert {text.encode("latin-1", "backslashreplace").decode("unicode_escape")
            for text in shown if text.isascii()} == {name for name in odd if name.isascii()}
    assert printable("plain name.jpg") == "plain name.jpg"


def test_7_temporaries_of_a_killed_stage_are_removed_at_the_next_run(tmp_path):
    landing = tmp_path / "data" / "landing"
    # A stage killed with SIGKILL in the middle of an atomic write (real process).
    code = ("import os, signal, sys\nfrom lib.artifacts import open_npy_writer\n"
            "with open_npy_writer(sys.argv[1], (4, 8), 'float32') as rows:\n"
            "    rows[0:2] = 1.0\n    os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", code, str(landing / "resized_rgb.npy")],
                            cwd=REPO_ROOT, env=tool_env(), timeout=TIMEOUT_S, check=False)
    assert killed.returncode == -signal.SIGKILL
    (landing / ".resized_rgb.npy.rows.tmp.npy").write_bytes(b"rows of an earlier run")
    leftovers = sorted(path.name for path in landing.iterdir())
    assert len(leftovers) == 2 and all(name.startswith(".resized_rgb.npy.")
                                       for name in leftovers)
    ignored = run(["git", "check-ignore", *(f"data/landing/{name}" for name in leftovers)],
                  REPO_ROOT, check=False)
    assert ignored.returncode == 0 and len(ignored.stdout.split()) == 2   # not committed
    master = tmp_path / "data" / "master"
    master.mkdir(parents=True)
    shutil.copyfile(PHOTOS[0], master / "a.jpg")
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(Config().to_dict()), encoding="utf-8")
    subprocess.run([sys.executable, str(REPO_ROOT / "stages" / "etl.py"), "data/master",
                    "data/landing/resized_rgb.npy", "data/landing/image_names.npy",
                    "data/landing/etl_report.json"], cwd=tmp_path, env=tool_env(),
                   capture_output=True, timeout=TIMEOUT_S, check=True)
    assert sorted(path.name for path in landing.iterdir()) == [
        "etl_report.json", "image_names.npy", "resized_rgb.npy"]


def test_8_a_full_disk_names_the_file():
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-Urm", "true"], capture_output=True, check=False).returncode:
        pytest.skip("needs unshare (user namespaces) to mount a small tmpfs")
    code = ("import numpy as np\nfrom lib.artifacts import save_npy\n"
            "save_npy('/mnt/full/vectors.npy', np.zeros((1024, 1024), np.float32))")
    script = ('mount -t tmpfs -o size=1m tmpfs /mnt && mkdir /mnt/full && "$0" -c "$1"; '
              'echo "rc=$?"; ls -A /mnt/full')
    proc = subprocess.run(["unshare", "-Urm", "sh", "-c", script, sys.executable, code],
                          cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert proc.stdout.split() == ["rc=1"], proc.stdout + proc.stderr   # nothing left behind
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("lib.errors.ArtifactError: cannot write /mnt/full/vectors.npy: "
                            "short write, 0 bytes free"), error
    assert error.endswith("(in /mnt/full): free some space and rerun; finished artifacts "
                          "are kept")


def test_9_hidden_photos_and_folders_are_reported_not_dropped_silently(tmp_path):
    master = tmp_path / "master"
    (master / "shirts" / ".thumbs").mkdir(parents=True)
    (master / ".trash").mkdir()
    shutil.copyfile(PHOTOS[0], master / "shirts" / "a.jpg")
    shutil.copyfile(PHOTOS[1], master / "shirts" / ".b.jpg")           # a hidden photo
    shutil.copyfile(PHOTOS[2], master / "shirts" / ".thumbs" / "c.jpg")
    shutil.copyfile(PHOTOS[2], master / ".trash" / "d.jpg")
    (master / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")               # not an image: quiet
    report = etl(master, tmp_path / "out")
    reasons = {item["name"]: item["reason"] for item in report["skipped"]}
    assert sorted(reasons) == [".trash", "shirts/.b.jpg", "shirts/.thumbs"]
    assert "hidden file (its name starts with '.'), not part of the collection: rename it" \
        in reasons["shirts/.b.jpg"]
    assert "hidden folder (its name starts with '.'), its files are not part of the " \
           "collection" in reasons[".trash"]
    assert np.load(tmp_path / "out" / "names.npy").tolist() == ["shirts/a.jpg"]
    assert report["images_kept"] == 1 and report["files_skipped"] == 3
