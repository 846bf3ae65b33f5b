"""
The HTTP side: the aiohttp application, the ``/v3`` API (authentication, rate limit, injected
faults, routing) and the ``/_emulator/`` admin API that scripts in other languages drive.

Both read and change the emulator only through its
:class:`~dropbox_sign_provider.testing.emulator.state.EmulatorState` and the settings it reads.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from dropbox_sign_provider.testing.emulator import clock
from dropbox_sign_provider.testing.emulator.access import ADMIN_TOKEN_HEADER, authenticated, same_secret
from dropbox_sign_provider.testing.emulator.errors import ERROR_NAMES, ApiError, envelope
from dropbox_sign_provider.testing.emulator.faults import (
    DELIVERY_FAULT_FIELDS,
    FAULT_FIELDS,
    DeliveryFaults,
    Faults,
)
from dropbox_sign_provider.testing.emulator.rate import headers as rate_headers
from dropbox_sign_provider.testing.emulator.state import EmulatorState, LoggedRequest
from dropbox_sign_provider.testing.emulator.store import TransitionRefused, render

#: The path of ``signatureRequestSend``, the one "high tier" endpoint the emulator serves.
SEND_PATH = "/v3/signature_request/send"
#: The fields of ``PUT /v3/account`` (AccountUpdateRequest).
ACCOUNT_UPDATE_FIELDS = frozenset({"account_id", "callback_url", "locale"})

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_GATEWAY_REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


def build_app(state: EmulatorState) -> web.Application:
    """The application serving ``/v3`` and ``/_emulator/`` for one emulator's state and settings."""
    v3 = Api(state)
    admin = Admin(state)
    app = web.Application()
    app.router.add_route("*", "/v3", v3.handle)
    app.router.add_route("*", "/v3/{tail:.*}", v3.handle)
    # Dropbox Sign serves it on another host (app.hellosign.com); a connection names it, so one
    # loopback server can stand in for both.
    app.router.add_post("/oauth/token", v3.token)
    # Health stays open so that a script can wait for the emulator before it has the token.
    app.router.add_get("/_emulator/health", admin.health)
    guarded = admin.guarded
    add = app.router.add_route
    add("GET", "/_emulator/signature_requests", guarded(admin.list))
    add("POST", "/_emulator/signature_requests", guarded(admin.create))
    add("POST", "/_emulator/bulk_send_jobs", guarded(admin.create_bulk_send_job))
    add(
        "POST",
        "/_emulator/signature_requests/{id}/{transition:sign|decline|expire}",
        guarded(admin.transition),
    )
    add("GET", "/_emulator/faults", guarded(admin.get_faults))
    add("POST", "/_emulator/faults", guarded(admin.set_faults))
    add("DELETE", "/_emulator/faults", guarded(admin.clear_faults))
    add("GET", "/_emulator/delivery_faults", guarded(admin.get_delivery_faults))
    add("POST", "/_emulator/delivery_faults", guarded(admin.set_delivery_faults))
    add("DELETE", "/_emulator/delivery_faults", guarded(admin.clear_delivery_faults))
    add("GET", "/_emulator/requests_log", guarded(admin.get_log))
    add("DELETE", "/_emulator/requests_log", guarded(admin.clear_log))
    add("GET", "/_emulator/callback_events", guarded(admin.callback_events))
    add("GET", "/_emulator/callback_attempts", guarded(admin.callback_attempts))
    add("POST", "/_emulator/callback_test", guarded(admin.callback_test))
    add("POST", "/_emulator/oauth/grants", guarded(admin.grant_refresh_token))
    add("POST", "/_emulator/oauth/revoke", guarded(admin.revoke_refresh_token))
    add("GET", "/_emulator/oauth/refreshes", guarded(admin.token_refreshes))
    return app


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON answer, as the API sends them."""
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers=dict(headers or {}),
    )


def _apply_headers(response: web.StreamResponse, headers: Mapping[str, str | None]) -> None:
    for name, value in headers.items():
        response.headers.popall(name, None)
        if value is not None:
            response.headers[name] = value


class Api:
    """The ``/v3`` API of one emulator."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.settings = state.settings

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one ``/v3`` call: faults first (in front of the API), then the API, then the log."""
        state = self.state
        arrived = clock.now()
        plan = state.plan()
        if plan.latency:
            await asyncio.sleep(plan.latency)
        if plan.drop:
            self._log(request, 0, arrived)
            if request.transport is not None:
                request.transport.close()
            # Nothing reaches the client: its transport is already closed.
            return web.Response(status=500)
        odd = state.take_odd_answer(request.method, request.path)
        if odd is not None and odd.status is not None:
            body = odd.body.encode() if isinstance(odd.body, str) else odd.body
            response = web.Response(status=odd.status, body=body or None)
            _apply_headers(response, odd.headers)
            self._log(request, response.status, arrived)
            return response
        if plan.storm:
            limit = self.settings.rate_limit
            headers = rate_headers(limit, limit, math.ceil(clock.now() + 1))
            response = json_response(429, envelope(429, "Too many requests."), headers)
        elif plan.error_status is not None:
            response = self._error_fault(plan.error_status)
        elif plan.malformed:
            response = web.Response(
                status=200,
                text='{"signature_request": {"signature_request_id": "',
                content_type="application/json",
                headers=state.peek_rate_headers(),
            )
        else:
            response = await self._api(request)
        if odd is not None:
            _apply_headers(response, odd.headers)
        self._log(request, response.status, arrived)
        return response

    def _error_fault(self, status: int) -> web.Response:
        if status in _GATEWAY_REASONS:
            reason = _GATEWAY_REASONS[status]
            page = (
                f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
                f"<center><h1>{status} {reason}</h1></center>\r\n</body>\r\n</html>\r\n"
            )
            return web.Response(status=status, text=page, content_type="text/html")
        name = ERROR_NAMES.get(status, "internal_error" if status >= 500 else "error")
        body = envelope(status, "An internal error occurred. Please try again later.", name=name)
        if status < 500:
            body = envelope(status, f"Injected {status} fault.", name=name)
        return json_response(status, body, self.state.peek_rate_headers())

    def _log(self, request: web.Request, status: int, arrived: float) -> None:
        self.state.log(
            LoggedRequest(
                request.method, request.path, status, arrived, request.headers.get("User-Agent", "")
            )
        )

    async def _api(self, request: web.Request) -> web.Response:
        state, settings = self.state, self.settings
        # Read before taking the lock: the body may be slow to come, and the lock is not an await.
        form = await _read_fields(request) if request.method == "PUT" else None
        sending = request.method == "POST" and request.path.rstrip("/") == SEND_PATH
        if sending:
            form = await _read_send_form(request)
        with state.lock:
            authorization = request.headers.get("Authorization")
            if not authenticated(authorization, settings.api_keys, settings.access_tokens) and not (
                state.oauth.access_valid(bearer_token(authorization))
            ):
                message = (
                    "Unauthorized user. No credentials supplied."
                    if "Authorization" not in request.headers
                    else "Unauthorized user. Invalid credentials supplied."
                )
                return json_response(401, envelope(401, message), state.peek_rate_headers())
            # Undocumented (the rate limit of send): it counts only against the high tier's window,
            # whose headers its answers carry; the help page gives the two limits, not how they mix.
            window, limit = (
                (state.high_tier_rate, settings.high_tier_rate_limit)
                if sending
                else (state.rate, settings.rate_limit)
            )
            headers = window.consume(limit, settings.window_seconds)
            if headers is None:
                peek = window.peek(limit, settings.window_seconds)
                return json_response(429, envelope(429, "Too many requests."), peek)
            try:
                status, body = self._route(request, form)
            except ApiError as exc:
                status, body = exc.status, envelope(exc.status, exc.message, path=exc.path, name=exc.name)
            return json_response(status, body, headers)

    async def token(self, request: web.Request) -> web.StreamResponse:
        """
        Answer ``POST /oauth/token?refresh`` (``oauthTokenRefresh``). Odd answers for the path
        ``/oauth/token`` stand in front of it as they do for ``/v3`` (a 503, a dropped answer...).
        """
        state = self.state
        odd = state.take_odd_answer(request.method, request.path)
        if odd is not None and odd.status is not None:
            body = odd.body.encode() if isinstance(odd.body, str) else odd.body
            response = web.Response(status=odd.status, body=body or None)
            _apply_headers(response, odd.headers)
            return response
        fields = await _read_fields(request)
        if "refresh" not in request.query:
            # The code exchange (oauthTokenGenerate) needs a person's consent: the emulator grants
            # refresh tokens through grant_refresh_token instead.
            return json_response(
                400, envelope(400, "Only ?refresh is served by the emulator.", name="unsupported_grant_type")
            )
        with state.lock:
            status, answer = state.oauth.refresh(fields)
        # Undocumented (the token endpoint's rate limit): its answers carry no rate-limit headers
        # here, and refreshes spend nothing of the API's budget.
        return json_response(status, answer)

    def _route(self, request: web.Request, form: Any) -> tuple[int, Any]:
        """Caller holds the lock."""
        settings = self.settings
        store = self.state.store
        parts = [part for part in request.path.split("/") if part][1:]
        method = request.method
        if parts == ["account"] and method == "GET":
            return 200, self._account()
        if parts == ["account"] and method == "PUT":
            self._update_account(form)
            return 200, self._account()
        if method == "POST" and parts == ["signature_request", "send"]:
            if isinstance(form, ApiError):
                raise form
            return 200, {"signature_request": render(store.send(form, settings.email))}
        if method == "GET" and parts == ["signature_request", "list"]:
            return 200, store.list(request.query, settings.account_id, settings.email, self.state.faults)
        if len(parts) == 2 and parts[0] == "signature_request" and method == "GET":
            return 200, {"signature_request": render(store.accessible(parts[1]))}
        if method == "GET" and parts == ["bulk_send_job", "list"]:
            return 200, self.state.bulk_send_jobs.list(request.query)
        if len(parts) == 2 and parts[0] == "bulk_send_job" and method == "GET":
            return 200, self.state.bulk_send_jobs.get(parts[1], request.query)
        if len(parts) == 3 and parts[:2] == ["signature_request", "cancel"] and method == "POST":
            store.cancel(parts[2], settings.cancel_delay, self.state.faults, settings.email)
            return 200, {}
        if len(parts) == 3 and parts[:2] == ["signature_request", "remove"] and method == "POST":
            store.remove(parts[2])
            return 200, {}
        # Undocumented (an unsupported method): on a known path it is a 404, like everything unknown.
        raise ApiError(404, "Not found.")

    def _account(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "account": {
                "account_id": settings.account_id,
                "email_address": settings.email,
                "is_locked": False,
                "is_paid_hs": True,
                "is_paid_hf": False,
                "quotas": {
                    "api_signature_requests_left": 1250,
                    "documents_left": None,
                    "templates_left": None,
                    "sms_signatures_left": 1,
                },
                "callback_url": self.state.callback_url,
                "role_code": None,
                "locale": settings.locale,
            }
        }

    def _update_account(self, form: Any) -> None:
        """``PUT /account`` (AccountUpdateRequest): the callback URL and the locale. Caller holds the lock."""
        settings = self.settings
        if not isinstance(form, dict):
            raise ApiError(400, "The request body must be a JSON object (AccountUpdateRequest).")
        # Undocumented (unknown account fields): refused with 400 naming them, rather than ignored,
        # so that a misspelt callback_url does not pass for an update.
        unknown = sorted(set(form) - ACCOUNT_UPDATE_FIELDS)
        if unknown:
            raise ApiError(400, f"Unknown parameter(s): {', '.join(unknown)}.", path=unknown[0])
        account_id = form.get("account_id")
        # Undocumented (another account_id): an update naming another account is refused, as this
        # account has no team to update members of.
        if account_id not in (None, "", settings.account_id):
            raise ApiError(400, f"account_id {account_id!r} is not your account.", path="account_id")
        locale = form.get("locale")
        if locale is not None and (not isinstance(locale, str) or not locale.strip()):
            raise ApiError(400, f"locale {locale!r} is not a locale.", path="locale")
        url = form.get("callback_url")
        if "callback_url" in form:
            # Undocumented (an empty callback_url): it removes the URL, so no event is sent any more.
            # The emulator checks it (an http(s) URL, on loopback unless allow_remote_callbacks).
            try:
                self.state.set_callback_url(url or None)
            except ValueError as exc:
                raise ApiError(400, f"{exc}.", path="callback_url") from None
            # As Dropbox Sign does, to check the new URL: a callback_test event.
            if url:
                self.state.send_callback_test()
        if locale is not None:
            settings.locale = locale


async def _read_send_form(request: web.Request) -> list[tuple[str, Any]] | ApiError:
    """The fields of a send call's multipart form, in order; an :class:`ApiError` for another body
    (answered once the caller is authenticated, like every other refusal)."""
    if request.content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        # The spec also declares a JSON body; the emulator takes a form, as files need one.
        message = "The emulator takes signature_request/send as multipart/form-data only."
        return ApiError(400, message)
    form = await request.post()
    return list(form.items())


def bearer_token(authorization: str | None) -> str:
    """The token of a ``Bearer`` header, ``""`` for any other."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _read_fields(request: web.Request) -> Any:
    """The fields of a body: JSON as the spec declares it, or a form as older clients send it."""
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return dict(await request.post())
    raw = await request.read()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return None


