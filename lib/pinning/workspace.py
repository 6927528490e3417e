"""The checks behind pinning, through DVC's own API (``dvc.repo.Repo``).

Each served output is hashed the way ``dvc status`` hashes it, the stages that built
the outputs must form one consistent build, and their code, params and data deps must
be unchanged since; :mod:`lib.pinning.verify` and :mod:`lib.pinning.revisions` run these checks.
Every mismatch is one :class:`~lib.pinning.snapshot.PinningError` line naming the fix.
"""
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Tuple

from lib.config import Config, PathsConfig, SECTIONS
from lib.errors import one_line, PinningError
from lib.pinning.served import OPTIONAL_SERVED, SERVED, ServingVersion
from lib.pinning.snapshot import linked_cache_objects

if TYPE_CHECKING:
    from dvc.repo import Repo

logger = logging.getLogger(__name__)


def open_repo(root: Path) -> "Repo":
    """Opens the DVC repository at ``root``, as a one-line error if it is none."""
    # pylint: disable=import-outside-toplevel
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    try:
        return Repo(str(root))
    except DvcException as err:
        raise PinningError(f"{root} is not a DVC repository, so the artifact versions cannot "
                           "be checked; serve from the project root or pass --no-verify") from err


def relpath(repo: "Repo", out) -> str:
    """An output's path relative to the repository root, POSIX style."""
    return Path(repo.fs.relpath(out.fs_path, repo.root_dir)).as_posix()


def served_outputs(repo: "Repo", paths_config: PathsConfig, where: str = "dvc.lock",
                   fix: str = "run `dvc repro`") -> Dict[str, Any]:
    """The DVC output of each served artifact, with its hash recorded in ``dvc.lock``
    (``fix`` ends the message when one is not: a revision's differs)."""
    paths = paths_config.to_dict()
    by_path = {relpath(repo, out): out for stage in pipeline_stages(repo) for out in stage.outs}
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
            raise PinningError(f"{path} is not recorded in {where}: {fix}")
        outs[key] = out
    return outs


def pipeline_stages(repo: "Repo") -> List[Any]:
    """The pipeline stages, as a one-line error if ``dvc.yaml`` cannot be read."""
    # pylint: disable=import-outside-toplevel
    from dvc.exceptions import DvcException
    try:
        return list(repo.index.stages)
    except DvcException as err:
        raise PinningError(f"cannot read the pipeline: {one_line(err)}") from err


def check_workspace_output(key: str, out) -> None:
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
        found = (f"{out} ({key}) is not the version recorded in dvc.lock (md5 "
                 f"{short_hash(actual.value)} found, {short_hash(out.hash_info.value)} "
                 "recorded)")
        shared = linked_cache_objects(out)
        if shared:
            raise PinningError(
                f"{found}, and it was written in place through a link into DVC's cache "
                f"(cache.type hardlink or symlink): the DVC cache object {shared[0]}"
                + (f" (and {len(shared) - 1} more)" if len(shared) > 1 else "")
                + " holds the same wrong bytes, so `dvc checkout` cannot restore it: "
                f"delete that object and {out}, then run `dvc pull` (or `dvc repro "
                "--force` where no remote has it)")
        raise PinningError(f"{found}: run `dvc pull` to restore the recorded version, or "
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


def upstream_stages(repo: "Repo", outs: Mapping[str, Any]) -> List[Any]:
    """The stages that built the given outputs and every stage upstream of them."""
    producers = {relpath(repo, out): out.stage for stage in pipeline_stages(repo)
                 for out in stage.outs}
    todo = [out.stage for out in outs.values()]
    seen: Dict[str, Any] = {}
    while todo:
        stage = todo.pop()
        label = _label(repo, stage)
        if label in seen:
            continue
        seen[label] = stage
        todo.extend(producers[relpath(repo, dep)] for dep in stage.deps
                    if is_path_dep(dep) and relpath(repo, dep) in producers)
    return list(seen.values())


def is_path_dep(dep) -> bool:
    """Whether a dependency is a file or folder (not params)."""
    # pylint: disable=import-outside-toplevel
    from dvc.dependency.param import ParamsDependency
    return not isinstance(dep, ParamsDependency)


def check_consistent_build(repo: "Repo", stages: List[Any], where: str = "dvc.lock") -> None:
    """Each stage must have been built from the outputs its upstream stages recorded."""
    recorded = {relpath(repo, out): (out.stage, out.hash_info)
                for stage in stages for out in stage.outs}
    for stage in stages:
        for dep in stage.deps:
            if not is_path_dep(dep):
                continue
            upstream = recorded.get(relpath(repo, dep))
            if upstream is None or upstream[1] == dep.hash_info:
                continue
            if upstream[0].is_data_source:
                raise PinningError(f"the artifacts are stale: {dep} changed in "
                                   f"{_label(repo, upstream[0])} since stage "
                                   f"{_label(repo, stage)} ran: run `dvc repro`")
            raise PinningError(f"{where} is half-built: stage {_label(repo, stage)} was built "
                               f"from a different {dep} than stage "
                               f"{_label(repo, upstream[0])} recorded: run `dvc repro`")


def check_inputs_unchanged(repo: "Repo", stages: List[Any]) -> None:
    """The code, params and data the stages read must not have changed since they ran."""
    produced = {relpath(repo, out) for stage in stages for out in stage.outs}
    for stage in stages:
        if stage.is_data_source:            # data/master.dvc: the photos as `dvc add` saw them
            for out in stage.outs:
                status = out.workspace_status()
                if status:
                    raise PinningError(f"the artifacts are stale: {_describe_status(status)} "
                                       f"since `dvc add`: run `dvc add {out}` and `dvc repro`")
            continue
        for dep in stage.deps:
            if is_path_dep(dep) and relpath(repo, dep) in produced:
                continue      # an upstream artifact: checked by check_consistent_build
            status = dep.workspace_status()
            if status:
                raise PinningError(f"the artifacts are stale: {_describe_status(status)} since "
                                   f"stage {_label(repo, stage)} ran: run `dvc repro` (or "
                                   "`dvc pull` if dvc.lock was updated elsewhere)")


def check_settings(repo: "Repo", stages: List[Any], config: Config) -> None:
    """Serving's settings must equal the params ``dvc.lock`` records for the stages.

    With the tracked ``params.yaml`` DVC's own status check already ensures it; this
    catches ``--params other.yaml`` (its query transform would differ from the
    collection's while ``dvc.lock`` still matches ``params.yaml``).
    """
    for stage in stages:
        for dep in stage.deps:
            if is_path_dep(dep) or not dep.hash_info or not isinstance(dep.hash_info.value,
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


def served_version(repo: "Repo", outs: Mapping[str, Any], source: str) -> ServingVersion:
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


def short_hash(value: Optional[str]) -> str:
    """A hash for messages."""
    return str(value) if value else "none"
