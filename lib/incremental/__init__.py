"""Incremental stages: which rows of the previous output a stage reuses.

- :mod:`lib.incremental.rows`: the row index of a stage's output (content key per row,
  fingerprint of how rows were made) and the plan of what to reuse.
- :mod:`lib.incremental.code`: the code a stage runs (its script and the ``lib``
  modules it imports), hashed into the fingerprint and declared in ``dvc.yaml``.
- :mod:`lib.incremental.previous`: the previous outputs, read from DVC's cache.
"""
from lib.incremental.code import code_files
from lib.incremental.previous import (
    add_row_index_args, linker, plan_stage, previous_output, previous_rows, restore_file)
from lib.incremental.rows import (
    RowIndex, RowPlan, apply_rows, content_key, copy_rows, file_sha256, plan_rows, recipe,
    row_settings)

__all__ = ["RowIndex", "RowPlan", "add_row_index_args", "apply_rows", "code_files",
           "content_key", "copy_rows", "file_sha256", "linker", "plan_rows", "plan_stage",
           "previous_output", "previous_rows", "recipe", "restore_file", "row_settings"]
