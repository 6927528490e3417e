"""Pinned artifact versions: serving loads exactly what ``dvc.lock`` records.

Two ways to pin, both through DVC's own API (``dvc.repo.Repo``, its stage outputs and
their state-db-backed hashing, and ``dvc.api.DVCFileSystem``):

- :func:`verify_workspace` checks the artifacts in the working tree against the
  current ``dvc.lock``: each served file is hashed the way ``dvc status`` hashes it
  (DVC's stat cache makes a repeated check cost a ``stat`` per file), the stages that
  built them must form one consistent build, and their code, params and data deps
  must be unchanged since.
- :func:`pin_revision` serves a git revision without checking it out: the
  artifacts recorded in that revision's ``dvc.lock`` are fetched from the DVC cache or
  the remote into a content-addressed folder and verified the same way.

Any mismatch raises :class:`PinningError` with one line that names the artifact and
the command that fixes it. The check runs under DVC's repository lock (held for the
check only); then what was checked is copied into a private snapshot, every byte
hashed as it is copied (:mod:`lib.pinning.snapshot`), and the copies' md5s must be the
ones ``dvc.lock`` records: a DVC command that changed a file meanwhile, bytes that
changed without DVC's stat cache noticing (an in-place write, a corrupted DVC cache
object) are caught, and serving loads from copies nothing else can write into.
"""
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, Optional, Tuple

from lib.artifacts import recorded_output
from lib.config import Config
from lib.embedding import loads_keras_model
from lib.errors import PathLike, PinningError
from lib.pinning.stamp import matching as last_check, record as remember_check
from lib.pinning.revisions import pin_revision
from lib.pinning.served import OPTIONAL_SERVED, PinnedArtifacts, SERVED, ServingVersion
from lib.pinning.snapshot import (
    content_mismatch, LOCK_WAIT_S, refuse_hazards, repository_lock, snapshot)
from lib.pinning.workspace import (
    check_consistent_build, check_inputs_unchanged, check_settings, check_workspace_output,
    is_path_dep, open_repo, relpath, served_outputs, served_version, upstream_stages)

# A version whose files a DVC command replaced while they were copied is checked and
# copied again, this many times in all, before it is refused.
COPY_TRIES = 2

__all__ = ["OPTIONAL_SERVED", "SERVED", "PinnedArtifacts", "PinningError", "ServingVersion",
           "pin", "pin_revision", "unverified", "verify_workspace"]

logger = logging.getLogger(__name__)


def pin(root: PathLike, config: Config, rev: Optional[str] = None,  # pylint: disable=too-many-arguments
        verify: bool = True, full: bool = False,
        reuse: Optional[PinnedArtifacts] = None) -> PinnedArtifacts:
    """The artifacts to serve: a revision's, the verified workspace's, or unchecked ones.

    Whichever it is, they are private copies (:func:`lib.pinning.snapshot.snapshot`)
    whose md5s were taken as they were copied; release them once loaded (or use the
    result as a context manager).

    Args:
        root: The repository root.
        config: The configuration serving uses (its ``params.yaml``, or ``--params``).
        rev: A git revision to serve instead of the workspace.
        verify: Check the workspace against ``dvc.lock`` (or re-hash a revision's
            already fetched artifacts).
        full: Full verification (``--verify-full``): the same as ``verify`` now, as
            every served byte is hashed as it is copied and compared with ``dvc.lock``
            on every verified pin.
        reuse: The snapshot already served (a resident service's): when the verified
            workspace still records the same artifacts, it is returned again (with the
            new version record) instead of copying them again.
    """
    if rev is not None:
        return pin_revision(root, rev, verify=verify or full)
    if verify or full:
        return verify_workspace(root, config, reuse=reuse)
    return unverified(root, config)


def verify_workspace(root: PathLike, config: Config, lock_wait_s: float = LOCK_WAIT_S,
                     reuse: Optional[PinnedArtifacts] = None) -> PinnedArtifacts:
    """Checks that the workspace's served artifacts are the versions in ``dvc.lock``.

    Call it once per loaded engine, before loading, and load from the paths it
    returns: private copies of the files it checked, whose bytes hash to the md5s
    ``dvc.lock`` records (call :meth:`PinnedArtifacts.release` once loaded). DVC's
    repository lock is held for the checks only, not while copying.

    Args:
        root: The repository root (holding ``dvc.yaml``, ``dvc.lock``, ``params.yaml``).
        config: The configuration serving uses; the settings the served stages were
            built with (as ``dvc.lock`` records them) must be equal in it.
        lock_wait_s: How long to wait for a running DVC command.
        reuse: A snapshot of verified artifacts, returned (with the new version record)
            when the check finds the same recorded artifacts and ``config`` equal;
            the caller must not release it twice.

    Returns:
        The artifact paths (in the snapshot), their md5s, and their version.

    Raises:
        PinningError: An artifact is missing, edited, not recorded, does not hold the
            recorded bytes, the pipeline that built it is half-built or stale,
            ``config`` differs from the settings it was built with, or a DVC command
            held the lock too long or kept changing the files while they were copied.
    """
    root = Path(root).resolve()
    for attempt in range(1, COPY_TRIES + 1):
        version, sources, labels, before = _checked(root, config, lock_wait_s)
        if reuse is not None and reuse.snapshot is not None and reuse.config == config \
                and reuse.version.hashes == version.hashes:
            return replace(reuse, version=version)
        loaded = loaded_artifacts(sources, config)
        folder, paths, manifests = snapshot(root, loaded)
        pinned = PinnedArtifacts(paths={**sources, **paths}, config=config, version=version,
                                 snapshot=folder, manifests=manifests)
        differing = pinned.differing()
        if not differing:
            return pinned
        pinned.release()
        key = differing[0]
        if attempt < COPY_TRIES and any(_stamp(sources[name]) != before[name]
                                        for name in differing):
            logger.info("%s changed while it was copied (a DVC command?): checking again",
                        labels[key])
            continue
        with open_repo(root) as repo:
            raise content_mismatch(repo, labels[key], pinned.served_md5()[key],
                                   version.hashes[key])
    raise AssertionError("unreachable: the last try returns or raises")


