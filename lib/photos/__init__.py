"""Photos: which files are the collection, decoding them, and the ETL transform.

- :mod:`lib.photos.files`: the collection's files (special files and links refused).
- :mod:`lib.photos.decoding`: bytes to an OpenCV BGR array (header checks, reduced
  JPEG decoding, the decompression-bomb guard).
- :mod:`lib.photos.images`: the ETL transform (BGR in, S x S RGB out), shared by the
  pipeline and every query.
- :mod:`lib.photos.etl`: the ETL phase over a folder (incremental, in parallel).
- :mod:`lib.photos.pictures`: the result and duplicate-group pictures (matches drawn
  from their original photos).
"""
from lib.photos.etl import run_etl
from lib.photos.files import Skipped, dvc_hazards, hazard_of
from lib.photos.images import (
    decode_with, etl_transform, list_images, load_image, max_file_bytes, read_file, read_image,
    read_image_bgr)
from lib.photos.pictures import (
    match_image, query_caption, render_comparison, render_group, render_results)

__all__ = ["Skipped", "decode_with", "dvc_hazards", "etl_transform", "hazard_of",
           "list_images", "load_image", "match_image", "max_file_bytes", "query_caption",
           "read_file", "read_image", "read_image_bgr", "render_comparison", "render_group",
           "render_results", "run_etl"]
