"""The OpenAPI schema as the service answers: every status of every operation, and its body.

FastAPI documents each route's answer and a 422 of its own shape (``{"detail": [...]}``),
which this service never sends. Here:

- :class:`ErrorBody` is the body of every refusal, ``{"error": "one line"}``
  (:mod:`lib.service.limits` writes them);
- :func:`errors` gives a route's refusals for its ``responses``;
- :func:`install_schema` adjusts the generated schema once: every operation gets the
  403 of the Host and Origin checks (and, with a token, the 401 and the bearer scheme,
  so that ``/docs`` offers an Authorize button), every 422 the error body, and an
  optional query parameter its plain type (left out, not ``null``, when not given).

``tests/system/test_service_contract.py`` holds the service to this schema with
Schemathesis.
"""
from typing import Any, Dict

from fastapi import FastAPI
from pydantic import BaseModel, Field

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                                "schema": {"type": "integer", "minimum": 1}}}
# What each refusal means where a route does not say more.
REASONS = {
    400: "the upload is not a usable image (empty, truncated, not an image, over "
         "etl.max_pixels), or the form cannot be parsed",
    401: "missing or wrong token (the service was started with --token): send "
         "Authorization: Bearer TOKEN",
    403: "Host not served here, or a cross-origin request (Origin or Sec-Fetch-Site)",
    404: "not in the collection",
    409: "the new version was refused; the old one keeps answering",
    413: "request body over service.max_upload_bytes",
    422: "a parameter is missing or not allowed (named in the message)",
    429: "one is running already: retry after Retry-After seconds",
    503: "the bytes the version answers from changed since they were verified",
}


class ErrorBody(BaseModel):
    """A refused request."""

    error: str = Field(description="what was wrong and what to do, on one line")


def errors(*statuses: int, **reasons: str) -> Dict[int, Dict[str, Any]]:
    """``responses`` entries for a route's refusals.

    Args:
        *statuses: The statuses it may answer besides 200 (and the 403 every route has).
        **reasons: A description by status (``s404="..."``) where the route says more
            than :data:`REASONS`.
    """
    answers: Dict[int, Dict[str, Any]] = {}
    for status in statuses:
        answer: Dict[str, Any] = {"model": ErrorBody,
                                  "description": reasons.get(f"s{status}", REASONS[status])}
        if status == 429:
            answer["headers"] = _RETRY_AFTER
        answers[status] = answer
    return answers


def _plain_parameter(parameter: Dict[str, Any]) -> None:
    """An optional parameter typed ``X or null`` becomes ``X``: a query string has no null."""
    schema = parameter.get("schema", {})
    options = schema.get("anyOf")
    if parameter.get("required") or not isinstance(options, list):
        return
    kept = [option for option in options if option != {"type": "null"}]
    if len(kept) == 1 and len(options) == 2:
        del schema["anyOf"]
        schema.update(kept[0])


def adjust(schema: Dict[str, Any], token: bool) -> Dict[str, Any]:
    """The adjustments of :func:`install_schema`, made in place on a generated schema."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {"description": REASONS[422],
                                    "content": {"application/json": {"schema": ERROR_REF}}}
            responses.setdefault("403", {"description": REASONS[403],
                                         "content": {"application/json": {"schema": ERROR_REF}}})
            if token:
                responses.setdefault("401", {
                    "description": REASONS[401],
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": ERROR_REF}}})
            for parameter in operation.get("parameters", ()):
                _plain_parameter(parameter)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    if "ErrorBody" not in components:
        components["ErrorBody"] = ErrorBody.model_json_schema()
    if token:
        schema["components"].setdefault("securitySchemes", {})["bearer"] = {
            "type": "http", "scheme": "bearer"}
        schema["security"] = [{"bearer": []}]
    return schema


def install_schema(app: FastAPI, token: bool) -> None:
    """Makes ``app``'s OpenAPI schema (``/openapi.json``, ``/docs``) say what it answers.

    Args:
        app: With every route added.
        token: Whether the service needs a bearer token (then every operation may 401).
    """
    generate = app.openapi

    def openapi() -> Dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = adjust(generate(), token)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
