"""Runs the service: load the pinned engine, bind the address, serve with uvicorn.

``python stages/serve.py --http [--host H] [--port P] [--rev REV] [--no-verify]
[--allow-host NAME] [--token TOKEN] [--quiet]`` comes here. The address is bound first
(a port in use fails at once), the engine is loaded and verified, and only then does
the socket listen: the address answers once the service is ready, which the line
``serving N images on http://HOST:PORT/`` on stdout says (with ``--port 0`` it names
the port the system chose). Every request is logged on stderr unless ``--quiet``
(:mod:`lib.service.access`, which also holds the Host, Origin and token checks).
"""
import errno
import ipaddress
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Optional, Sequence

import uvicorn

from lib.config import load_config
from lib.errors import InputError
from lib.service.access import AccessPolicy, TOKEN_ENV
from lib.service.app import create_app
from lib.service.batching import BatchingEmbedder
from lib.service.engines import EngineHolder

logger = logging.getLogger(__name__)

BACKLOG = 2048                                   # uvicorn's default


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


def serve_http(params: Path, rev: Optional[str] = None, verify: bool = True,  # pylint: disable=too-many-arguments,too-many-locals
               full: bool = False, host: Optional[str] = None, port: Optional[int] = None,
               verbose: bool = False, *, allow_hosts: Sequence[str] = (),
               token: Optional[str] = None, quiet: bool = False) -> int:
    """Loads the engine, then serves HTTP until interrupted.

    Args:
        params: The workspace ``params.yaml`` (its folder is the repository root).
        rev: Serve this git revision's artifacts (no watching of ``dvc.lock``).
        verify: Check the artifacts against ``dvc.lock``.
        full: ``--verify-full`` (every load hashes every byte now anyway).
        host: Address to bind (default ``service.host``).
        port: Port (default ``service.port``; 0 lets the system choose).
        verbose: Debug logging, uvicorn's included.
        allow_hosts: More Host names to answer, besides ``service.allowed_hosts``.
        token: The bearer token every data request must carry; None: the one in
            ``$IMAGE_SEARCH_TOKEN``, if any.
        quiet: No access log.

    Returns:
        The exit status, 0.
    """
    config = load_config(params)
    settings = config.service
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    policy = AccessPolicy.build(tuple(settings.allowed_hosts) + tuple(allow_hosts), token,
                                access_log=not quiet)
    address = settings.host if host is None else host
    sock = bind(address, settings.port if port is None else port)
    if token is None and not _loopback(address):
        logger.warning("listening on %s without --token: anyone who can reach this port can "
                       "search, read every thumbnail and reload (see docs/service.md, threat "
                       "model)", address)
    holder = EngineHolder(params, rev=rev, verify=verify, full=full)
    try:
        served = holder.start()
    except BaseException:
        sock.close()
        raise
    print(served.version.describe(), flush=True)
    embedder = BatchingEmbedder(settings.batch_wait_ms / 1000, settings.throughput_streams)
    embedder.warm(served.engine.vectorizer)      # throughput streams, in the background
    app = create_app(holder, embedder, config, policy)
    stop = threading.Event()
    if settings.watch_seconds > 0 and rev is None:
        threading.Thread(target=holder.watch, args=(settings.watch_seconds, stop),
                         name="version-watcher", daemon=True).start()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                           log_level="debug" if verbose else "warning",
                                           timeout_graceful_shutdown=5))
    # Listening before the line is printed: a client that connects at once waits in the
    # backlog until uvicorn accepts, rather than being refused.
    sock.listen(BACKLOG)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
    print(f"serving {len(served.engine)} images on http://{shown}:{bound[1]}/ "
          "(Ctrl-C stops)", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        stop.set()
        sock.close()
        holder.close()
    return 0


def _loopback(host: str) -> bool:
    """Whether an address to bind is this machine only."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
