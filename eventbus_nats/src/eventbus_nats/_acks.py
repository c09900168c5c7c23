"""`PubAcks`: JetStream publishes whose acknowledgement, or refusal, comes back as a future.

nats-py's `JetStreamContext.publish_async()` loses every refusal: its reply handler builds the
server's error with `APIError.from_error()`, which raises it instead of returning it (nats-py
2.16), so the future is never completed and looks like a missing acknowledgement. An event the
stream refuses for good (larger than its `max_msg_size`, a full stream that discards new
messages) was then sent again for ever, and the writer stalled behind it. This sends each
message with a reply subject of its own under one inbox subscription per connection, and
completes the future with the PubAck or with the server's error, as the caller reads them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Final

import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

__all__ = ["PubAcks"]

_NO_RESPONDERS: Final = "503"
_ERRORS_BY_CODE: Final[dict[int, type[nats.js.errors.APIError]]] = {
    400: nats.js.errors.BadRequestError,
    404: nats.js.errors.NotFoundError,
    500: nats.js.errors.ServerError,
    503: nats.js.errors.ServiceUnavailableError,
}


class PubAcks:
    """Publishes on one connection at a time; `publish()` returns the acknowledgement's future."""

    def __init__(self) -> None:
        self._nc: Client | None = None
        self._prefix = ""
        self._futures: dict[str, asyncio.Future[api.PubAck]] = {}
        self._next = 0

    async def publish(
        self, nc: Client, subject: str, payload: bytes, headers: dict[str, str]
    ) -> asyncio.Future[api.PubAck]:
        """Queue `payload` on `nc` and return the future of its PubAck (or of the server's
        error: `APIError`, `NoStreamResponseError`).

        Raises:
            nats.errors.MaxPayloadError: larger than the server takes at all.
        """
        if nc is not self._nc:
            await self._subscribe(nc)
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[api.PubAck] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        future.add_done_callback(lambda _: self._futures.pop(token, None))
        try:
            await nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except BaseException:
            future.cancel()
            raise
        return future

    async def _subscribe(self, nc: Client) -> None:
        # A new connection object (the link connected again): its own inbox. Futures of the
        # old one are left to the caller's timeout, as nats-py's own would be.
        self._nc = None
        self._futures.clear()
        prefix = f"_INBOX.eventbus.{uuid.uuid4().hex}."
        await nc.subscribe(prefix + "*", cb=self._on_reply)
        self._nc, self._prefix = nc, prefix

    async def _on_reply(self, msg: Msg) -> None:
        future = self._futures.get(msg.subject[len(self._prefix) :])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get(api.Header.STATUS) == _NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            reply: Any = json.loads(msg.data)
        except ValueError:
            future.set_exception(nats.js.errors.Error(f"an unreadable PubAck: {msg.data[:80]!r}"))
            return
        error = reply.get("error") if isinstance(reply, dict) else None
        if isinstance(error, dict):
            code = error.get("code")
            kind = _ERRORS_BY_CODE.get(code) if isinstance(code, int) else None
            refusal = (kind or nats.js.errors.APIError)(code=code, err_code=error.get("err_code"))
            refusal.description = error.get("description")
            future.set_exception(refusal)
            return
        future.set_result(api.PubAck.from_response(reply))
