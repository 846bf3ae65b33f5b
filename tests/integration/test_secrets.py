"""
The API key and the access token never leave the connection: with recognisable credentials, the
texts, reprs, tracebacks and pickles of the errors the hooks raise, and the trigger kwargs the
operator and the sensor defer with, are searched for them; what the hooks send is masked. TLS
certificates are verified unless the connection says otherwise. The example DAGs' runs, searched
the same way: tests/system/test_secrets.py.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import ssl
import time
import traceback
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
from tests.helpers import (
    RECOGNISABLE_KEY,
    RECOGNISABLE_TOKEN,
    b64,
    closed_port,
    leaks,
    make_requests,
    recognisable_connection,
)

# --- both example DAGs, end to end -------------------------------------------------------------------


# --- exceptions and trigger kwargs, taken apart ------------------------------------------------------


def exception_texts(error: BaseException) -> dict[str, str | bytes]:
    """Everything an exception shows: its text, repr, traceback, and its pickle (Airflow moves them)."""
    return {
        f"{type(error).__name__} str": str(error),
        f"{type(error).__name__} repr": repr(error),
        f"{type(error).__name__} traceback": "".join(traceback.format_exception(error)),
        f"{type(error).__name__} pickle": pickle.dumps(error),
    }


def test_errors_leak_no_secret(
    recognisable_account: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources: dict[str, str | bytes] = {}
    (sr_id,) = make_requests(recognisable_account, 1)

    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", recognisable_connection(recognisable_account, "revoked api key")
    )
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
            {
                "conn_type": "dropbox_sign",
                "host": f"http://127.0.0.1:{closed_port()}",
                "password": RECOGNISABLE_KEY,
            }
        ),
    )
    with pytest.raises(DropboxSignError) as unreachable:
        DropboxSignHook(retry_policy=RetryPolicy(max_retries=0)).get_account()
    assert unreachable.value.status_code is None
    sources |= {f"unreachable {k}": v for k, v in exception_texts(unreachable.value).items()}

    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT",
        recognisable_connection(recognisable_account, "api key", access_token=RECOGNISABLE_TOKEN),
    )
    with pytest.raises(ValueError, match="both an API key") as both:
        DropboxSignHook().get_account()
    sources |= {f"both {k}": v for k, v in exception_texts(both.value).items()}

    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", recognisable_connection(recognisable_account, "api key")
    )
    hook = DropboxSignHook()
    sources["hook settings repr"] = repr(hook.settings)
    sources["hook repr"] = repr(hook)
    ok, message = DropboxSignHook().test_connection()
    assert ok is True
    sources["connection test message"] = message

    assert leaks(sources) == {}


@pytest.mark.parametrize("credential", ["api key", "access token"])
def test_trigger_kwargs_hold_no_secret(
    recognisable_account: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch, credential: str
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", recognisable_connection(recognisable_account, credential)
    )
    ids = make_requests(recognisable_account, 2)
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
    recognisable_account: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch, credential: str, kind: str
) -> None:
    # A credential of its own: Airflow's masker is process-wide, and remembers every other test's.
    secret = f"sk-live-PADDED{kind}{credential.replace(' ', '')}{time.time_ns()}"
    conn: dict[str, Any] = {"conn_type": "dropbox_sign", "host": recognisable_account.base_url}
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
    conn: dict[str, Any] = {
        "conn_type": "dropbox_sign",
        "host": "https://api.hellosign.com",
        "password": RECOGNISABLE_KEY,
    }
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
