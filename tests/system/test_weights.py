"""``modelling.weights`` that cannot work is one line, exit 1, before the slow stages."""
import hashlib
import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from lib.embedding.weights import FILE_NAME, keras_cache_file, ORIGIN, resolve_weights
from tests.support.helpers import (RAN, REPO_ROOT, WEIGHTS, make_project, pick_per_class,
                           require_shared, run, set_params, tool_env)

FIX = "set modelling.weights in params.yaml to a local ResNet50 no-top .h5 file"
# An unreachable proxy: Keras' download fails at once, with or without internet.
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "no_proxy": "", "NO_PROXY": ""}


def weights_stage(tmp_path, weights: str, **env: str) -> subprocess.CompletedProcess:
    """Runs the weights stage on params.yaml with ``modelling.weights`` set."""
    project = tmp_path / "params"
    project.mkdir(exist_ok=True)
    shutil.copyfile(REPO_ROOT / "params.yaml", project / "params.yaml")
    set_params(project, {"modelling.weights": weights})
    return subprocess.run([sys.executable, str(REPO_ROOT / "stages/weights.py"),
                           str(project / "weights.json"), "--params",
                           str(project / "params.yaml")], cwd=tmp_path,
                          env={**tool_env(), **env}, capture_output=True, text=True, check=False)


def with_top_layer(tmp_path):
    """The real no-top weights plus a 1000-class 'predictions' layer: the with-top layout."""
    path = tmp_path / "with_top.h5"
    shutil.copyfile(WEIGHTS, path)
    with h5py.File(path, "r+") as handle:
        names = [name if isinstance(name, bytes) else str(name).encode()
                 for name in list(handle.attrs["layer_names"])]
        handle.attrs["layer_names"] = np.array(names + [b"predictions"])
        group = handle.create_group("predictions")
        group.attrs["weight_names"] = np.array([b"predictions/kernel:0", b"predictions/bias:0"])
        group.create_dataset("predictions/kernel:0", data=np.zeros((2048, 1000), np.float32))
        group.create_dataset("predictions/bias:0", data=np.zeros(1000, np.float32))
    return path


def test_unusable_local_files_are_one_line_naming_the_param(tmp_path):
    require_shared(WEIGHTS)
    text = tmp_path / "notes.h5"
    text.write_text("not weights", encoding="utf-8")
    cases = {tmp_path / "none.h5": f"weights file {tmp_path / 'none.h5'} not found",
             text: f"{text} is not a readable HDF5 (.h5) weights file",
             with_top_layer(tmp_path): "does not hold ResNet50 no-top weights (it has layer "
                                       "'predictions', which ResNet50 no-top lacks)"}
    for path, problem in cases.items():
        proc = weights_stage(tmp_path, str(path))
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"weights.py: error: modelling.weights: {path}"
                                      if path != tmp_path / "none.h5" else
                                      "weights.py: error: modelling.weights: weights file")
        assert problem in proc.stderr and FIX in proc.stderr
    assert weights_stage(tmp_path, str(WEIGHTS)).returncode == 0


def test_unreachable_imagenet_download_is_one_line_without_tensorflow_noise(tmp_path):
    empty = tmp_path / "keras-home"
    proc = weights_stage(tmp_path, "imagenet", KERAS_HOME=str(empty), **OFFLINE)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[:-1] == [f"INFO lib.embedding.weights: downloading the ImageNet ResNet50 "
                          f"weights into {empty / 'models' / FILE_NAME}"], proc.stderr  # only
    assert lines[-1].startswith("weights.py: error: modelling.weights: the ImageNet weights "
                                f"could not be downloaded from {ORIGIN} (")
    assert FIX in lines[-1] and str(empty / "models" / FILE_NAME) in lines[-1]
    assert not proc.stdout                               # stdout holds results only


def test_imagenet_offline_route_is_the_file_in_keras_cache(tmp_path, monkeypatch):
    require_shared(WEIGHTS)
    home = tmp_path / "keras-home"
    (home / "models").mkdir(parents=True)
    (home / "models" / FILE_NAME).symlink_to(WEIGHTS)
    monkeypatch.setenv("KERAS_HOME", str(home))
    assert keras_cache_file() == home / "models" / FILE_NAME
    assert resolve_weights("imagenet") == home / "models" / FILE_NAME
    # Keras itself looks there (an unreachable download would fail otherwise).
    proc = subprocess.run([sys.executable, "-c", "import keras; print(keras.utils.get_file("
                           f"{FILE_NAME!r}, {ORIGIN!r}, cache_subdir='models'))"],
                          env={**tool_env(), "KERAS_HOME": str(home), **OFFLINE},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(home / "models" / FILE_NAME)


def test_dvc_repro_stops_at_the_weights_stage_before_the_etl(tmp_path):
    project = make_project(tmp_path / "project", pick_per_class("train", 1))
    set_params(project, {"modelling.weights": str(tmp_path / "missing.h5")})
    proc = run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0
    assert RAN.findall(proc.stdout + proc.stderr) == ["weights"]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("weights.py:")]
    assert errors == [f"weights.py: error: modelling.weights: weights file "
                      f"{tmp_path / 'missing.h5'} not found: {FIX} ({FILE_NAME}), or to "
                      f"'imagenet' with that file copied to {keras_cache_file()} (README: "
                      "'Without internet')"]
    assert not (project / "data/landing/resized_rgb.npy").exists()
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("weights", ["imagenet", "other.h5"])
def test_the_helper_checks_before_building(tmp_path, monkeypatch, weights):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / FILE_NAME).write_text("a partial download", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match="modelling.weights: .* is not a readable HDF5"):
        resolve_weights(weights)


def test_usable_weights_are_recorded_by_their_sha256_not_their_path(tmp_path):
    require_shared(WEIGHTS)
    proc = weights_stage(tmp_path, str(WEIGHTS))
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "params/weights.json").read_text(encoding="utf-8"))
    assert record == {"sha256": hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()}
