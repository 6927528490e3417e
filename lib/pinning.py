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
checked is loaded from a private snapshot (:mod:`lib.integrity`), so a DVC command
running meanwhile cannot make serving load a mix of versions; ``full=True`` re-hashes
every byte instead of trusting DVC's stat cache.
"""
import contextlib
import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Tuple

import yaml

from lib.config import SECTIONS, Config, PathsConfig, parse_yaml
from lib.errors import ConfigError, PathLike, one_line
from lib.integrity import (LOCK_WAIT_S, PinningError, check_content, content_hash,
                           refuse_hazards, release, repository_lock, snapshot)

if TYPE_CHECKING:
    from dvc.repo import Repo

logger = logging.getLogger(__name__)

# The artifacts serving loads, by their key in the params ``paths`` section.
SERVED = ("names", "vectors", "model", "images")
# Served when the revision has them (revisions built before the whitening stage, the
# index stage, or modelling.precision lack them).
OPTIONAL_SERVED = ("whitening", "inference_model", "index")
# Where fetched revisions are kept, relative to the repository root (git-ignored).
REV_CACHE = Path(".dvc") / "tmp" / "serve-revs"


@dataclass(frozen=True)
class ServingVersion:
    """Which artifact versions answer: the git revision and the vectors' hash.

    Attributes:
        git_rev: Commit the artifacts are pinned at (HEAD for the workspace), or None
            outside git.
        vectors_md5: The vectors' md5 recorded in ``dvc.lock``.
        source: ``"workspace"`` or the revision as the user gave it.
        hashes: Every served artifact's recorded md5, by params key.
    """

    git_rev: Optional[str]
    vectors_md5: str
    source: str
    hashes: Dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the output, e.g. ``version: git 1a2b3c4d5e6f (workspace), ...``."""
        rev = self.git_rev[:12] if self.git_rev else "none"
        return f"version: git {rev} ({self.source}), vectors md5 {self.vectors_md5}"


@dataclass(frozen=True)
class PinnedArtifacts:
    """Verified artifacts ready to load.

    Attributes:
        paths: Local path of each served artifact, by params key.
        config: The configuration the artifacts were built with (``params.yaml`` of
            the revision, or of the workspace).
        version: Which version this is.
        snapshot: The private folder ``paths`` point into (verified workspace
            artifacts), removed by :meth:`release`; None when there is none.
    """

    paths: Dict[str, Path]
    config: Config
    version: ServingVersion
    snapshot: Optional[Path] = None

    def release(self) -> None:
        """Removes the private snapshot; call it once the engine has loaded the artifacts
        (their memory maps stay valid). Snapshots of processes that are gone are removed
        at the next pin anyway."""
        release(self.snapshot)

    def __enter__(self) -> "PinnedArtifacts":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


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
    with _open_repo(root) as repo, repository_lock(repo, lock_wait_s):
        outs = _served_outputs(repo, config.paths)
        stages = _upstream_stages(repo, outs)
        # Before DVC opens anything: a FIFO would block it for ever.
        refuse_hazards(root, [root / _relpath(repo, item) for stage in stages
                              for item in list(stage.deps) + list(stage.outs)
                              if _is_path_dep(item)])
        for key, out in outs.items():
            _check_workspace_output(key, out)
        _check_consistent_build(repo, stages)
        _check_inputs_unchanged(repo, stages)
        _check_settings(repo, stages, config)
        version = _version(repo, outs, "workspace")
        folder, paths = snapshot(root, {key: root / _relpath(repo, out)
                                        for key, out in outs.items()})
        try:
            for key, out in (outs.items() if full else ()):
                check_content(repo, f"{_relpath(repo, out)} ({key})", paths[key],
                              str(out.hash_info.value))
        except BaseException:
            release(folder)
            raise
    return PinnedArtifacts(paths=paths, config=config, version=version, snapshot=folder)


