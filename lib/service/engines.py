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
bring another). ``params.yaml`` is read again on every reload.
"""
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from lib.config import Config, load_config
from lib.errors import one_line, UserError
from lib.pinning import pin, PinnedArtifacts, ServingVersion
from lib.retrieval import ImageSearchEngine

logger = logging.getLogger(__name__)

WATCHED = "dvc.lock"                             # its change means a new version


@dataclass(frozen=True)
class Served:
    """One loaded version.

    Attributes:
        engine: The search engine (with its landing images, for thumbnails).
        version: Which artifact versions it serves.
        config: The configuration the artifacts were built with.
        loaded_at: When it was loaded (Unix time).
    """

    engine: ImageSearchEngine
    version: ServingVersion
    config: Config
    loaded_at: float


class EngineHolder:
    """Holds the engine that answers and swaps in new versions.

    Args:
        params: The workspace ``params.yaml``; its folder is the repository root.
        rev: Serve the artifacts recorded at this git revision instead of the workspace.
        verify: Check the artifacts against ``dvc.lock`` (``--no-verify`` turns it off).
        full: Hash every byte of them instead of trusting DVC's stat cache
            (``--verify-full``), on every load.
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
        self.last_error: Optional[str] = None

    @property
    def current(self) -> Served:
        """The version answering now (read it once per request)."""
        if self._current is None:
            raise RuntimeError("no engine loaded: call start() first")
        return self._current

    def start(self) -> Served:
        """Loads the first version (a user error if it cannot be served)."""
        with self._pin(load_config(self.params)) as pinned:
            self._current = self._load(pinned)
        return self._current

    def _pin(self, config: Config) -> PinnedArtifacts:
        """Pins the artifacts to serve: the one place the service calls ``pin``.

        Use it as a context manager: leaving it releases the verified snapshot, once
        the engine has loaded from it.
        """
        return pin(self.root, config, rev=self.rev, verify=self.verify, full=self.full)

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
                      loaded_at=time.time())

    def reload(self) -> Tuple[str, Served]:
        """Loads the version the workspace (or ``rev``) now records and swaps it in.

        Returns:
            ``("swapped", new)``, or ``("unchanged", current)`` when the verified
            artifacts and settings are the ones already answering.

        Raises:
            UserError: The new version is refused (not verified, stale, or
                unloadable); the current one keeps answering.
        """
        with self._reload_lock:
            old = self.current
            try:
                with self._pin(load_config(self.params)) as pinned:
                    if self.verify and pinned.version.hashes == old.version.hashes \
                            and pinned.config == old.config:
                        self._current = replace(old, version=pinned.version)
                        self.last_error = None
                        return "unchanged", self._current
                    new = self._load(pinned)
            except UserError as err:
                self.last_error = one_line(err)
                logger.error("new version refused, still serving the old one (%s): %s",
                             old.version.describe(), self.last_error)
                raise
            self._current = new
            self.last_error = None
            changed = sorted(key for key in set(new.version.hashes) | set(old.version.hashes)
                             if new.version.hashes.get(key) != old.version.hashes.get(key))
            logger.info("swapped in the new version (changed: %s): %s",
                        ", ".join(changed) or "settings", new.version.describe())
            return "swapped", new

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
                seen = now
                logger.info("%s changed: loading the new version", WATCHED)
                try:
                    self.reload()
                except UserError:
                    pass                         # logged by reload(); the old one answers
                except Exception:  # pylint: disable=broad-exception-caught
                    # A bug, not bad input: logged with its traceback; the watcher and
                    # the old version carry on rather than dying silently.
                    logger.exception("loading the new version failed with a bug")
            previous = now
