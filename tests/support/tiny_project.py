"""A tiny real git + DVC project whose one stage writes the served artifacts from a folder.

No TensorFlow: ``build.py`` turns the files of ``data/master`` into names, vectors,
landing images and a ``model.keras`` text file in a second, so integrity tests run
against real ``dvc.lock`` files, real DVC hashing, a real DVC cache and a real local
remote. Its ``params.yaml`` is a complete configuration, so ``stages/serve.py`` runs
against it up to the model load.
"""
import shutil
from pathlib import Path
from typing import Dict

import yaml

from lib.config import Config
from tests.support.helpers import REPO_ROOT, run

BUILD = '''
import sys
from pathlib import Path
import numpy as np
names = sorted(p.name for p in Path("data/master").iterdir())
scale = float(sys.argv[1])
Path("out/model").mkdir(parents=True, exist_ok=True)
np.save("out/names.npy", np.array(names))
np.save("out/vectors.npy", np.full((len(names), 4), scale, dtype=np.float32))
np.save("out/images.npy", np.zeros((len(names), 2, 2, 3), dtype=np.uint8))
Path("out/model/model.keras").write_text(" ".join(names) + str(scale))
'''
PATHS = {"master": "data/master", "images": "out/images.npy", "names": "out/names.npy",
         "etl_report": "out/report.json", "features": "out/images.npy",
         "vectors": "out/vectors.npy", "model": "out/model", "whitening": "out/none.npz"}
DVC_YAML = {"stages": {"build": {
    "cmd": "python build.py ${etl.image_size}",
    "deps": ["data/master", "build.py"],
    "params": ["etl"],
    "outs": ["out/names.npy", "out/vectors.npy", "out/images.npy", "out/model"],
}}}
SERVE = REPO_ROOT / "stages" / "serve.py"


def params(**etl) -> Dict[str, Dict]:
    """A complete params mapping: the defaults, the tiny paths, ``etl`` overrides."""
    values = Config().to_dict()
    values["paths"].update(PATHS)
    values["etl"].update({"image_size": 15, **etl})
    return values


def write_params(project: Path, values: Dict, name: str = "params.yaml") -> Path:
    """Writes a params file into the project."""
    path = project / name
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return path


def build(root: Path) -> Path:
    """``root/project`` built, committed (tag v1) and pushed to ``root/remote``."""
    project = root / "project"
    (project / "data" / "master").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (project / "data" / "master" / name).write_text(name, encoding="utf-8")
    (project / "build.py").write_text(BUILD, encoding="utf-8")
    write_params(project, params())
    (project / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML), encoding="utf-8")
    publish_v1(project)
    return root


def publish_v1(project: Path) -> None:
    """git + DVC init, ``dvc repro``, commit tagged v1, push to ``../remote``."""
    run(["git", "init", "-q", "-b", "main"], project)
    run(["dvc", "init", "-q"], project)
    run(["dvc", "remote", "add", "-d", "local", "../remote"], project)   # relative: copies work
    run(["dvc", "repro", "-q"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "v1"], project)
    run(["git", "tag", "v1"], project)
    run(["dvc", "push", "-q"], project)


def copy(template: Path, target: Path) -> Path:
    """A private copy of a built template (project and remote); returns the project."""
    shutil.copytree(template / "remote", target / "remote")
    return Path(shutil.copytree(template / "project", target / "project", symlinks=True))


def cache_object(project: Path, md5: str) -> Path:
    """The DVC cache file of an object id."""
    return project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