def pin_revision(root: PathLike, rev: str, verify: bool = True,
                 cache_dir: Optional[PathLike] = None, full: bool = False) -> PinnedArtifacts:
    """Fetches the served artifacts recorded at a git revision, without a checkout.

    Artifacts come through ``DVCFileSystem`` (the DVC cache, else the default remote)
    into ``cache_dir/<md5>/`` and are reused on later calls.

    Args:
        root: The repository root.
        rev: A git tag, branch or commit.
        verify: Re-hash artifacts already fetched (fresh fetches are always hashed).
        cache_dir: Where fetched artifacts are kept; default ``.dvc/tmp/serve-revs``.
        full: Hash every byte, not trusting DVC's stat cache for fetched copies.

    Returns:
        Local paths of the artifacts, the configuration of that revision, and its
        version.

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
        outs = _served_outputs(repo, config.paths, where=f"dvc.lock at revision {rev!r}")
        _check_consistent_build(repo, _upstream_stages(repo, outs), where=f"revision {rev!r}")
        paths = {key: _fetch(dvcfs, repo, out, cache, verify, rev, full)
                 for key, out in outs.items()}
        version = _version(repo, outs, rev)
    finally:
        dvcfs.close()
    return PinnedArtifacts(paths=paths, config=config, version=version)


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


def _open_repo(root: Path) -> "Repo":
    """Opens the DVC repository at ``root``, as a one-line error if it is none."""
    # pylint: disable=import-outside-toplevel
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    try:
        return Repo(str(root))
    except DvcException as err:
        raise PinningError(f"{root} is not a DVC repository, so the artifact versions cannot "
                           "be checked; serve from the project root or pass --no-verify") from err


def _relpath(repo: "Repo", out) -> str:
    """An output's path relative to the repository root, POSIX style."""
    return Path(repo.fs.relpath(out.fs_path, repo.root_dir)).as_posix()


def _served_outputs(repo: "Repo", paths_config: PathsConfig,
                    where: str = "dvc.lock") -> Dict[str, Any]:
    """The DVC output of each served artifact, with its hash recorded in ``dvc.lock``."""
    paths = paths_config.to_dict()
    by_path = {_relpath(repo, out): out for stage in _stages(repo) for out in stage.outs}
    outs = {}
    for key in SERVED + OPTIONAL_SERVED:
        path = Path(paths[key]).as_posix()
        if key in OPTIONAL_SERVED and path not in by_path:
            continue
        out = by_path.get(path)
        if out is None:
            raise PinningError(f"{path} is not an output of any stage in dvc.yaml, so its "
                               "version cannot be pinned")
        if not out.hash_info:
            raise PinningError(f"{path} is not recorded in {where}: run `dvc repro`")
        outs[key] = out
    return outs


def _stages(repo: "Repo") -> List[Any]:
    """The pipeline stages, as a one-line error if ``dvc.yaml`` cannot be read."""
    # pylint: disable=import-outside-toplevel
    from dvc.exceptions import DvcException
    try:
        return list(repo.index.stages)
    except DvcException as err:
        raise PinningError(f"cannot read the pipeline: {one_line(err)}") from err


def _check_workspace_output(key: str, out) -> None:
    """Hashes a served output with DVC (stat cache first) against its recorded hash."""
    if not out.exists:
        remote, held = _remote_holds(out)
        if held:
            raise PinningError(f"{out} ({key}) is missing from the workspace: run `dvc pull` "
                               f"to fetch the version recorded in dvc.lock (the DVC remote "
                               f"'{remote}' has it)")
        if held is False:
            where = (f"the DVC remote '{remote}' does not have it" if remote else
                     "no DVC remote is set")
            raise PinningError(f"{out} ({key}) is missing from the workspace and {where}: "
                               "run `dvc repro` to build it")
        raise PinningError(f"{out} ({key}) is missing from the workspace: run `dvc pull` "
                           "to fetch the version recorded in dvc.lock, or `dvc repro` to "
                           "build it")
    actual = out.get_hash()
    if actual != out.hash_info:
        raise PinningError(f"{out} ({key}) is not the version recorded in dvc.lock (md5 "
                           f"{_short(actual.value)} found, {_short(out.hash_info.value)} "
                           "recorded): run `dvc pull` to restore the recorded version, or "
                           "`dvc repro` to rebuild")


def _remote_holds(out) -> Tuple[Optional[str], Optional[bool]]:
    """(default remote's name, whether it holds the output's recorded version).

    One existence check of the recorded object (a folder's ``.dir`` listing) in the
    remote's storage. The answer is ``(None, False)`` when no remote is set, and
    ``(name, None)`` when the remote cannot be asked (unreachable, misconfigured).
    """
    # pylint: disable=import-outside-toplevel
    from dvc.config import NoRemoteError
    from dvc.exceptions import DvcException
    cloud = out.repo.cloud
    try:
        name = cloud.get_remote(command="pull").name
    except NoRemoteError:
        return None, False
    except DvcException as err:
        logger.debug("the default DVC remote cannot be opened: %s", err)
        return None, None
    try:
        odb = cloud.get_remote_odb(name, command="pull", hash_name=out.hash_info.name)
        return name, bool(odb.exists(out.hash_info.value))
    except (DvcException, OSError) as err:
        logger.debug("cannot ask the DVC remote %r for %s: %s", name, out, err)
        return name, None


