"""Answering a caller over its reply channel: at once, and never to nobody.

Every actor that serves requests (the device owners, the batcher) answers on a reply
channel the caller made for that request. An answer must never block the actor (one
slow or departed caller would stall everyone behind it), and a caller who has left
(cancelled, timed out) is no error: its answer is simply dropped. The actors also ask
whether a caller is still there before spending the device on its work.
"""

from __future__ import annotations

from typing import Any

import trio


def caller_gone(reply: trio.MemorySendChannel[Any]) -> bool:
    """True when nobody is left to read the reply (the caller was cancelled)."""
    try:
        return reply.statistics().open_receive_channels == 0
    except trio.ClosedResourceError:
        return True


def answer(reply: trio.MemorySendChannel[Any], message: object) -> bool:
    """Send ``message`` without waiting. False when the caller has gone (or its reply
    channel is full, which only a caller that stopped reading can cause: each request's
    reply channel holds all of its answers)."""
    try:
        reply.send_nowait(message)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
        return False
    return True
