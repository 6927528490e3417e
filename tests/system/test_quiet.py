"""A normal run shows only the project's own lines on stderr; ``-v`` shows everything."""
import re
import subprocess
import sys

import numpy as np
import yaml

from lib.config import EtlConfig
from lib.embedding import preprocess
from lib.photos.images import list_images, load_image
from tests.support.helpers import REPO_ROOT, require_shared, tool_env, WEIGHTS

# The project's log lines (``LEVEL logger: message``); anything else is library noise.
OWN_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR) (lib\.[\w.]+|stages\.\w+|__main__): ")


def modelling(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    """Runs the real modelling stage (it loads TensorFlow to build the model) on two photos."""
    require_shared(WEIGHTS)
    photos = list_images(REPO_ROOT / "data/master")[:2]
    rgb = np.stack([load_image(p, EtlConfig()) for p in photos])             # (2, S, S, 3)
    np.save(tmp_path / "features.npy", preprocess(rgb))
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["modelling"]["weights"] = str(WEIGHTS)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    out = tmp_path / ("verbose" if flags else "quiet")
    return subprocess.run([sys.executable, str(REPO_ROOT / "stages/modelling.py"),
                           str(tmp_path / "features.npy"), str(out / "vectors.npy"),
                           str(out / "model"), str(out / "inference"),
                           "--params", str(tmp_path / "params.yaml"), *flags],
                          env=tool_env(), capture_output=True, text=True, check=False)


def test_a_stage_loading_tensorflow_prints_only_its_own_lines_unless_verbose(tmp_path):
    quiet = modelling(tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert all(OWN_LINE.match(line) for line in quiet.stderr.splitlines()), quiet.stderr
    verbose = modelling(tmp_path, "-v")
    assert verbose.returncode == 0, verbose.stderr
    # TensorFlow's native start-up lines are there with -v (absl and oneDNN lines).
    assert any(not OWN_LINE.match(line) for line in verbose.stderr.splitlines()), verbose.stderr


def test_serving_prints_only_its_own_lines(query_project, tmp_path):
    query = list_images(query_project / "data/master")[0]
    # No caches: the inference model's IR is compiled in this process.
    proc = subprocess.run([sys.executable, "stages/serve.py", str(query), "-n", "2",
                           "--output", str(tmp_path / "result.png")], cwd=query_project,
                          env={**tool_env(), "IMAGE_SEARCH_CACHE": ""}, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert all(OWN_LINE.match(line) for line in proc.stderr.splitlines()), proc.stderr
    assert proc.stdout.splitlines()[0].startswith("version: git ")
