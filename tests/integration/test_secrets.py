"""
The API key and the access token never leave the connection: both example DAGs run end to end
with recognisable credentials, then every place a secret could end up is searched for them: task
logs, XComs, rendered template fields, trigger kwargs, the rest of the metadata database,
exception texts and what the API itself logged. TLS certificates are verified unless the
connection says otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import pickle
import ssl
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import certifi
import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from airflow.sdk.log import redact

from dropbox_sign_provider.exceptions import DropboxSignError
from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignAsyncHook, DropboxSignHook
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator
from dropbox_sign_provider.sensors.signature_request import SignatureRequestCanceledSensor
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from tests.compat import serde
from tests.helpers import REPO, ApprovalAnswer, closed_port, make_requests

KEY = "sk-live-RECOGNISABLEKEY0001"
TOKEN = "oauth-RECOGNISABLETOKEN0002"
REVOKED_KEY = "sk-live-RECOGNISABLEREVOKED0003"
DAY = 86400.0


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


#: Every form a credential could leak in: as typed, and as sent (HTTP Basic encodes "key:").
SECRET_FORMS = [
    KEY,
    TOKEN,
    REVOKED_KEY,
    b64(f"{KEY}:"),
    b64(KEY),
    b64(f"{REVOKED_KEY}:"),
    b64(TOKEN),
    # The distinctive middles, in case a secret is cut, quoted or re-encoded around its edges.
    "RECOGNISABLEKEY0001",
    "RECOGNISABLETOKEN0002",
    "RECOGNISABLEREVOKED0003",
]


def leaks(sources: dict[str, str | bytes]) -> dict[str, list[str]]:
    """Which secret forms occur in which source."""
    found: dict[str, list[str]] = {}
    for name, text in sources.items():
        hits = [form for form in SECRET_FORMS if (form.encode() if isinstance(text, bytes) else form) in text]
        if hits:
            found[name] = hits
    return found


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def account() -> Iterator[DropboxSignEmulator]:
    # cancel_delay=0: the confirming trigger sees each cancellation done on its first poll.
    with DropboxSignEmulator(
        api_keys=(KEY,), access_tokens=(TOKEN,), rate_limit=10_000, cancel_delay=0
    ) as emu:
        yield emu


def connection(emulator: DropboxSignEmulator, credential: str, **extra: Any) -> str:
    conn: dict[str, Any] = {"conn_type": "dropbox_sign", "host": emulator.base_url}
    if credential == "api key":
        conn["password"] = KEY
    elif credential == "revoked api key":
        conn["password"] = REVOKED_KEY
    else:
        extra["access_token"] = TOKEN
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


def load_dag(name: str) -> Any:
    path = REPO / "dags" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"f_secrets_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


@pytest.fixture(scope="module")
def dags(airflow_db: Path) -> dict[str, Any]:
    return {
        "cancel": load_dag("dropbox_sign_cancel_request"),
        "cleanup": load_dag("dropbox_sign_expiry_cleanup"),
    }


def database_sources(airflow_home: Path, run_ids: set[str]) -> dict[str, str | bytes]:
    """The metadata database: its files byte for byte, and the rows a secret would most likely reach."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.trigger import Trigger
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    sources: dict[str, str | bytes] = {}
    with create_session() as session:
        xcoms = session.scalars(select(XComModel).where(XComModel.run_id.in_(run_ids))).all()
        rendered = session.scalars(
            select(RenderedTaskInstanceFields).where(RenderedTaskInstanceFields.run_id.in_(run_ids))
        ).all()
        triggers = session.scalars(select(Trigger)).all()
        sources["xcom"] = json.dumps([[x.task_id, x.key, x.value] for x in xcoms], default=str)
        sources["rendered template fields"] = json.dumps(
            [[r.task_id, r.rendered_fields] for r in rendered], default=str
        )
        sources["trigger kwargs (database)"] = json.dumps(
            [[t.classpath, t.kwargs] for t in triggers], default=str
        )
    for path in sorted(airflow_home.glob("airflow.db*")):
        sources[f"database file {path.name}"] = path.read_bytes()
    return sources


def log_sources(airflow_home: Path, captured: str) -> dict[str, str | bytes]:
    sources: dict[str, str | bytes] = {"task output (stdout, stderr, logging)": captured}
    for path in sorted((airflow_home / "logs").rglob("*")) if (airflow_home / "logs").exists() else []:
        if path.is_file():
            sources[f"log file {path.relative_to(airflow_home)}"] = path.read_bytes()
    return sources


# --- both example DAGs, end to end -------------------------------------------------------------------


def run_cancel_dag(dag: Any, emulator: DropboxSignEmulator, approve: bool = True) -> tuple[Any, list[str]]:
    ids = make_requests(emulator, 3)
    if approve:
        # Approved through the form, so that the signed grants are among what is scanned.
        ApprovalAnswer(dag.dag_id, "approve", "Approve").start()
    return dag.test(run_conf={"signature_request_ids": ids}), ids


