"""
Dropbox Sign's callback receiver: ``POST <api-server>/dropbox-sign/callback``.

Mounted on Airflow's API server by :class:`DropboxSignCallbacksPlugin` (the package's
``airflow.plugins`` entry point). Airflow does not authenticate a plugin's endpoints: the event's
``event_hash``, keyed with the API key of one of the accounts in ``[dropbox_sign]
callback_conn_ids``, is the only authentication, and nothing is recorded before it verifies.

==========================================  =======  ===========================================
Request                                     Status   Recorded
==========================================  =======  ===========================================
body over ``MAX_CALLBACK_BYTES``            413      nothing (the body is not read past it)
body not read in ``BODY_READ_TIMEOUT``      408      nothing (the connection is closed)
not a form                                  415      nothing
no ``json`` field, bad JSON, event or id    400      nothing
no configured account has an API key        503      nothing
hash verifies for no configured account     403      nothing
``callback_test``, verified                 200      nothing
too old or from the future, verified        200      nothing (logged once per event time, counted)
a type unknown to this release, verified    200      nothing
a payload larger than Dropbox Sign sends    200      nothing (logged once per event time, counted)
over what one event time may record         200      nothing (logged once per event time, counted)
an event recorded before, verified          200      nothing (a redelivery)
a new event, verified                       200      board entry and asset event, for each
                                                     configured connection whose key verifies it
database failure while recording            503      nothing (Dropbox Sign delivers it again)
==========================================  =======  ===========================================

A verified event that is not recorded is still answered ``200 Hello API Event Received``: any other
answer makes Dropbox Sign deliver it again for about three days. "Too old" is older than Dropbox
Sign's retry horizon plus clock skew (:data:`~dropbox_sign_provider.events.callback.MAX_EVENT_AGE_SECONDS`);
"from the future" is ahead of this machine's clock by more than the skew. Every refusal is one log
line, never a traceback; :func:`refused_events` counts the acknowledged ones.

Importing this module reads no configuration, connection or database: every process that loads
Airflow's plugins imports it, not only the API server.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import Counter

import anyio
from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message, Receive

from dropbox_sign_provider import CONFIG_SECTION
from dropbox_sign_provider.cancellation.ids import shown
from dropbox_sign_provider.events.accounts import (
    CALLBACK_CONN_IDS_OPTION,
    callback_accounts,
    verifying_accounts,
)
from dropbox_sign_provider.events.callback import (
    CALLBACK_ACKNOWLEDGEMENT,
    CALLBACK_TEST,
    MAX_CALLBACK_BYTES,
    CallbackEvent,
    freshness_problem,
    parse_callback,
)
from dropbox_sign_provider.events.recording import Recorded, record_event

log = logging.getLogger(__name__)

#: Where the plugin mounts the app on the API server.
URL_PREFIX = "/dropbox-sign"
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
#: Seconds a client has to send its whole body. Dropbox Sign posts a few kilobytes at once; a client
#: that trickles its body would otherwise hold a connection and a buffer for as long as it likes.
BODY_READ_TIMEOUT = 10.0
#: Event times whose refusal was logged, kept per process; beyond this many, the set starts anew
#: (a few more log lines, never unbounded memory).
_MAX_LOGGED_REFUSALS = 10_000


class NotRecorded(str, enum.Enum):
    """Why a verified event was acknowledged without being recorded."""

    #: older than Dropbox Sign's retry horizon plus clock skew
    TOO_OLD = "too_old"
    #: ahead of this machine's clock by more than the skew
    FROM_THE_FUTURE = "from_the_future"
    #: a title or metadata larger than Dropbox Sign allows
    PAYLOAD_TOO_LARGE = "payload_too_large"
    #: its event time already recorded as many requests or bytes as one event time may
    OVER_LIMIT = "over_limit"


class _Refusals:
    # One per API server process; requests are served by several threads.
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[NotRecorded] = Counter()
        self.logged: set[tuple[NotRecorded, str, str]] = set()

    def count(self, reason: NotRecorded, event: CallbackEvent, conn_id: str | None, detail: str) -> None:
        # Logged once per event type and time: a replay flood of one captured event, with a new
        # request id each time, is one log line, and the count says how many followed.
        seen = (reason, event.event_type, event.event_time)
        with self.lock:
            self.counts[reason] += 1
            total = self.counts[reason]
            first = seen not in self.logged
            if first:
                if len(self.logged) >= _MAX_LOGGED_REFUSALS:
                    self.logged.clear()
                self.logged.add(seen)
        if first:
            log.warning(
                "Dropbox Sign event %s/%s%s acknowledged and not recorded (%s): %s; %d so far",
                event.event_type,
                event.event_time,
                f" of {conn_id!r}" if conn_id else "",
                reason.value,
                detail,
                total,
            )


_refusals = _Refusals()


def refused_events() -> dict[str, int]:
    """How many verified events this process acknowledged without recording, by reason."""
    with _refusals.lock:
        return {reason.value: n for reason, n in _refusals.counts.items()}


class CallbackRefused(Exception):
    """A callback answered with an error and recorded nowhere."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail

    def response(self) -> Response:
        # A body not read to its end leaves the connection unusable for a next request.
        headers = {"connection": "close"} if self.status_code in (408, 413) else None
        return JSONResponse({"detail": self.detail}, status_code=self.status_code, headers=headers)


