"""Row indexes, row plans and copies, and progress reporting, on real files."""
import io
import logging

import numpy as np
import pytest
import yaml

from lib import progress as progress_module
from lib.artifacts import load_npy, NpyRowReader, open_npy_writer, save_npy
from lib.errors import ArtifactError
from lib.incremental.rows import (
    apply_rows, code_files, content_key, copy_rows, plan_rows, row_settings, RowIndex, RowPlan)
from lib.progress import LogProgress, progress
from tests.support.helpers import REPO_ROOT


def test_copy_rows_writes_each_row_from_its_source_row(tmp_path):
    rng = np.random.default_rng(0)
    previous = rng.random((40, 3, 2), dtype=np.float32)                   # (P, 3, 2)
    save_npy(tmp_path / "previous.npy", previous)
    sources = np.array([0, 1, 2, 5, 6, 7, -1, 8, 9, 39, 38, -1, 3] + list(range(10, 30)))
    with open_npy_writer(tmp_path / "out.npy", (len(sources), 3, 2), np.float32) as out:
        out[:] = -1.0
        copy_rows(NpyRowReader(tmp_path / "previous.npy"), out, sources, chunk_size=4)
    result = load_npy(tmp_path / "out.npy")
    kept = sources >= 0
    assert np.array_equal(result[kept], previous[sources[kept]])
    assert (result[~kept] == -1.0).all()


def test_plan_reuses_only_matching_keys_under_the_same_fingerprint(tmp_path):
    save_npy(tmp_path / "previous.npy", np.zeros((3, 2), np.float32))
    old = RowIndex.of(["a", "b", "c"], {"settings": {"pooling": "avg"}})
    same = RowIndex.of(["c", "x", "a"], {"settings": {"pooling": "avg"}})
    plan = plan_rows(same.keys, same, old, tmp_path / "previous.npy")
    assert plan.sources.tolist() == [2, -1, 0] and plan.compute.tolist() == [1]
    assert plan.describe("v") == "v: 1 of 3 rows to compute, 2 reused from the previous output"
    other = RowIndex.of(["c", "x", "a"], {"settings": {"pooling": "max"}})
    assert plan_rows(other.keys, other, old, tmp_path / "previous.npy").compute.tolist() == \
        [0, 1, 2]
    save_npy(tmp_path / "previous.npy", np.zeros((4, 2), np.float32))    # out of step
    assert len(plan_rows(same.keys, same, old, tmp_path / "previous.npy").compute) == 3


def test_apply_rows_transforms_planned_rows_and_copies_the_rest(tmp_path):
    source = np.arange(12, dtype=np.float32).reshape(6, 2)               # (N, 2)
    save_npy(tmp_path / "in.npy", source)
    save_npy(tmp_path / "previous.npy", np.full((2, 1), 7.0, np.float32))
    plan = RowPlan(np.array([0, 2, 3, 5]), np.array([-1, 1, -1, -1, 0, -1]),
                   tmp_path / "previous.npy")
    calls = []

    def row_sum(rows):
        calls.append(len(rows))
        return rows.sum(axis=1, keepdims=True)                           # (C, 1)

    assert apply_rows(NpyRowReader(tmp_path / "in.npy"), tmp_path / "out.npy", (1,),
                      np.float32, row_sum, plan, 3, "test") == 6
    assert load_npy(tmp_path / "out.npy")[:, 0].tolist() == [1, 7, 9, 13, 7, 21]
    assert calls == [3, 1]                                               # planned rows only


def test_row_index_round_trip_and_bad_files(tmp_path):
    index = RowIndex.of(["k1", "k2"], {"code": {"lib/x.py": "abc"}})
    index.save(tmp_path / "rows.npz")
    index.save(tmp_path / "again.npz")                # equal indexes, equal bytes (for DVC)
    assert (tmp_path / "rows.npz").read_bytes() == (tmp_path / "again.npz").read_bytes()
    loaded = RowIndex.load(tmp_path / "rows.npz")
    assert loaded.keys.tolist() == ["k1", "k2"] and loaded.fingerprint == index.fingerprint
    assert yaml.safe_load(loaded.recipe) == {"code": {"lib/x.py": "abc"}}
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="is not valid"):
        RowIndex.load(tmp_path / "bad.npz")
    with pytest.raises(ArtifactError, match="missing"):
        RowIndex.load(tmp_path / "none.npz")


def test_content_key_is_of_the_bytes_not_the_name(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"photo")
    (tmp_path / "b.jpg").write_bytes(b"photo")
    (tmp_path / "c.jpg").write_bytes(b"photO")
    keys = [content_key(tmp_path / name) for name in ("a.jpg", "b.jpg", "c.jpg")]
    assert keys[0] == keys[1] != keys[2] and len(keys[0]) == 32


def test_fingerprinted_code_is_what_dvc_yaml_declares_and_settings_skip_speed_knobs():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for name, spec in stages.items():
        script = spec["cmd"].split()[1]
        files = {path.relative_to(REPO_ROOT).as_posix() for path in code_files(REPO_ROOT / script)}
        declared = set()
        for dep in spec["deps"]:
            if dep.endswith(".py"):
                declared.add(dep)
            elif dep.startswith("lib/"):                      # a package: all its modules
                declared.update(path.relative_to(REPO_ROOT).as_posix()
                                for path in (REPO_ROOT / dep).glob("*.py"))
        assert files == declared, name
    assert row_settings({"pooling": "avg", "batch_size": 8, "chunk_size": 2, "workers": 4,
                         "runtime": "auto"}) == {"pooling": "avg"}


def test_log_progress_lines_give_count_rate_and_eta(caplog):
    reporter = LogProgress(10, "embedding", "images", interval=0.0)
    with caplog.at_level(logging.INFO, logger=progress_module.__name__):
        reporter.update(3)
        reporter.update(7)
    first, last = caplog.messages
    assert first.startswith("embedding: 3/10 images (30%), ") and "images/s, ETA " in first
    assert last.startswith("embedding: 10/10 images (100%), ") and "in all" in last


def test_progress_is_a_bar_on_a_terminal_and_log_lines_elsewhere(monkeypatch, caplog):
    class Terminal(io.StringIO):
        """A stream that says it is a terminal."""

        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    with progress(4, "features") as meter:
        meter.update(4)
    assert "features: 100%" in screen.getvalue() and "4/4" in screen.getvalue()
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with caplog.at_level(logging.INFO, logger=progress_module.__name__):
        with progress(2, "ETL", interval=3600) as meter:
            meter.update(2)
    assert [m.split(",")[0] for m in caplog.messages] == ["ETL: 2/2 images (100%)"]
