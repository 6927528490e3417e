"""The pipeline against bad files, interruption and tampered artifacts.

- the ETL skips every kind of bad file (counted, warned, listed with its reason in the
  report ``dvc.yaml`` declares) and never dies on one among thousands;
- a missing or empty ``data/master`` is one clear error;
- Ctrl-C during ``dvc repro`` leaves no half-written artifact, and rerunning finishes;
- artifacts of the wrong shape, dtype or row count are refused with one clear line.
"""
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from lib.artifacts import save_npy
from lib.config import Config, EtlConfig
from lib.errors import ArtifactError
from lib.photos.etl import run_etl
from lib.retrieval.engine import ImageSearchEngine
from tests.support.badfiles import bad_files, photo_bgr
from tests.support.helpers import REPO_ROOT, make_project, pick_per_class, repro, run, set_params, \
    tool_env

BAD_NAMES = {"empty.jpg", "notes.jpg", "truncated.jpg", "noise.jpg", "bomb.png", "bomb.hdr"}


def write_bad_files(folder: Path) -> None:
    """Every bad-file case of ``tests.support.badfiles`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for write in bad_files(photo_bgr(pick_per_class("train", 1)[0][0])).values():
        write(folder)


def test_etl_skips_every_kind_of_bad_file_among_thousands(tmp_path):
    master = tmp_path / "master"
    rng = np.random.default_rng(0)
    for i in range(2000):
        folder = master / f"part{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(folder / f"img{i:04d}.png"),
                           rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    write_bad_files(master / "bad")
    (master / "bad" / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    os.mkfifo(master / "bad" / "pipe.jpg")
    (master / os.fsdecode(b"caf\xe9.jpg")).write_bytes((master / "part0/img0000.png")
                                                       .read_bytes())
    (master / "copy of img0000.png").write_bytes((master / "part0/img0000.png").read_bytes())
    out = tmp_path / "landing"
    report = run_etl(master, out / "rgb.npy", out / "names.npy", out / "report.json",
                     EtlConfig(image_size=16, workers=2, chunk_size=300))
    reasons = {item["name"]: item["reason"] for item in report["skipped"]}
    assert set(reasons) == {f"bad/{name}" for name in BAD_NAMES | {"dangling.jpg",
                                                                  "pipe.jpg"}} | {"caf\\xe9.jpg"}
    assert "broken link" in reasons["bad/dangling.jpg"]
    assert "not a file" in reasons["bad/pipe.jpg"]
    assert "not valid UTF-8" in reasons["caf\\xe9.jpg"]
    assert "exceeds the limit" in reasons["bad/bomb.hdr"]
    assert report["files_found"] == 2000 + 1 + len(reasons)
    assert report["images_kept"] == 2001 and report["files_skipped"] == len(reasons)
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == report
    names = np.load(out / "names.npy", allow_pickle=False)
    images = np.load(out / "rgb.npy", allow_pickle=False)
    assert names.shape == (2001,) and images.shape == (2001, 16, 16, 3)
    # Duplicate content under another name is kept: both names are valid answers.
    first, copy = names.tolist().index("part0/img0000.png"), names.tolist().index(
        "copy of img0000.png")
    np.testing.assert_array_equal(images[first], images[copy])
    assert sorted(p.name for p in out.iterdir()) == ["names.npy", "report.json", "rgb.npy"]


def test_etl_stage_reports_every_file_on_its_own_line(tmp_path):
    """Decoding threads and the stage's own log lines never swallow each other."""
    master = tmp_path / "master"
    master.mkdir()
    rng = np.random.default_rng(1)
    for i in range(200):
        image = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
        assert cv2.imwrite(str(master / f"ok{i:03d}.png"), image)
        if i % 10 == 0:
            jpeg = bytearray(cv2.imencode(".jpg", image)[1].tobytes())
            jpeg[-2:-2] = b"\x00" * 16               # libjpeg warns, still decodes
            (master / f"warn{i:03d}.jpg").write_bytes(bytes(jpeg))
            (master / f"text{i:03d}.jpg").write_text("not an image")
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["etl"].update({"workers": 4, "chunk_size": 8, "image_size": 16})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run(["python", str(REPO_ROOT / "stages/etl.py"), "master", "a.npy", "b.npy",
                "c.json", "--params", "params.yaml"], tmp_path)
    lines = proc.stderr.splitlines()
    assert all(re.match(r"(INFO|WARNING) lib\.[\w.]+: ", line) for line in lines), lines
    warned = [line for line in lines if "decoded with warnings" in line]
    skipped = [line for line in lines if "skipping" in line]
    assert sorted(re.search(r"warn\d+\.jpg", line).group() for line in warned) == [
        f"warn{i:03d}.jpg" for i in range(0, 200, 10)]
    assert all(line.count(".jpg") == 1 and "Corrupt JPEG data" in line for line in warned)
    assert sorted(re.search(r"text\d+\.jpg", line).group() for line in skipped) == [
        f"text{i:03d}.jpg" for i in range(0, 200, 10)]
    assert json.loads((tmp_path / "c.json").read_text())["images_kept"] == 220


def test_dvc_yaml_declares_the_etl_report():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert "${paths.etl_report}" in stages["etl"]["outs"]
    assert params["paths"]["etl_report"].startswith("data/landing/")


@pytest.mark.slow
def test_missing_or_empty_master_is_one_clear_error(tmp_path):
    project = make_project(tmp_path / "project", [])
    proc = run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert "data/master" in proc.stderr
    (project / "data" / "master").mkdir(parents=True)
    proc = run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert "etl.py: error: no image files found under data/master" in proc.stderr
    proc = run(["python", "stages/etl.py", "nowhere", "a.npy", "b.npy", "c.json"], project,
               check=False)
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        "etl.py: error: image folder nowhere does not exist or is not a directory"]


