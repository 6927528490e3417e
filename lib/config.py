"""The whole configuration: every setting of ``params.yaml`` in one place.

``params.yaml`` is parsed and validated once, by :func:`load_config`, into frozen
dataclasses, one per section. Each setting's type, allowed values and default are
declared here and nowhere else; stages, serving, evaluation and pinning take these
objects, never the raw mapping. A bad file is one :class:`~lib.errors.ConfigError`
line naming the key, the value and what is allowed. Unknown keys are errors.
"""
import dataclasses
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar

import numpy as np
import yaml

from lib import DEFAULT_MAX_PIXELS
from lib.errors import ConfigError, PathLike

RESIZE_MODES = ("stretch", "crop", "pad")
INTERPOLATION_NAMES = ("area", "linear", "cubic")
POOLINGS = ("avg", "max", "gem")
RUNTIMES = ("auto", "openvino", "tensorflow")
PRECISIONS = ("fp32", "bf16", "int8")
INDEX_KINDS = ("auto", "exact", "hnsw", "ivfpq")
ENGINES = ("local", "ray")

_T = TypeVar("_T", bound="Section")


def setting(default: Any, kind: type, *,  # pylint: disable=too-many-arguments
            minimum: Optional[float] = None, choices: Optional[Tuple[str, ...]] = None,
            optional: bool = False, maximum: Optional[float] = None) -> Any:
    """Declares one setting: its default, type, bounds or allowed values."""
    return dataclasses.field(default=default, metadata={  # pylint: disable=invalid-field-call
        "kind": kind, "minimum": minimum, "choices": choices, "optional": optional,
        "maximum": maximum})


def positive_int(value: Any, what: str) -> int:
    """``value`` as an ``int`` if it is an integer >= 1: the one check of every count.

    Raises:
        ValueError: Not an integer (``bool`` included), or below 1.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _allowed(meta: Mapping[str, Any]) -> str:
    """What a setting accepts, for error messages."""
    if meta["choices"]:
        return "one of " + ", ".join(meta["choices"])
    kind = {int: "an integer", float: "a number", bool: "true or false",
            str: "a non-empty text", tuple: "a list of non-empty texts"}[meta["kind"]]
    if meta["minimum"] is not None:
        kind += f" >= {meta['minimum']}"
    if meta.get("maximum") is not None:
        kind += f" and <= {meta['maximum']}"
    return kind + (" or null" if meta["optional"] else "")


def _valid(value: Any, meta: Mapping[str, Any]) -> bool:  # pylint: disable=too-many-return-statements
    """Whether ``value`` is acceptable for a setting."""
    kind = meta["kind"]
    if value is None:
        return bool(meta["optional"])
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool) or (kind is int and not isinstance(value, int)):
        return False
    if kind is float and (not isinstance(value, (int, float)) or not math.isfinite(value)):
        return False
    if kind is str and (not isinstance(value, str) or not value.strip()):
        return False
    if kind is tuple:
        return isinstance(value, (list, tuple)) and all(
            isinstance(item, str) and item.strip() for item in value)
    if meta["choices"] and value not in meta["choices"]:
        return False
    return ((meta["minimum"] is None or value >= meta["minimum"])
            and (meta.get("maximum") is None or value <= meta["maximum"]))


@dataclasses.dataclass(frozen=True)
class Section:
    """Base of every section: validates its settings when constructed."""

    SECTION = ""

    def __post_init__(self):
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if not _valid(value, item.metadata):
                raise ConfigError(f"{self.SECTION}.{item.name}: {value!r} is not allowed: "
                                  f"expected {_allowed(item.metadata)}")
            if item.metadata["kind"] is float and value is not None:
                object.__setattr__(self, item.name, float(value))
            if item.metadata["kind"] is tuple:
                object.__setattr__(self, item.name, tuple(value))

    @classmethod
    def from_mapping(cls: Type[_T], values: Any) -> _T:
        """Builds the section from its ``params.yaml`` mapping; absent keys keep defaults.

        Raises:
            ConfigError: Not a mapping, an unknown key, or a value not allowed.
        """
        if not isinstance(values, dict):
            raise ConfigError(f"section {cls.SECTION!r} must be a mapping of settings, got "
                              f"{values!r}")
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in values if key not in known)
        if unknown:
            raise ConfigError(f"{cls.SECTION}.{unknown[0]}: unknown setting; "
                              f"{cls.SECTION} has {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        """The settings as a plain mapping (as they would stand in ``params.yaml``)."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class PathsConfig(Section):  # pylint: disable=too-many-instance-attributes
    """Artifact locations, relative to the repository root; ``dvc.yaml`` interpolates them."""

    SECTION = "paths"
    master: str = setting("data/master", str)
    images: str = setting("data/landing/resized_rgb.npy", str)
    names: str = setting("data/landing/image_names.npy", str)
    etl_report: str = setting("data/landing/etl_report.json", str)
    landing_rows: str = setting("data/landing/rows.npz", str)
    features: str = setting("data/feature_store/feature_engineered.npy", str)
    feature_rows: str = setting("data/feature_store/rows.npz", str)
    vectors: str = setting("data/model/embedded_image_vectors.npy", str)
    vector_rows: str = setting("data/model/rows.npz", str)
    model: str = setting("data/model/vectorizer_model", str)
    weights_record: str = setting("data/model/weights.json", str)
    whitening: str = setting("data/model/whitening.npz", str)
    augmented: str = setting("data/model/augmented.npy", str)
    inference_model: str = setting("data/model/inference_model", str)
    index: str = setting("data/model/index", str)
    queries: str = setting("data/queries", str)
    query_labels: str = setting("data/queries/labels.csv", str)
    metrics: str = setting("metrics/evaluation.json", str)
    pr_curve: str = setting("metrics/pr_curve.csv", str)
    pr_curve_png: str = setting("metrics/pr_curve.png", str)
    reproduction: str = setting("metrics/reproduction.json", str)

    def resolve(self, root: PathLike = ".") -> Dict[str, Path]:
        """Every path, by key, joined to ``root``."""
        return {key: Path(root) / value for key, value in self.to_dict().items()}


