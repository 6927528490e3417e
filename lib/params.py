"""Reading ``params.yaml`` and turning its sections into validated settings."""
import logging
from pathlib import Path
from typing import Any, Dict, Union

import yaml

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]


def load_params(path: PathLike = "params.yaml") -> Dict[str, Any]:
    """Reads the params file.

    Args:
        path: The YAML file, usually ``params.yaml`` at the repository root.

    Returns:
        The parsed mapping.

    Raises:
        ValueError: The file is missing, not YAML, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"params file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"params file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"params file {path} must hold a mapping of sections")
    return data


def section(params: Dict[str, Any], name: str) -> Dict[str, Any]:
    """Returns one section of the params, which must be a mapping."""
    value = params.get(name)
    if not isinstance(value, dict):
        raise ValueError(f"params section {name!r} is missing or not a mapping")
    return value


def get_int(values: Dict[str, Any], key: str, minimum: int = 1) -> int:
    """Returns ``values[key]`` as an int no smaller than ``minimum``."""
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"param {key!r} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"param {key!r} must be >= {minimum}, got {value}")
    return value


def get_float(values: Dict[str, Any], key: str, minimum: float = 0.0) -> float:
    """Returns ``values[key]`` as a float no smaller than ``minimum``."""
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"param {key!r} must be a number, got {value!r}")
    if value < minimum:
        raise ValueError(f"param {key!r} must be >= {minimum}, got {value}")
    return float(value)


def get_choice(values: Dict[str, Any], key: str, choices: tuple) -> str:
    """Returns ``values[key]``, which must be one of ``choices``."""
    value = values.get(key)
    if value not in choices:
        raise ValueError(f"param {key!r} must be one of {', '.join(choices)}; got {value!r}")
    return value


ARTIFACT_KEYS = ("master", "images", "names", "etl_report", "features", "vectors", "model")


def artifact_paths(params: Dict[str, Any], root: PathLike = ".") -> Dict[str, Path]:
    """The artifact locations of the ``paths`` section, resolved against ``root``.

    ``dvc.yaml`` interpolates the same section, so stages, serving and DVC agree.
    """
    paths = section(params, "paths")
    missing = [key for key in ARTIFACT_KEYS if not isinstance(paths.get(key), str)]
    if missing:
        raise ValueError(f"params section 'paths' lacks {', '.join(missing)}")
    return {key: Path(root) / value for key, value in paths.items() if isinstance(value, str)}