class Admin:
    """The ``/_emulator/`` admin API of one emulator: what a script does through the Python methods."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def guarded(self, handler: _Handler) -> _Handler:
        """Wrap an admin handler so that it answers 401 unless the request carries the admin token."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            token = self.state.settings.admin_token
            if token is not None:
                given = request.headers.get(ADMIN_TOKEN_HEADER)
                if given is None or not same_secret(given, token):
                    problem = "No admin token supplied" if given is None else "Invalid admin token supplied"
                    message = (
                        f"{problem}: send the emulator's admin token in the {ADMIN_TOKEN_HEADER} header."
                    )
                    return web.json_response(envelope(401, message), status=401)
            return await handler(request)

        return guarded

    async def grant_refresh_token(self, request: web.Request) -> web.Response:
        fields = await _read_fields(request)
        try:
            with self.state.lock:
                token = self.state.oauth.grant(str((fields or {}).get("client_id") or ""))
        except KeyError as exc:
            return web.json_response(envelope(400, str(exc.args[0])), status=400)
        return web.json_response({"refresh_token": token})

    async def revoke_refresh_token(self, request: web.Request) -> web.Response:
        fields = await _read_fields(request)
        with self.state.lock:
            revoked = self.state.oauth.revoke(str((fields or {}).get("refresh_token") or ""))
        return web.json_response({"revoked": revoked})

    async def token_refreshes(self, request: web.Request) -> web.Response:
        with self.state.lock:
            refreshes = [refresh._asdict() for refresh in self.state.oauth.refreshes]
        return web.json_response(refreshes)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.snapshot())

    async def create(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
            if isinstance(payload, list):
                created: Any = [self._create_one(item) for item in payload]
            else:
                created = self._create_one(payload)
        except (ValueError, TypeError) as exc:
            return web.json_response(envelope(400, str(exc)), status=400)
        return web.json_response(created)

    def _create_one(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise TypeError("each signature request must be a JSON object")
        return self.state.create(dict(item))

    async def create_bulk_send_job(self, request: web.Request) -> web.Response:
        try:
            options = await _json_object(request)
            if "count" not in options:
                raise TypeError("a bulk send job needs its count of signature requests")
            count = options.pop("count")
            job_id = options.pop("bulk_send_job_id", None)
            created = self.state.create_bulk_send_job(count, options, job_id)
        except (ValueError, TypeError) as exc:
            return web.json_response(envelope(400, str(exc)), status=400)
        return web.json_response(created)

    async def transition(self, request: web.Request) -> web.Response:
        request_id, transition = request.match_info["id"], request.match_info["transition"]
        state = self.state
        try:
            options = await _json_object(request)
            if transition == "decline":
                unknown = sorted(set(options) - {"reason"})
                if unknown:
                    raise TypeError(f"unknown decline option(s): {', '.join(unknown)}")
                done = state.decline(request_id, options.get("reason"))
            elif transition == "sign":
                unknown = sorted(set(options) - {"signer"})
                if unknown:
                    raise TypeError(f"unknown sign option(s): {', '.join(unknown)}")
                done = state.sign(request_id, options.get("signer"))
            elif options:
                raise TypeError(f"{transition} takes no options, got {', '.join(sorted(options))}")
            else:
                done = state.expire(request_id)
        except KeyError as exc:
            return web.json_response(envelope(404, str(exc.args[0])), status=404)
        except TransitionRefused as exc:
            return web.json_response(envelope(409, str(exc)), status=409)
        except (ValueError, TypeError) as exc:
            return web.json_response(envelope(400, str(exc)), status=400)
        return web.json_response(done)

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.fault_settings())

    async def set_faults(self, request: web.Request) -> web.Response:
        try:
            payload = await _json_object(request, "faults", FAULT_FIELDS)
            self.state.set_faults(Faults(**payload).checked())
        except (ValueError, TypeError) as exc:
            return web.json_response(envelope(400, str(exc)), status=400)
        return web.json_response(self.state.fault_settings())

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.state.clear_faults()
        return web.json_response(self.state.fault_settings())

    async def get_delivery_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.delivery_fault_settings())

    async def set_delivery_faults(self, request: web.Request) -> web.Response:
        try:
            payload = await _json_object(request, "delivery faults", DELIVERY_FAULT_FIELDS)
            self.state.set_delivery_faults(DeliveryFaults.checked(**payload))
        except (ValueError, TypeError) as exc:
            return web.json_response(envelope(400, str(exc)), status=400)
        return web.json_response(self.state.delivery_fault_settings())

    async def clear_delivery_faults(self, request: web.Request) -> web.Response:
        self.state.set_delivery_faults(DeliveryFaults())
        return web.json_response(self.state.delivery_fault_settings())

    async def get_log(self, request: web.Request) -> web.Response:
        return web.json_response([entry._asdict() for entry in self.state.log_entries()])

    async def clear_log(self, request: web.Request) -> web.Response:
        self.state.clear_log()
        return web.json_response([])

    async def callback_events(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.acknowledged())

    async def callback_attempts(self, request: web.Request) -> web.Response:
        return web.json_response([attempt._asdict() for attempt in self.state.attempts()])

    async def callback_test(self, request: web.Request) -> web.Response:
        try:
            payload = self.state.send_callback_test()
        except RuntimeError as exc:
            return web.json_response(envelope(409, str(exc)), status=409)
        return web.json_response(payload)


async def _json_object(
    request: web.Request, what: str = "options", allowed: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The JSON object a POST carries (``{}`` for no body), its keys checked against ``allowed``."""
    if not await request.read():
        return {}
    payload = await request.json()
    if not isinstance(payload, dict):
        raise TypeError(f"{what} must be a JSON object")
    if allowed is not None:
        unknown = sorted(set(payload) - set(allowed))
        if unknown:
            raise TypeError(f"unknown {what.rstrip('s')}(s): {', '.join(unknown)}")
    return payload
