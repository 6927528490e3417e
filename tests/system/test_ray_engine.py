"""The ``ray`` embedding engine on a real two-node Ray cluster: real photos, real weights.

The cluster (a head and a worker node, one CPU each, started with ``ray start`` as a
user would) is shared by the module: Ray takes seconds to start.
"""
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from lib.config import EtlConfig, ModellingConfig
from lib.embedding.preprocessing import preprocess
from lib.embedding.ray_engine import check_reachable, ray_session, RETRIES, run_ray_embedding
from lib.embedding.vectorizer import run_embedding, Vectorizer
from lib.errors import RayClusterError
from lib.photos.images import load_image
from lib.retrieval.similarity import get_cosine_similarity
from tests.support.helpers import (
    DATASET, pick_per_class, repro, REPO_ROOT, run, set_params, tool_env)

RAY = str(Path(sys.executable).parent / "ray")
PARITY = 0.99999                                 # per-row cosine, ray vs local engine
ACTOR_TITLE = "MapBatches(EmbeddingActor)"             # in the process title of each actor
AUTH = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return np.diagonal(get_cosine_similarity(a, b))


class Cluster:
    """A head and a worker node started with ``ray start --block``; stopped by their pids."""

    def __init__(self, logs: Path):
        self.address = f"127.0.0.1:{free_port()}"
        common = ["--block", "--num-cpus", "1", "--object-store-memory", str(300 << 20),
                  "--disable-usage-stats"]
        self.logs = logs
        self.nodes = [self._start(["--head", "--port", self.address.split(":")[1],
                                   "--include-dashboard", "false"] + common, "head")]
        self.nodes.append(self._start(["--address", self.address] + common, "worker"))

    def _start(self, args, name: str) -> subprocess.Popen:
        env = tool_env()
        env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"    # stop at once when told to
        with open(self.logs / f"{name}.log", "w", encoding="utf-8") as log:
            return subprocess.Popen([RAY, "start", *args], stdout=log,  # pylint: disable=consider-using-with
                                    stderr=subprocess.STDOUT, env=env)

    def actor_pids(self):
        """Pids of the embedding actors now alive in this cluster's processes."""
        return [proc.pid for node in self.nodes
                for proc in psutil.Process(node.pid).children(recursive=True)
                if ACTOR_TITLE in " ".join(_cmdline(proc))]

    def stop(self) -> None:
        """SIGTERM to each ``ray start --block``: it stops its node's processes."""
        for node in self.nodes:
            node.terminate()
        for node in self.nodes:
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()


def _cmdline(proc: psutil.Process):
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


@pytest.fixture(scope="module", name="ray_cluster")
def ray_cluster_fixture(tmp_path_factory):
    """The two-node cluster with token authentication, up once both nodes have joined.

    Its token is in this process's environment for the module (drivers started by the
    tests, such as ``dvc repro``, inherit it), as the README tells users to do.
    """
    saved = {key: os.environ.get(key) for key in AUTH}
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)})
    cluster = Cluster(tmp_path_factory.mktemp("ray-logs"))
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                check_reachable(cluster.address, "test")
                break
            except RayClusterError:                     # the head is still starting
                assert time.monotonic() < deadline, "the head never listened"
                time.sleep(0.5)
        with ray_session(cluster.address) as ray:
            while len([node for node in ray.nodes() if node["Alive"]]) < 2:
                assert time.monotonic() < deadline, "the worker node never joined"
                time.sleep(0.5)
        yield cluster
    finally:
        cluster.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ray_project(query_project: Path, tmp_path: Path, cluster: Cluster, **params) -> Path:
    """A copy of the session's query project (built by the local engine) set to use Ray."""
    project = tmp_path / "project"
    shutil.copytree(query_project, project, symlinks=True)
    set_params(project, {"modelling.engine": "ray", "modelling.ray_address": cluster.address,
                         **{f"modelling.{key}": value for key, value in params.items()}})
    return project


@pytest.mark.slow
def test_ray_engine_through_dvc_repro_equals_the_local_engine(query_project, ray_cluster,
                                                              tmp_path):
    project = ray_project(query_project, tmp_path, ray_cluster, ray_actors=2, chunk_size=3)
    local = np.load(query_project / "data/model/embedded_image_vectors.npy")
    assert repro(project, "modelling") == ["modelling"]
    vectors = np.load(project / "data/model/embedded_image_vectors.npy", allow_pickle=False)
    assert vectors.shape == local.shape and vectors.dtype == np.float32
    assert cosines(vectors, local).min() >= PARITY                        # same rows, same order
    assert "modelling" not in run(["dvc", "status", "modelling"], project).stdout


