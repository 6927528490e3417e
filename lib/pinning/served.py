"""What pinning hands to serving: the verified artifacts and which version they are.

:mod:`lib.pinning.verify` makes these (from the workspace, a revision, or unchecked);
serving, evaluation and the service load from ``PinnedArtifacts.paths``.
"""
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lib.config import Config
from lib.pinning.copies import Manifest, recheck
from lib.pinning.snapshot import release

# The artifacts serving loads, by their key in the params ``paths`` section.
SERVED = ("names", "vectors", "model", "images")
# Served when the revision has them (revisions built before the whitening stage, the
# index stage, modelling.precision or augmentation lack them).
OPTIONAL_SERVED = ("whitening", "inference_model", "index", "augmented")


@dataclass(frozen=True)
class ServingVersion:
    """Which artifact versions answer: the git revision and the vectors' hash.

    Attributes:
        git_rev: Commit the artifacts are pinned at (HEAD for the workspace), or None
            outside git.
        vectors_md5: The vectors' md5 recorded in ``dvc.lock``.
        source: ``"workspace"`` or the revision as the user gave it (``unverified``
            added when nothing was checked).
        hashes: Every served artifact's md5, by params key: the one ``dvc.lock``
            records (verified, so also that of the bytes loaded), or, unverified, the
            md5 of the bytes loaded.
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
        snapshot: The private folder ``paths`` point into, removed by
            :meth:`release`; None when there is none.
        manifests: The md5 of every file of each artifact in the snapshot, hashed as it
            was copied (:mod:`lib.pinning.copies`).
    """

    paths: Dict[str, Path]
    config: Config
    version: ServingVersion
    snapshot: Optional[Path] = None
    manifests: Dict[str, Manifest] = field(default_factory=dict)

    def served_md5(self) -> Dict[str, str]:
        """DVC's md5 of each artifact's bytes in the snapshot, hashed as they were copied."""
        return {key: manifest.md5 for key, manifest in self.manifests.items()}

    def differing(self) -> List[str]:
        """The artifacts whose copied bytes are not the md5 ``version`` names."""
        return [key for key, md5 in self.served_md5().items()
                if md5 != self.version.hashes.get(key)]

    def as_loaded(self, note: str) -> "PinnedArtifacts":
        """This version renamed after the bytes loaded (unverified serving): its hashes
        and the vectors' md5 become those of the copies, its source gets ``note``."""
        hashes = self.served_md5()
        version = replace(self.version, hashes=hashes, source=f"{self.version.source}, {note}",
                          vectors_md5=hashes.get("vectors", self.version.vectors_md5))
        return replace(self, version=version)

    def recheck(self) -> Tuple[int, int]:
        """Re-hashes the snapshot (``/health?deep=1``): files and bytes read.

        Raises:
            PinningError: A file of it no longer holds the bytes hashed when it was
                copied (or is gone); one line naming it.
        """
        return recheck(self.paths, self.manifests, {key: f"{key} ({path.name})"
                                                    for key, path in self.paths.items()})

    def release(self) -> None:
        """Removes the private snapshot; call it once the engine has loaded the artifacts
        (their memory maps stay valid and private), or, for a resident service, once this
        version no longer answers. Snapshots of processes that are gone are removed at
        the next pin anyway."""
        release(self.snapshot)

    def __enter__(self) -> "PinnedArtifacts":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