def _upstream_stages(repo: "Repo", outs: Mapping[str, Any]) -> List[Any]:
    """The stages that built the given outputs and every stage upstream of them."""
    producers = {_relpath(repo, out): out.stage for stage in _stages(repo) for out in stage.outs}
    todo = [out.stage for out in outs.values()]
    seen: Dict[str, Any] = {}
    while todo:
        stage = todo.pop()
        label = _label(repo, stage)
        if label in seen:
            continue
        seen[label] = stage
        todo.extend(producers[_relpath(repo, dep)] for dep in stage.deps
                    if _is_path_dep(dep) and _relpath(repo, dep) in producers)
    return list(seen.values())


def _is_path_dep(dep) -> bool:
    """Whether a dependency is a file or folder (not params)."""
    # pylint: disable=import-outside-toplevel
    from dvc.dependency.param import ParamsDependency
    return not isinstance(dep, ParamsDependency)


def _check_consistent_build(repo: "Repo", stages: List[Any], where: str = "dvc.lock") -> None:
    """Each stage must have been built from the outputs its upstream stages recorded."""
    recorded = {_relpath(repo, out): (out.stage, out.hash_info)
                for stage in stages for out in stage.outs}
    for stage in stages:
        for dep in stage.deps:
            if not _is_path_dep(dep):
                continue
            upstream = recorded.get(_relpath(repo, dep))
            if upstream is None or upstream[1] == dep.hash_info:
                continue
            if upstream[0].is_data_source:
                raise PinningError(f"the artifacts are stale: {dep} changed in "
                                   f"{_label(repo, upstream[0])} since stage "
                                   f"{_label(repo, stage)} ran: run `dvc repro`")
            raise PinningError(f"{where} is half-built: stage {_label(repo, stage)} was built "
                               f"from a different {dep} than stage "
                               f"{_label(repo, upstream[0])} recorded: run `dvc repro`")


def _check_inputs_unchanged(repo: "Repo", stages: List[Any]) -> None:
    """The code, params and data the stages read must not have changed since they ran."""
    produced = {_relpath(repo, out) for stage in stages for out in stage.outs}
    for stage in stages:
        if stage.is_data_source:            # data/master.dvc: the photos as `dvc add` saw them
            for out in stage.outs:
                status = out.workspace_status()
                if status:
                    raise PinningError(f"the artifacts are stale: {_describe_status(status)} "
                                       f"since `dvc add`: run `dvc add {out}` and `dvc repro`")
            continue
        for dep in stage.deps:
            if _is_path_dep(dep) and _relpath(repo, dep) in produced:
                continue      # an upstream artifact: checked by _check_consistent_build
            status = dep.workspace_status()
            if status:
                raise PinningError(f"the artifacts are stale: {_describe_status(status)} since "
                                   f"stage {_label(repo, stage)} ran: run `dvc repro` (or "
                                   "`dvc pull` if dvc.lock was updated elsewhere)")


def _check_settings(repo: "Repo", stages: List[Any], config: Config) -> None:
    """Serving's settings must equal the params ``dvc.lock`` records for the stages.

    With the tracked ``params.yaml`` DVC's own status check already ensures it; this
    catches ``--params other.yaml`` (its query transform would differ from the
    collection's while ``dvc.lock`` still matches ``params.yaml``).
    """
    for stage in stages:
        for dep in stage.deps:
            if _is_path_dep(dep) or not dep.hash_info or not isinstance(dep.hash_info.value,
                                                                           dict):
                continue
            for key, recorded in dep.hash_info.value.items():
                for name, was, now in _differences(str(key), recorded, config):
                    raise PinningError(
                        f"the serving params set {name} to {now!r}, but the artifacts were "
                        f"built with {was!r} (dvc.lock, stage {_label(repo, stage)}): serve "
                        "with the params file they were built with, or build them with "
                        "these settings (`dvc repro`)")


def _differences(key: str, recorded: Any, config: Config) -> Iterator[tuple]:
    """``(name, recorded, configured)`` of each setting under a recorded params key."""
    section, _, leaf = key.partition(".")
    if section not in SECTIONS:
        return
    values = getattr(config, section).to_dict()
    items = {leaf: recorded} if leaf else dict(recorded) if isinstance(recorded, dict) else {}
    for name, was in items.items():
        if name in values and values[name] != was:
            yield f"{section}.{name}", was, values[name]


def _label(repo: "Repo", stage) -> str:
    """A stage's name in messages: ``'etl'``, or the ``.dvc`` file of a data source."""
    name = getattr(stage, "name", None)
    return f"'{name}'" if name else Path(repo.fs.relpath(stage.path, repo.root_dir)).as_posix()


