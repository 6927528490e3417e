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
the command that fixes it. The check runs under DVC's repository lock and what was
checked is loaded from a private snapshot (:mod:`lib.pinning.snapshot`), so a DVC command
running meanwhile cannot make serving load a mix of versions; ``full=True`` re-hashes
every byte instead of trusting DVC's stat cache.
"""
import logging
from pathlib import Path
from typing import Optional

from lib.artifacts import recorded_output
from lib.config import Config
from lib.errors import PathLike, PinningError
from lib.pinning.revisions import pin_revision
from lib.pinning.served import OPTIONAL_SERVED, PinnedArtifacts, SERVED, ServingVersion
from lib.pinning.snapshot import (
    check_content, LOCK_WAIT_S, refuse_hazards, release, repository_lock, snapshot)
from lib.pinning.workspace import (
    check_consistent_build, check_inputs_unchanged, check_settings, check_workspace_output,
    is_path_dep, open_repo, relpath, served_outputs, served_version, upstream_stages)

__all__ = ["OPTIONAL_SERVED", "SERVED", "PinnedArtifacts", "PinningError", "ServingVersion",
           "pin", "pin_revision", "unverified", "verify_workspace"]

logger = logging.getLogger(__name__)


def pin(root: PathLike, config: Config, rev: Optional[str] = None,
        verify: bool = True, full: bool = False) -> PinnedArtifacts:
    """The artifacts to serve: a revision's, the verified workspace's, or unchecked ones.

    Args:
        root: The repository root.
        config: The configuration serving uses (its ``params.yaml``, or ``--params``).
        rev: A git revision to serve instead of the workspace.
        verify: Check the workspace against ``dvc.lock`` (or re-hash a revision's
            already fetched artifacts).
        full: Full verification: hash every byte of the served artifacts instead of
            trusting DVC's stat cache (catches a corrupted DVC cache object that was
            checked out; costs a read of every served file).
    """
    if rev is not None:
        return pin_revision(root, rev, verify=verify or full, full=full)
    if verify or full:
        return verify_workspace(root, config, full=full)
    return unverified(root, config)


def verify_workspace(root: PathLike, config: Config, full: bool = False,
                     lock_wait_s: float = LOCK_WAIT_S) -> PinnedArtifacts:
    """Checks that the workspace's served artifacts are the versions in ``dvc.lock``.

    Call it once per loaded engine, before loading, and load from the paths it
    returns: a private snapshot of the files it checked, taken under DVC's repository
    lock (call :meth:`PinnedArtifacts.release` once loaded).

    Args:
        root: The repository root (holding ``dvc.yaml``, ``dvc.lock``, ``params.yaml``).
        config: The configuration serving uses; the settings the served stages were
            built with (as ``dvc.lock`` records them) must be equal in it.
        full: Hash every byte instead of trusting DVC's stat cache.
        lock_wait_s: How long to wait for a running DVC command.

    Returns:
        The artifact paths (in the snapshot) and their version.

    Raises:
        PinningError: An artifact is missing, edited, not recorded, the pipeline that
            built it is half-built or stale, ``config`` differs from the settings it
            was built with, or a DVC command held the lock too long.
    """
    root = Path(root).resolve()
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
        folder, paths = snapshot(root, {key: root / relpath(repo, out)
                                        for key, out in outs.items()})
        try:
            for key, out in (outs.items() if full else ()):
                check_content(repo, f"{relpath(repo, out)} ({key})", paths[key],
                              str(out.hash_info.value))
        except BaseException:
            release(folder)
            raise
    return PinnedArtifacts(paths=paths, config=config, version=version, snapshot=folder)


def unverified(root: PathLike, config: Config) -> PinnedArtifacts:
    """The workspace artifacts without any check (fast; DVC is not even imported).

    The version names the vectors' md5 that ``dvc.lock`` records, marked unverified:
    nothing proves the files are that version.
    """
    root = Path(root)
    paths = config.paths.resolve(root)
    served = {key: paths[key] for key in SERVED + OPTIONAL_SERVED}
    entry = recorded_output(root, paths["vectors"]) or {}
    md5 = str(entry.get("md5", "unknown"))
    version = ServingVersion(git_rev=None, vectors_md5=md5, source="workspace, unverified")
    return PinnedArtifacts(paths=served, config=config, version=version)
