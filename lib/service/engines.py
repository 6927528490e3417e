"""The engine that answers, and the swap to a new version without a failed request.

:class:`EngineHolder` loads the engine through the same pinning as the command line
(``lib.pinning.verify.pin``: verified against ``dvc.lock``, or a ``--rev``, or unverified).
A reload pins and loads the new version *beside* the one answering, runs one query
through it, and only then swaps it in; requests already running finish on the engine
they started with. A version that fails verification or loading is refused: the
error is logged and kept for ``/health``, and the old engine keeps answering.

Reloads happen on ``POST /reload`` and, with ``service.watch_seconds`` > 0, when
``dvc.lock`` changed and then stayed unchanged for one interval (``dvc repro``
writes it as each stage finishes; ``git pull`` + ``dvc pull`` or ``dvc checkout``
bring another). ``params.yaml`` is read again on every reload. One reload runs at a
time: another asked for meanwhile is refused (``POST /reload`` answers 429 with
``Retry-After``; the watcher tries again at its next tick). DVC's repository lock is
held only while the artifacts are checked, never while they are copied or loaded.

Each served version keeps its private snapshot (:mod:`lib.pinning`) until it stops
answering, so that ``/health?deep=1`` can re-hash the very bytes it answers from
(:meth:`EngineHolder.recheck`); the snapshot is removed when a new version is swapped
in and when the service stops.
"""
import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from lib.config import Config, load_config
from lib.errors import one_line, UserError
from lib.pinning import pin, PinnedArtifacts, ServingVersion
from lib.retrieval import ImageSearchEngine

logger = logging.getLogger(__name__)

WATCHED = "dvc.lock"                             # its change means a new version
_RETRY = (-1, -1, -1)                            # a stamp no file has: reload next tick


@dataclass(frozen=True)
class Served:
    """One loaded version.

    Attributes:
        engine: The search engine (with its landing images, for thumbnails).
        version: Which artifact versions it serves.
        config: The configuration the artifacts were built with.
        loaded_at: When it was loaded (Unix time).
        pinned: The private snapshot it was loaded from, kept while it answers.
    """

    engine: ImageSearchEngine
    version: ServingVersion
    config: Config
    loaded_at: float
    pinned: Optional[PinnedArtifacts] = None

    def served_md5(self) -> Dict[str, str]:
        """The md5 of each artifact's bytes it answers from, taken as they were copied."""
        return self.pinned.served_md5() if self.pinned is not None else {}


