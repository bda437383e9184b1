"""What a channel may do besides `send`: its lifecycle and optional capabilities, as protocols.

A channel needs only `send` (the `Channel` protocol). Everything else sopkit asks of one is
declared here, and sopkit asks with `isinstance(channel, Protocol)`, never by probing names:

- `CheckableFactory`: its factory checks a settings table without the environment (`sopkit
  check` calls it); `TagMirror`: its factory says which of sopkit's tags the channel mirrors
  to the far side (a live run then adds `tag`/`untag` rows for them).
- `Closable`: it holds connections or files; `close()` ends them once it is done.
- `GroupSender`: it sends the sends of one campaign firing in one call.
- `BatchSender`: it takes many messages in one call and makes them durable together (the
  `jsonl` channel: one write and one fsync for the batch).
- `SendResults`: a delivered send is a task someone completes later (a WeCom group-message
  task the owner confirms); the channel says which went out.
- `TransferResults`: a delivered hand-over completes later on the far side; the channel says
  whether the successor has each customer yet.

Every protocol is `runtime_checkable`: a channel has a capability when it has the methods
(and attributes), with no base class and no registration.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from ._base import Channel, Message, Receipt

SendOutcome = Literal["sent", "failed", "waiting"]
"""What became of one delivered send: `sent`, `failed` for good, or `waiting` (not yet)."""


@runtime_checkable
class Closable(Protocol):
    """A channel that holds connections or files: the last step of its life is `close()`."""

    def close(self) -> None:
        """Release what the channel holds; it sends nothing afterwards. Called once."""
        ...


def close_all(channels: Mapping[str, Any]) -> None:
    """The last step of each channel's life: close those that are Closable."""
    for channel in channels.values():
        if isinstance(channel, Closable):
            channel.close()


@runtime_checkable
class CheckableFactory(Protocol):
    """A factory that can check a `[channels.NAME]` table before anything is built.

    `check_config` makes the constructor's settings checks without `env` and without side
    effects (no file opened, no connection), raising ChannelConfigError with `key` (and
    `hint`); `sopkit check` runs it, so it finds what `sopkit run` would refuse. The built-in
    channel classes have it as a class method and call it first in their constructor.
    """

    def check_config(self, name: str, config: Mapping[str, Any]) -> None:
        """Raise ChannelConfigError for any setting the constructor would refuse."""
        ...

    def __call__(self, name: str, config: Mapping[str, Any],
                 env: Mapping[str, str]) -> Channel: ...


@runtime_checkable
class TagMirror(Protocol):
    """A factory whose channels mirror some of sopkit's tags to the far side.

    In a live run, whenever a customer comes to hold one of `mirrored_tags(config)` the outbox
    gets a `tag` row for the channel, and an `untag` row when they stop holding it (rule
    `mirror_tags`); `send` delivers them. The `wecom` channel mirrors the tags its `tag_ids`
    names. Asked of the factory, so that `sopkit dry-run` needs no secrets.
    """

    def mirrored_tags(self, config: Mapping[str, Any]) -> Collection[str]:
        """The tags a channel built from `config` (its playbook table) mirrors."""
        ...


@runtime_checkable
class GroupSender(Protocol):
    """A channel whose far side sends one message to many customers in one call.

    The dispatcher hands it every `send` row of one campaign firing together (their `body`
    holds `firing`) instead of calling `send` for each.
    """

    def send_group(self, messages: list[Message]) -> list[Receipt]:
        """One receipt per message, in order (an exception retries all of them)."""
        ...


@runtime_checkable
class BatchSender(Protocol):
    """A channel that takes a dispatcher's batch in one call and makes it durable at once.

    The dispatcher collects the rows of one pass (one claim of up to `batch` rows) for such a
    channel and calls `send_batch` once with their messages, instead of `send` for each. A
    `delivered` receipt must mean what it means from `send`: the message is durably with the
    channel when the call returns (the `jsonl` channel writes the batch's lines and fsyncs
    the file once). The rows are marked afterwards, all in one store transaction; a crash in
    between sends the batch again (at least once), so the channel should drop keys it
    already has, as `jsonl` does. Campaign group sends (`GroupSender`) go their own way.
    """

    def send_batch(self, messages: list[Message]) -> list[Receipt]:
        """One receipt per message, in order (an exception retries all of them)."""
        ...


@runtime_checkable
class SendResults(Protocol):
    """A channel whose delivered sends are tasks that go out later (someone confirms them).

    Such a channel's receipt carries the task's id as `provider_id` and its sender as
    `data["sender"]`; `sopkit campaign results` asks it what became of each message.
    """

    def send_outcomes(self, provider_id: str, sender: str,
                      messages: Sequence[Message]) -> list[SendOutcome]:
        """For each message of the task `provider_id` of `sender`, in order: whether it went
        out. Raises (any exception) when the far side gives no answer."""
        ...


@dataclass(frozen=True)
class TransferOutcome:
    """Where one hand-over (a `reassign` row) stands on the far side.

    `done` when the successor has the customer; `detail` says the far side's status in words
    (e.g. "2 等待接替 (waiting ...)"), shown by `sopkit handover status`.
    """

    done: bool
    detail: str


@runtime_checkable
class TransferResults(Protocol):
    """A channel whose delivered `reassign` rows complete later on the far side."""

    def transfer_outcomes(self, from_owner: str, to: str,
                          messages: Sequence[Message]) -> list[TransferOutcome]:
        """For each `reassign` message from `from_owner` to `to`, in order: where its
        hand-over stands. Raises (any exception) when the far side gives no answer."""
        ...