app = FastAPI(
    title="Dropbox Sign callbacks",
    description="Receives Dropbox Sign's callback events and records them in Airflow.",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


@app.post("/callback", response_class=PlainTextResponse)
async def receive_callback(request: Request) -> Response:
    """Verify one callback event and record it once; see the module's table for the answers."""
    try:
        event = parse_callback(await _json_field(request))
    except ValueError as exc:
        return _refused(CallbackRefused(400, str(exc)))
    except CallbackRefused as refused:
        return _refused(refused)

    accounts = await run_in_threadpool(callback_accounts)
    if not accounts:
        return CallbackRefused(
            503,
            f"no connection in [{CONFIG_SECTION}] {CALLBACK_CONN_IDS_OPTION} can verify events: "
            "each must be a dropbox_sign connection with the account's API key as its password "
            "(the API server's log says what is wrong with each)",
        ).response()
    conn_ids = verifying_accounts(event, accounts)
    if not conn_ids:
        log.warning("Dropbox Sign callback refused: event_hash does not verify (%s)", event.event_type)
        return CallbackRefused(403, "event_hash does not verify for any configured account").response()
    if event.event_type == CALLBACK_TEST:
        return PlainTextResponse(CALLBACK_ACKNOWLEDGEMENT)
    now = time.time()
    stale = freshness_problem(event.event_time, now)
    if stale is not None:
        reason = NotRecorded.TOO_OLD if int(event.event_time) < now else NotRecorded.FROM_THE_FUTURE
        _refusals.count(reason, event, None, stale)
        return PlainTextResponse(CALLBACK_ACKNOWLEDGEMENT)
    if not event.known:
        log.info(
            "Dropbox Sign event type %r is not known to this provider; acknowledged only", event.event_type
        )
        return PlainTextResponse(CALLBACK_ACKNOWLEDGEMENT)
    too_large = event.payload_problem()
    if too_large is not None:
        _refusals.count(NotRecorded.PAYLOAD_TOO_LARGE, event, None, too_large)
        return PlainTextResponse(CALLBACK_ACKNOWLEDGEMENT)
    for conn_id in conn_ids:
        failure = await _record(event, conn_id, now)
        if failure is not None:
            # The connections recorded before this one see a redelivery next time.
            return failure
    return PlainTextResponse(CALLBACK_ACKNOWLEDGEMENT)


def _refused(refused: CallbackRefused) -> Response:
    # One line, never a traceback: anyone can post anything here.
    log.warning("Dropbox Sign callback refused (%d): %s", refused.status_code, refused.detail)
    return refused.response()


async def _record(event: CallbackEvent, conn_id: str, now: float) -> Response | None:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        recorded = await run_in_threadpool(record_event, event, conn_id, now)
    except SQLAlchemyError:
        log.exception("Dropbox Sign event %s of %r could not be recorded", event.key, conn_id)
        return CallbackRefused(
            503, "the event could not be recorded now; Dropbox Sign will deliver it again"
        ).response()
    if recorded is Recorded.OVER_LIMIT:
        _refusals.count(
            NotRecorded.OVER_LIMIT,
            event,
            conn_id,
            "its event time recorded as many requests or bytes as one event time may",
        )
    else:
        log.info("Dropbox Sign event %s of %r: %s", event.key, conn_id, recorded.value)
    return None


async def _json_field(request: Request) -> str | bytes:
    body = await _read_body(request)
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in _FORMS:
        raise CallbackRefused(
            415, f"expected a multipart/form-data body with a json field, not {media_type or 'none'!r}"
        )
    # The form is parsed from the body already read and measured, never from the socket.
    form_request = Request(request.scope, _replay(body))
    try:
        form = await form_request.form(max_files=1, max_fields=16)
    except (HTTPException, MultiPartException) as exc:
        detail = getattr(exc, "detail", None) or getattr(exc, "message", "")
        raise CallbackRefused(400, f"the body is not a readable {media_type} form: {detail}") from None
    try:
        values = form.getlist("json")
        if len(values) != 1:
            raise CallbackRefused(
                400, "the body has no json field" if not values else "the body has more than one json field"
            )
        value = values[0]
        return await value.read() if isinstance(value, UploadFile) else value
    finally:
        await form.close()


async def _read_body(request: Request) -> bytes:
    too_large = CallbackRefused(413, f"the body is over {MAX_CALLBACK_BYTES} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise CallbackRefused(400, f"Content-Length {shown(declared)} is not a number")
        if int(declared) > MAX_CALLBACK_BYTES:
            raise too_large
    # A chunked body declares no length: it is measured as it arrives. The whole body has one
    # deadline, not each read: a client sending a byte a second never waits out a per-read timeout.
    chunks, size = [], 0
    try:
        with anyio.fail_after(BODY_READ_TIMEOUT):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_CALLBACK_BYTES:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise CallbackRefused(
            408, f"the body was not received within {BODY_READ_TIMEOUT:g} s ({size} bytes came)"
        ) from None
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class DropboxSignCallbacksPlugin(AirflowPlugin):
    """Mounts the callback receiver on Airflow's API server under :data:`URL_PREFIX`."""

    name = "dropbox_sign_callbacks"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Dropbox Sign callbacks"}]
