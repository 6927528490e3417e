"""Evaluation: search quality on a labelled query set.

- :mod:`lib.evaluation.metrics`: mAP, precision@k, recall@k and the PR curve.
- :mod:`lib.evaluation.query_set`: the labelled query set, run through the engine.
- :mod:`lib.evaluation.plots`: the precision-recall picture.
- :mod:`lib.evaluation.reproduction`: each query's top 10, comparable across machines.
- :mod:`lib.evaluation.compare`: the workspace's evaluation against a git revision's, and
  how one query's results changed between two versions.
- :mod:`lib.evaluation.side_by_side`: one query at two versions (``serve.py --compare``).
- :mod:`lib.evaluation.query_vectors`: the queries' vectors, kept between runs.
"""
from lib.evaluation.compare import (
    changes_table, compare, result_changes, table as comparison_table)
from lib.evaluation.plots import render_pr_curve
from lib.evaluation.reproduction import reproduction_record
from lib.evaluation.side_by_side import (
    answer_at, render_side_by_side, side_by_side, VersionAnswer)
from lib.evaluation.query_set import (
    evaluate_engine, not_applicable, not_applicable_metrics, read_query_set, write_results)
from lib.evaluation.query_vectors import fingerprint as query_fingerprint, query_vectors

__all__ = ["VersionAnswer", "answer_at", "changes_table", "compare", "comparison_table",
           "evaluate_engine", "not_applicable", "not_applicable_metrics", "query_fingerprint",
           "query_vectors", "read_query_set",
           "render_pr_curve", "render_side_by_side", "reproduction_record", "result_changes",
           "side_by_side", "write_results"]
