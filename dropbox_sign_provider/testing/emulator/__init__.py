"""
A faithful local emulator of the Dropbox Sign API, for tests that must not reach the real service.

The emulator is a real HTTP server on loopback (aiohttp), so the code under test runs unchanged:
same URLs, same authentication, same answers, same rate-limit headers and the same
*asynchronous* cancellation (``200 {}`` first, ``410 deleted`` once the cancellation has
really happened). It answers only the calls this provider needs::

    GET  /v3/account
    PUT  /v3/account                      (callback_url, locale)
    GET  /v3/signature_request/{id}
    GET  /v3/signature_request/list?page=&page_size=&query=&account_id=
    POST /v3/signature_request/cancel/{id}
    POST /v3/signature_request/remove/{id}
    GET  /v3/bulk_send_job/{bulk_send_job_id}?page=&page_size=
    GET  /v3/bulk_send_job/list?page=&page_size=

and can inject the failures a production client must survive (latency, 5xx, dropped
connections, malformed bodies, rate-limit storms, cancellations that never complete).

It also plays Dropbox Sign's side of events: with a callback URL set (``callback_url=``,
``--callback-url``, ``PUT /v3/account`` or assigning :attr:`DropboxSignEmulator.callback_url`), it
POSTs signed events, as Dropbox Sign does, when a cancellation takes effect and when a test makes a
request signed (:meth:`DropboxSignEmulator.sign`), declined (:meth:`~DropboxSignEmulator.decline`)
or expired (:meth:`~DropboxSignEmulator.expire`), and ``callback_test`` on
:meth:`~DropboxSignEmulator.send_callback_test`. It retries each until acknowledged, can deliver
them duplicated, out of order, late or forged (:meth:`~DropboxSignEmulator.set_delivery_fault`) and
records every attempt (:attr:`~DropboxSignEmulator.callback_attempts`); see
:mod:`~dropbox_sign_provider.testing.emulator.callbacks`.

Using it in your own DAG tests
------------------------------
Start one per test (or per module) and point a Dropbox Sign connection at it::

    import json

    import pytest

    from dropbox_sign_provider.testing import DropboxSignEmulator


    @pytest.fixture
    def dropbox_sign(monkeypatch):
        with DropboxSignEmulator(api_keys=("test-key",), cancel_delay=0.2) as emulator:
            monkeypatch.setenv(
                "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT",
                json.dumps({"conn_type": "dropbox_sign", "host": emulator.url, "password": "test-key"}),
            )
            yield emulator


    def test_stale_requests_are_cancelled(dropbox_sign):
        stale = dropbox_sign.create_signature_request(title="NDA", created_at=1_600_000_000)
        signed = dropbox_sign.create_signature_request(title="NDA", is_complete=True)

        my_dag.test()  # or run the task / hook you are testing

        assert dropbox_sign.get_state(stale["signature_request_id"]) == "canceled"
        assert dropbox_sign.get_state(signed["signature_request_id"]) == "completed"
        assert dropbox_sign.cancel_calls(stale["signature_request_id"]) == 1

The connection's host is :attr:`DropboxSignEmulator.url` (the API root, like
``https://api.hellosign.com``); :attr:`DropboxSignEmulator.base_url` is the same with ``/v3``
for clients that want the full base, such as the official SDK
(``dropbox_sign.Configuration(username="test-key", host=emulator.base_url)``).

Faults are switched on with :meth:`DropboxSignEmulator.set_fault` (pass ``seed`` for
reproducible runs); every ``/v3`` call, faulty or not, lands in
:attr:`DropboxSignEmulator.requests_log`, so a test can assert how a client behaved, e.g. that
it never exceeded the rate limit or never cancelled the same request twice.

Outside Python (CI scripts, other languages) run ``dropbox-sign-emulator --port 0 --port-file
port.txt`` and drive it through the admin API under ``/_emulator/``::

    GET  /_emulator/health
    GET  /_emulator/signature_requests            every request, with its state
    POST /_emulator/signature_requests            create one (a JSON object) or several (a list)
    POST /_emulator/bulk_send_jobs                create a bulk send job: {"count": N, ...fields}
    POST /_emulator/signature_requests/{id}/sign|decline|expire   ({"reason": ...} for decline)
    GET|POST|DELETE /_emulator/faults             see set_fault
    GET|POST|DELETE /_emulator/delivery_faults    see set_delivery_fault
    GET|DELETE /_emulator/requests_log
    GET  /_emulator/callback_events               the events acknowledged
    GET  /_emulator/callback_attempts             every delivery attempt
    POST /_emulator/callback_test                 send a callback_test event

The admin API can rewrite every request, so the emulator refuses to bind an address that is not
a loopback one unless told ``allow_remote=True`` (``--allow-remote``); the admin API then
requires a token in the ``X-Emulator-Token`` header (:attr:`DropboxSignEmulator.admin_token`;
the command line writes it next to the port file, or prints it once to stderr), and the API
requires API keys of your own (``api_keys=``, ``--api-key``): the documented ``test-key`` and
``test-token`` are refused.

Whoever may call ``PUT /v3/account`` chooses where events go, so the emulator delivers only to
``localhost`` and loopback addresses (127.0.0.0/8, ``::1``) unless told
``allow_remote_callbacks=True`` (``--allow-remote-callbacks``): any other callback URL is refused
with 400 ``bad_request`` when set, and checked again, its host name resolved, at each delivery.
The emulator serves, and delivers to, plain HTTP for local try-outs; Dropbox Sign itself delivers
events only to HTTPS callback URLs.

Time: every part of the emulator reads the clock only through this package's ``time`` reference
(``time.time()`` for epoch values such as rate-limit windows, ``created_at`` and ``event_time``,
``time.monotonic()`` for durations such as ``cancel_delay`` and held events; see
:mod:`~dropbox_sign_provider.testing.emulator.clock`). Tests may replace it, e.g.
``monkeypatch.setattr(emulator_module, "time", FakeClock())`` where ``emulator_module`` is this
package, with any object offering ``time()`` and ``monotonic()``. Waits between delivery attempts
are real (``asyncio.sleep``): give a test small ``callback_retry_delay`` instead.

The parts
---------
One module per concern; only the names below are the public interface.

- :mod:`.core`: :class:`DropboxSignEmulator` (its settings and the methods a test calls);
- :mod:`.server`: serving, in a thread of its own or in the caller's loop, and the work done
  while serving;
- :mod:`.routes`: the aiohttp application, ``/v3``, ``/oauth/token`` and ``/_emulator/``;
- :mod:`.state`: what the methods, the routes and the server share, behind the one lock;
- :mod:`.bulk_send`: the bulk send jobs, the requests each sent, and the calls that list them;
- :mod:`.store`: the signature requests, their states and transitions;
- :mod:`.rate`: the rate-limit windows;
- :mod:`.oauth`: registered API apps, their refresh and access tokens, rotation and revocation;
- :mod:`.faults`: API faults, :class:`OddAnswer` and delivery faults;
- :mod:`.query`: the search ``query`` of the list call;
- :mod:`.callbacks`: events, their delivery, retries and attempts;
- :mod:`.access`: the address bound, the credentials and the admin token;
- :mod:`.cli`: the command line; :mod:`.clock`: the one clock; :mod:`.errors`: the error envelope.

Each depends only on those listed after it (:mod:`.cli` on :mod:`.core`), never the other way.

Choices where the documentation is silent
-----------------------------------------
Where Dropbox Sign's public documentation is silent, the emulator makes a choice rather than
pretending to know. Code under test should not depend on these answers. Each is marked
``Undocumented (<topic>)`` in the module that makes it, and listed by that topic, with the test that
holds it, in the documentation's fidelity page (``docs/emulator.md``, "How faithful the emulator
is"), beside every documented behaviour and its source.
"""

from __future__ import annotations

# The one clock every module of the emulator reads (through .clock): tests replace this name.
import time as time

from dropbox_sign_provider.events.callback import event_hash
from dropbox_sign_provider.testing.emulator.callbacks import CallbackAttempt
from dropbox_sign_provider.testing.emulator.cli import main
from dropbox_sign_provider.testing.emulator.core import DropboxSignEmulator
from dropbox_sign_provider.testing.emulator.faults import OddAnswer
from dropbox_sign_provider.testing.emulator.state import LoggedRequest
from dropbox_sign_provider.testing.emulator.store import STATES, TransitionRefused

__all__ = [
    "STATES",
    "CallbackAttempt",
    "DropboxSignEmulator",
    "LoggedRequest",
    "OddAnswer",
    "TransitionRefused",
    "event_hash",
    "main",
]