def run_cleanup_dag(dag: Any, emulator: DropboxSignEmulator) -> tuple[Any, list[str]]:
    # Only this run's stale requests are old enough (older than any other test's) to be picked.
    ids = make_requests(emulator, 3, created_at=time.time() - 400 * DAY, title="Leaktest")
    return dag.test(run_conf={"max_age_days": 365, "query": "title:Leaktest"}), ids


RUNS = {"cancel": run_cancel_dag, "cleanup": run_cleanup_dag}


@pytest.mark.parametrize("credential", ["api key", "access token"])
@pytest.mark.parametrize("dag_name", ["cancel", "cleanup"])
def test_example_dag_run_leaks_no_secret(
    dags: dict[str, Any],
    account: DropboxSignEmulator,
    airflow_db: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    dag_name: str,
    credential: str,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection(account, credential))
    # Armed, so that the clean-up cancels and waits: the run's calls and trigger carry the credential.
    monkeypatch.setenv("AIRFLOW_VAR_DROPBOX_SIGN_CLEANUP_ARMED", "true")
    account.clear_log()

    dag_run, ids = RUNS[dag_name](dags[dag_name], account)

    assert dag_run.state == "success"
    assert {account.get_state(sr_id) for sr_id in ids} == {"canceled"}
    out, err = capfd.readouterr()
    captured = out + err + caplog.text
    # The scan below looks at real material: the run's logs, XComs, rendered fields and trigger.
    assert "Dropbox Sign cancellations" in captured
    assert all(sr_id in captured for sr_id in ids)
    sources = {
        **log_sources(airflow_db, captured),
        **database_sources(airflow_db, {dag_run.run_id}),
        "emulator request log": repr(account.requests_log),
    }
    assert all(sr_id in str(sources["xcom"]) for sr_id in ids)
    assert all(sr_id in str(sources["rendered template fields"]) for sr_id in ids)
    assert any(sr_id in str(sources["trigger kwargs (database)"]) for sr_id in ids)

    assert leaks(sources) == {}


def test_failed_run_leaks_no_secret(
    dags: dict[str, Any],
    account: DropboxSignEmulator,
    airflow_db: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A revoked key: the API refuses it, the task fails and logs why.
    monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection(account, "revoked api key"))

    dag_run, ids = run_cancel_dag(dags["cancel"], account, approve=False)

    assert dag_run.state == "failed"
    assert {account.get_state(sr_id) for sr_id in ids} == {"awaiting_signature"}
    out, err = capfd.readouterr()
    captured = out + err + caplog.text
    assert "unauthorized" in captured
    assert all(sr_id in captured for sr_id in ids)
    sources = {**log_sources(airflow_db, captured), **database_sources(airflow_db, {dag_run.run_id})}

    assert leaks(sources) == {}


# --- exceptions and trigger kwargs, taken apart ------------------------------------------------------


def exception_texts(error: BaseException) -> dict[str, str | bytes]:
    """Everything an exception shows: its text, repr, traceback, and its pickle (Airflow moves them)."""
    return {
        f"{type(error).__name__} str": str(error),
        f"{type(error).__name__} repr": repr(error),
        f"{type(error).__name__} traceback": "".join(traceback.format_exception(error)),
        f"{type(error).__name__} pickle": pickle.dumps(error),
    }


def test_errors_leak_no_secret(account: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    sources: dict[str, str | bytes] = {}
    (sr_id,) = make_requests(account, 1)

    monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection(account, "revoked api key"))
    with pytest.raises(DropboxSignError) as refused:
        DropboxSignHook(retry_policy=RetryPolicy(max_retries=0)).cancel_signature_request(sr_id)
    assert refused.value.status_code == 401
    sources |= exception_texts(refused.value)

    async def refused_async() -> None:
        async with DropboxSignAsyncHook(retry_policy=RetryPolicy(max_retries=0)) as hook:
            await hook.get_signature_request(sr_id)

    with pytest.raises(DropboxSignError) as refused_by_async:
        asyncio.run(refused_async())
    assert refused_by_async.value.status_code == 401
    sources |= {f"async {k}": v for k, v in exception_texts(refused_by_async.value).items()}

    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT",
        json.dumps(
            {"conn_type": "dropbox_sign", "host": f"http://127.0.0.1:{closed_port()}", "password": KEY}
        ),
    )
    with pytest.raises(DropboxSignError) as unreachable:
        DropboxSignHook(retry_policy=RetryPolicy(max_retries=0)).get_account()
    assert unreachable.value.status_code is None
    sources |= {f"unreachable {k}": v for k, v in exception_texts(unreachable.value).items()}

    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection(account, "api key", access_token=TOKEN)
    )
    with pytest.raises(ValueError, match="both an API key") as both:
        DropboxSignHook().get_account()
    sources |= {f"both {k}": v for k, v in exception_texts(both.value).items()}

    monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection(account, "api key"))
    hook = DropboxSignHook()
    sources["hook settings repr"] = repr(hook.settings)
    sources["hook repr"] = repr(hook)
    ok, message = DropboxSignHook().test_connection()
    assert ok is True
    sources["connection test message"] = message

    assert leaks(sources) == {}


