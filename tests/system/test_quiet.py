"""A normal run shows only the project's own lines on stderr; ``-v`` shows everything."""
import re
import subprocess
import sys

import numpy as np

from lib.config import EtlConfig
from lib.photos.images import list_images, load_image
from tests.support.helpers import REPO_ROOT, tool_env

# The project's log lines (``LEVEL logger: message``); anything else is library noise.
OWN_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR) (lib\.[\w.]+|stages\.\w+|__main__): ")


def feature_engineering(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    """Runs the real feature-engineering stage (it loads TensorFlow) on two demo photos."""
    photos = list_images(REPO_ROOT / "data/master")[:2]
    np.save(tmp_path / "images.npy", np.stack([load_image(p, EtlConfig()) for p in photos]))
    return subprocess.run([sys.executable, str(REPO_ROOT / "stages/feature_engineering.py"),
                           str(tmp_path / "images.npy"), str(tmp_path / "features.npy"),
                           "--params", str(REPO_ROOT / "params.yaml"), *flags],
                          env=tool_env(), capture_output=True, text=True, check=False)


def test_a_stage_loading_tensorflow_prints_only_its_own_lines_unless_verbose(tmp_path):
    quiet = feature_engineering(tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert all(OWN_LINE.match(line) for line in quiet.stderr.splitlines()), quiet.stderr
    verbose = feature_engineering(tmp_path, "-v")
    assert verbose.returncode == 0, verbose.stderr
    # TensorFlow's native start-up lines are there with -v (absl and oneDNN lines).
    assert any(not OWN_LINE.match(line) for line in verbose.stderr.splitlines()), verbose.stderr


def test_serving_prints_only_its_own_lines(query_project, tmp_path):
    query = list_images(query_project / "data/master")[0]
    # No conversion cache: the model is converted, and so called by Keras, in this process
    # (the call that warns "The structure of `inputs` doesn't match").
    proc = subprocess.run([sys.executable, "stages/serve.py", str(query), "-n", "2",
                           "--output", str(tmp_path / "result.png")], cwd=query_project,
                          env={**tool_env(), "IMAGE_SEARCH_CACHE": ""}, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert all(OWN_LINE.match(line) for line in proc.stderr.splitlines()), proc.stderr
    assert proc.stdout.splitlines()[0].startswith("version: git ")