@dataclasses.dataclass(frozen=True)
class EtlConfig(Section):
    """How every image, collection or query, is read and becomes a square RGB array.

    Attributes:
        image_size: Side of the square output (224 for ResNet50).
        resize_mode: ``stretch`` (the design default), ``crop`` (centre crop of the
            shorter side) or ``pad`` (pad to square with black).
        interpolation: OpenCV interpolation name: ``area``, ``linear`` or ``cubic``.
        max_pixels: Largest width x height accepted (decompression-bomb guard).
        reduced_decode: Decode large JPEGs at 1/2, 1/4 or 1/8 scale (several times faster)
            when the result keeps at least twice ``image_size`` pixels on its shorter
            side, so the final resize is within a few grey levels of a full decode.
        workers, chunk_size: Decoding threads of the ETL stage; files it decodes per chunk.
    """

    SECTION = "etl"
    image_size: int = setting(224, int, minimum=8)
    resize_mode: str = setting("stretch", str, choices=RESIZE_MODES)
    interpolation: str = setting("area", str, choices=INTERPOLATION_NAMES)
    max_pixels: int = setting(DEFAULT_MAX_PIXELS, int, minimum=1)
    reduced_decode: bool = setting(True, bool)
    workers: int = setting(4, int, minimum=1)
    chunk_size: int = setting(256, int, minimum=1)

    @property
    def decode_min_side(self) -> int:
        """Shorter side a reduced JPEG decode must keep (0: always decode in full)."""
        return 2 * self.image_size if self.reduced_decode else 0


@dataclasses.dataclass(frozen=True)
class FeatureEngineeringConfig(Section):
    """The feature-engineering stage: ResNet50 ``preprocess_input``, chunk by chunk."""

    SECTION = "feature_engineering"
    chunk_size: int = setting(128, int, minimum=1)


