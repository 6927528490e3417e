"""The small real project the query-robustness tests and the fuzzer search.

Twelve real photos (one per class, plus A), photo B stored only sideways with an EXIF
tag that undoes the rotation, and the first photo again under another name.
"""
import shutil
from pathlib import Path
from typing import Tuple

from lib.config import Config
from lib.retrieval.engine import ImageSearchEngine
from tests.support.badfiles import exif_rotated_jpeg, photo_bgr
from tests.support.helpers import DATASET, PIPELINE, make_project, pick_per_class, repro

COLLECTION = pick_per_class("train", 1)                  # 10 photos, one per class
UPRIGHT_A, UPRIGHT_B = pick_per_class("train", 1, skip=1)[3:5]
EXIF_B_NAME = "exif/sideways-b.jpg"                       # B is only stored sideways
DUPLICATE_NAME = "copies/same-as-first.jpg"               # same bytes as COLLECTION[0]
N_IMAGES = len(COLLECTION) + 3


def name_of(row: Tuple[str, str]) -> str:
    """The image name the ETL gives a copied dataset photo."""
    path, label = row
    return f"{label}/{Path(path).name}"


def build(root: Path) -> Path:
    """Creates the project under ``root`` and runs ``dvc repro``."""
    project = make_project(root, COLLECTION + [UPRIGHT_A])
    master = project / "data" / "master"
    (master / "exif").mkdir()
    (master / EXIF_B_NAME).write_bytes(exif_rotated_jpeg(photo_bgr(UPRIGHT_B[0])))
    (master / "copies").mkdir()
    shutil.copyfile(DATASET / COLLECTION[0][0], master / DUPLICATE_NAME)
    ran = repro(project)
    if ran != PIPELINE:
        raise AssertionError(f"dvc repro ran {ran}")
    return project


# The artifacts of the design: no whitening, index or inference-model record.
BASIC = ("vectors", "names", "model", "images")


def load_engine(project: Path) -> ImageSearchEngine:
    """The engine as serving loads it, with the real saved model."""
    paths = Config().paths.resolve(project)
    return ImageSearchEngine.load(Config(), {key: paths[key] for key in BASIC})