class EngineHolder:  # pylint: disable=too-many-instance-attributes
    """Holds the engine that answers and swaps in new versions.

    Args:
        params: The workspace ``params.yaml``; its folder is the repository root.
        rev: Serve the artifacts recorded at this git revision instead of the workspace.
        verify: Check the artifacts against ``dvc.lock`` (``--no-verify`` turns it off).
        full: ``--verify-full`` (every load hashes every byte it copies anyway).
    """

    def __init__(self, params: Path, rev: Optional[str] = None, verify: bool = True,
                 full: bool = False):
        self.params = Path(params)
        self.root = self.params.parent
        self.rev = rev
        self.verify = verify or full
        self.full = full
        self._current: Optional[Served] = None
        self._reload_lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._reload_started: Optional[float] = None
        self._load_seconds = 5.0                # how long the last version took to load
        self.last_error: Optional[str] = None

    @property
    def current(self) -> Served:
        """The version answering now (read it once per request)."""
        if self._current is None:
            raise RuntimeError("no engine loaded: call start() first")
        return self._current

    def start(self) -> Served:
        """Loads the first version (a user error if it cannot be served)."""
        started = time.perf_counter()
        pinned = self._pin(load_config(self.params))
        try:
            self._current = self._load(pinned)
        except BaseException:
            pinned.release()
            raise
        self._load_seconds = time.perf_counter() - started
        return self._current

    def close(self) -> None:
        """Removes the snapshot of the version answering (the service stops)."""
        with self._reload_lock, self._check_lock:
            if self._current is not None and self._current.pinned is not None:
                self._current.pinned.release()

    def _pin(self, config: Config, reuse: Optional[PinnedArtifacts] = None
             ) -> PinnedArtifacts:
        """Pins the artifacts to serve: the one place the service calls ``pin``.

        The caller keeps the snapshot while the version answers and releases it after.
        """
        return pin(self.root, config, rev=self.rev, verify=self.verify, full=self.full,
                   reuse=reuse)

    @staticmethod
    def _load(pinned: PinnedArtifacts) -> Served:
        """Loads a pinned version and runs one query through its model."""
        started = time.perf_counter()
        engine = ImageSearchEngine.load(pinned.config, pinned.paths)
        # The first query converts and compiles the model: pay that before answering.
        side = pinned.config.etl.image_size
        blank = np.zeros((side, side, 3), np.uint8)                     # (S, S, 3) BGR
        engine.vectorizer.transform(engine.model_input(blank)[np.newaxis])
        logger.info("loaded %d images in %.1f s: %s", len(engine),
                    time.perf_counter() - started, pinned.version.describe())
        return Served(engine=engine, version=pinned.version, config=pinned.config,
                      loaded_at=time.time(), pinned=pinned)

    def retry_after(self) -> int:
        """Seconds until the running reload should be done (for ``Retry-After``): what
        the last load took, less what this one has run; at least 1."""
        started = self._reload_started
        left = self._load_seconds - (time.perf_counter() - started) if started else 1.0
        return max(1, math.ceil(left))

    def reload(self, wait: bool = True) -> Optional[Tuple[str, Served]]:
        """Loads the version the workspace (or ``rev``) now records and swaps it in.

        Args:
            wait: Wait for a reload already running; otherwise return None at once.

        Returns:
            ``("swapped", new)``, or ``("unchanged", current)`` when the verified
            artifacts and settings are the ones already answering; None when another
            reload is running and ``wait`` is false.

        Raises:
            UserError: The new version is refused (not verified, stale, or
                unloadable); the current one keeps answering.
        """
        if not self._reload_lock.acquire(blocking=wait):  # pylint: disable=consider-using-with
            return None
        self._reload_started = time.perf_counter()
        try:
            return self._reload()
        finally:
            self._reload_started = None
            self._reload_lock.release()

    def _reload(self) -> Tuple[str, Served]:
        """:meth:`reload` with the reload lock held."""
        old = self.current
        try:
            pinned = self._pin(load_config(self.params), reuse=old.pinned)
            if pinned.version.hashes == old.version.hashes and pinned.config == old.config:
                if old.pinned is None or pinned.snapshot != old.pinned.snapshot:
                    pinned.release()                   # a copy of what already answers
                self._current = replace(old, version=pinned.version)
                self.last_error = None
                return "unchanged", self._current
            try:
                new = self._load(pinned)
            except BaseException:
                pinned.release()
                raise
            self._load_seconds = time.perf_counter() - (self._reload_started or 0.0)
        except UserError as err:
            self.last_error = one_line(err)
            logger.error("new version refused, still serving the old one (%s): %s",
                         old.version.describe(), self.last_error)
            raise
        self._current = new
        self.last_error = None
        if old.pinned is not None:
            with self._check_lock:        # not under a deep check of it
                old.pinned.release()      # requests still running keep their mapped copies
        changed = sorted(key for key in set(new.version.hashes) | set(old.version.hashes)
                         if new.version.hashes.get(key) != old.version.hashes.get(key))
        logger.info("swapped in the new version (changed: %s): %s",
                    ", ".join(changed) or "settings", new.version.describe())
        return "swapped", new

    def recheck(self) -> Optional[Dict[str, float]]:
        """Re-hashes the snapshot the answering version was loaded from (``/health?deep=1``).

        Returns:
            Files, bytes and seconds of the re-hash; None when another runs.

        Raises:
            PinningError: Its bytes are no longer those hashed when it was loaded.
        """
        if not self._check_lock.acquire(blocking=False):  # pylint: disable=consider-using-with
            return None
        try:
            started = time.perf_counter()
            pinned = self.current.pinned
            files, size = pinned.recheck() if pinned is not None else (0, 0)
            return {"files": files, "bytes": size,
                    "seconds": round(time.perf_counter() - started, 3)}
        finally:
            self._check_lock.release()

    def stamp(self) -> Optional[Tuple[int, int, int]]:
        """(mtime, size, inode) of ``dvc.lock``, None while it is missing."""
        try:
            info = (self.root / WATCHED).stat()
        except FileNotFoundError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino

    def watch(self, interval: float, stop: threading.Event) -> None:
        """Reloads whenever ``dvc.lock`` changed and then stayed still for ``interval``.

        Runs until ``stop`` is set (in its own thread). A refused version is not
        retried until the file changes again.
        """
        seen = previous = self.stamp()
        while not stop.wait(interval):
            now = self.stamp()
            if now != seen and now == previous:
                logger.info("%s changed: loading the new version", WATCHED)
                seen = now
                try:
                    if self.reload(wait=False) is None:
                        seen = _RETRY            # one was running: try again next tick
                        logger.info("a reload is running already: trying again in %.1f s",
                                    interval)
                except UserError:
                    pass                         # logged by reload(); the old one answers
                except Exception:  # pylint: disable=broad-exception-caught
                    # A bug, not bad input: logged with its traceback; the watcher and
                    # the old version carry on rather than dying silently.
                    logger.exception("loading the new version failed with a bug")
            previous = now
