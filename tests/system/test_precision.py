"""``modelling.precision``: fp32, bf16 and int8 through the real pipeline and serving.

The int8 and bf16 projects are copies of the session's query project (13 real photos,
real weights, built in fp32 by ``dvc repro``), so only modelling, whitening and
evaluate run again, and the fp32 vectors are the copy's own.
"""
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib.config import load_config
from lib.embedding.inference_model import (
    calibration_rows, InferenceModel, IR_FILE, read_inference_model, RECORD)
from lib.embedding.runtime import BF16_MISSING, choose_runtime, cpu_has_bf16
from lib.errors import ArtifactError, ConfigError, PinningError
from lib.pinning.verify import pin, verify_workspace
from lib.retrieval.engine import ImageSearchEngine
from lib.retrieval.similarity import get_cosine_similarity
from tests.support.helpers import REPO_ROOT, repro, run, set_params, tool_env
from tests.support.query_project import COLLECTION, N_IMAGES, name_of

VECTORS = "data/model/embedded_image_vectors.npy"
INFERENCE = "data/model/inference_model"
CALIBRATION = 4              # calibration photos of the int8 project (of its 13)
# Lowest per-photo cosine to the fp32 vector, measured on these photos with margin:
# int8 0.9861 (4 calibration photos; mean 0.9961), bf16 0.9997 (the bench's bf16 run).
INT8_FLOOR = 0.975
BF16_FLOOR = 0.999


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, D) arrays: (N,)."""
    return np.diagonal(get_cosine_similarity(a, b))


def _copy(project: Path, dest: Path) -> Path:
    """A copy of a built project (its DVC cache included)."""
    return Path(shutil.copytree(project, dest, symlinks=True))


def _record(directory: Path, precision: str, **more: str) -> Path:
    """An inference-model folder recording ``precision`` (and ``more``), without an IR."""
    directory.mkdir(parents=True)
    (directory / RECORD).write_text(json.dumps({"precision": precision, **more}),
                                    encoding="utf-8")
    return directory


def test_calibration_rows_are_deterministic_distinct_and_span_the_store():
    assert calibration_rows(10, 4).tolist() == [0, 3, 6, 9]
    assert calibration_rows(5, 300).tolist() == [0, 1, 2, 3, 4]
    assert calibration_rows(7, 1).tolist() == [0]
    rows = calibration_rows(3449, 300)
    assert len(np.unique(rows)) == 300 and rows[0] == 0 and rows[-1] == 3448
    assert np.array_equal(rows, calibration_rows(3449, 300))
    with pytest.raises(ValueError):
        calibration_rows(0, 300)


def test_bf16_and_int8_run_on_openvino_only():
    assert choose_runtime("auto", "int8") == "openvino"
    assert choose_runtime("openvino", "int8") == "openvino"
    with pytest.raises(ConfigError, match="modelling.precision int8 runs on OpenVINO but "
                                          "modelling.runtime is 'tensorflow'"):
        choose_runtime("tensorflow", "int8")
    with pytest.raises(ConfigError, match="modelling.precision: 'fp16' is not allowed"):
        choose_runtime("auto", "fp16")


WITHOUT_OPENVINO = """
import sys
sys.modules["openvino"] = None          # as if OpenVINO were not installed
from lib.embedding.runtime import choose_runtime
for precision in ("int8", "bf16"):
    try:
        choose_runtime("auto", precision)
    except ValueError as err:
        print(err)
