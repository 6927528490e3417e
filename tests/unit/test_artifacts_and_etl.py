"""Artifact IO and the ETL phase on tiny images made in tmp_path."""
import json

import cv2
import numpy as np
import pytest

from lib.artifacts import atomic_path, load_npy, open_npy_writer, save_npy
from lib.config import EtlConfig
from lib.errors import ArtifactError
from lib.photos.etl import run_etl


def write_image(path, bgr, size=(40, 30)):
    """Writes a solid-colour image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    image[:] = bgr
    assert cv2.imwrite(str(path), image)


@pytest.fixture(name="master")
def master_fixture(tmp_path):
    """Four colours, a greyscale file, and a corrupt file, in nested folders."""
    root = tmp_path / "master"
    write_image(root / "b" / "blue.png", (255, 0, 0))
    write_image(root / "a" / "red.jpg", (0, 0, 255))
    write_image(root / "green.bmp", (0, 255, 0))
    write_image(root / "c" / "d" / "white.webp", (255, 255, 255))
    grey = np.full((25, 35), 128, dtype=np.uint8)
    assert cv2.imwrite(str(root / "grey.png"), grey)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return root


def test_etl_names_rows_aligned_sorted_and_bad_files_counted(master, tmp_path):
    out = tmp_path / "landing"
    report = run_etl(master, out / "rgb.npy", out / "names.npy", out / "report.json",
                     EtlConfig(workers=2, chunk_size=2))
    names = load_npy(out / "names.npy", kind="U", ndim=1)
    images = np.load(out / "rgb.npy", allow_pickle=False)
    assert names.tolist() == ["a/red.jpg", "b/blue.png", "c/d/white.webp", "green.bmp",
                              "grey.png"]
    assert images.shape == (5, 224, 224, 3)
    assert images.dtype == np.uint8
    expected_rgb = {"a/red.jpg": [254, 0, 0], "b/blue.png": [0, 0, 255],
                    "c/d/white.webp": [255, 255, 255], "green.bmp": [0, 255, 0],
                    "grey.png": [128, 128, 128]}
    for name, row in zip(names, images):
        np.testing.assert_allclose(row[112, 112], expected_rgb[str(name)], atol=2)
    assert report["files_found"] == 6 and report["images_kept"] == 5
    assert report["files_skipped"] == 1
    assert report["skipped"][0]["name"] == "broken.jpg"
    assert json.loads((out / "report.json").read_text()) == report
    assert sorted(p.name for p in out.iterdir()) == ["names.npy", "report.json", "rgb.npy"]


def test_etl_rejects_missing_or_empty_master(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        run_etl(tmp_path / "none", tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.json",
                EtlConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        run_etl(tmp_path / "empty", tmp_path / "a.npy", tmp_path / "b.npy",
                tmp_path / "c.json", EtlConfig())


def test_names_are_saved_without_pickle(tmp_path):
    save_npy(tmp_path / "n.npy", np.array(["a/é.jpg", "b c.png"], dtype=np.str_))
    assert np.load(tmp_path / "n.npy", allow_pickle=False).tolist() == ["a/é.jpg", "b c.png"]
    with pytest.raises(TypeError, match="pickle"):
        save_npy(tmp_path / "o.npy", np.array(["a", None], dtype=object))


def test_load_npy_refuses_pickles_and_wrong_forms(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ArtifactError, match="not a valid .npy"):
        load_npy(tmp_path / "obj.npy")
    save_npy(tmp_path / "v.npy", np.zeros((3, 4), dtype=np.float64))
    with pytest.raises(ArtifactError, match="dtype float64"):
        load_npy(tmp_path / "v.npy", dtype=np.float32)
    with pytest.raises(ArtifactError, match="expected 3 dimensions"):
        load_npy(tmp_path / "v.npy", ndim=3)
    with pytest.raises(ArtifactError, match=r"expected \(N, 5\)"):
        load_npy(tmp_path / "v.npy", trailing_shape=(5,))
    with pytest.raises(ArtifactError, match="missing"):
        load_npy(tmp_path / "absent.npy")


def test_atomic_writes_leave_nothing_on_failure(tmp_path):
    target = tmp_path / "x.npy"
    save_npy(target, np.arange(3))
    with pytest.raises(RuntimeError):
        with open_npy_writer(target, (10,), np.int64) as out:
            out[:5] = 7
            raise RuntimeError("interrupted")
    assert np.load(target).tolist() == [0, 1, 2]          # the old complete file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "dir") as tmp:
            tmp.mkdir()
            (tmp / "f").write_text("half")
            raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]


def test_streamed_npy_is_a_plain_npy(tmp_path):
    with open_npy_writer(tmp_path / "s.npy", (5, 2), np.float32) as out:
        for i in range(5):
            out[i] = i
    loaded = np.load(tmp_path / "s.npy", allow_pickle=False)
    assert loaded.dtype == np.float32 and loaded.shape == (5, 2)
    assert loaded[:, 0].tolist() == [0, 1, 2, 3, 4]