@pytest.mark.parametrize("credential", ["api key", "access token"])
def test_trigger_kwargs_hold_no_secret(
    account: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch, credential: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection(account, credential))
    ids = make_requests(account, 2)
    sources: dict[str, str | bytes] = {}

    class TI:
        dag_id, run_id, map_index = "t_secrets", "t_secrets_run", -1

        def xcom_push(self, key: str, value: Any) -> None:
            sources[f"xcom {key}"] = json.dumps(value)

    operator = CancelSignatureRequestOperator(
        task_id="cancel", signature_request_ids=ids, wait_for_confirmation=True, deferrable=True
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": TI()})  # type: ignore[arg-type]
    sensor = SignatureRequestCanceledSensor(task_id="confirm", signature_request_ids=ids, deferrable=True)
    with pytest.raises(TaskDeferred) as sensor_deferred:
        sensor.execute({"ti": TI()})  # type: ignore[arg-type]

    for name, trigger in (("operator", deferred.value.trigger), ("sensor", sensor_deferred.value.trigger)):
        _classpath, kwargs = trigger.serialize()
        assert set(kwargs["pending"]) == set(ids)
        sources[f"{name} trigger kwargs"] = json.dumps(kwargs)
        sources[f"{name} trigger kwargs (serde)"] = json.dumps(serde.serialize(kwargs))
        sources[f"{name} trigger repr"] = repr(trigger)

    assert leaks(sources) == {}


# --- masking ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("credential", ["api key", "access token"])
def test_what_is_sent_is_masked_even_when_stored_with_white_space(
    account: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch, credential: str, kind: str
) -> None:
    # A credential of its own: Airflow's masker is process-wide, and remembers every other test's.
    secret = f"sk-live-PADDED{kind}{credential.replace(' ', '')}{time.time_ns()}"
    conn: dict[str, Any] = {"conn_type": "dropbox_sign", "host": account.base_url}
    if credential == "api key":
        conn["password"] = f"  {secret}\n"
    else:
        conn["extra"] = {"access_token": f"\t{secret}  "}
    monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", json.dumps(conn))

    if kind == "sync":
        authorization = DropboxSignHook().settings.authorization
    else:
        authorization = asyncio.run(DropboxSignAsyncHook().get_settings()).authorization

    sent = [secret, authorization, authorization.split(" ", 1)[1]]
    assert secret in authorization or b64(f"{secret}:") in authorization  # stripped, as sent
    for text in sent:
        assert redact(f"a log line holding {text}.") == "a log line holding ***."


# --- TLS ---------------------------------------------------------------------------------------------


def tls_connection(monkeypatch: pytest.MonkeyPatch, **extra: Any) -> None:
    conn: dict[str, Any] = {"conn_type": "dropbox_sign", "host": "https://api.hellosign.com", "password": KEY}
    if extra:
        conn["extra"] = extra
    monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", json.dumps(conn))


async def async_ssl() -> Any:
    hook = DropboxSignAsyncHook()
    async with hook:
        session = await hook.get_session()
        assert session.connector is not None
        return session.connector._ssl


@pytest.mark.parametrize(
    ("extra", "verify"),
    [
        pytest.param({}, True, id="default"),
        pytest.param({"verify": True}, True, id="verify true"),
        pytest.param({"verify": "true"}, True, id="verify 'true'"),
        pytest.param({"verify": False}, False, id="verify false"),
        pytest.param({"verify": "false"}, False, id="verify 'false'"),
        pytest.param({"verify": certifi.where()}, certifi.where(), id="CA bundle"),
    ],
)
def test_tls_is_verified_unless_the_connection_says_otherwise(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], verify: Any
) -> None:
    tls_connection(monkeypatch, **extra)

    assert DropboxSignHook().get_conn().verify == verify

    connector_ssl = asyncio.run(async_ssl())
    if verify is True:
        assert connector_ssl is True
    elif verify is False:
        assert connector_ssl is False
    else:
        assert isinstance(connector_ssl, ssl.SSLContext)
        assert connector_ssl.verify_mode == ssl.CERT_REQUIRED
        assert connector_ssl.check_hostname
        assert connector_ssl.get_ca_certs(), "the CA bundle was not loaded"
