"""Every error answers {"error": {"code", "message", "param"}}, naming what to fix."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.headers = headers


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route answers, all in the one error shape."""
    from app.core.schemas import ErrorResponse

    return {status: {"model": ErrorResponse} for status in statuses}


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"no {kind} with id '{ident}'", None)


def invalid(message: str, param: str | None) -> ApiError:
    return ApiError(422, "invalid_request", message, param)


def _body(code: str, message: str, param: str | None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "param": param}}


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # pydantic names union members ("str", "HubDataset"); they are not fields
    parts = [
        p
        for p in parts
        if p not in ("str", "HubDataset", "int", "function-after[_consistent(), Hyperparameters]")
        and not p.startswith(("literal[", "constrained-"))  # `"auto" | a number` members
    ]
    return ".".join(parts) or None


def _first_error(errors: list[Any]) -> Any:
    """The error to report: for a field that takes "auto" or a number, the number's (its
    bounds), not "should be 'auto'"."""
    for error in errors:
        if not any(str(p).startswith("literal[") for p in error.get("loc", ())):
            return error
    return errors[0]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            _body(exc.code, exc.message, exc.param), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        first = _first_error(errors) if errors else {"loc": (), "msg": "invalid request"}
        param = _param(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid request"))
        if first.get("type") == "extra_forbidden":
            message = f"unknown field '{param}'"
        elif param:
            message = f"{param}: {message}"
        return JSONResponse(_body("invalid_request", message, param), status_code=422)

    @app.exception_handler(RedisError)
    async def _store_down(_: Request, exc: RedisError) -> JSONResponse:
        # Nothing was written (or the write is unknown): the client may retry, soon.
        return JSONResponse(
            _body(
                "service_unavailable",
                f"the job store (Redis) is unreachable ({type(exc).__name__}); retry shortly",
                None,
            ),
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            400: "invalid_json",
            401: "unauthorized",
            404: "not_found",
            405: "method_not_allowed",
            413: "file_too_large",
        }
        message = str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in message:
            message = "the request body is not valid JSON"
        return JSONResponse(
            _body(codes.get(exc.status_code, "http_error"), message, None),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
