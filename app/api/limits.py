"""Upload size enforced while the body streams in, answered in the API's JSON error format.

Starlette's own body limit answers in plain text; this one counts the same way (declared
Content-Length first, then bytes as they arrive) so a huge or chunked upload is cut off early,
without being read to the end or spooled to disk.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class UploadTooLarge(Exception):
    pass


class UploadLimitMiddleware:
    def __init__(self, app: ASGIApp, path: str, max_bytes: int) -> None:
        self.app, self.path, self.max_bytes = app, path, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise UploadTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except UploadTooLarge:
            if started:
                raise
            await self._reject(send)
        except BaseExceptionGroup as group:  # anyio task groups wrap it
            if started or not group.subgroup(UploadTooLarge):
                raise
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "file_too_large",
                    "message": f"the upload is larger than the limit of {self.max_bytes} bytes",
                    "param": "file",
                }
            }
        ).encode()
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