def _describe_status(status: Mapping[str, Any]) -> str:
    """``{'params.yaml': {'etl': 'modified'}}`` -> ``params.yaml etl modified``."""
    parts = []
    for name, state in status.items():
        if isinstance(state, dict):
            parts.extend(f"{name} {key} {value}" for key, value in state.items())
        else:
            parts.append(f"{name} {state}")
    return ", ".join(parts)


def _version(repo: "Repo", outs: Mapping[str, Any], source: str) -> ServingVersion:
    """The git revision of ``repo`` and the recorded hashes of ``outs``."""
    # pylint: disable=import-outside-toplevel
    from dvc.scm import NoSCM, SCMError
    git_rev = None
    if not isinstance(repo.scm, NoSCM):
        try:
            git_rev = repo.get_rev()
        except SCMError:            # a git repository without commits yet
            git_rev = None
    hashes = {key: str(out.hash_info.value) for key, out in outs.items()}
    return ServingVersion(git_rev=git_rev, vectors_md5=hashes["vectors"], source=source,
                          hashes=hashes)


def _fetch(dvcfs, repo: "Repo", out, cache: Path, verify: bool, rev: str,  # pylint: disable=too-many-arguments
           full: bool = False) -> Path:
    """One output at a revision, fetched once into ``cache/<md5>/<name>`` and verified."""
    # pylint: disable=import-outside-toplevel
    from dvc.exceptions import DvcException
    from dvc_data.index import DataIndexError
    relpath = _relpath(repo, out)
    expected = out.hash_info
    target = cache / str(expected.value).removesuffix(".dir") / Path(relpath).name
    if target.exists():
        if verify:
            _check_hash(repo, target, expected, f"{target} (cached copy of {relpath} at "
                        f"{rev!r})", "delete it to fetch it again", full)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _scratch(target.parent) as scratch:
        local = scratch / target.name
        try:
            dvcfs.get(relpath, str(local), recursive=expected.isdir)
        except (OSError, ValueError, DvcException, DataIndexError) as err:
            raise PinningError(f"cannot fetch {relpath} at revision {rev!r} from the DVC "
                               f"cache or remote: {one_line(err)}: run `dvc push` where it "
                               "was built, or check the remote (`dvc remote list`)") from err
        _check_hash(repo, local, expected, f"{relpath} fetched at {rev!r}",
                    "the cache or remote holds a corrupted copy")
        local.rename(target)
    logger.info("fetched %s at %s into %s", relpath, rev, target)
    return target


def _check_hash(repo: "Repo", path: Path, expected, what: str, remedy: str,  # pylint: disable=too-many-arguments
                full: bool = False) -> None:
    """Hashes a local file or folder with DVC and compares it with ``expected``.

    DVC's stat cache answers for files it has hashed before, unless ``full``.
    """
    # pylint: disable=import-outside-toplevel
    from dvc_data.hashfile.build import build
    from dvc.fs import LocalFileSystem
    if full:
        value = content_hash(repo, path, expected.name)
    else:
        value = build(repo.cache.local, str(path), LocalFileSystem(), expected.name,
                      dry_run=True)[2].hash_info.value
    if value != expected.value:
        raise PinningError(f"{what} has md5 {_short(value)}, dvc.lock records "
                           f"{_short(expected.value)}: {remedy}")


@contextlib.contextmanager
def _scratch(parent: Path) -> Iterator[Path]:
    """A temporary folder inside ``parent`` (same file system, so renames are atomic)."""
    path = Path(tempfile.mkdtemp(prefix=".fetch-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _short(value: Optional[str]) -> str:
    """A hash for messages."""
    return str(value) if value else "none"


def unverified(root: PathLike, config: Config) -> PinnedArtifacts:
    """The workspace artifacts without any check (fast; DVC is not even imported).

    The version names the vectors' md5 that ``dvc.lock`` records, marked unverified:
    nothing proves the files are that version.
    """
    root = Path(root)
    paths = config.paths.resolve(root)
    served = {key: paths[key] for key in SERVED + OPTIONAL_SERVED}
    vectors = Path(config.paths.vectors).as_posix()
    md5 = "unknown"
    lock = root / "dvc.lock"
    if lock.is_file():
        try:
            data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            data = {}
        for stage in (data.get("stages") or {}).values():
            for out in stage.get("outs") or []:
                if out.get("path") == vectors:
                    md5 = str(out.get("md5"))
    version = ServingVersion(git_rev=None, vectors_md5=md5, source="workspace, unverified")
    return PinnedArtifacts(paths=served, config=config, version=version)