@dataclasses.dataclass(frozen=True)
class StorageConfig(Section):
    """How the big arrays (landing images, feature store, vectors) are stored:
    ``shard_rows`` 0 (the design): each array is one ``.npy`` file; N > 0: a folder of
    ``.npy`` shards of about N rows each, cut where the photos' content keys say
    (``lib.arrays``), so an update stores only the shards it changed."""

    SECTION = "storage"
    shard_rows: int = setting(0, int, minimum=0)


@dataclasses.dataclass(frozen=True)
class ModellingConfig(Section):  # pylint: disable=too-many-instance-attributes
    """The vectorizer model and how it embeds.

    Attributes:
        weights: ``imagenet`` (Keras downloads them) or a local no-top ResNet50 ``.h5``.
        pooling: ``avg`` (ResNet50 ``avg_pool``, the design), ``max`` or ``gem``.
        gem_p: GeM exponent (``pooling: gem`` only).
        batch_size, chunk_size: Images per forward pass; read from the feature store per step.
        runtime: ``auto`` (TensorFlow on a GPU, else OpenVINO when installed, else
            TensorFlow), ``openvino`` or ``tensorflow``.
        precision: ``fp32`` (the design), ``bf16`` (OpenVINO bf16, on CPUs with
            AVX512_BF16 or AMX) or ``int8`` (NNCF post-training quantisation), on OpenVINO.
        calibration_size: Feature-store rows (evenly spaced) that calibrate ``int8``.
        engine: ``local`` (this process) or ``ray`` (a Ray cluster, ``lib.embedding.ray_engine``).
        ray_address: The Ray cluster's ``host:port``; null: ``$RAY_ADDRESS``, else a
            local Ray instance with this machine's cores.
        ray_actors, ray_actor_cpus: Embedding actors (0 = one per ``ray_actor_cpus``
            CPUs of the cluster); CPUs each one reserves (OpenVINO uses all it sees).
    """

    SECTION = "modelling"
    weights: str = setting("imagenet", str)
    pooling: str = setting("avg", str, choices=POOLINGS)
    gem_p: float = setting(3.0, float, minimum=1.0)
    batch_size: int = setting(32, int, minimum=1)
    chunk_size: int = setting(256, int, minimum=1)
    runtime: str = setting("auto", str, choices=RUNTIMES)
    precision: str = setting("fp32", str, choices=PRECISIONS)
    calibration_size: int = setting(300, int, minimum=1)
    engine: str = setting("local", str, choices=ENGINES)
    ray_address: Optional[str] = setting(None, str, optional=True)
    ray_actors: int = setting(0, int, minimum=0)
    ray_actor_cpus: int = setting(1, int, minimum=1)

    def __post_init__(self):
        super().__post_init__()
        if self.engine == "ray" and self.precision != "fp32":
            raise ConfigError(f"modelling.engine: 'ray' embeds in fp32 only, but "
                              f"modelling.precision is {self.precision!r}: set the precision "
                              "to fp32 or the engine to local")


@dataclasses.dataclass(frozen=True)
class WhiteningConfig(Section):
    """PCA whitening fitted on the collection: output dimension, 0 = off."""

    SECTION = "whitening"
    dim: int = setting(0, int, minimum=0)


@dataclasses.dataclass(frozen=True)
class AugmentationConfig(Section):
    """Database-side augmentation (``lib.retrieval.augmentation``): each collection vector
    joined by its ``k`` nearest rows weighted by cosine ** ``alpha``; ``k`` 0 = off."""
    SECTION = "augmentation"
    k: int = setting(0, int, minimum=0)
    alpha: float = setting(3.0, float, minimum=0.0)


