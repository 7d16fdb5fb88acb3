"""The message channel of a live session: numbered, checked and (once authenticated) sealed
messages over a `Link`, and the ``salesmgr_sync_event`` calls that report its progress."""

from __future__ import annotations

import time
from typing import Any, TypeVar, cast

from salesmgr.errors import PeerError, ProtocolError, SalesmgrError, SyncError
from salesmgr.plugin.interfaces import Link
from salesmgr.plugin.manager import Registry
from salesmgr.sync.wire.protocol import Error, Message, build, parse

DEFAULT_TIMEOUT = 30.0  # seconds to wait for the other side, unless told otherwise
M = TypeVar("M", bound=Message)


class Events:
    """Calls the ``salesmgr_sync_event`` hook with this end's name and the session's mode."""

    def __init__(self, registry: Registry, side: str) -> None:
        self.registry = registry
        self.side = side
        self.mode = ""

    def __call__(self, stage: str, **info: Any) -> None:
        self.registry.hook.salesmgr_sync_event(
            stage=stage, info={"side": self.side, "mode": self.mode, **info}
        )


class Channel:
    """Numbered, checked (and after authentication sealed) messages over a Link."""

    def __init__(self, link: Link, *, peer: str, timeout: float) -> None:
        self.link = link
        self.peer = peer
        self.timeout = timeout
        self.key: bytes | None = None
        self.sent = 0
        self.expected = 0
        self.peer_stopped = False

    def send(self, message: Message) -> None:
        self.link.send(build(message, self.sent, self.key))
        self.sent += 1

    def receive_any(self, *expected: type[Message], timeout: float | None = None) -> Message:
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        left = wait  # the whole timeout, unless duplicates used some of it
        while True:
            if left <= 0:
                raise SyncError(f"no answer from the {self.peer} within {wait:g} s")
            received = parse(self.link.receive(left), self.key)
            left = deadline - time.monotonic()
            message = received.message
            if isinstance(message, Error):
                self.peer_stopped = True
                raise PeerError(self.peer, message.code, message.text)
            if received.seq < self.expected:
                continue  # delivered twice: it was handled the first time
            if received.seq > self.expected:
                raise ProtocolError(
                    f"message {self.expected} from the {self.peer} was lost "
                    f"(message {received.seq} came next)"
                )
            self.expected += 1
            if self.key is not None and not received.sealed:
                raise ProtocolError(
                    f"an unauthenticated {message.type_name} message arrived inside the session"
                )
            if not isinstance(message, expected):
                wanted = " or ".join(m.TYPE.name for m in expected)
                raise ProtocolError(
                    f"unexpected {message.type_name} message from the {self.peer} "
                    f"(expected {wanted})"
                )
            return message

    def receive(self, kind: type[M], timeout: float | None = None) -> M:
        return cast(M, self.receive_any(kind, timeout=timeout))

    def fail(self, error: SalesmgrError) -> None:
        """Tell the peer why this end stops, if the link still carries anything.

        A peer that never sent a byte is told nothing: it may not even have finished setting
        up its link (a TLS handshake never started), and waiting to write to it would hold
        this end for nothing."""
        if self.peer_stopped or not self.link.bytes_received:
            return
        text = getattr(error, "peer_text", None) or str(error)
        try:
            self.send(Error(int(error.wire_code), text))
        except SyncError:
            pass  # the link is gone: the peer will notice that on its own
