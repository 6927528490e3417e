"""Hard edges of the service: the request-size limit and one-line JSON errors.

Every refused request gets a 4xx status and a body ``{"error": "one line"}``:
a user error (a bad image) 400, an unknown name or a folder without images 404, a
method the path does not take 405 (with ``Allow``, RFC 9110), a body over the limit
413, a bad parameter 422. Anything else is a bug: a 500, with its traceback in the log.
"""
import logging
from typing import Any, Awaitable, Callable, Dict, MutableMapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from lib.errors import NotInCollectionError, one_line, UserError

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")


def error_response(status: int, message: str) -> JSONResponse:
    """``{"error": message}`` with a status code; the message is made one line."""
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before it is read.

    A declared ``Content-Length`` over the limit is answered at once, without reading
    the body. A body without one (chunked) is counted as it streams in: at the first
    chunk past the limit the 413 is sent, the application sees the client as gone,
    and nothing it answers afterwards is sent.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int):
        self.app = app
        self.limit = limit

    def _too_large(self) -> JSONResponse:
        return error_response(413, f"request body over the limit of {self.limit} bytes "
                                   "(service.max_upload_bytes)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large()(scope, receive, send)
            return
        state = {"received": 0, "started": False, "refused": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.limit:
                    if not state["started"]:
                        state["refused"] = True
                        await self._too_large()(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return                           # the 413 has been sent already
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


def _validation_message(err: RequestValidationError) -> str:
    """The first validation problem as ``parameter: what is wrong``."""
    problems = err.errors()
    if not problems:
        return "invalid request"
    first: Dict[str, Any] = problems[0]
    where = [str(part) for part in first.get("loc", ()) if part not in ("query", "body",
                                                                        "path")]
    return f"{'.'.join(where) or 'request'}: {first.get('msg', 'invalid')}"


def allowed_methods(request: Request) -> str:
    """The ``Allow`` value of a request's path: every method some route takes there (a
    mounted static folder takes GET and HEAD)."""
    # A mount the request went through set its own root path: match from the app's.
    scope = {**request.scope, "root_path": request.scope.get(
        "app_root_path", request.scope.get("root_path", ""))}
    allowed = set()
    for route in request.app.router.routes:
        if isinstance(route, Mount):
            if route.matches(scope)[0] != Match.NONE:
                allowed |= {"GET", "HEAD"}
            continue
        allowed |= {method for method in _METHODS
                    if route.matches({**scope, "method": method})[0] == Match.FULL}
    return ", ".join(sorted(allowed))


def install(app: FastAPI, max_body: int) -> None:
    """Adds the body limit and the one-line JSON error handlers to ``app``."""

    async def user_error(_: Request, err: Exception) -> JSONResponse:
        return error_response(404 if isinstance(err, NotInCollectionError) else 400,
                              one_line(err))

    async def http_error(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, StarletteHTTPException)
        response = error_response(err.status_code, str(err.detail))
        response.headers.update(err.headers or {})
        if err.status_code == 405:
            response.headers["Allow"] = allowed_methods(request)
        return response

    async def validation_error(_: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        return error_response(422, _validation_message(err))

    app.add_exception_handler(UserError, user_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(BodyLimit, limit=max_body)
