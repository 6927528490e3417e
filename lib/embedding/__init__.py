"""Embedding: FE preprocess, the ResNet50 model and the runtimes that run it.

- :mod:`lib.embedding.preprocessing`: the FE phase (``preprocess_input``).
- :mod:`lib.embedding.weights`, :mod:`lib.embedding.resnet`: the Keras ResNet50
  (``ResNet50Helper``) built from its weights, the artifact of record.
- :mod:`lib.embedding.runtime`, :mod:`lib.embedding.conversion`: OpenVINO or
  TensorFlow forward passes, and the cache of converted models.
- :mod:`lib.embedding.inference_model`: the fp32 / bf16 / int8 record (and the int8
  model).
- :mod:`lib.embedding.vectorizer`: :class:`Vectorizer`, the same ``transform`` in the
  modelling stage and for every query.
- :mod:`lib.embedding.ray_engine`: the modelling stage on a Ray cluster.

TensorFlow, OpenVINO and Ray are imported only when a model is built or run.
"""
from lib.embedding.inference_model import (
    INFERENCE_FILES, keep_inference_model, write_inference_model)
from lib.embedding.preprocessing import preprocess, run_feature_engineering
from lib.embedding.ray_engine import ray_session, run_ray_embedding
from lib.embedding.resnet import ResNet50Helper
from lib.embedding.runtime import BF16_MISSING, CACHE_ENV, choose_runtime, cpu_has_bf16
from lib.embedding.vectorizer import loads_keras_model, MODEL_FILE, run_embedding, Vectorizer
from lib.embedding.weights import resolve_weights

__all__ = ["BF16_MISSING", "CACHE_ENV", "INFERENCE_FILES", "MODEL_FILE", "ResNet50Helper",
           "Vectorizer", "choose_runtime", "cpu_has_bf16", "keep_inference_model",
           "loads_keras_model", "preprocess", "ray_session", "resolve_weights",
           "run_embedding", "run_feature_engineering", "run_ray_embedding",
           "write_inference_model"]
