"""The resident search service: ``python stages/serve.py --http``.

- :mod:`lib.service.engines`: loads the pinned engine, and swaps in a new version
  (loaded and verified beside the one answering, one reload at a time) on request or
  when ``dvc.lock`` changes; re-hashes the bytes it answers from on request.
- :mod:`lib.service.batching`: embeds queries from concurrent requests in batches,
  on one worker thread, off the event loop.
- :mod:`lib.service.limits`: request-size limit and one-line JSON errors.
- :mod:`lib.service.access`: who may call it (Host and Origin checks, the bearer
  token) and the access log.
- :mod:`lib.service.app`: the FastAPI application (health, version, reload, the web
  page in ``static/``); :mod:`lib.service.search` (search with scope, cutoff and paging;
  thumbnails), :mod:`lib.service.duplicates` (the near-duplicate groups) and
  :mod:`lib.service.openapi` (the schema: every status and error body).
- :mod:`lib.service.knobs`: the retrieval knobs the version serves, and their preset.
- :mod:`lib.service.server`: binds the socket and runs uvicorn.
"""


def serve_http(*args, **kwargs):
    """Runs the service (:func:`lib.service.server.serve_http`); FastAPI loads here."""
    from lib.service.server import serve_http as run  # pylint: disable=import-outside-toplevel
    return run(*args, **kwargs)
