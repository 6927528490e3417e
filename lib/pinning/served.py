"""What pinning hands to serving: the verified artifacts and which version they are.

:mod:`lib.pinning.verify` makes these (from the workspace, a revision, or unchecked);
serving, evaluation and the service load from ``PinnedArtifacts.paths``.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from lib.config import Config
from lib.pinning.snapshot import release

# The artifacts serving loads, by their key in the params ``paths`` section.
SERVED = ("names", "vectors", "model", "images")
# Served when the revision has them (revisions built before the whitening stage, the
# index stage, or modelling.precision lack them).
OPTIONAL_SERVED = ("whitening", "inference_model", "index")


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
