"""Pinning: serving loads exactly the artifact versions ``dvc.lock`` records.

- :mod:`lib.pinning.verify`: :func:`pin`, the one way serving gets its artifacts.
- :mod:`lib.pinning.workspace`: the workspace checked against ``dvc.lock`` by DVC.
- :mod:`lib.pinning.revisions`: the artifacts of another git revision (``--rev``).
- :mod:`lib.pinning.snapshot`: DVC's repository lock, content hashes, and the snapshot
  of what was verified.
- :mod:`lib.pinning.copies`: the snapshot's private copies (reflink, else a real copy),
  hashed as they are made and re-hashed on demand.
- :mod:`lib.pinning.served`: what is served (:class:`PinnedArtifacts`) and its version.
"""
from lib.pinning.served import SERVED, PinnedArtifacts, ServingVersion
from lib.pinning.verify import pin, verify_workspace

__all__ = ["PinnedArtifacts", "SERVED", "ServingVersion", "pin", "verify_workspace"]