@pytest.mark.slow
def test_ctrl_c_mid_stage_then_rerun_finishes(tmp_path):
    """Ctrl-C while modelling embeds; the rerun completes a consistent, clean set."""
    project = make_project(tmp_path / "project", pick_per_class("train", 2))
    write_bad_files(project / "data" / "master" / "bad")
    # Many small steps, so the stage is surely still running when the signal comes.
    set_params(project, {"modelling.batch_size": 2, "modelling.chunk_size": 2})
    model_dir = project / "data" / "model" / "vectorizer_model"
    # A terminal's Ctrl-C signals the whole foreground process group: DVC and the stage.
    with (tmp_path / "repro.log").open("w+", encoding="utf-8") as log, subprocess.Popen(
            ["dvc", "repro"], cwd=project, env=tool_env(), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True) as proc:
        while not model_dir.exists() and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "dvc repro ended before modelling saved its model"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=300) != 0
        log.seek(0)
        output = log.read()
    assert "Running stage 'modelling'" in output and "interrupted" in output, output
    assert "Traceback" not in output, output
    # Nothing half-written that looks complete, and no temporary leftovers.
    model_folder = project / "data" / "model"
    vectors_file = model_folder / "embedded_image_vectors.npy"
    if vectors_file.exists():   # the signal came after the last atomic write: complete
        assert np.load(vectors_file, allow_pickle=False).shape == (20, 2048)
    assert [p.name for p in model_folder.iterdir() if p.name.startswith(".")] == []
    assert "modelling" in run(["dvc", "status"], project).stdout

    assert repro(project) == ["modelling", "whitening", "index", "evaluate"]
    names = np.load(project / "data/landing/image_names.npy", allow_pickle=False)
    images = np.load(project / "data/landing/resized_rgb.npy", allow_pickle=False)
    vectors = np.load(project / "data/model/embedded_image_vectors.npy", allow_pickle=False)
    assert names.shape == (20,) and images.shape == (20, 224, 224, 3)
    assert vectors.shape == (20, 2048) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all() and (np.linalg.norm(vectors, axis=1) > 0).all()
    report = json.loads((project / "data/landing/etl_report.json").read_text())
    assert {item["name"] for item in report["skipped"]} == {f"bad/{n}" for n in BAD_NAMES}
    assert report["images_kept"] == 20 and report["files_skipped"] == len(BAD_NAMES)
    assert "up to date" in run(["dvc", "status"], project).stdout


# --- tampered artifacts: refused before the model is even loaded ----------------------

def good_artifacts(folder: Path, rows: int = 5) -> dict:
    """Well-formed small artifacts; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {key: folder / f"{key}.npy" for key in ("vectors", "names", "images")}
    save_npy(paths["vectors"], np.random.default_rng(0).random((rows, 2048), np.float32))
    save_npy(paths["names"], np.array([f"x/{i}.jpg" for i in range(rows)]))
    save_npy(paths["images"], np.zeros((rows, 224, 224, 3), np.uint8))
    return paths


TAMPERED = {
    "vectors float64": ("vectors", np.zeros((5, 2048)), "dtype float64"),
    "vectors 1-D": ("vectors", np.zeros(5 * 2048, np.float32), "expected 2 dimensions"),
    "fewer names than vectors": ("names", np.array(["a", "b", "c", "d"]), "out of step"),
    "names as numbers": ("names", np.arange(5), "expected kind 'U'"),
    "duplicate names": ("names", np.array(["a", "b", "a", "c", "d"]), "not unique"),
    "images of another size": ("images", np.zeros((5, 64, 64, 3), np.uint8),
                               r"expected \(N, 224, 224, 3\)"),
    "more images than vectors": ("images", np.zeros((6, 224, 224, 3), np.uint8),
                                 "out of step"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_artifacts_are_refused(tmp_path, case):
    key, array, message = TAMPERED[case]
    paths = good_artifacts(tmp_path)
    save_npy(paths[key], array)
    with pytest.raises(ArtifactError, match=message):
        ImageSearchEngine.load(Config(), {**paths, "model": tmp_path / "no-model"})


def test_pickles_and_truncated_files_are_refused(tmp_path):
    paths = good_artifacts(tmp_path)
    np.save(paths["names"], np.array(["a", None, 3, "d", "e"], dtype=object), allow_pickle=True)
    with pytest.raises(ArtifactError, match="not a valid .npy"):
        ImageSearchEngine.load(Config(), {**paths, "model": tmp_path / "no-model"},
                               with_images=False)
    paths = good_artifacts(tmp_path)
    data = paths["vectors"].read_bytes()
    paths["vectors"].write_bytes(data[:len(data) // 2])
    with pytest.raises(ArtifactError, match="not a valid .npy"):
        ImageSearchEngine.load(Config(), {**paths, "model": tmp_path / "no-model"},
                               with_images=False)


@pytest.mark.slow
def test_serve_refuses_tampered_artifacts_in_one_line(tmp_path):
    paths = good_artifacts(tmp_path / "data")
    save_npy(paths["names"], np.array(["a", "b", "c"]))
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["paths"].update({"vectors": str(paths["vectors"]), "names": str(paths["names"]),
                            "images": str(paths["images"])})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    query = tmp_path / "q.png"
    assert cv2.imwrite(str(query), np.zeros((8, 8, 3), np.uint8))
    # --no-verify: these files are in no DVC project, and the load-time checks are
    # what is under test (verification against dvc.lock has its own tests).
    proc = run(["python", str(REPO_ROOT / "stages/serve.py"), str(query), "--params",
                str(tmp_path / "params.yaml"), "--no-verify"], tmp_path, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["serve.py: error: 3 image names for 5 vectors: "
                                        "names and vectors are out of step"]
