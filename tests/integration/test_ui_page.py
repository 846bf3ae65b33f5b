"""
The Dropbox Sign page (``GET /dropbox-sign-ui/``) through the plugin's app, against the emulator on
loopback: who may see it (Airflow's own tokens, from the simple auth manager), what it lists (the
requests the account sent, not those it received, one list call per page), what it says when it
cannot list, and that nothing of the connection's credentials nor Dropbox Sign's markup reaches the
browser as such.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Mount

from dropbox_sign_provider.cancellation.ids import MAX_IDS_PER_RUN
from dropbox_sign_provider.plugins.ui import URL_PREFIX, DropboxSignUIPlugin
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from dropbox_sign_provider.ui.listing import forget_accounts
from tests.helpers import (
    DAY,
    SECRET_API_KEY,
    SECRETS,
    closed_port,
    import_unread,
    make_requests,
    set_connection,
)

pytestmark = pytest.mark.emulator(api_keys=(SECRET_API_KEY,), rate_limit=10_000)

SENT = 120
RECEIVED = 30
VENDOR = "contracts@vendor.example"


@pytest.fixture(scope="module")
def auth_manager(airflow_db: Any) -> Any:
    """Airflow's auth manager (the simple one, not all admins), initialised as the API server does."""
    from airflow.api_fastapi.app import init_auth_manager

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
        patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer,op:op")
        return init_auth_manager()