def _checked(root: Path, config: Config, lock_wait_s: float
             ) -> Tuple[ServingVersion, Dict[str, Path], Dict[str, str], Dict[str, tuple]]:
    """The checks under DVC's repository lock: the version, and the path, label and
    :func:`_stamp` of each artifact to copy. Those of the last check when nothing it
    depended on has changed since (:mod:`lib.pinning.stamp`)."""
    remembered = last_check(root, config)
    if remembered is not None:
        sources = {key: root / path for key, path in remembered["sources"].items()}
        return (ServingVersion(**remembered["version"]), sources, remembered["labels"],
                {key: _stamp(path) for key, path in sources.items()})
    with open_repo(root) as repo, repository_lock(repo, lock_wait_s):
        outs = served_outputs(repo, config.paths)
        stages = upstream_stages(repo, outs)
        # Before DVC opens anything: a FIFO would block it for ever.
        refuse_hazards(root, [root / relpath(repo, item) for stage in stages
                              for item in list(stage.deps) + list(stage.outs)
                              if is_path_dep(item)])
        for key, out in outs.items():
            check_workspace_output(key, out)
        check_consistent_build(repo, stages)
        check_inputs_unchanged(repo, stages)
        check_settings(repo, stages, config)
        version = served_version(repo, outs, "workspace")
        sources = {key: root / relpath(repo, out) for key, out in outs.items()}
        labels = {key: f"{relpath(repo, out)} ({key})" for key, out in outs.items()}
        stamps = {key: _stamp(path) for key, path in sources.items()}
        watched = [relpath(repo, item) for stage in stages
                   for item in list(stage.deps) + list(stage.outs) if is_path_dep(item)]
        remember_check(root, config, watched, {
            "version": asdict(version), "labels": labels,
            "sources": {key: relpath(repo, out) for key, out in outs.items()}})
    return version, sources, labels, stamps


def loaded_artifacts(paths: Dict[str, Path], config: Config) -> Dict[str, Path]:
    """The artifacts the engine will read, of those verified: all but the Keras model
    when the inference model's IR runs (it is verified, never read, so not copied)."""
    if loads_keras_model(paths.get("inference_model"), config.modelling.runtime,
                         config.modelling.precision):
        return dict(paths)
    return {key: path for key, path in paths.items() if key != "model"}


def _stamp(path: Path) -> Tuple[Tuple[str, int, int, int], ...]:
    """(name, inode, size, mtime) of a file or of each file under a folder: what a
    DVC command that replaces or rewrites it changes."""
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    stamps = []
    for file in files:
        try:
            info = file.stat()
        except OSError:
            continue                              # gone: the other stamp differs then
        stamps.append((str(file), info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamps)


def unverified(root: PathLike, config: Config) -> PinnedArtifacts:
    """The workspace artifacts without any check against ``dvc.lock`` (DVC is not even
    imported), still copied privately and hashed as they are copied.

    The version names the md5 of the vectors actually loaded (the copy's), marked
    unverified; a warning says so when ``dvc.lock`` records another. What is missing is
    not copied: the engine's load names it.
    """
    root = Path(root).resolve()
    paths = config.paths.resolve(root)
    served = {key: paths[key] for key in SERVED + OPTIONAL_SERVED}
    entry = recorded_output(root, paths["vectors"]) or {}
    recorded = str(entry.get("md5", "unknown"))
    version = ServingVersion(git_rev=None, vectors_md5=recorded, source="workspace")
    # What is missing is passed on as it is: the engine's load names it, in its order.
    folder, copies, manifests = snapshot(root, loaded_artifacts(
        {key: path for key, path in served.items() if path.exists()}, config))
    pinned = PinnedArtifacts(paths={**served, **copies}, config=config, version=version,
                             snapshot=folder, manifests=manifests).as_loaded("unverified")
    if "md5" in entry and pinned.version.vectors_md5 != recorded:
        logger.warning("the vectors loaded (md5 %s) are not the version dvc.lock records "
                       "(%s): serving them unverified", pinned.version.vectors_md5, recorded)
    return pinned
