"""Serving any git revision: its artifacts fetched through DVC, verified, no checkout.

The artifacts recorded in that revision's ``dvc.lock`` come through
``dvc.api.DVCFileSystem`` (the DVC cache, else the default remote) into a
content-addressed folder, are checked against their recorded hashes, and are reused
on later calls. Serving loads from private copies of them (:func:`snapshot`), hashed as
they are copied, as for the workspace: that folder is shared by every server of the
revision and kept, so a write into it must not reach one that is running.
"""
import contextlib
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from lib.config import Config, parse_yaml
from lib.errors import ConfigError, one_line, PathLike, PinningError
from lib.pinning.served import PinnedArtifacts
from lib.pinning.snapshot import content_hash, snapshot
from lib.pinning.workspace import (
    check_consistent_build, relpath, served_outputs, served_version, short_hash, upstream_stages)

if TYPE_CHECKING:
    from dvc.repo import Repo

logger = logging.getLogger(__name__)

# Where fetched revisions are kept, relative to the repository root (git-ignored).
REV_CACHE = Path(".dvc") / "tmp" / "serve-revs"


def pin_revision(root: PathLike, rev: str, verify: bool = True,
                 cache_dir: Optional[PathLike] = None) -> PinnedArtifacts:
    """Fetches the served artifacts recorded at a git revision, without a checkout.

    Artifacts come through ``DVCFileSystem`` (the DVC cache, else the default remote)
    into ``cache_dir/<md5>/`` and are reused on later calls; what is returned is a
    private snapshot of them, every byte hashed as it was copied.

    Args:
        root: The repository root.
        rev: A git tag, branch or commit.
        verify: Refuse copies whose bytes are not the recorded version (fresh fetches
            are always checked); without it they are served, marked unverified, under
            the md5 of their bytes.
        cache_dir: Where fetched artifacts are kept; default ``.dvc/tmp/serve-revs``.

    Returns:
        Local paths of the artifacts (in the snapshot; release it once loaded), the
        configuration of that revision, and its version.

    Raises:
        PinningError: Unknown revision, nothing recorded there, or an artifact that
            cannot be fetched or does not match its recorded hash.
    """
    # pylint: disable=import-outside-toplevel
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException
    from scmrepo.exceptions import SCMError

    root = Path(root).resolve()
    cache = Path(cache_dir) if cache_dir is not None else root / REV_CACHE
    _check_commit(root, rev)
    try:
        dvcfs = DVCFileSystem(str(root), rev=rev)
        repo = dvcfs.repo
    except (DvcException, SCMError) as err:
        raise PinningError(f"cannot open revision {rev!r} of {root}: {one_line(err)}") from err
    try:
        try:
            text = dvcfs.read_text("params.yaml")
        except FileNotFoundError as err:
            raise PinningError(f"revision {rev!r} has no params.yaml") from err
        source = f"params.yaml at revision {rev!r}"
        try:
            # A revision built before a section existed gets that section's defaults.
            config = Config.from_dict(parse_yaml(text, source), source, missing_sections=True)
        except ConfigError as err:
            raise PinningError(str(err)) from err
        outs = served_outputs(repo, config.paths, where=f"dvc.lock at revision {rev!r}",
                              fix="that commit holds no build to serve: give one that "
                                  "does (`git log -- dvc.lock` lists the builds committed)")
        check_consistent_build(repo, upstream_stages(repo, outs), where=f"revision {rev!r}")
        paths = {key: _fetch(dvcfs, repo, out, cache, rev) for key, out in outs.items()}
        version = served_version(repo, outs, rev)
    finally:
        dvcfs.close()
    folder, copies, manifests = snapshot(root, paths)
    pinned = PinnedArtifacts(paths=copies, config=config, version=version, snapshot=folder,
                             manifests=manifests)
    differing = pinned.differing()
    if differing and verify:
        pinned.release()
        key = differing[0]
        raise PinningError(f"{paths[key]} (cached copy of {key} at {rev!r}) has md5 "
                           f"{pinned.served_md5()[key]}, dvc.lock records "
                           f"{short_hash(version.hashes[key])}: delete it to fetch it again")
    if differing:
        logger.warning("the cached copy of %s at %r is not the version dvc.lock records: "
                       "serving it unverified", ", ".join(differing), rev)
        return pinned.as_loaded("unverified")
    return pinned


def _check_commit(root: Path, rev: str) -> None:
    """``rev`` must name a commit (a tag, branch or commit id), not a tree or a file."""
    if not rev.strip():
        raise PinningError("--rev is empty: give a git tag, branch or commit")
    try:
        proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "--end-of-options",
                               f"{rev}^{{commit}}"], cwd=root, capture_output=True,
                              text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PinningError(f"cannot run git to resolve revision {rev!r}: {one_line(err)}") from err
    if proc.returncode != 0:
        raise PinningError(f"unknown Git revision {rev!r}: it does not name a commit of "
                           f"{root} (give a tag, branch or commit id, e.g. HEAD or v1)")


def _fetch(dvcfs, repo: "Repo", out, cache: Path, rev: str) -> Path:
    """One output at a revision, fetched once into ``cache/<md5>/<name>``.

    A fresh fetch is hashed with DVC before it is kept; a kept one is hashed byte by
    byte when :func:`pin_revision` copies it.
    """
    # pylint: disable=import-outside-toplevel
    from dvc.exceptions import DvcException
    from dvc_data.index import DataIndexError
    name = relpath(repo, out)
    expected = out.hash_info
    target = cache / str(expected.value).removesuffix(".dir") / Path(name).name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _scratch(target.parent) as scratch:
        local = scratch / target.name
        try:
            dvcfs.get(name, str(local), recursive=expected.isdir)
        except (OSError, ValueError, DvcException, DataIndexError) as err:
            raise PinningError(f"cannot fetch {name} at revision {rev!r} from the DVC "
                               f"cache or remote: {one_line(err)}: run `dvc push` where it "
                               "was built, or check the remote (`dvc remote list`)") from err
        _check_hash(repo, local, expected, f"{name} fetched at {rev!r}",
                    "the cache or remote holds a corrupted copy")
        local.rename(target)
    logger.info("fetched %s at %s into %s", name, rev, target)
    return target


def _check_hash(repo: "Repo", path: Path, expected, what: str, remedy: str) -> None:
    """Hashes a fresh local file or folder with DVC, from its bytes, against ``expected``."""
    value = content_hash(repo, path, expected.name)
    if value != expected.value:
        raise PinningError(f"{what} has md5 {short_hash(value)}, dvc.lock records "
                           f"{short_hash(expected.value)}: {remedy}")


@contextlib.contextmanager
def _scratch(parent: Path) -> Iterator[Path]:
    """A temporary folder inside ``parent`` (same file system, so renames are atomic)."""
    path = Path(tempfile.mkdtemp(prefix=".fetch-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
