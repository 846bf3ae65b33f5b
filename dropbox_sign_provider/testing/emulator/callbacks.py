"""
Dropbox Sign's side of events: building a signed event, holding it until it is due, POSTing it to
the callback URL and retrying until the receiver acknowledges it.

What is sent
------------
As Dropbox Sign does: a ``multipart/form-data`` POST with one field, ``json``, holding
``{"event": {"event_time", "event_type", "event_hash", "event_metadata"}, "signature_request": {...}}``
(no ``signature_request`` for ``callback_test``). ``event_hash`` is ``HMAC-SHA256(api key,
event_time + event_type)`` with the emulator's first API key; ``signature_request`` is the request
exactly as ``GET /v3/signature_request/{id}`` answers it at the moment of the event.

Retries, scaled down
--------------------
An attempt is acknowledged only by HTTP 200 with exactly the body ``Hello API Event Received``
(:data:`~dropbox_sign_provider.events.callback.CALLBACK_ACKNOWLEDGEMENT`). Anything else (another status,
another body, no answer within :data:`ATTEMPT_TIMEOUT`) is retried with exponential back-off:
``retry_delay`` seconds, doubling, capped at :data:`MAX_RETRY_DELAY`, for at most ``max_attempts``
attempts. Dropbox Sign keeps retrying for about three days; the emulator's defaults (0.5 s and 8
attempts, about a minute in all) keep the same shape on a test's time scale.

Delivery faults
---------------
:class:`~dropbox_sign_provider.testing.emulator.faults.DeliveryFaults` make delivery misbehave the
ways a receiver must survive: each event *duplicated* (delivered twice, as after a lost
acknowledgement), delivered *out of order* (events emitted within :data:`OUT_OF_ORDER_GATHER` of
each other go newest first), *late* (held before the first attempt) or *forged* (hashed with a key
that is not the account's). ``duplicate``, ``late`` and ``forged`` apply to events emitted while
they are on; ``out_of_order`` to events released while it is on.

Where events may go
-------------------
Anyone who can call ``PUT /v3/account`` chooses the callback URL, so an emulator that POSTed to any
URL would send requests wherever its callers like, from wherever it runs. Unless started with
``allow_remote_callbacks``, it delivers only to loopback: a callback URL must name ``localhost`` or
a loopback address (127.0.0.0/8, ``::1``), which :func:`check_callback_url` checks when the URL is
set and again before each attempt; ``localhost`` is resolved at each attempt and only its loopback
addresses are connected to (:class:`LoopbackResolver`), since a name may resolve elsewhere later.
Redirects are not followed, for the same reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from dropbox_sign_provider.events.callback import CALLBACK_ACKNOWLEDGEMENT, CALLBACK_TEST, event_hash
from dropbox_sign_provider.testing.emulator import clock
from dropbox_sign_provider.testing.emulator.faults import DeliveryFaults

log = logging.getLogger(__name__)

#: Seconds before the first retry, unless the emulator is told otherwise.
DEFAULT_RETRY_DELAY = 0.5
#: Attempts per event (the first one included), unless the emulator is told otherwise.
DEFAULT_MAX_ATTEMPTS = 8
#: The longest wait between two attempts, however many have failed.
MAX_RETRY_DELAY = 30.0
#: Seconds an attempt may take before it counts as unanswered.
ATTEMPT_TIMEOUT = 5.0
#: With ``out_of_order``, events emitted within this many seconds of each other are sent together,
#: newest first: long enough for a test's successive calls, short enough not to slow it.
OUT_OF_ORDER_GATHER = 0.25
#: The one host name a callback URL may name without ``allow_remote_callbacks``.
LOOPBACK_NAME = "localhost"
_ACK = CALLBACK_ACKNOWLEDGEMENT.encode()


def _is_loopback_address(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def _parse_callback_url(url: object, allow_remote: bool) -> yarl.URL:
    """
    The callback URL as aiohttp will read it, checked: the host checked is the one connected to.

    :raises ValueError: naming the URL and what to do.
    """
    try:
        parsed = yarl.URL(url) if isinstance(url, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise ValueError(f"callback_url {url!r} is not an absolute http or https URL")
    host = parsed.raw_host
    if not allow_remote and host.lower() != LOOPBACK_NAME and not _is_loopback_address(host):
        raise ValueError(
            f"callback_url {url!r} is not on loopback: without allow_remote_callbacks the emulator "
            f"delivers events only to {LOOPBACK_NAME} or a loopback address (127.0.0.0/8, ::1), so "
            "that its callers cannot make it send requests to other hosts. Use a receiver on loopback, "
            "or start the emulator with allow_remote_callbacks=True (--allow-remote-callbacks)"
        )
    return parsed


def check_callback_url(url: str | None, *, allow_remote: bool = False) -> str | None:
    """
    The callback URL, checked: ``None``, or an absolute ``http``/``https`` URL whose host is
    ``localhost`` or a loopback address unless ``allow_remote``.

    :param url: the URL, as given.
    :param allow_remote: accept any host (the emulator's ``allow_remote_callbacks``).
    :return: ``url`` unchanged.
    :raises ValueError: naming the URL and what to do.
    """
    if url is None:
        return None
    _parse_callback_url(url, allow_remote)
    return url


class LoopbackResolver(AbstractResolver):
    """
    Resolves through the system (``/etc/hosts`` included), then keeps only loopback addresses.

    This is the delivery-time check of a host name: it sees the very addresses aiohttp connects to,
    so a name that resolves elsewhere than when the URL was set reaches nothing but loopback.
    """

    def __init__(self) -> None:
        self._system = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """
        The loopback addresses ``host`` resolves to.

        :raises OSError: naming the host and its addresses when none is a loopback one; aiohttp
            reports it as a failed connection.
        """
        found = await self._system.resolve(host, port, family)
        kept = [item for item in found if _is_loopback_address(item["host"])]
        if not kept:
            addresses = ", ".join(sorted({item["host"] for item in found})) or "nothing"
            raise OSError(
                f"callback host {host!r} resolves to {addresses}, not to a loopback address: event not "
                "sent. Start the emulator with allow_remote_callbacks=True (--allow-remote-callbacks) "
                "to deliver beyond loopback"
            )
        return kept

    async def close(self) -> None:
        """Release the system resolver."""
        await self._system.close()


class CallbackAttempt(NamedTuple):
    """
    One attempt to deliver an event, as the emulator made it.

    :ivar event_type: e.g. ``"signature_request_all_signed"``.
    :ivar signature_request_id: the request the event is about, ``None`` for ``callback_test``.
    :ivar event_time: the event's ``event_time`` (epoch seconds, a string, as sent).
    :ivar attempt: 1 for the first attempt of a delivery, 2 for its first retry...
    :ivar status: the HTTP status answered, ``0`` when nothing was (refused, reset, timed out).
    :ivar acknowledged: whether the answer was 200 with exactly ``Hello API Event Received``.
    :ivar time: epoch seconds at which the attempt was made.
    """

    event_type: str
    signature_request_id: str | None
    event_time: str
    attempt: int
    status: int
    acknowledged: bool
    time: float


@dataclass
class Delivery:
    """One event on its way to one callback URL."""

    payload: dict[str, Any]
    url: str
    seq: int
    emitted: float
    due: float
    copies: int

    @property
    def event(self) -> dict[str, Any]:
        """The payload's ``event`` object."""
        return self.payload["event"]  # type: ignore[no-any-return]

    @property
    def signature_request_id(self) -> str | None:
        """The id of the request the event is about, if any."""
        request = self.payload.get("signature_request")
        return None if request is None else str(request["signature_request_id"])


def build_event(
    event_type: str,
    api_key: str,
    account_id: str,
    signature_request: dict[str, Any] | None,
    *,
    related_signature_id: str | None = None,
    event_message: str | None = None,
    forged: bool = False,
) -> dict[str, Any]:
    """
    The parsed ``json`` field of a callback, signed.

    :param event_type: one of :data:`~dropbox_sign_provider.events.callback.EVENT_TYPES`.
    :param api_key: the account's API key, the HMAC key.
    :param account_id: the account the event is reported for.
    :param signature_request: the request as ``GET`` answers it, ``None`` for ``callback_test``.
    :param related_signature_id: the signature the event is about, if one.
    :param event_message: why a request was declined, if it was.
    :param forged: sign with a random key instead of ``api_key``.
    """
    event_time = str(int(clock.now()))
    key = f"forged-{secrets.token_hex(16)}" if forged else api_key
    payload: dict[str, Any] = {
        "event": {
            "event_time": event_time,
            "event_type": event_type,
            "event_hash": event_hash(key, event_time, event_type),
            "event_metadata": {
                "related_signature_id": related_signature_id,
                "reported_for_account_id": account_id,
                "reported_for_app_id": None,
                "event_message": event_message,
            },
        }
    }
    if event_type != CALLBACK_TEST:
        payload["signature_request"] = signature_request
    return payload


class CallbackDispatcher:
    """
    Holds events until due and delivers them; records every attempt.

    Its lists are guarded by the emulator's lock (passed in); delivery runs on the emulator's loop.

    :param lock: the emulator's lock.
    :param retry_delay: seconds before the first retry; doubles after each failed attempt.
    :param max_attempts: attempts per delivery, the first one included.
    :param allow_remote: deliver to any host, not only to loopback (``allow_remote_callbacks``).
    :raises ValueError: for a negative delay or fewer than one attempt.
    """

    def __init__(
        self, lock: Any, retry_delay: float, max_attempts: int, *, allow_remote: bool = False
    ) -> None:
        if retry_delay < 0:
            raise ValueError(f"callback_retry_delay must not be negative, got {retry_delay!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"callback_max_attempts must be an int of 1 or more, got {max_attempts!r}")
        self.retry_delay = float(retry_delay)
        self.max_attempts = max_attempts
        self.allow_remote = bool(allow_remote)
        self.faults = DeliveryFaults()
        #: The payloads acknowledged, in the order of their acknowledgement.
        self.acknowledged: list[dict[str, Any]] = []
        #: Every attempt, in the order made.
        self.attempts: list[CallbackAttempt] = []
        self._lock = lock
        self._pending: list[Delivery] = []
        self._seq = itertools.count(1)

    def open_session(self) -> aiohttp.ClientSession:
        """
        The client session deliveries go through; open it in the loop that delivers.

        Without ``allow_remote`` its resolver connects host names to loopback addresses only.
        ``trust_env`` stays off: a proxy from the environment would connect elsewhere than the
        address checked.
        """
        resolver = None if self.allow_remote else LoopbackResolver()
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver), trust_env=False)

    def delay(self, failed: int) -> float:
        """Seconds to wait after the ``failed``-th failed attempt of a delivery."""
        return float(min(self.retry_delay * 2 ** (failed - 1), MAX_RETRY_DELAY))

    def enqueue(self, payload: dict[str, Any], url: str) -> None:
        """Queue an event for ``url``, as the delivery faults in force say. Caller holds the lock."""
        now = clock.monotonic()
        self._pending.append(
            Delivery(
                payload=payload,
                url=url,
                seq=next(self._seq),
                emitted=now,
                due=now + self.faults.late,
                copies=2 if self.faults.duplicate else 1,
            )
        )

    def take_due(self) -> list[Delivery]:
        """The deliveries to start now, in the order to start them. Caller holds the lock."""
        now = clock.monotonic()
        due = [item for item in self._pending if item.due <= now]
        if not due:
            return []
        if self.faults.out_of_order:
            # Wait until the newest has had time to be joined by others, so "together" means something.
            if now - max(item.emitted for item in due) < OUT_OF_ORDER_GATHER:
                return []
            due.sort(key=lambda item: item.seq, reverse=True)
        self._pending = [item for item in self._pending if item not in due]
        return due

    async def deliver(
        self,
        session: aiohttp.ClientSession,
        batch: list[Delivery],
        spawn: Callable[[Any], None],
    ) -> None:
        """
        Make the first attempt of each delivery, one after the other so that the receiver sees them in
        the batch's order; each one not acknowledged goes on retrying in its own task.

        :param session: the emulator's client session.
        :param batch: what :meth:`take_due` released.
        :param spawn: starts a coroutine as a task the emulator cancels when it stops.
        """
        for item in batch:
            for _ in range(item.copies):
                if not await self._attempt(session, item, 1):
                    spawn(self._retry(session, item))

    async def _retry(self, session: aiohttp.ClientSession, item: Delivery) -> None:
        for attempt in range(2, self.max_attempts + 1):
            await asyncio.sleep(self.delay(attempt - 1))
            if await self._attempt(session, item, attempt):
                return
        log.warning(
            "giving up delivering %s for %s after %d attempts",
            item.event["event_type"],
            item.signature_request_id,
            self.max_attempts,
        )

    async def _attempt(self, session: aiohttp.ClientSession, item: Delivery, attempt: int) -> bool:
        started = clock.now()
        status, acknowledged = 0, False
        # Checked again at each attempt, not only when the URL was set: the check is what keeps the
        # emulator from sending requests beyond loopback, so it sits where they are sent.
        try:
            target: yarl.URL | None = _parse_callback_url(item.url, self.allow_remote)
        except ValueError as exc:
            log.warning("callback attempt %d not made: %s", attempt, exc)
            target = None
        if target is not None:
            try:
                # No redirects: a receiver on loopback must not be able to send the event on elsewhere.
                async with session.post(
                    target,
                    data=_multipart(item.payload),
                    timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT),
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    # One byte more than the acknowledgement is enough to tell a longer body apart.
                    body = await response.content.read(len(_ACK) + 1)
                    acknowledged = status == 200 and body == _ACK
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.debug("callback attempt %d to %s failed: %s", attempt, item.url, exc)
        event = item.event
        record = CallbackAttempt(
            event["event_type"],
            item.signature_request_id,
            event["event_time"],
            attempt,
            status,
            acknowledged,
            started,
        )
        with self._lock:
            self.attempts.append(record)
            if acknowledged:
                self.acknowledged.append(item.payload)
        return acknowledged


def _multipart(payload: dict[str, Any]) -> aiohttp.MultipartWriter:
    # Built by hand: aiohttp's FormData sends plain fields url-encoded, not as multipart/form-data.
    writer = aiohttp.MultipartWriter("form-data")
    part = writer.append(json.dumps(payload))
    part.set_content_disposition("form-data", name="json")
    return writer
