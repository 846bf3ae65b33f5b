"""
Dropbox Sign's callback receiver: ``POST <api-server>/dropbox-sign/callback``.

Mounted on Airflow's API server by :class:`DropboxSignCallbacksPlugin` (the package's
``airflow.plugins`` entry point). Airflow does not authenticate a plugin's endpoints: the event's
``event_hash``, keyed with the API key of one of the accounts in ``[dropbox_sign]
callback_conn_ids``, is the only authentication, and nothing is recorded before it verifies.

=======================================  =======  =========================================
Request                                  Status   Recorded
=======================================  =======  =========================================
body over ``MAX_CALLBACK_BYTES``         413      nothing (the body is not read past it)
not a form                               415      nothing
no ``json`` field, or bad JSON / event   400      nothing
no configured account has an API key     503      nothing
hash verifies for no configured account  403      nothing
``callback_test``, verified              200      nothing
a type unknown to this release, verified 200      nothing
an event recorded before, verified       200      nothing (a redelivery)
a new event, verified                    200      board entry and asset event
database failure while recording         503      nothing (Dropbox Sign delivers it again)
=======================================  =======  =========================================

Importing this module reads no configuration, connection or database: every process that loads
Airflow's plugins imports it, not only the API server.
"""

from __future__ import annotations

import logging

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message, Receive

from dropbox_sign_provider.events import (
    CALLBACK_ACKNOWLEDGEMENT,
    CALLBACK_TEST,
    MAX_CALLBACK_BYTES,
    CallbackEvent,
    parse_callback,
)
from dropbox_sign_provider.plugins.accounts import (
    CALLBACK_CONN_IDS_OPTION,
    CONFIG_SECTION,
    callback_accounts,
    verifying_account,
)
from dropbox_sign_provider.plugins.recording import record_event

log = logging.getLogger(__name__)

#: Where the plugin mounts the app on the API server.
URL_PREFIX = "/dropbox-sign"
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


class CallbackRefused(Exception):
    """A callback answered with an error and recorded nowhere."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail

    def response(self) -> Response:
        return JSONResponse({"detail": self.detail}, status_code=self.status_code)


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
        return CallbackRefused(400, str(exc)).response()
    except CallbackRefused as refused:
        return refused.response()

    accounts = await run_in_threadpool(callback_accounts)
    if not accounts:
        return CallbackRefused(
            503,
            f"no connection in [{CONFIG_SECTION}] {CALLBACK_CONN_IDS_OPTION} can verify events: "
            "each must be a dropbox_sign connection with the account's API key as its password "
            "(the API server's log says what is wrong with each)",
        ).response()
    conn_id = verifying_account(event, accounts)
    if conn_id is None:
        log.warning("Dropbox Sign callback refused: event_hash does not verify (%s)", event.event_type)
        return CallbackRefused(403, "event_hash does not verify for any configured account").response()
    if event.event_type == CALLBACK_TEST:
        return PlainTextResponse(CALLBACK_ACKNOWLEDGEMENT)
    if not event.known:
        log.info(
            "Dropbox Sign event type %r is not known to this provider; acknowledged only", event.event_type
        )
        return PlainTextResponse(CALLBACK_ACKNOWLEDGEMENT)
    return await _record(event, conn_id)


async def _record(event: CallbackEvent, conn_id: str) -> Response:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        recorded = await run_in_threadpool(record_event, event, conn_id)
    except SQLAlchemyError:
        log.exception("Dropbox Sign event %s of %r could not be recorded", event.key, conn_id)
        return CallbackRefused(
            503, "the event could not be recorded now; Dropbox Sign will deliver it again"
        ).response()
    log.info("Dropbox Sign event %s of %r: %s", event.key, conn_id, recorded.value)
    return PlainTextResponse(CALLBACK_ACKNOWLEDGEMENT)


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
            raise CallbackRefused(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > MAX_CALLBACK_BYTES:
            raise too_large
    # A chunked body declares no length: it is measured as it arrives.
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_CALLBACK_BYTES:
            raise too_large
        chunks.append(chunk)
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
