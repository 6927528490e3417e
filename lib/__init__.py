"""Image similarity search engine: the library behind the DVC stages and serving.

Every stage script and the serving path import their transforms from here, so the
pipeline and the query path share one implementation of each step.
"""
import os

# TensorFlow's C++ start-up chatter is noise for a command-line user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
