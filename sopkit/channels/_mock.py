"""`MockChannel(handler)`: a channel whose sends are a plain function (as httpx.MockTransport)."""

from __future__ import annotations

from collections.abc import Callable

from sopkit._errors import SopkitError

from ._base import Message, Receipt


class MockChannel:
    """A channel that answers each message with `handler(message)`, for testing what sits
    around a channel (a dispatcher, a host's outbox) without a far side.

    The handler decides everything, as a handler of `httpx.MockTransport` does: it returns
    the Receipt (delivered, retry, failed, disable), and whatever it raises escapes `send`
    as a channel's own error would (the dispatcher retries the row). It can record the
    messages it is given. `close()` ends the channel's life: `closed` turns true and a later
    `send` raises SopkitError.

    >>> seen = []
    >>> def handler(message):
    ...     seen.append(message.key)
    ...     if message.contact.get("phone") is None:
    ...         return Receipt.failed("no phone number")
    ...     return Receipt.delivered(provider_id=f"sms-{len(seen)}")
    >>> channel = MockChannel(handler, name="sms")
    """

    def __init__(self, handler: Callable[[Message], Receipt], *, name: str = "mock") -> None:
        self.handler = handler
        self.name = name
        self.closed = False

    def send(self, message: Message) -> Receipt:
        """The handler's answer to `message` (its exceptions pass through)."""
        if self.closed:
            raise SopkitError(f"channel '{self.name}' is closed; it sends nothing more")
        return self.handler(message)

    def close(self) -> None:
        """Mark the channel closed (the last step of a channel's life)."""
        self.closed = True

    def __repr__(self) -> str:
        return f"MockChannel({self.handler!r}, name={self.name!r})"
