"""Image similarity search engine: the library behind the DVC stages and serving.

Every stage script and the serving path import their transforms from here, so the
pipeline and the query path share one implementation of each step.
"""
import os

# TensorFlow's C++ start-up chatter is noise for a command-line user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Largest width x height of an accepted image (etl.max_pixels defaults to it).
DEFAULT_MAX_PIXELS = 100_000_000
# OpenCV's own decompression-bomb guard, read once when cv2 loads: a backstop for any
# format whose header lib.photos.images cannot read before decoding. Set it in the environment
# to raise it together with etl.max_pixels.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_PIXELS))
