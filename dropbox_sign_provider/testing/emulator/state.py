"""
The emulator's state behind its one lock: the signature requests, the bulk send jobs, the rate
window, the faults in force, the odd answers waiting, the callback URL and the callback dispatcher;
and the operations on them that the emulator's Python methods, its HTTP routes and its server
share, each taking the lock.

The settings are not kept here: they are the emulator's plain attributes, which a test may change
while it serves, so they are read (through :class:`Settings`) at each use.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from dropbox_sign_provider.events.callback import CALLBACK_TEST
from dropbox_sign_provider.testing.emulator.bulk_send import BulkSendJobs
from dropbox_sign_provider.testing.emulator.callbacks import (
    CallbackAttempt,
    CallbackDispatcher,
    Delivery,
    build_event,
    check_callback_url,
)
from dropbox_sign_provider.testing.emulator.faults import (
    DeliveryFaults,
    FaultPlan,
    Faults,
    OddAnswer,
    OddAnswers,
)
from dropbox_sign_provider.testing.emulator.oauth import DEFAULT_TOKEN_LIFETIME, OAuthApps
from dropbox_sign_provider.testing.emulator.rate import RateWindow
from dropbox_sign_provider.testing.emulator.store import Record, SignatureRequestStore, render


class LoggedRequest(NamedTuple):
    """
    One ``/v3`` call as the emulator saw it.

    :ivar method: HTTP method, e.g. ``"POST"``.
    :ivar path: full URL path without the query string, e.g. ``"/v3/signature_request/cancel/<id>"``.
    :ivar status: HTTP status answered, ``0`` when the connection was dropped on purpose.
    :ivar time: epoch seconds at which the call arrived.
    :ivar user_agent: the caller's ``User-Agent`` header, ``""`` when it sent none. It tells the
        hook's two clients apart (``python-requests`` on workers, ``aiohttp`` on the triggerer)
        when calls of both overlap in time.
    """

    method: str
    path: str
    status: int
    time: float
    user_agent: str = ""


class Settings(Protocol):
    """The settings of an emulator, as its state, routes and server read them: at each use."""

    host: str
    allow_remote: bool
    api_keys: tuple[str, ...]
    access_tokens: tuple[str, ...]
    rate_limit: int
    high_tier_rate_limit: int
    window_seconds: float
    cancel_delay: float
    account_id: str
    email: str
    locale: str
    requests_log: list[LoggedRequest]

    @property
    def admin_token(self) -> str | None:
        """The token admin calls must carry, or ``None`` when the admin API is open."""


class EmulatorState:
    """
    What an emulator's methods, routes and server share; :attr:`lock` guards every part of it.

    :param settings: the emulator's settings, read at each use.
    :param callback_retry_delay: seconds before an event's first retry, doubling.
    :param callback_max_attempts: attempts per event delivery, the first one included.
    :param allow_remote_callbacks: deliver events to any callback URL, not only to loopback.
    :param oauth: the registered OAuth apps and their tokens (none registered by default).
    :raises ValueError: for a negative retry delay or fewer than one attempt.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        callback_retry_delay: float,
        callback_max_attempts: int,
        allow_remote_callbacks: bool,
        oauth: OAuthApps | None = None,
    ) -> None:
        self.settings = settings
        self.oauth = oauth or OAuthApps(None, DEFAULT_TOKEN_LIFETIME, False, True)
        self.lock = threading.RLock()
        self.dispatcher = CallbackDispatcher(
            self.lock, callback_retry_delay, callback_max_attempts, allow_remote=allow_remote_callbacks
        )
        #: Where events are POSTed, ``None`` for nowhere; set through :meth:`set_callback_url`.
        self.callback_url: str | None = None
        self.store = SignatureRequestStore(on_event=self._emit)
        self.bulk_send_jobs = BulkSendJobs(self.store)
        self.rate = RateWindow()
        #: The window of the "high tier" endpoints (``POST /signature_request/send``), counted apart.
        self.high_tier_rate = RateWindow()
        self.faults = Faults()
        self.rng = random.Random()
        self.odd_answers = OddAnswers()

    # -- the signature requests --------------------------------------------------------------------

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Store a request from its fields; see :meth:`DropboxSignEmulator.create_signature_request`."""
        with self.lock:
            return self.store.create(fields, self.settings.email)

    def create_bulk_send_job(
        self, count: int, fields: dict[str, Any], bulk_send_job_id: str | None
    ) -> dict[str, Any]:
        """Store a bulk send job and its requests; see :meth:`DropboxSignEmulator.create_bulk_send_job`."""
        with self.lock:
            return self.bulk_send_jobs.create(count, fields, self.settings.email, bulk_send_job_id)

    def state_of(self, request_id: str) -> str:
        """Where a stored request is in its life; see :meth:`DropboxSignEmulator.get_state`."""
        with self.lock:
            return self.store.state(self.store.get(request_id))

    def cancel_calls(self, request_id: str) -> int:
        """The cancel calls for an id that reached the API."""
        with self.lock:
            return self.store.cancel_calls.get(request_id, 0)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every stored request, each with its ``state``."""
        with self.lock:
            return [render(rec) | {"state": self.store.state(rec)} for rec in self.store.records.values()]

    def send(self, fields: Sequence[tuple[str, Any]]) -> dict[str, Any]:
        """``POST /signature_request/send`` with its form's fields; the request as ``GET`` answers it."""
        with self.lock:
            return render(self.store.send(fields, self.settings.email))

    def sign(self, request_id: str, signer: int | None = None) -> dict[str, Any]:
        """Have one signer (by index), or all still to sign, sign; the request as ``GET`` now answers it."""
        with self.lock:
            return render(self.store.sign(request_id, signer))

    def decline(self, request_id: str, reason: str | None) -> dict[str, Any]:
        """Have the first signer still to sign decline; the request as ``GET`` now answers it."""
        with self.lock:
            return render(self.store.decline(request_id, reason))

    def expire(self, request_id: str) -> dict[str, Any]:
        """Make the request expire now; the request as ``GET`` now answers it."""
        with self.lock:
            return render(self.store.expire(request_id))

    def complete_due(self) -> list[Delivery]:
        """Complete the cancellations now due (their events with them); take the deliveries now due."""
        with self.lock:
            for record in self.store.records.values():
                self.store.state(record)
            return self.dispatcher.take_due()

    # -- events ------------------------------------------------------------------------------------

    def set_callback_url(self, url: str | None) -> None:
        """
        Set where events are POSTed, ``None`` for nowhere.

        :raises ValueError: for a URL that is not an http(s) one, or not on loopback without
            ``allow_remote_callbacks``.
        """
        checked = check_callback_url(url, allow_remote=self.dispatcher.allow_remote)
        with self.lock:
            self.callback_url = checked

    def send_callback_test(self) -> dict[str, Any]:
        """
        Send a ``callback_test`` event; the event as sent.

        :raises RuntimeError: when no callback URL is set.
        """
        with self.lock:
            url = self.callback_url
            if url is None:
                raise RuntimeError(
                    "no callback_url is set: pass callback_url=, assign emulator.callback_url or "
                    "PUT /v3/account with a callback_url first"
                )
            payload = self._event(CALLBACK_TEST, None)
            self.dispatcher.enqueue(payload, url)
            return payload

    def attempts(self) -> list[CallbackAttempt]:
        """Every delivery attempt, in the order made (a copy)."""
        with self.lock:
            return list(self.dispatcher.attempts)

    def acknowledged(self) -> list[dict[str, Any]]:
        """The events the receiver acknowledged, in that order (a copy)."""
        with self.lock:
            return list(self.dispatcher.acknowledged)

    def _emit(self, event_type: str, record: Record, related_signature_id: str | None) -> None:
        """Send the event a request's transition caused. Caller holds the lock."""
        url = self.callback_url
        # Another sender's request reports to that sender's callback URL, not to this account's.
        if url is None or record.forbidden:
            return
        self.dispatcher.enqueue(self._event(event_type, record, related_signature_id), url)

    def _event(self, event_type: str, record: Record | None, related: str | None = None) -> dict[str, Any]:
        body = None if record is None else render(record)
        message = None
        if body is not None and event_type == "signature_request_declined":
            declined = next(s for s in body["signatures"] if s["signature_id"] == related)
            message = declined["decline_reason"]
        api_keys = self.settings.api_keys
        return build_event(
            event_type,
            api_keys[0] if api_keys else "",
            self.settings.account_id,
            body,
            related_signature_id=related,
            event_message=message,
            forged=self.dispatcher.faults.forged,
        )

    # -- faults ------------------------------------------------------------------------------------

    def set_faults(self, faults: Faults) -> None:
        """Put checked API faults in force, the fault random generator seeded with their ``seed``."""
        with self.lock:
            self.faults = faults
            self.rng = random.Random(faults.seed)

    def fault_settings(self) -> dict[str, Any]:
        """The API faults in force, as keyword arguments of :meth:`DropboxSignEmulator.set_fault`."""
        with self.lock:
            return self.faults.as_dict()

    def set_delivery_faults(self, faults: DeliveryFaults) -> None:
        """Put checked delivery faults in force."""
        with self.lock:
            self.dispatcher.faults = faults

    def delivery_fault_settings(self) -> dict[str, Any]:
        """The delivery faults in force, as keyword arguments of ``set_delivery_fault``."""
        with self.lock:
            return self.dispatcher.faults.as_dict()

    def clear_faults(self) -> None:
        """Switch every injected fault off, odd answers and delivery faults included."""
        with self.lock:
            self.faults = Faults()
            self.odd_answers.clear()
            self.dispatcher.faults = DeliveryFaults()

    def add_odd_answers(self, answers: Sequence[OddAnswer]) -> None:
        """
        Queue odd answers for the next matching calls.

        :raises ValueError: for a ``times`` below 1 or a status outside 100 to 599.
        """
        with self.lock:
            self.odd_answers.add(answers)

    def plan(self) -> FaultPlan:
        """Draw what the API faults do to one call."""
        with self.lock:
            return self.faults.plan(self.rng)

    def take_odd_answer(self, method: str, path: str) -> OddAnswer | None:
        """The odd answer for a call, one use spent, or ``None``."""
        with self.lock:
            return self.odd_answers.take(method, path)

    # -- the rate window and the log ---------------------------------------------------------------

    def peek_rate_headers(self) -> dict[str, str]:
        """The rate-limit headers of an answer that spends nothing (401, 429, injected faults)."""
        with self.lock:
            return self.rate.peek(self.settings.rate_limit, self.settings.window_seconds)

    def log(self, entry: LoggedRequest) -> None:
        """Add a ``/v3`` call to the emulator's ``requests_log``."""
        with self.lock:
            self.settings.requests_log.append(entry)

    def log_entries(self) -> list[LoggedRequest]:
        """The logged ``/v3`` calls, in arrival order (a copy)."""
        with self.lock:
            return list(self.settings.requests_log)

    def clear_log(self) -> None:
        """Forget every logged ``/v3`` call."""
        with self.lock:
            self.settings.requests_log.clear()
