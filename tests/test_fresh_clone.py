"""A fresh clone agrees with itself: ``dvc status`` says what the README says it will.

The README (Quick start): on a fresh clone, before ``dvc repro`` or ``dvc pull``,
``dvc status`` lists only the artifacts that are not there yet (``not in cache``
outputs, and ``deleted`` inputs that an earlier stage outputs); no code, params or
photos are ``modified``, so ``dvc.lock`` records exactly what the clone holds.
"""
import json

import yaml

from tests.helpers import REPO_ROOT, run


def test_fresh_clone_status_lists_only_artifacts_to_build_or_pull(tmp_path):
    clone = tmp_path / "image-search"
    run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], tmp_path)
    lock = yaml.safe_load((clone / "dvc.lock").read_text(encoding="utf-8"))
    produced = {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    assert set(lock["stages"]) == set(yaml.safe_load(
        (clone / "dvc.yaml").read_text(encoding="utf-8"))["stages"]), "dvc.lock lacks a stage"
    status = json.loads(run(["dvc", "status", "--json"], clone).stdout)
    unexpected = []
    for stage, changes in status.items():
        for change in changes:
            entries = change.items() if isinstance(change, dict) else [(change, {})]
            for kind, paths in entries:
                for path, state in (paths or {"": "(no detail)"}).items():
                    allowed = ((kind, state) == ("changed outs", "not in cache") or
                               (kind, state) == ("changed deps", "deleted")) and path in produced
                    if not allowed:
                        unexpected.append(f"{stage}: {kind}: {path}: {state}")
    assert not unexpected, "a fresh clone disagrees with its dvc.lock:\n" + "\n".join(unexpected)
    assert status, "a fresh clone has no artifacts: dvc status must list them as not in cache"
