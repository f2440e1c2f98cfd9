"""Body size limits on every request, enforced while the body streams in and before anything
reads it (so before authentication), answered in the API's JSON error format.

Uploads (POST /v1/files) get their own limit; every other body (job submissions are a few KB)
gets FINETUNE_MAX_REQUEST_BYTES. The declared Content-Length is checked first, then bytes as
they arrive, so a huge or chunked body is cut off early: without this, FastAPI reads a whole
JSON body into memory before a dependency (the API key check) or validation can refuse it.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class UploadTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, upload_path: str, upload_max_bytes: int, max_bytes: int
    ) -> None:
        self.app, self.upload_path = app, upload_path
        self.upload_max_bytes, self.default_max_bytes = upload_max_bytes, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and scope["path"] == self.upload_path
        limit = self.upload_max_bytes if upload else self.default_max_bytes
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._reject(send, upload, limit)
            return
        received = 0
        started = over = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise UploadTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if over:
                # The app turned our exception into an answer of its own (FastAPI answers 400
                # for any error while reading a JSON body): ours replaces it.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(send, upload, limit)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
            if over and not started:
                await self._reject(send, upload, limit)
        except UploadTooLarge:
            if started:
                raise
            await self._reject(send, upload, limit)
        except BaseExceptionGroup as group:  # anyio task groups wrap it
            if started or not group.subgroup(UploadTooLarge):
                raise
            await self._reject(send, upload, limit)

    async def _reject(self, send: Send, upload: bool, limit: int) -> None:
        error = (
            {
                "code": "file_too_large",
                "message": f"the upload is larger than the limit of {limit} bytes",
                "param": "file",
            }
            if upload
            else {
                "code": "request_too_large",
                "message": f"the request body is larger than the limit of {limit} bytes",
                "param": None,
            }
        )
        body = json.dumps({"error": error}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