@pytest.fixture
def token(auth_manager: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """A JWT of Airflow's for a user of that role: ``token("viewer")``."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    return lambda role: str(auth_manager.generate_jwt(SimpleAuthManagerUser(username=role, role=role)))


@pytest.fixture
def page(auth_manager: Any) -> Iterator[TestClient]:
    """The page's app, as the API server mounts it, over FastAPI's TestClient."""
    from airflow.api_fastapi.app import init_plugins

    api_server = FastAPI()
    init_plugins(api_server)
    forget_accounts()
    with TestClient(api_server, base_url="http://airflow.test") as client:
        yield client
    forget_accounts()


@pytest.fixture
def account(emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch) -> DropboxSignEmulator:
    """``dropbox_sign_default`` on the emulator: 120 open requests it sent, 30 it received."""
    set_connection(monkeypatch, "dropbox_sign_default", host=emulator.base_url, password=SECRET_API_KEY)
    monkeypatch.delenv("AIRFLOW__DROPBOX_SIGN__UI_CONN_IDS", raising=False)
    now = time.time()
    emulator.sent = make_requests(emulator, SENT, created_at=now - 10 * DAY)  # type: ignore[attr-defined]
    emulator.received = make_requests(  # type: ignore[attr-defined]
        emulator, RECEIVED, created_at=now - 10 * DAY, requester_email_address=VENDOR
    )
    emulator.clear_log()
    return emulator


def shown_ids(body: str) -> list[str]:
    return re.findall(r'<tr data-id="([0-9a-f]+)">', body)


def list_calls(emulator: DropboxSignEmulator) -> list[str]:
    return [r.path for r in emulator.requests_log]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- who may see it -------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "?conn_id=dropbox_sign_default&page=2", "?conn_id=nope"])
def test_anonymous_callers_get_401_and_nothing_is_listed(
    page: TestClient, account: DropboxSignEmulator, query: str
) -> None:
    response = page.get(f"{URL_PREFIX}/{query}")
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": "Not authenticated"}
    assert account.requests_log == []


def test_a_forged_token_is_refused(page: TestClient, account: DropboxSignEmulator) -> None:
    response = page.get(f"{URL_PREFIX}/", headers=bearer("not.a.token"))
    assert response.status_code in (401, 403)
    assert account.requests_log == []


def test_a_viewer_who_may_not_trigger_the_manual_dag_gets_403_and_no_request(
    page: TestClient, account: DropboxSignEmulator, token: Callable[[str], str]
) -> None:
    response = page.get(f"{URL_PREFIX}/", headers=bearer(token("viewer")))
    assert response.status_code == 403, response.text
    assert account.sent[0] not in response.text  # type: ignore[attr-defined]
    assert account.requests_log == []


@pytest.mark.parametrize("role", ["op", "admin"])
def test_who_may_trigger_the_manual_dag_sees_the_requests_the_account_sent(
    page: TestClient, account: DropboxSignEmulator, token: Callable[[str], str], role: str
) -> None:
    response = page.get(f"{URL_PREFIX}/", headers=bearer(token(role)))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    ids = shown_ids(response.text)
    assert len(ids) == 100
    assert set(ids) <= set(account.sent)  # type: ignore[attr-defined]
    assert not set(ids) & set(account.received)  # type: ignore[attr-defined]
    assert "from:me AND complete:false" in html.unescape(response.text)
    assert "Page 1 of 2" in response.text
    assert f'data-max-ids="{MAX_IDS_PER_RUN}"' in response.text
    assert 'data-dag-id="dropbox_sign_cancel_request"' in response.text
    # One GET /account for the requester check, one list call for the page; none per row.
    assert list_calls(account) == ["/v3/account", "/v3/signature_request/list"]


def test_the_session_cookie_of_a_signed_in_browser_is_enough(
    page: TestClient, account: DropboxSignEmulator, token: Callable[[str], str]
) -> None:
    page.cookies.set("_token", token("op"))
    response = page.get(f"{URL_PREFIX}/")
    assert response.status_code == 200, response.text
    assert len(shown_ids(response.text)) == 100


# --- what it lists --------------------------------------------------------------------------------


def test_each_page_costs_one_list_call_and_the_account_is_read_once(
    page: TestClient, account: DropboxSignEmulator, token: Callable[[str], str]
) -> None:
    headers = bearer(token("op"))
    first = page.get(f"{URL_PREFIX}/", headers=headers)
    second = page.get(f"{URL_PREFIX}/?conn_id=dropbox_sign_default&page=2", headers=headers)

    assert first.status_code == second.status_code == 200
    both = shown_ids(first.text) + shown_ids(second.text)
    assert sorted(both) == sorted(account.sent)  # type: ignore[attr-defined]
    assert "Page 2 of 2" in second.text
    assert "page=1" in second.text  # the link back
    assert list_calls(account) == ["/v3/account", "/v3/signature_request/list", "/v3/signature_request/list"]


def test_received_requests_an_index_lets_through_are_left_out_and_counted(
    page: TestClient, account: DropboxSignEmulator, token: Callable[[str], str]
) -> None:
    account.set_fault(search_ignores=["from"])
    headers = bearer(token("op"))
    bodies = [
        page.get(f"{URL_PREFIX}/?conn_id=dropbox_sign_default&page={n}", headers=headers).text for n in (1, 2)
    ]
    ids = [sr_id for body in bodies for sr_id in shown_ids(body)]
    assert sorted(ids) == sorted(account.sent)  # type: ignore[attr-defined]
    left_out = [re.search(r"(\d+) received", body) for body in bodies]
    assert sum(int(m.group(1)) for m in left_out if m) == RECEIVED


def test_age_and_search_narrow_the_list(
    page: TestClient, emulator: DropboxSignEmulator, account: DropboxSignEmulator, token: Callable[[str], str]
) -> None:
    old_nda = make_requests(emulator, 2, title="NDA 2025", created_at=time.time() - 40 * DAY)
    make_requests(emulator, 1, title="NDA fresh")
    response = page.get(
        f"{URL_PREFIX}/", params={"max_age_days": "30", "query": "title:NDA"}, headers=bearer(token("op"))
    )
    assert response.status_code == 200, response.text
    assert sorted(shown_ids(response.text)) == sorted(old_nda)
    assert "created:[* TO " in html.unescape(response.text)


def test_titles_and_names_from_dropbox_sign_are_escaped(
    page: TestClient, emulator: DropboxSignEmulator, account: DropboxSignEmulator, token: Callable[[str], str]
) -> None:
    title = "<script>alert('title')</script>"
    name = '"><img src=x onerror=alert(1)>'
    emulator.create_signature_request(
        title=title, signers=[(name, "a@example.com")], created_at=time.time() - 400 * DAY
    )
    # A link only to Dropbox Sign's web pages: never a script's address.
    emulator.create_signature_request(details_url="javascript:alert(2)", created_at=time.time() - 400 * DAY)
    response = page.get(f"{URL_PREFIX}/", params={"max_age_days": "300"}, headers=bearer(token("op")))
    assert response.status_code == 200, response.text
    assert title not in response.text
    assert name not in response.text
    assert html.escape(title) in response.text
    assert html.escape(name) in response.text
    assert len(shown_ids(response.text)) == 2
    assert "javascript:" not in response.text
    assert response.text.count("Open in Dropbox Sign") == 1
    # The only script is the page's own, allowed by its nonce.
    assert response.text.count("<script") == 1
    assert "script-src 'nonce-" in response.headers["content-security-policy"]


# --- what it says when it cannot list -------------------------------------------------------------


def test_a_search_dropbox_sign_refuses_shows_its_message(
    page: TestClient, account: DropboxSignEmulator, token: Callable[[str], str]
) -> None:
    response = page.get(f"{URL_PREFIX}/", params={"query": "(title:NDA)"}, headers=bearer(token("op")))
    assert response.status_code == 400
    assert "Dropbox Sign refused the search" in response.text
    assert 'role="alert"' in response.text
    assert "Traceback" not in response.text


@pytest.mark.parametrize("age", ["-3", "soon", "0"])
def test_a_bad_age_is_named_before_anything_is_sent(
    page: TestClient, account: DropboxSignEmulator, token: Callable[[str], str], age: str
) -> None:
    response = page.get(f"{URL_PREFIX}/", params={"max_age_days": age}, headers=bearer(token("op")))
    assert response.status_code == 400
    assert f"age (days) {age!r}" in html.unescape(response.text)
    assert account.requests_log == []


def test_a_connection_the_deployment_does_not_list_is_refused(
    page: TestClient,
    account: DropboxSignEmulator,
    token: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_connection(monkeypatch, "ds_other", host=account.base_url, password=SECRET_API_KEY)
    response = page.get(f"{URL_PREFIX}/", params={"conn_id": "ds_other"}, headers=bearer(token("op")))
    assert response.status_code == 404
    assert "ui_conn_ids" in response.text
    assert account.requests_log == []


def test_a_missing_connection_says_what_to_do(
    page: TestClient,
    account: DropboxSignEmulator,
    token: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__UI_CONN_IDS", "dropbox_sign_default,ds_missing")
    response = page.get(f"{URL_PREFIX}/", params={"conn_id": "ds_missing"}, headers=bearer(token("op")))
    assert response.status_code == 503
    assert "'ds_missing' is not defined" in html.unescape(response.text)
    # Both offered, the chosen one selected.
    assert '<option value="ds_missing" selected>' in response.text
    assert '<option value="dropbox_sign_default">' in response.text


def test_an_unreachable_api_is_a_502_with_text(
    page: TestClient, token: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(
        monkeypatch, "dropbox_sign_default", host=f"http://127.0.0.1:{closed_port()}", password=SECRET_API_KEY
    )
    response = page.get(f"{URL_PREFIX}/", headers=bearer(token("op")))
    assert response.status_code == 502
    assert "Dropbox Sign could not list the requests" in response.text
    assert "Traceback" not in response.text


def test_a_spent_rate_budget_says_when_to_try_again(
    page: TestClient,
    account: DropboxSignEmulator,
    token: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two calls a minute by the connection's own cap (not the API's window, which may happen to
    # reset a second later): GET /account and the first page; the second page finds it spent.
    set_connection(
        monkeypatch,
        "dropbox_sign_default",
        host=account.base_url,
        password=SECRET_API_KEY,
        extra={"max_requests_per_minute": 2},
    )
    headers = bearer(token("op"))
    assert page.get(f"{URL_PREFIX}/", headers=headers).status_code == 200

    response = page.get(f"{URL_PREFIX}/", params={"page": 2}, headers=headers)

    assert response.status_code == 429
    assert "rate budget" in response.text
    assert "try again in" in response.text
    assert 5 <= int(response.headers["retry-after"]) <= 61
    # Said at once, without waiting for the budget or sending the call.
    assert list_calls(account) == ["/v3/account", "/v3/signature_request/list"]


# --- what never reaches the browser ---------------------------------------------------------------


def test_no_secret_of_the_connection_reaches_the_browser(
    page: TestClient,
    account: DropboxSignEmulator,
    token: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = bearer(token("op"))
    answers = [
        page.get(f"{URL_PREFIX}/", headers=headers),
        page.get(f"{URL_PREFIX}/", params={"page": 2}, headers=headers),
        page.get(f"{URL_PREFIX}/", params={"query": "(bad)"}, headers=headers),
        page.get(f"{URL_PREFIX}/", params={"max_age_days": "x"}, headers=headers),
    ]
    set_connection(
        monkeypatch, "dropbox_sign_default", host=f"http://127.0.0.1:{closed_port()}", password=SECRET_API_KEY
    )
    answers.append(page.get(f"{URL_PREFIX}/", headers=headers))
    assert [a.status_code for a in answers] == [200, 200, 400, 400, 502]
    for answer in answers:
        text = answer.text + "".join(f"{k}: {v}" for k, v in answer.headers.items())
        assert not [secret for secret in SECRETS if secret in text], answer.status_code


# --- what its button asks of Airflow --------------------------------------------------------------


@pytest.fixture
def airflow_api(auth_manager: Any, manual_dag: str) -> Iterator[TestClient]:
    """Airflow's own REST API, as the page's button calls it; the runs it starts are deleted after."""
    from airflow.api_fastapi.app import create_app
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with TestClient(create_app("core"), base_url="http://airflow.test") as client:
        yield client
    with create_session() as session:
        session.execute(delete(DagRun).where(DagRun.dag_id == manual_dag, DagRun.run_id.like("manual__%")))


def trigger_body(ids: list[str], conn_id: str = "dropbox_sign_default") -> dict[str, Any]:
    """What the page's script posts (``html._SCRIPT``): the same keys, the same shape."""
    return {"logical_date": None, "conf": {"signature_request_ids": ids, "dropbox_sign_conn_id": conn_id}}


def test_the_button_s_request_starts_a_run_of_the_manual_dag_for_who_may(
    airflow_api: TestClient, token: Callable[[str], str], manual_dag: str
) -> None:
    from dropbox_sign_provider.ui.html import _SCRIPT

    assert '"/api/v2/dags/"' in _SCRIPT
    assert "logical_date: null" in _SCRIPT
    assert "signature_request_ids: ids, dropbox_sign_conn_id: body.dataset.connId" in _SCRIPT
    ids = ["d10338cad145e1cb68afc828", "fa5c8a0b0f492d768749333ad6fcc214c111e967"]
    url = f"/api/v2/dags/{manual_dag}/dagRuns"

    viewer = airflow_api.post(url, json=trigger_body(ids), headers=bearer(token("viewer")))
    assert viewer.status_code == 403, viewer.text

    started = airflow_api.post(url, json=trigger_body(ids), headers=bearer(token("op")))
    assert started.status_code == 200, started.text
    run = started.json()
    assert run["dag_id"] == manual_dag
    assert run["conf"]["signature_request_ids"] == ids
    assert run["conf"]["dropbox_sign_conn_id"] == "dropbox_sign_default"


def test_airflow_refuses_a_run_on_a_connection_the_deployment_does_not_list(
    airflow_api: TestClient, token: Callable[[str], str], manual_dag: str
) -> None:
    body = trigger_body(["d10338cad145e1cb68afc828"], conn_id="ds_elsewhere")
    refused = airflow_api.post(f"/api/v2/dags/{manual_dag}/dagRuns", json=body, headers=bearer(token("op")))
    assert refused.status_code == 400, refused.text
    assert "dropbox_sign_conn_id" in refused.text


# --- how Airflow finds it -------------------------------------------------------------------------


def test_the_plugin_declares_a_nav_view_and_mounts_the_page() -> None:
    from airflow import plugins_manager
    from airflow.api_fastapi.app import init_plugins

    info = [p for p in plugins_manager.get_plugin_info() if p["name"] == DropboxSignUIPlugin.name]
    assert len(info) == 1
    assert "dropbox_sign_ui" in str(info[0]["source"])
    [view] = DropboxSignUIPlugin.external_views
    assert view["name"] == "Dropbox Sign"
    assert view["destination"] == "nav"
    assert view["href"].endswith(f"{URL_PREFIX}/")

    api_server = FastAPI()
    init_plugins(api_server)
    assert [r.path for r in api_server.routes if isinstance(r, Mount) and r.path == URL_PREFIX] == [
        URL_PREFIX
    ]


def test_airflow_s_rest_api_lists_the_page_for_the_ui_s_navigation(
    airflow_api: TestClient, token: Callable[[str], str]
) -> None:
    answer = airflow_api.get("/api/v2/plugins", headers=bearer(token("admin")))
    assert answer.status_code == 200, answer.text
    [plugin] = [p for p in answer.json()["plugins"] if p["name"] == DropboxSignUIPlugin.name]
    [view] = plugin["external_views"]
    assert (view["name"], view["destination"], view["url_route"]) == ("Dropbox Sign", "nav", "dropbox-sign")
    assert view["href"].endswith(f"{URL_PREFIX}/")
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == [URL_PREFIX]


def test_importing_the_plugin_reads_no_option_connection_or_api_security() -> None:
    # Every process that loads Airflow's plugins imports it; only the API server serves the page.
    loaded = import_unread(
        "dropbox_sign_provider.plugins.ui",
        "print('airflow.api_fastapi.core_api.security' in set(sys.modules) - before, "
        "'dropbox_sign_provider.ui.app' in sys.modules)",
    )
    assert loaded == "False False"
