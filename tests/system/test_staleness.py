"""``dvc repro`` recomputes only stale stages, proven by what it actually reran."""
import shutil

import pytest

from tests.support.helpers import DATASET, PIPELINE, make_project, pick_per_class, repro, set_params

pytestmark = pytest.mark.slow


def test_only_stale_stages_rerun(tmp_path):
    project = make_project(tmp_path / "project", pick_per_class("train", 2))
    assert repro(project) == PIPELINE
    assert repro(project) == []

    # A param read only by the last stage reruns that stage alone.
    set_params(project, {"serve.query_expansion": 2})
    assert repro(project) == ["evaluate"]
    # So does a search-time index param: the index is not rebuilt.
    set_params(project, {"index.ef_search": 64})
    assert repro(project) == ["evaluate"]
    # And the other query-time ranking knobs (alpha-QE, k-reciprocal re-ranking).
    set_params(project, {"serve.query_expansion_alpha": 3.0, "serve.reciprocal_candidates": 10})
    assert repro(project) == ["evaluate"]

    # The whitening dim refits the whitening and re-evaluates; nothing is re-embedded.
    set_params(project, {"whitening.dim": 4})
    assert repro(project) == ["whitening", "index", "evaluate"]
    assert repro(project) == []
    # So does database-side augmentation, which the whitening stage writes.
    set_params(project, {"augmentation.k": 3})
    assert repro(project) == ["whitening", "index", "evaluate"]

    # A modelling param reruns modelling and the stages that read its outputs.
    set_params(project, {"modelling.pooling": "max"})
    assert repro(project) == ["modelling", "whitening", "index", "evaluate"]
    assert repro(project) == []

    # A feature-engineering param reruns that stage; its output is byte-identical,
    # so DVC skips modelling (content-addressed staleness).
    set_params(project, {"feature_engineering.chunk_size": 3})
    assert repro(project) == ["feature_engineering"]

    # An ETL param that changes the output reruns everything downstream.
    set_params(project, {"etl.resize_mode": "crop"})
    assert repro(project) == ["etl", "feature_engineering", "modelling", "whitening", "index",
                              "evaluate"]

    # A new photo in data/master reruns every stage.
    extra = pick_per_class("train", 1, skip=5)[0]
    shutil.copyfile(DATASET / extra[0], project / "data/master" / extra[1] / "new-photo.jpg")
    assert repro(project) == ["etl", "feature_engineering", "modelling", "whitening", "index",
                              "evaluate"]
    assert repro(project) == []
