"""Real embeddings of a photo folder, made in-process with the project's own code.

The index benchmark builds its synthetic collections from real ResNet50 vectors, and
the near-duplicate measurement embeds real photos with planted copies; both embed
through the same ETL (:func:`lib.photos.images.load_image`), feature engineering
(:func:`lib.embedding.preprocessing.preprocess`) and saved model
(:class:`lib.embedding.vectorizer.Vectorizer`) as the pipeline.

Usage::

    python -m bench.real_vectors OUT_NPY [--dataset DIR] [--limit N]
"""
import logging
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from lib import cli
from lib.artifacts import open_npy_writer
from lib.config import EtlConfig
from lib.embedding import preprocess, ResNet50Helper, Vectorizer
from lib.photos import list_images, load_image

DATASET = ROOT.parent / "shared" / "datasets" / "clothing-small"
WEIGHTS = ROOT.parent / "shared" / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"

logger = logging.getLogger(__name__)


def embed_photos(paths: Sequence[Path], vectorizer: Vectorizer,
                 etl_config: Optional[EtlConfig] = None, chunk: int = 64) -> np.ndarray:
    """Embeds image files as the pipeline does: (N, D) ``float32``, in file order."""
    etl_config = etl_config or EtlConfig()
    out = np.empty((len(paths), vectorizer.dim), dtype=np.float32)           # (N, D)
    for start in range(0, len(paths), chunk):
        rgb = np.stack([load_image(path, etl_config)
                        for path in paths[start:start + chunk]])              # (C, S, S, 3)
        out[start:start + rgb.shape[0]] = vectorizer.transform(preprocess(rgb))
        logger.info("embedded %d/%d photos", start + rgb.shape[0], len(paths))
    return out


def saved_vectorizer(directory: Path, weights: Path = WEIGHTS) -> Vectorizer:
    """Builds the design's ResNet50 with local weights, saves it, loads it back."""
    Vectorizer(ResNet50Helper(weights=str(weights)).build()).save(directory)
    return Vectorizer.load(directory)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Embeds the dataset's photos (sorted) into a ``.npy`` file."""
    parser = cli.ArgumentParser(prog="python -m bench.real_vectors",
                                description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output .npy (N, 2048) float32")
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--limit", type=int, default=None, help="first N photos only")
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    photos = list_images(args.dataset)[:args.limit]
    with tempfile.TemporaryDirectory() as scratch:
        vectorizer = saved_vectorizer(Path(scratch) / "vectorizer_model")
        vectors = embed_photos(photos, vectorizer)
    with open_npy_writer(args.out, vectors.shape, np.float32) as writer:
        writer[:] = vectors
    print(f"{vectors.shape[0]} vectors -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
