"""What a version did to the rankings: metric deltas and changed top 10s against a revision.

The evaluate stage's outputs are tracked in git (``metrics/evaluation.json`` and the
reproduction record ``metrics/reproduction.json``), so another revision's are read from
git itself, with nothing rebuilt: :func:`compare` sets the workspace's beside them,
metric by metric and query by query (which results entered or left each query's top
10), and the evaluate stage's ``--against REV`` prints it and gates on a mAP drop.
"""
import json
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from lib.errors import InputError, PathLike, printable

METRICS = ("mAP", "P@1", "P@5", "P@10", "R@10")


def read_at(root: PathLike, rev: str, path: str) -> Optional[Dict[str, Any]]:
    """A JSON file as revision ``rev`` of the repository holds it; None if it has none.

    Raises:
        InputError: ``rev`` is not a revision of the repository.
    """
    check = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                           cwd=root, capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise InputError(f"--against {rev!r}: not a git revision of this repository")
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True,
                           check=False)
    if shown.returncode != 0:
        return None
    try:
        return json.loads(shown.stdout)
    except ValueError as err:
        raise InputError(f"{path} at {rev} is not JSON ({err})") from None


def metric_deltas(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """``{metric: {"old", "new", "delta"}}`` for each metric both versions have."""
    return {key: {"old": old[key], "new": new[key], "delta": round(new[key] - old[key], 6)}
            for key in METRICS if key in old and key in new}


def changed_queries(old: Dict[str, List[List[Any]]], new: Dict[str, List[List[Any]]]
                    ) -> List[Dict[str, Any]]:
    """The queries whose top 10 changed, most changed first.

    Args:
        old: ``{query: [[name, score], ...]}`` of one version's reproduction record.
        new: The same of the other version.

    Returns:
        Per changed query: ``shared`` (results in both top 10s), ``entered`` and
        ``left`` (names), ``moved`` (shared results at another rank).
    """
    found = []
    for query in sorted(set(old) & set(new)):
        before = [name for name, _ in old[query]]
        after = [name for name, _ in new[query]]
        if before == after:
            continue
        changes = result_changes(before, after)
        found.append({"query": query, "shared": len(after) - len(changes["entered"]),
                      "entered": changes["entered"], "left": changes["left"],
                      "moved": len(changes["moved"])})
    return sorted(found, key=lambda item: (item["shared"], -item["moved"], item["query"]))


def result_changes(before: Sequence[str], after: Sequence[str]) -> Dict[str, Any]:
    """How a ranked list of names changed: ``entered``, ``left``, and ``moved`` as
    ``{name: (rank before, rank after)}`` (ranks from 1)."""
    return {"entered": [name for name in after if name not in before],
            "left": [name for name in before if name not in after],
            "moved": {name: (before.index(name) + 1, after.index(name) + 1)
                      for name in after if name in before
                      and before.index(name) != after.index(name)}}


def changes_table(before: Sequence[str], after: Sequence[str], old_label: str,
                  new_label: str) -> str:
    """How one ranked list became another, as text: a summary line, then one line per
    result that entered (its new rank), left (its old rank) or moved (old -> new rank).

    Args:
        before: The names at the old version, best first (rank 1 first).
        after: The names at the new version.
        old_label: Names the old version, e.g. ``v1``.
        new_label: Names the new version, e.g. ``the workspace``.
    """
    changes = result_changes(before, after)
    summary = f"from {old_label} to {new_label}: "
    if not changes["entered"] and not changes["left"] and not changes["moved"]:
        return summary + "the same results in the same order"
    lines = [summary + f"{len(changes['entered'])} entered, {len(changes['left'])} left, "
             f"{len(changes['moved'])} moved"]
    lines += [f"  entered  #{after.index(name) + 1:<10} {printable(name)}"
              for name in changes["entered"]]
    lines += [f"  left     #{before.index(name) + 1:<10} {printable(name)}"
              for name in changes["left"]]
    lines += [f"  moved    {f'#{old} -> #{new}':<11} {printable(name)}"
              for name, (old, new) in changes["moved"].items()]
    return "\n".join(lines)


def compare(root: PathLike, rev: str, metrics_path: str, record_path: str) -> Dict[str, Any]:
    """The workspace's evaluation against revision ``rev``'s.

    Args:
        root: The repository root.
        rev: The git revision to compare with.
        metrics_path: ``paths.metrics`` (relative to the root).
        record_path: ``paths.reproduction`` (relative to the root).

    Raises:
        InputError: ``rev`` is not a revision, either version has no applicable
            metrics, or the workspace's are missing (run ``dvc repro`` first).
    """
    root = Path(root)
    old = read_at(root, rev, metrics_path)
    try:
        new = json.loads((root / metrics_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{metrics_path} cannot be read ({err}): run `dvc repro` "
                         "first") from None
    for label, metrics in ((f"at {rev}", old), ("in the workspace", new)):
        if not metrics or not metrics.get("applicable", True) or "mAP" not in metrics:
            raise InputError(f"{metrics_path} {label} holds no scores of the labelled query "
                             "set: nothing to compare")
    result: Dict[str, Any] = {"against": rev, "metrics": metric_deltas(old, new)}
    old_record = read_at(root, rev, record_path) or {}
    try:
        new_record = json.loads((root / record_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        new_record = {}
    if "top10" in old_record and "top10" in new_record:
        result["changed_queries"] = changed_queries(old_record["top10"], new_record["top10"])
        result["queries"] = len(set(old_record["top10"]) & set(new_record["top10"]))
    return result


def table(result: Dict[str, Any], shown: int = 10) -> str:
    """The comparison as text: metric deltas, then the most changed queries."""
    lines = [f"against {result['against']}:", f"  {'metric':8s} {'then':>8s} {'now':>8s} "
             f"{'delta':>8s}"]
    for key, value in result["metrics"].items():
        lines.append(f"  {key:8s} {value['old']:8.4f} {value['new']:8.4f} "
                     f"{value['delta']:+8.4f}")
    if "changed_queries" not in result:
        lines.append("top 10s: not compared (a version has no reproduction record)")
        return "\n".join(lines)
    changed = result["changed_queries"]
    lines.append(f"top 10 changed for {len(changed)} of {result['queries']} queries"
                 + (", most changed first:" if changed else ""))
    for item in changed[:shown]:
        lines.append(f"  {item['query']}: {item['shared']}/10 kept, {item['moved']} moved, "
                     f"entered {', '.join(item['entered']) or '-'}; "
                     f"left {', '.join(item['left']) or '-'}")
    return "\n".join(lines)