@dataclasses.dataclass(frozen=True)
class IndexConfig(Section):  # pylint: disable=too-many-instance-attributes
    """The vector index serving ranks through (``lib.retrieval.index``).

    Attributes:
        kind: ``auto`` (``exact`` below ``exact_below`` rows, else ``hnsw`` when the
            float32 vectors fit ``flat_budget_mb``, else ``ivfpq``), ``exact`` (the
            design's linear scan, bit for bit), ``hnsw`` (FAISS HNSW graph over the
            float32 vectors) or ``ivfpq`` (FAISS inverted lists with product
            quantisation: a compact index for collections that do not fit in memory).
        exact_below, flat_budget_mb: ``auto`` keeps the exact scan below this many
            rows, and picks ``ivfpq`` when the float32 vectors exceed this many MB.
        hnsw_m, ef_construction, ef_search: HNSW links per node; candidate list while
            building, and while searching (no rebuild).
        nlist, nprobe: IVF lists (0 = about sqrt(N)); lists visited per query (no rebuild).
        pq_m, pq_bits: PQ sub-quantisers (must divide the vector dimension); bits per code.
        rerank: Candidates re-scored exactly per result asked (n x rerank).
    """

    SECTION = "index"
    kind: str = setting("auto", str, choices=INDEX_KINDS)
    exact_below: int = setting(50000, int, minimum=1)
    flat_budget_mb: int = setting(4096, int, minimum=1)
    hnsw_m: int = setting(32, int, minimum=4)
    ef_construction: int = setting(80, int, minimum=8)
    ef_search: int = setting(128, int, minimum=1)
    nlist: int = setting(0, int, minimum=0)
    nprobe: int = setting(32, int, minimum=1)
    pq_m: int = setting(64, int, minimum=1)
    pq_bits: int = setting(8, int, minimum=4)
    rerank: int = setting(4, int, minimum=1)


@dataclasses.dataclass(frozen=True)
class DuplicatesConfig(Section):
    """Near-duplicate report (``stages/duplicates.py``): pairs at or above ``threshold``
    cosine among each photo's ``neighbours`` nearest, grouped; pictures for the first
    ``max_pictures`` groups; the report folder ``output``."""

    SECTION = "duplicates"
    threshold: float = setting(0.95, float, minimum=-1.0)
    neighbours: int = setting(10, int, minimum=1)
    max_pictures: int = setting(200, int, minimum=0)
    output: str = setting("duplicates", str)


@dataclasses.dataclass(frozen=True)
class ServeConfig(Section):
    """Serving defaults (result count, picture) and the ranking knobs read at search time:
    query expansion (k; alpha-QE exponent) and k-reciprocal re-ranking; 0 = off."""

    SECTION = "serve"
    top_n: int = setting(5, int, minimum=1)
    output: str = setting("result.png", str)
    query_expansion: int = setting(0, int, minimum=0)
    query_expansion_alpha: float = setting(0.0, float, minimum=0.0)
    reciprocal_candidates: int = setting(0, int, minimum=0)
    reciprocal_k1: int = setting(20, int, minimum=1)
    reciprocal_k2: int = setting(6, int, minimum=1)
    reciprocal_lambda: float = setting(0.3, float, minimum=0.0, maximum=1.0)


@dataclasses.dataclass(frozen=True)
class ServiceConfig(Section):
    """The resident HTTP service (``serve.py --http``, :mod:`lib.service`).

    Attributes:
        host, port: Address to bind (``127.0.0.1`` keeps it on this machine, ``0.0.0.0``
            opens it to the network) and TCP port.
        max_upload_bytes, max_results: Largest request body (a larger upload is refused
            with 413 before it is read); largest ``n`` a request may ask for.
        batch_wait_ms: How long the model waits to fill a batch (up to ``batch_size``).
        watch_seconds: How often ``dvc.lock`` is checked for a new version to swap in;
            0 = only on ``POST /reload``.
        allowed_hosts: Host names answered besides ``localhost`` and IP addresses
            (``--allow-host`` adds more; ``*``: any); others are refused (DNS rebinding).
        throughput_streams: While queries queue up, run batches on OpenVINO's
            throughput streams, several in flight; false: one batch at a time.
    """

    SECTION = "service"
    host: str = setting("127.0.0.1", str)
    port: int = setting(8000, int, minimum=0)
    max_upload_bytes: int = setting(20_000_000, int, minimum=1)
    max_results: int = setting(100, int, minimum=1)
    batch_wait_ms: float = setting(5.0, float, minimum=0.0)
    watch_seconds: float = setting(2.0, float, minimum=0.0)
    allowed_hosts: Tuple[str, ...] = setting((), tuple)
    throughput_streams: bool = setting(True, bool)