"""


def test_without_openvino_bf16_and_int8_are_one_line_errors():
    proc = subprocess.run([sys.executable, "-c", WITHOUT_OPENVINO], cwd=REPO_ROOT,
                          env=tool_env(), capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines() == [
        f"modelling.precision {precision} needs OpenVINO, which is not installed (pip install "
        "openvino, or set the precision to fp32)" for precision in ("int8", "bf16")]


def test_cpu_bf16_detection_agrees_with_the_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to compare with")
    flags = set(cpuinfo.read_text(encoding="utf-8").split())
    assert cpu_has_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_bf16_is_one_clear_line_where_the_cpu_lacks_it():
    if cpu_has_bf16():
        assert choose_runtime("auto", "bf16") == "openvino"
        return
    with pytest.raises(ConfigError) as caught:
        choose_runtime("auto", "bf16")
    assert str(caught.value) == BF16_MISSING and "\n" not in BF16_MISSING


def test_a_collection_of_another_precision_is_refused(tmp_path):
    old = InferenceModel(None, None)                 # no IR: served through the Keras model
    assert read_inference_model(None, "fp32") == old               # built before precisions
    assert read_inference_model(tmp_path / "absent", "fp32") == old
    with pytest.raises(ArtifactError, match="nothing shows the collection was embedded in int8"):
        read_inference_model(None, "int8")
    fp32 = _record(tmp_path / "fp32", "fp32")
    assert read_inference_model(fp32, "fp32") == old               # built before the IR
    with pytest.raises(ArtifactError, match=r"embedded in fp32 but modelling.precision is int8"
                                            r".*set modelling.precision back to fp32"):
        read_inference_model(fp32, "int8")
    int8 = _record(tmp_path / "int8", "int8")
    with pytest.raises(ArtifactError, match="the int8 model .*model.xml .* is missing"):
        read_inference_model(int8, "int8")
    (int8 / RECORD).write_text("{not json", encoding="utf-8")
    with pytest.raises(ArtifactError, match="cannot be read"):
        read_inference_model(int8, "int8")


def test_fp32_records_its_precision_and_holds_the_ir_of_the_saved_model(query_project,
                                                                       tmp_path):
    folder = query_project / INFERENCE
    record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    keras_bytes = (query_project / "data/model/vectorizer_model/model.keras").read_bytes()
    assert record["precision"] == "fp32" and record["openvino"]
    assert record["keras_sha256"] == hashlib.sha256(keras_bytes).hexdigest()
    assert sorted(path.name for path in folder.iterdir()) == ["model.bin", IR_FILE, RECORD]
    found = read_inference_model(folder, "fp32")
    assert found == InferenceModel(folder / IR_FILE, record["keras_sha256"])
    lost = _record(tmp_path / "lost", "fp32", keras_sha256=record["keras_sha256"])
    with pytest.raises(ArtifactError, match="fp32 model .*model.xml .* is missing"):
        read_inference_model(lost, "fp32")                    # an IR build without its IR


@pytest.fixture(scope="module", name="int8_project")
def int8_project_fixture(query_project, tmp_path_factory):
    """The query project re-embedded in int8 by ``dvc repro`` (4 calibration photos)."""
    project = _copy(query_project, tmp_path_factory.mktemp("int8") / "project")
    set_params(project, {"modelling.precision": "int8",
                         "modelling.calibration_size": CALIBRATION})
    assert repro(project) == ["modelling", "whitening", "index", "evaluate"]
    return project


def test_int8_vectors_are_close_to_fp32_and_recorded(int8_project, query_project):
    fp32 = np.load(query_project / VECTORS)                           # (13, 2048)
    int8 = np.load(int8_project / VECTORS)                            # (13, 2048)
    assert int8.shape == (N_IMAGES, 2048) and int8.dtype == np.float32
    cosines = _cosines(fp32, int8)                                    # (13,)
    print(f"\nint8 vs fp32 cosine: min {cosines.min():.4f} mean {cosines.mean():.4f}")
    assert cosines.min() > INT8_FLOOR
    assert cosines.min() < 0.9999, "int8 vectors equal fp32: the int8 model did not run"
    folder = int8_project / INFERENCE
    record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    assert record["precision"] == "int8" and record["calibration_rows"] == CALIBRATION
    assert record["calibration_size"] == CALIBRATION and record["feature_rows"] == N_IMAGES
    assert (folder / IR_FILE).is_file() and (folder / "model.bin").is_file()
    metrics = json.loads((int8_project / "metrics/evaluation.json").read_text(encoding="utf-8"))
    assert metrics["queries"] > 0


def test_queries_are_embedded_in_the_collections_precision(int8_project, query_project):
    with verify_workspace(int8_project, load_config(int8_project / "params.yaml")) as pinned:
        assert pinned.paths["inference_model"].name == Path(INFERENCE).name
        engine = ImageSearchEngine.load(pinned.config, pinned.paths, with_images=False)
    # The pinned snapshot is gone now: the int8 model was read while loading.
    assert engine.vectorizer.precision == "int8" and engine.vectorizer.runtime == "openvino"
    row = [str(name) for name in engine.names].index(name_of(COLLECTION[2]))
    query = engine.embed(int8_project / "data/master" / name_of(COLLECTION[2]))   # (D,)
    fp32_row = np.load(query_project / VECTORS)[row]                             # (D,)
    same = float(get_cosine_similarity(query[np.newaxis], engine.vectors[row:row + 1])[0, 0])
    other = float(get_cosine_similarity(fp32_row[np.newaxis], engine.vectors[row:row + 1])[0, 0])
    assert same > 0.9999 and same > other        # the int8 model, not fp32, embedded it
    assert engine.most_similar(int8_project / "data/master" / name_of(COLLECTION[2]), 1)[0][1] \
        == name_of(COLLECTION[2])


def test_changing_the_precision_without_repro_is_refused(int8_project):
    params = int8_project / "params.yaml"
    saved = params.read_text(encoding="utf-8")
    try:
        set_params(int8_project, {"modelling.precision": "fp32"})
        config = load_config(params)
        with pytest.raises(PinningError, match="stale: params.yaml modelling modified"):
            pin(int8_project, config)
        unchecked = pin(int8_project, config, verify=False)          # --no-verify
        with pytest.raises(ArtifactError, match="embedded in int8 but modelling.precision "
                                                "is fp32"):
            ImageSearchEngine.load(config, unchecked.paths, with_images=False)
    finally:
        params.write_text(saved, encoding="utf-8")


def test_the_int8_model_is_pinned_pushed_and_pulled(int8_project, tmp_path):
    origin = _copy(int8_project, tmp_path / "origin")
    run(["dvc", "remote", "add", "-d", "local", "../storage"], origin)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-q", "-m", "int8"], origin)
    run(["dvc", "push", "-q"], origin)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / INFERENCE).exists()
    run(["dvc", "pull", "-q"], clone)
    pulled = verify_workspace(clone, load_config(clone / "params.yaml"))
    built = verify_workspace(origin, load_config(origin / "params.yaml"))
    assert pulled.version.hashes["inference_model"] == built.version.hashes["inference_model"]
    assert (clone / INFERENCE / IR_FILE).read_bytes() == \
        (origin / INFERENCE / IR_FILE).read_bytes()


def test_bf16_through_dvc_repro(query_project, tmp_path):
    project = _copy(query_project, tmp_path / "project")
    lock = (project / "dvc.lock").read_text(encoding="utf-8")
    set_params(project, {"modelling.precision": "bf16"})
    if not cpu_has_bf16():
        proc = run(["dvc", "repro"], project, check=False)
        assert proc.returncode != 0
        assert f"modelling.py: error: {BF16_MISSING}" in (proc.stdout + proc.stderr).splitlines()
        assert (project / "dvc.lock").read_text(encoding="utf-8") == lock
        return
    assert repro(project) == ["modelling", "whitening", "index", "evaluate"]
    cosines = _cosines(np.load(query_project / VECTORS), np.load(project / VECTORS))
    print(f"\nbf16 vs fp32 cosine: min {cosines.min():.5f} mean {cosines.mean():.5f}")
    assert cosines.min() > BF16_FLOOR
    pinned = verify_workspace(project, load_config(project / "params.yaml"))
    engine = ImageSearchEngine.load(pinned.config, pinned.paths, with_images=False)
    assert engine.vectorizer.precision == "bf16"
