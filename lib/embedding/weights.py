"""The ResNet50 no-top weights that ``modelling.weights`` names, checked before use.

``modelling.weights`` is ``imagenet`` (Keras' own file, downloaded once into Keras'
cache, ``$KERAS_HOME/models`` or ``~/.keras/models``) or the path of a local ``.h5``
file. :func:`resolve_weights` returns a local file that holds ResNet50 no-top weights,
or raises one :class:`WeightsError` line saying what is wrong and how to set
``modelling.weights``. A file is checked by its HDF5 layer names (h5py, fast), and
TensorFlow is imported only when a download is needed. The model is then built from
that file, so a copy placed in Keras' cache by hand works offline (Keras' own lookup
would insist on the md5 of its download and try to download again).
The ``weights`` stage runs this check before the slow stages; the modelling stage runs
it again when it builds the model.
"""
import contextlib
import io
import logging
import os
import sys
import urllib.error
from pathlib import Path
from typing import List, Set

from lib.cli import is_verbose, quiet_native_stderr
from lib.errors import one_line, WeightsError

logger = logging.getLogger(__name__)

IMAGENET = "imagenet"
FILE_NAME = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + FILE_NAME
MD5 = "4d473c1dd8becc155b73f8504c6f6626"   # Keras' own hash of FILE_NAME
BLOCKS = (3, 4, 6, 3)                      # ResNet50's residual blocks in conv2 .. conv5
README = "README: 'Without internet'"


def keras_cache_file() -> Path:
    """Where Keras looks for ImageNet's ResNet50 no-top file before downloading it.

    Keras' rule: ``$KERAS_HOME``, else ``~/.keras`` (``/tmp/.keras`` when that folder
    is not writable), then ``models/FILE_NAME``.
    """
    if "KERAS_HOME" in os.environ:
        home = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        base = Path.home()
        home = (base if os.access(base, os.W_OK) else Path("/tmp")) / ".keras"
    if home.exists() and not os.access(home, os.W_OK):     # Keras creates it otherwise
        home = Path("/tmp") / ".keras"
    return home / "models" / FILE_NAME


def resnet50_weighted_layers() -> Set[str]:
    """Names of the layers of Keras' ResNet50 (no top) that carry weights (106)."""
    names = {"conv1_conv", "conv1_bn"}
    for stage, blocks in enumerate(BLOCKS, start=2):
        for block in range(1, blocks + 1):
            for part in ("0", "1", "2", "3") if block == 1 else ("1", "2", "3"):
                names.update(f"conv{stage}_block{block}_{part}_{kind}" for kind in ("conv", "bn"))
    return names


def _fix(prefix: str) -> str:
    """A :class:`WeightsError` message that ends with how to point at usable weights."""
    return (f"modelling.weights: {prefix}: set modelling.weights in params.yaml to a local "
            f"ResNet50 no-top .h5 file ({FILE_NAME}), or to 'imagenet' with that file copied "
            f"to {keras_cache_file()} ({README})")


def _h5_layers(path: Path) -> List[str]:
    """The names of the layers with weights in a Keras ``.h5`` weights file."""
    import h5py  # pylint: disable=import-outside-toplevel
    try:
        with h5py.File(path, "r") as handle:
            stored = handle.attrs.get("layer_names")
            if stored is None:
                raise WeightsError(_fix(f"{path} is an HDF5 file but not Keras weights"))
            names = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in stored]  # pylint: disable=not-an-iterable
            return [name for name in names if name in handle
                    and len(handle[name].attrs.get("weight_names", ()))]
    except OSError as err:
        raise WeightsError(_fix(f"{path} is not a readable HDF5 (.h5) weights file "
                                f"({one_line(err)})")) from None


def check_weights_file(path: Path) -> None:
    """Checks that a file holds Keras' ResNet50 no-top weights (by layer names).

    Raises:
        WeightsError: Missing, not a file, not HDF5, or the layers of another model.
    """
    if not path.exists():
        raise WeightsError(_fix(f"weights file {path} not found"))
    if not path.is_file():
        raise WeightsError(_fix(f"{path} is not a file"))
    found, expected = set(_h5_layers(path)), resnet50_weighted_layers()
    if found != expected:
        extra, missing = sorted(found - expected), sorted(expected - found)
        detail = (f"it has layer {extra[0]!r}, which ResNet50 no-top lacks" if extra else
                  f"it lacks layer {missing[0]!r}")
        raise WeightsError(_fix(f"{path} does not hold ResNet50 no-top weights ({detail})"))


def _download_imagenet() -> Path:
    """Keras' ``get_file``: the cached file, or downloaded into Keras' cache."""
    with quiet_native_stderr():
        import keras  # pylint: disable=import-outside-toplevel
    logger.info("downloading the ImageNet ResNet50 weights into %s", keras_cache_file())
    try:
        # Keras prints its progress on stdout, which holds results only: on stderr with
        # -v, else the line above says it.
        with contextlib.redirect_stdout(sys.stderr if is_verbose() else io.StringIO()):
            return Path(keras.utils.get_file(FILE_NAME, ORIGIN, cache_subdir="models",
                                             file_hash=MD5))
    except Exception as err:  # pylint: disable=broad-exception-caught
        # Keras wraps a failed download in a bare Exception; only that one is the user's.
        if not isinstance(err.__context__, urllib.error.URLError):
            raise
        reason = getattr(err.__context__, "reason", err.__context__)
        raise WeightsError(_fix(f"the ImageNet weights could not be downloaded from {ORIGIN} "
                                f"({one_line(Exception(reason))})")) from None


def resolve_weights(weights: str) -> Path:
    """The local file holding the ResNet50 no-top weights that ``weights`` names.

    Args:
        weights: ``imagenet``, or the path of a local ``.h5`` file.

    Returns:
        The checked file: the given one, or the ImageNet file in Keras' cache
        (:func:`keras_cache_file`), downloaded first if it is not there. A file placed
        there by hand (the offline route) is used as it is: it is checked by its
        layers, not by the md5 of Keras' download, so a re-saved copy of the ImageNet
        weights serves as well.

    Raises:
        WeightsError: The download failed, or the file is missing or not ResNet50
            no-top weights.
    """
    if weights != IMAGENET:
        path = Path(weights).expanduser()
        check_weights_file(path)
        return path
    cached = keras_cache_file()
    if not cached.exists():
        cached = _download_imagenet()
    check_weights_file(cached)
    return cached