@pytest.mark.slow
def test_ctrl_c_on_the_ray_engine_leaves_no_vectors_and_no_actors(query_project, ray_cluster,
                                                                   tmp_path):
    project = ray_project(query_project, tmp_path, ray_cluster, ray_actors=1, chunk_size=1,
                          batch_size=1)
    vectors = project / "data/model/embedded_image_vectors.npy"
    vectors.unlink()
    with (tmp_path / "stage.log").open("w+", encoding="utf-8") as log, subprocess.Popen(
            ["python", "stages/modelling.py", "data/feature_store/feature_engineered.npy",
             str(vectors.relative_to(project)), "data/model/vectorizer_model",
             "data/model/inference_model"], cwd=project,
            env=tool_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True) as proc:
        while proc.poll() is None and "embedding: 1/" not in log.read():
            time.sleep(0.1)
            log.seek(0)
        assert proc.poll() is None, "the stage ended before it was interrupted"
        os.killpg(proc.pid, signal.SIGINT)                # as a terminal's Ctrl-C does
        assert proc.wait(timeout=120) == 130
        log.seek(0)
        output = log.read()
    assert "modelling.py: interrupted" in output and "Traceback" not in output, output
    assert not vectors.exists()
    assert not [path for path in vectors.parent.iterdir() if ".tmp" in path.name]
    deadline = time.monotonic() + 60                     # the job's actors end with it
    while ray_cluster.actor_pids():
        assert time.monotonic() < deadline, "an actor outlived its interrupted driver"
        time.sleep(0.5)


@pytest.mark.parametrize("where", ["params", "env"])
def test_unreachable_cluster_is_one_line_before_any_work(tmp_path, where):
    address = f"127.0.0.1:{free_port()}"
    params = tmp_path / "params.yaml"
    shutil.copyfile(REPO_ROOT / "params.yaml", params)
    set_params(tmp_path, {"modelling.engine": "ray",
                          "modelling.ray_address": address if where == "params" else None})
    env = tool_env()
    env["RAY_ADDRESS"] = address
    out = tmp_path / "out"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "stages/modelling.py", str(tmp_path / "features.npy"),
                           str(out / "vectors.npy"), str(out / "model"),
                           str(out / "inference_model"), "--params", str(params)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    source = "modelling.ray_address" if where == "params" else "$RAY_ADDRESS"
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"modelling.py: error: cannot reach the Ray cluster at {address} ({source}): Connection "
        "refused; start one with `ray start --head`, or unset the address to use a local Ray "
        "instance"]
    assert not out.exists()                        # no model built, nothing written
    assert time.monotonic() - started < 60


def test_ray_client_and_malformed_addresses_are_refused():
    with pytest.raises(RayClusterError, match="Ray Client addresses are not supported"):
        check_reachable("ray://head:10001", "modelling.ray_address")
    with pytest.raises(RayClusterError, match="'head' is not host:port"):
        check_reachable("head", "modelling.ray_address")


@pytest.mark.slow
def test_actor_killed_mid_run_is_restarted_and_the_artifact_is_correct(ray_cluster, saved_model,
                                                                       tmp_path):
    photos = [DATASET / path for path, _ in pick_per_class("validation", 1)]     # 10 photos
    np.save(tmp_path / "features.npy",
            preprocess(np.stack([load_image(path, EtlConfig()) for path in photos])))
    vectorizer = Vectorizer.load(saved_model, batch_size=2)
    run_embedding(tmp_path / "features.npy", tmp_path / "local.npy", vectorizer, chunk_size=4)
    rows = np.array([0, 2, 3, 4, 5, 6, 7, 9])             # a subset, as an incremental run asks
    killed = []

    def kill_the_actor(done: int, total: int) -> None:
        if not killed and done < total:
            pids = ray_cluster.actor_pids()
            assert len(pids) == 1
            os.kill(pids[0], signal.SIGKILL)
            killed.append((pids[0], done))

    modelling = ModellingConfig(engine="ray", batch_size=2, chunk_size=2, ray_actors=1)
    with ray_session(ray_cluster.address):
        assert run_ray_embedding(tmp_path / "features.npy", tmp_path / "ray.npy", vectorizer,
                                 modelling, rows=rows, progress=kill_the_actor) == len(rows)
        restarted = ray_cluster.actor_pids()
    assert killed and killed[0][1] < len(rows) and RETRIES >= 1
    assert killed[0][0] not in restarted
    vectors = np.load(tmp_path / "ray.npy", allow_pickle=False)
    assert vectors.shape == (len(rows), 2048)
    assert cosines(vectors, np.load(tmp_path / "local.npy")[rows]).min() >= PARITY
