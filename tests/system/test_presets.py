"""The recommended preset end to end: merged into params.yaml by its command, built by
``dvc repro`` on 20 real photos with the real weights, served by ``stages/serve.py``.

Serving and the evaluate stage rank alike with every knob of the preset (database-side
augmentation, alpha-weighted query expansion): a query's printed matches are the top of
the evaluate stage's reproduction record for it.
"""
import json
import shutil

import numpy as np
import pytest

from lib.config import Config, load_config, parse_yaml
from tests.support.helpers import (
    PIPELINE, QUERY_SET, REPO_ROOT, make_project, pick_per_class, repro, run)

pytestmark = pytest.mark.slow

PRESET = REPO_ROOT / "presets" / "recommended.yaml"


def test_the_preset_holds_only_settings_that_differ_from_the_defaults():
    data = parse_yaml(PRESET.read_text(encoding="utf-8"))
    config = Config.from_dict(data, str(PRESET), missing_sections=True)
    defaults = Config()
    for section, values in data.items():
        for key in values:
            assert getattr(getattr(config, section), key) != getattr(
                getattr(defaults, section), key), f"{section}.{key} is the default"


def test_the_recommended_preset_builds_and_serves(tmp_path):
    project = make_project(tmp_path / "project", pick_per_class("train", 2))
    shutil.copytree(REPO_ROOT / "presets", project / "presets")
    applied = run(["python", "stages/preset.py", "presets/recommended.yaml"], project)
    assert "dvc exp run -S" in applied.stdout
    config = load_config(project / "params.yaml")
    assert config.augmentation.k and config.serve.query_expansion_alpha
    assert repro(project) == PIPELINE

    augmented = np.load(project / config.paths.augmented)
    assert augmented.shape == (20, 2048)
    metrics = json.loads((project / config.paths.metrics).read_text(encoding="utf-8"))
    assert metrics["queries_evaluated"] == 20 and 0 < metrics["mAP"] <= 1
    record = json.loads((project / config.paths.reproduction).read_text(encoding="utf-8"))

    query = sorted(QUERY_SET.rglob("*.jpg"))[3]
    proc = run(["python", "stages/serve.py", str(query), "-n", "3"], project)
    printed = [line.split() for line in proc.stdout.splitlines() if line[:3].strip().isdigit()]
    expected = record["top10"][query.relative_to(QUERY_SET).as_posix()][:3]
    assert [parts[2] for parts in printed] == [name for name, _ in expected]
    np.testing.assert_allclose([float(parts[1]) for parts in printed],
                               [score for _, score in expected], atol=2e-4)
