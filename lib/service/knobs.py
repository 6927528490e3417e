"""Which retrieval knobs serve, and the preset they match (``GET /version``, the page).

The knobs are the settings that shape rankings (:data:`KNOBS`): how a photo becomes an
image (``etl.resize_mode``, ``etl.interpolation``), how it is embedded
(``modelling.pooling``, ``modelling.gem_p``, ``modelling.precision``), the search space
(``whitening.dim``, ``augmentation.*``), the query-time ranking
(``serve.query_expansion*``, ``serve.reciprocal_*``) and the index (``index.kind`` and
the knobs read at search time: ``index.ef_search``, ``index.nprobe``, ``index.rerank``).
Their values are those of the typed configuration the serving version was built with
(a revision's own with ``--rev``), never read from ``params.yaml`` again.

A preset is a partial params file, ``presets/NAME.yaml`` beside ``params.yaml``, holding
only the settings that differ from the defaults of :mod:`lib.config`. The version
serves preset ``NAME`` when its settings equal that file applied on top of the
defaults (every setting the file names, and every knob); ``default`` when its knobs
are the defaults; else ``custom``. A preset file that is not a valid partial params
file is skipped with a warning.
"""
import logging
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

from lib.config import Config, parse_yaml
from lib.errors import ConfigError, one_line, PathLike

logger = logging.getLogger(__name__)

KNOBS = ("etl.resize_mode", "etl.interpolation", "modelling.pooling", "modelling.gem_p",
         "modelling.precision", "whitening.dim", "augmentation.k", "augmentation.alpha",
         "serve.query_expansion", "serve.query_expansion_alpha", "serve.reciprocal_candidates",
         "serve.reciprocal_k1", "serve.reciprocal_k2", "serve.reciprocal_lambda", "index.kind",
         "index.ef_search", "index.nprobe", "index.rerank")
PRESETS = "presets"                  # the presets' folder, beside params.yaml
DEFAULT = "default"
CUSTOM = "custom"

Knob = Union[str, int, float]


def setting(config: Config, dotted: str) -> object:
    """One setting of a configuration by its ``section.key`` name."""
    section, key = dotted.split(".", 1)
    return getattr(getattr(config, section), key)


def knobs(config: Config) -> Dict[str, Knob]:
    """The retrieval knobs of a configuration, by ``section.key``, in :data:`KNOBS` order."""
    return {name: setting(config, name) for name in KNOBS}


def read_preset(path: Path) -> Optional[Tuple[Config, List[str]]]:
    """A preset file applied on top of the defaults, and the settings it names.

    Returns:
        None (with a warning) when it is not a valid partial params file.
    """
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
        data = {} if data is None else data
        config = Config.from_dict(data, str(path), missing_sections=True)
    except (OSError, UnicodeDecodeError, ConfigError) as err:
        logger.warning("preset %s skipped: %s", path, one_line(err))
        return None
    return config, [f"{section}.{key}" for section, values in data.items() for key in values]


def _preset_files(root: Path) -> Iterable[Path]:
    """``presets/*.yaml`` of a repository, by name; regular files only (a FIFO there
    must not block the service); none when the folder is absent."""
    return (path for path in sorted((root / PRESETS).glob("*.yaml")) if path.is_file())


def preset_of(config: Config, root: PathLike) -> str:
    """The name of the preset a configuration serves, ``default`` or ``custom``.

    Args:
        config: The serving version's configuration.
        root: The repository root, whose ``presets/*.yaml`` are the presets.
    """
    if knobs(config) == knobs(Config()):
        return DEFAULT
    for path in _preset_files(Path(root)):
        found = read_preset(path)
        if found is None:
            continue
        preset, named = found
        if all(setting(config, name) == setting(preset, name) for name in (*KNOBS, *named)):
            return path.stem
    return CUSTOM
