"""The search service as a user runs it: ``stages/serve.py --http`` in a real process."""
import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from tests.support.helpers import tool_env

SERVING = re.compile(r"^serving (\d+) images on (http://\S+?)/? \(")
START_TIMEOUT = 600           # seconds: TensorFlow, the model and the pin check, on a busy box
TOKEN = "test-token-0123456789abcdef"         # the token of the token service (conftest)
ALLOWED_HOST = "search.example"               # a Host name the token service answers


class ServiceProcess:
    """``python stages/serve.py --http --port 0`` running in a project, on a free port.

    Args:
        project: The project folder (its ``params.yaml``, artifacts and ``dvc.lock``).
        log: File that receives the service's stderr (its log).
        args: More command-line arguments (``--no-verify``, ``--rev`` ...).
        env: More environment variables (``IMAGE_SEARCH_TOKEN`` ...).
    """

    def __init__(self, project: Path, log: Path, *args: str,
                 env: Optional[Dict[str, str]] = None):
        self.project = project
        self.log_path = log
        self._log = open(log, "w", encoding="utf-8")  # pylint: disable=consider-using-with
        command = [sys.executable, "stages/serve.py", "--http", "--port", "0", *args]
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            command, cwd=project, env={**tool_env(), **(env or {})}, stdout=subprocess.PIPE,
            stderr=self._log, text=True)
        self.stdout: List[str] = []
        self.url = ""
        self.images = 0
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        """Reads stdout until the ``serving ... on URL`` line; fails with the log."""
        deadline = time.monotonic() + START_TIMEOUT
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if not ready:
                if self.proc.poll() is not None:
                    break
                continue
            line = self.proc.stdout.readline()
            if not line:
                break
            self.stdout.append(line.rstrip("\n"))
            match = SERVING.match(line)
            if match:
                self.images, self.url = int(match.group(1)), match.group(2)
                return
        self.stop()
        raise AssertionError(f"the service did not start:\n{self.output()}")

    @property
    def host_port(self) -> tuple:
        """(host, port) the service listens on."""
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def log(self) -> str:
        """What the service has logged so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8")

    def output(self) -> str:
        """Stdout and the log, for failure messages."""
        return "\n".join(self.stdout) + "\n--- log ---\n" + self.log()

    def snapshot(self) -> Path:
        """The private snapshot the version it serves was loaded from."""
        pins = self.project / ".dvc" / "tmp" / "serve-pins"
        found = sorted(pins.glob(f"{self.proc.pid}-*"))
        assert len(found) == 1, found
        return found[0]

    def stop(self) -> Optional[int]:
        """Stops the service (SIGTERM, as a process manager would); its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def app_in_thread(app) -> Iterator[str]:
    """An application served by uvicorn in a thread of this process (no lifespan): its URL."""
    import uvicorn  # pylint: disable=import-outside-toplevel
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)
