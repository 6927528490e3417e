"""Modelling stage: builds the ResNet50 vectorizer, saves it, embeds the collection.

The collection is embedded with the model as *reloaded from disk*, the same artifact
serving loads, so the index and queries cannot drift apart: in this process
(``modelling.engine: local``) or by actors on a Ray cluster (``ray``, which connects
first, so that an unreachable cluster fails before any work). The inference model
holds the OpenVINO IR made from the saved Keras model (for ``int8``, quantised on a
sample of the feature store) and records the precision (``modelling.precision``): it
embeds the collection and every query.

With the row indexes (``--upstream-rows``, ``--rows``) the stage is incremental: when
the previous run used the same settings, code and weights (the same fingerprint, see
``lib/incremental/rows.py``), its saved model is kept, its vectors are copied for every row
whose photo it already embedded, and only the new rows are embedded (by either
engine); the previous inference model is kept too (but an int8 one, calibrated anew),
so such a run starts no TensorFlow. Anything else rebuilds the model and embeds every
row.

Usage (as ``dvc.yaml`` runs it)::

    python stages/modelling.py FEATURES_NPY VECTORS_NPY MODEL_DIR INFERENCE_MODEL_DIR \\
        --upstream-rows FEATURE_ROWS_NPZ --rows ROWS_NPZ
"""
import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib import cli
from lib.artifacts import atomic_path, clean_leftovers
from lib.arrays import Layout
from lib.config import Config, load_config
from lib.embedding import (
    choose_runtime, INFERENCE_FILES, keep_inference_model, MODEL_FILE, ray_session,
    ResNet50Helper, run_embedding, run_ray_embedding, Vectorizer, write_inference_model)
from lib.incremental import (
    add_row_index_args, file_sha256, linker, plan_stage, previous_output, restore_file,
    row_settings, RowIndex, RowPlan)

logger = logging.getLogger(__name__)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features", type=Path, help="feature store .npy (N, 224, 224, 3)")
    parser.add_argument("vectors", type=Path, help="output .npy (N, 2048) float32")
    parser.add_argument("model", type=Path, help="output directory of the saved Keras model")
    parser.add_argument("inference_model", type=Path,
                        help="output directory: the precision record (and the int8 model)")
    add_row_index_args(parser)
    return parser.parse_args(argv)


def plan_embedding(args: argparse.Namespace, config: Config, helper: ResNet50Helper
                   ) -> Tuple[RowIndex, RowPlan]:
    """The vectors' row index and which rows to embed.

    The fingerprint covers the modelling settings that change vectors, the input size,
    the weights file's SHA-256 (not its path) and the runtime that will embed.
    """
    weights = helper.resolved_weights()
    settings = {**row_settings(config.modelling.to_dict()), "image_size": config.etl.image_size}
    settings.pop("weights")
    return plan_stage(args.params.parent, args.upstream_rows, args.vectors, args.rows,
                      __file__, settings,
                      weights=weights if weights == "imagenet" else file_sha256(weights),
                      runtime=choose_runtime(config.modelling.runtime,
                                             config.modelling.precision))


def keep_model(root: Path, cached: Path, directory: Path) -> None:
    """Writes the previous run's saved model (from DVC's cache) as this run's."""
    logger.info("keeping the previous saved model: settings, code and weights are unchanged")
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        restore_file(root, cached, tmp / MODEL_FILE)


def previous_inference_model(root: Path, directory: Path) -> Dict[str, Path]:
    """The previous run's inference-model files found in DVC's cache, by name."""
    found = {name: previous_output(root, directory, member=name) for name in INFERENCE_FILES}
    return {name: path for name, path in found.items() if path is not None}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Reads params, saves the model, embeds the feature store."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    clean_leftovers(args.vectors, args.model, args.inference_model)
    config = load_config(args.params)
    modelling = config.modelling
    choose_runtime(modelling.runtime, modelling.precision)    # e.g. no bf16: fail first
    on_ray = modelling.engine == "ray"
    with ray_session(modelling.ray_address) if on_ray else contextlib.nullcontext():
        helper = ResNet50Helper.from_config(modelling, config.etl)
        index, plan, cached = None, None, None
        if args.rows is not None and args.upstream_rows is not None:
            index, plan = plan_embedding(args, config, helper)
            if plan.previous is not None:
                cached = previous_output(args.params.parent, args.model, member=MODEL_FILE)
        kept = False
        if cached is not None:
            keep_model(args.params.parent, cached, args.model)
            kept = keep_inference_model(
                args.inference_model,
                previous_inference_model(args.params.parent, args.inference_model), modelling)
        else:
            Vectorizer(helper.build(), batch_size=modelling.batch_size).save(args.model)
        if plan is not None and (cached is None or modelling.precision == "int8"):
            # A new model, or an int8 model calibrated anew on the grown collection,
            # embeds every row.
            plan = RowPlan.full(len(plan.sources))
        if not kept:
            write_inference_model(args.inference_model, args.model / MODEL_FILE,
                                  args.features, modelling)
        vectorizer = Vectorizer.load(args.model, batch_size=modelling.batch_size,
                                     runtime=modelling.runtime, precision=modelling.precision,
                                     inference_model=args.inference_model)
        storage = None if index is None or not config.storage.shard_rows else Layout(
            index.keys, config.storage.shard_rows, linker(args.params.parent))
        if on_ray:
            run_ray_embedding(args.features, args.vectors, vectorizer, modelling, plan=plan,
                              storage=storage)
        else:
            run_embedding(args.features, args.vectors, vectorizer,
                          chunk_size=modelling.chunk_size, plan=plan, storage=storage)
    if index is not None:
        index.save(args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
