"""Runs the service: load the pinned engine, bind the address, serve with uvicorn.

``python stages/serve.py --http [--host H] [--port P] [--rev REV] [--no-verify]``
comes here. The address is bound first (a port in use fails at once), the engine is
loaded and verified, and only then does the socket listen: the address answers once
the service is ready, which the line ``serving N images on http://HOST:PORT/`` on
stdout says (with ``--port 0`` it names the port the system chose).
"""
import errno
import logging
import socket
import threading
from pathlib import Path
from typing import Optional

import uvicorn

from lib.config import load_config
from lib.errors import InputError
from lib.service.app import create_app
from lib.service.batching import BatchingEmbedder
from lib.service.engines import EngineHolder

logger = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv4 or IPv6); uvicorn makes it listen.

    Raises:
        InputError: The address is in use, not local, or not allowed.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror} "
                         "(pass --host with a local address)") from err
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        fix = "pass another --port" if err.errno == errno.EADDRINUSE else \
            "pass another --host or --port"
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror} ({fix})") from err
    sock.set_inheritable(True)
    return sock


def serve_http(params: Path, rev: Optional[str] = None, verify: bool = True,
               full: bool = False, host: Optional[str] = None, port: Optional[int] = None,
               verbose: bool = False) -> int:
    """Loads the engine, then serves HTTP until interrupted.

    Args:
        params: The workspace ``params.yaml`` (its folder is the repository root).
        rev: Serve this git revision's artifacts (no watching of ``dvc.lock``).
        verify: Check the artifacts against ``dvc.lock``.
        full: Hash every byte of them (``--verify-full``).
        host: Address to bind (default ``service.host``).
        port: Port (default ``service.port``; 0 lets the system choose).
        verbose: Also log every request.

    Returns:
        The exit status, 0.
    """
    # pylint: disable=too-many-arguments
    config = load_config(params)
    settings = config.service
    sock = bind(settings.host if host is None else host,
                settings.port if port is None else port)
    holder = EngineHolder(params, rev=rev, verify=verify, full=full)
    try:
        served = holder.start()
    except BaseException:
        sock.close()
        raise
    print(served.version.describe(), flush=True)
    embedder = BatchingEmbedder(settings.batch_wait_ms / 1000)
    app = create_app(holder, embedder, config)
    stop = threading.Event()
    if settings.watch_seconds > 0 and rev is None:
        threading.Thread(target=holder.watch, args=(settings.watch_seconds, stop),
                         name="version-watcher", daemon=True).start()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=verbose,
                                           log_level="debug" if verbose else "warning",
                                           timeout_graceful_shutdown=5))
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
    print(f"serving {len(served.engine)} images on http://{shown}:{bound[1]}/ "
          "(Ctrl-C stops)", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        stop.set()
        sock.close()
    return 0
