"""Schemathesis hooks of the contract test, loaded by ``st run`` (``SCHEMATHESIS_HOOKS``).

They tell the fuzzer what a schema cannot, and nothing about the answers:

- an upload's ``image`` part is declared ``image/*``: its positive cases are real PNG
  and JPEG files (random pixels, random sizes), as no JSON schema says "bytes OpenCV
  decodes" (its negative cases are left to Schemathesis);
- the names of the collection served (the project in ``$CONTRACT_PROJECT_ENV``) are
  added as explicit examples of ``GET /search`` (with each control), ``GET /images``
  and ``POST /search`` (one of its photos), so that answers with results are checked
  against the schema too, not only the 404s of random names.
"""
import os
from pathlib import Path
from typing import List

import cv2
import numpy as np
import schemathesis
from hypothesis import strategies as st

PROJECT_ENV = "CONTRACT_PROJECT"


def _image(extension: str) -> st.SearchStrategy:
    """Image files of one format: random pixels, 1 to 96 pixels a side."""

    def encode(shape_and_seed) -> bytes:
        height, width, seed = shape_and_seed
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
        ok, data = cv2.imencode(extension, pixels)                  # (H, W, 3) BGR
        assert ok, extension
        return data.tobytes()

    return st.tuples(st.integers(1, 96), st.integers(1, 96),
                     st.integers(0, 2 ** 32 - 1)).map(encode)


schemathesis.openapi.media_type("image/png", _image(".png"))
schemathesis.openapi.media_type("image/jpeg", _image(".jpg"))


def _project() -> Path:
    """The project the service serves."""
    return Path(os.environ[PROJECT_ENV])


def _names() -> List[str]:
    """The image names of the collection served, sorted."""
    return sorted(np.load(_project() / "data" / "landing" / "image_names.npy").tolist())


@schemathesis.hook
def before_add_examples(context, examples) -> None:
    """Explicit examples with the collection's names and one of its photos."""
    operation = context.operation
    names = _names()
    folder = names[0].split("/")[0]
    if operation.method.upper() == "GET" and operation.path == "/search":
        examples.extend(operation.Case(query=query) for query in (
            {"name": names[0]}, {"name": names[1], "n": 3, "offset": 3},
            {"name": names[2], "folder": folder, "min_score": -0.5},
            {"name": names[3], "min_score": 0.99}, {"name": names[4], "offset": 1000}))
    elif operation.path == "/images/{name}":
        examples.extend(operation.Case(path_parameters={"name": name}) for name in names[:3])
    elif operation.method.upper() == "POST" and operation.path == "/search":
        photo = (_project() / "data" / "master" / names[0]).read_bytes()
        examples.append(operation.Case(query={"n": 3, "folder": folder},
                                       body={"image": photo}, media_type="multipart/form-data",
                                       multipart_content_types={"image": "image/jpeg"}))
