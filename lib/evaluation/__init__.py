"""Evaluation: search quality on a labelled query set.

- :mod:`lib.evaluation.metrics`: mAP, precision@k, recall@k and the PR curve.
- :mod:`lib.evaluation.query_set`: the labelled query set, run through the engine.
- :mod:`lib.evaluation.plots`: the precision-recall picture.
- :mod:`lib.evaluation.reproduction`: each query's top 10, comparable across machines.
- :mod:`lib.evaluation.compare`: the workspace's evaluation against a git revision's.
"""
from lib.evaluation.compare import compare, result_changes, table as comparison_table
from lib.evaluation.plots import render_pr_curve
from lib.evaluation.reproduction import reproduction_record
from lib.evaluation.query_set import (
    evaluate_engine, not_applicable, not_applicable_metrics, read_query_set, write_results)

__all__ = ["compare", "comparison_table", "evaluate_engine", "not_applicable",
           "not_applicable_metrics", "read_query_set", "render_pr_curve",
           "reproduction_record", "result_changes", "write_results"]
