"""Benchmark of the pipeline's stages and of serving (``python -m bench``)."""