SECTIONS: Dict[str, Type[Section]] = {
    "paths": PathsConfig, "etl": EtlConfig, "feature_engineering": FeatureEngineeringConfig,
    "modelling": ModellingConfig, "whitening": WhiteningConfig, "serve": ServeConfig,
    "service": ServiceConfig, "index": IndexConfig, "duplicates": DuplicatesConfig,
    "storage": StorageConfig, "augmentation": AugmentationConfig,
}
# Sections a params.yaml may leave out (their defaults are the design's).
OPTIONAL_SECTIONS = frozenset({"storage", "augmentation"})


@dataclasses.dataclass(frozen=True)
class Config:  # pylint: disable=too-many-instance-attributes
    """The whole ``params.yaml``, validated."""

    paths: PathsConfig = dataclasses.field(default_factory=PathsConfig)
    etl: EtlConfig = dataclasses.field(default_factory=EtlConfig)
    feature_engineering: FeatureEngineeringConfig = dataclasses.field(
        default_factory=FeatureEngineeringConfig)
    modelling: ModellingConfig = dataclasses.field(default_factory=ModellingConfig)
    whitening: WhiteningConfig = dataclasses.field(default_factory=WhiteningConfig)
    serve: ServeConfig = dataclasses.field(default_factory=ServeConfig)
    service: ServiceConfig = dataclasses.field(default_factory=ServiceConfig)
    index: IndexConfig = dataclasses.field(default_factory=IndexConfig)
    duplicates: DuplicatesConfig = dataclasses.field(default_factory=DuplicatesConfig)
    storage: StorageConfig = dataclasses.field(default_factory=StorageConfig)
    augmentation: AugmentationConfig = dataclasses.field(default_factory=AugmentationConfig)

    @classmethod
    def from_dict(cls, data: Any, source: str = "params.yaml",
                  missing_sections: bool = False) -> "Config":
        """Validates a parsed ``params.yaml``.

        Args:
            data: The parsed YAML.
            source: Names the file in error messages.
            missing_sections: Give absent sections their defaults (a revision built before
                a section existed); else only ``OPTIONAL_SECTIONS`` may be absent.

        Raises:
            ConfigError: One line: ``source: section.key: what is wrong``.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: must hold a mapping of sections, got {data!r}")
        unknown = sorted(str(key) for key in data if key not in SECTIONS)
        if unknown:
            raise ConfigError(f"{source}: unknown section {unknown[0]!r}; the sections are "
                              f"{', '.join(SECTIONS)}")
        values = {}
        for name, section in SECTIONS.items():
            if name not in data:
                if not missing_sections and name not in OPTIONAL_SECTIONS:
                    raise ConfigError(f"{source}: section {name!r} is missing")
                values[name] = section()
                continue
            try:
                values[name] = section.from_mapping(data[name])
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None
        return cls(**values)

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """The configuration as a plain ``params.yaml`` mapping."""
        return {name: getattr(self, name).to_dict() for name in SECTIONS}


def parse_yaml(text: str, source: str = "params.yaml") -> Any:
    """Parses YAML text, as a one-line :class:`ConfigError` if it is not valid YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(err, "problem", None) or "invalid syntax"
        raise ConfigError(f"{source}: not valid YAML{at}: {problem}") from None


def load_config(path: PathLike = "params.yaml") -> Config:
    """Reads and validates a params file.

    Raises:
        ConfigError: Missing, unreadable, not YAML, or not a valid configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found (run from the project root, or "
                          "pass --params)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"params file {path} cannot be read: {err}") from None
    return Config.from_dict(parse_yaml(text, str(path)), source=str(path))
