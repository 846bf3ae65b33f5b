"""
Bad input never reaches Dropbox Sign: every malformed id, parameter or connection is refused with
an error that names the value, before a single request is sent (the emulator's log stays empty).

Each bad id is tried on every entry point: the operator (as written in the DAG file and as rendered
from a template), the sensor, the trigger, both hooks and the trigger form of the example DAG.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import ParamValidationError

from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignAsyncHook, DropboxSignHook
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator
from dropbox_sign_provider.sensors.signature_request import SignatureRequestCanceledSensor
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from dropbox_sign_provider.triggers.signature_request import SignatureRequestCanceledTrigger
from tests.helpers import ACCESS_TOKEN, API_KEY, REPO, FakeTI, connection_uri_json, import_file

GOOD = "d10338cad145e1cb68afc828"
OTHER_GOOD = "fa5c8a0b0f492d768749333ad6fcc214c111e967"
#: Well formed but unknown to the account: a trigger that wrongly polls it changes nothing.
UNKNOWN = "0123456789abcdef0123"
CANCEL_DAG_FILE = REPO / "dags" / "dropbox_sign_cancel_request.py"


class BadId:
    """A bad value for ``signature_request_ids`` and the part of it the error must name."""

    def __init__(self, name: str, value: Any, offending: Any = None) -> None:
        self.name = name
        self.value = value
        self.offending = value if offending is None else offending

    @property
    def is_text(self) -> bool:
        return isinstance(self.value, str)


BAD_IDS = [
    BadId("empty", ""),
    BadId("blank", "   "),
    BadId("empty in a list", [GOOD, ""], ""),
    BadId("blank in a list", ["\t "], "\t "),
    BadId("non-hex", "d10338cad145e1cb68afc82g"),
    BadId("upper-case hex", GOOD.upper()),
    BadId("too short", "abc123"),
    BadId("15 characters", GOOD[:15]),
    BadId("too long", "0123456789abcdef" * 5),
    BadId("parent path", "../account"),
    BadId("encoded parent path", "%2e%2e/account"),
    BadId("id then path", f"{GOOD}/../../account"),
    BadId("query string", f"{GOOD}?account_id=all"),
    BadId("fragment", f"{GOOD}#x"),
    BadId("NUL inside", f"{GOOD[:10]}\x00{GOOD[10:]}"),
    BadId("header injection", f"{GOOD}\r\nX-Injected: 1", "X-Injected:"),
    BadId("terminal escape", f"{GOOD}\x1b[31m"),
    BadId("Cyrillic look-alike", GOOD.replace("a", "\u0430")),
    BadId("full-width digit", GOOD.replace("8", "\uff18")),
    BadId("zero-width space", f"{GOOD[:12]}\u200b{GOOD[12:]}"),
    BadId("bad id among good ones", [GOOD, "../account", OTHER_GOOD], "../account"),
    BadId("list literal with a path", f"['{GOOD}', '../account']", "../account"),
    BadId("broken list literal", f"[{GOOD}"),
    BadId("None", None),
    BadId("integer", 12345),
    BadId("float", 1.5e20),
    BadId("boolean", True),
    BadId("bytes", GOOD.encode()),
    BadId("nested list", [[GOOD]], [GOOD]),
    BadId("set", {GOOD}),
]


def names(error: BaseException, bad: BadId) -> bool:
    """Whether the error quotes the bad value, or the bad part of it (an id list is split first)."""
    return repr(bad.offending) in str(error) or repr(bad.value) in str(error)


@pytest.fixture(scope="module")
def api() -> Iterator[DropboxSignEmulator]:
    """One emulator for the whole module: hundreds of refusals need no fresh account each."""
    with DropboxSignEmulator(
        api_keys=(API_KEY,), access_tokens=(ACCESS_TOKEN,), cancel_delay=0.2
    ) as emulator:
        emulator.create_signature_request(signature_request_id=GOOD)
        emulator.create_signature_request(signature_request_id=OTHER_GOOD)
        yield emulator


@pytest.fixture
def unchanged_api(api: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[DropboxSignEmulator]:
    """The module's emulator with an empty log, checked afterwards to be as it was."""
    monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection_uri_json(api.base_url))
    api.clear_log()
    yield api
    # Whatever was refused, nothing changed for the tests that follow.
    assert api.get_state(GOOD) == api.get_state(OTHER_GOOD) == "awaiting_signature"


def context() -> Any:
    return {"ti": FakeTI()}


# --- every entry point, every bad id ---------------------------------------------------------------


def via_operator(value: Any) -> None:
    CancelSignatureRequestOperator(task_id="cancel", signature_request_ids=value).execute(context())


def via_rendered_template(value: Any) -> None:
    operator = CancelSignatureRequestOperator(task_id="cancel", signature_request_ids="{{ params.ids }}")
    operator.signature_request_ids = value  # what rendering the template produced
    operator.execute(context())


def via_waiting_operator(value: Any) -> None:
    operator = CancelSignatureRequestOperator(
        task_id="cancel",
        signature_request_ids="{{ params.ids }}",
        wait_for_confirmation=True,
        deferrable=True,
    )
    operator.signature_request_ids = value
    operator.execute(context())


def via_sensor(value: Any) -> None:
    SignatureRequestCanceledSensor(task_id="confirm", signature_request_ids=value).execute(context())


def via_deferrable_sensor(value: Any) -> None:
    SignatureRequestCanceledSensor(task_id="confirm", signature_request_ids=value, deferrable=True).execute(
        context()
    )


def via_hook_cancel(value: Any) -> None:
    DropboxSignHook().cancel_signature_request(value)


def via_hook_get(value: Any) -> None:
    DropboxSignHook().get_signature_request(value)


def via_hook_remove(value: Any) -> None:
    DropboxSignHook().remove_signature_request_access(value)


def via_async_hook_cancel(value: Any) -> None:
    async def go() -> None:
        async with DropboxSignAsyncHook() as hook:
            await hook.cancel_signature_request(value)

    asyncio.run(go())


def via_async_hook_get(value: Any) -> None:
    async def go() -> None:
        async with DropboxSignAsyncHook() as hook:
            await hook.get_signature_request(value)

    asyncio.run(go())


ENTRY_POINTS: dict[str, Callable[[Any], None]] = {
    "operator": via_operator,
    "rendered template": via_rendered_template,
    "deferrable operator": via_waiting_operator,
    "sensor": via_sensor,
    "deferrable sensor": via_deferrable_sensor,
    "hook cancel": via_hook_cancel,
    "hook get": via_hook_get,
    "hook remove": via_hook_remove,
    "async hook cancel": via_async_hook_cancel,
    "async hook get": via_async_hook_get,
}


#: Given as the whole input of a task, these are no ids at all: the task has nothing to do. As one
#: id (a hook, a trigger's state) they are bad ids.
EMPTY_INPUTS = ("", "   ")
HOOK_ENTRY_POINTS = [name for name in ENTRY_POINTS if "hook" in name]


# Empty input given to a task is not a bad id but nothing to do: see
# test_empty_input_succeeds_without_a_request.
BAD_ID_CASES = [
    pytest.param(entry, bad, id=f"{entry}-{bad.name}")
    for bad in BAD_IDS
    for entry in ENTRY_POINTS
    if bad.value not in EMPTY_INPUTS or entry in HOOK_ENTRY_POINTS
]


@pytest.mark.parametrize(("entry", "bad"), BAD_ID_CASES)
def test_bad_id_is_refused_before_any_request(
    unchanged_api: DropboxSignEmulator, entry: str, bad: BadId
) -> None:
    with pytest.raises(ValueError, match="signature_request_id") as refused:
        ENTRY_POINTS[entry](bad.value)

    assert names(refused.value, bad), str(refused.value)
    assert unchanged_api.requests_log == []


LITERAL_BAD_IDS = [b for b in BAD_IDS if b.value not in EMPTY_INPUTS]


@pytest.mark.parametrize("bad", LITERAL_BAD_IDS, ids=[b.name for b in LITERAL_BAD_IDS])
@pytest.mark.parametrize("task", [CancelSignatureRequestOperator, SignatureRequestCanceledSensor])
def test_a_literal_bad_id_is_refused_when_the_dag_is_parsed(task: type, bad: BadId) -> None:
    with pytest.raises(ValueError, match="signature_request_id") as refused:
        task(task_id="t", signature_request_ids=bad.value)

    assert names(refused.value, bad), str(refused.value)


EMPTY_FORMS = [[], (), {}, "", "   ", "[]", "{}"]


@pytest.mark.parametrize("empty", EMPTY_FORMS, ids=repr)
@pytest.mark.parametrize("entry", [name for name in ENTRY_POINTS if name not in HOOK_ENTRY_POINTS])
def test_empty_input_succeeds_without_a_request(
    unchanged_api: DropboxSignEmulator, entry: str, empty: Any, log_events: list[Any]
) -> None:
    # Whatever its form, an empty input is nothing to cancel: the same {} and the same log.
    task: Any
    if "sensor" in entry:
        task = SignatureRequestCanceledSensor(
            task_id="confirm", signature_request_ids=empty, deferrable="deferrable" in entry
        )
    else:
        task = CancelSignatureRequestOperator(
            task_id="cancel",
            signature_request_ids="{{ params.ids }}",
            wait_for_confirmation=entry != "operator",
            deferrable="deferrable" in entry,
        )
        task.signature_request_ids = empty
    assert task.execute(context()) == {}

    said = "nothing to wait for" if "sensor" in entry else "nothing to cancel"
    assert {"event": f"No signature requests given: {said}", "log_level": "info"} in log_events
    assert unchanged_api.requests_log == []


def trigger_for(ids: list[str], **kwargs: Any) -> SignatureRequestCanceledTrigger:
    now = time.time()
    return SignatureRequestCanceledTrigger(
        pending={sr_id: {"last_cancel_at": now, "cancel_attempts": 1} for sr_id in ids},
        outcomes=dict.fromkeys(ids, "cancel_requested"),
        deadline=now + 60,
        poll_interval=kwargs.pop("poll_interval", 0.1),
        **kwargs,
    )


async def first_event(trigger: SignatureRequestCanceledTrigger) -> Any:
    async def run() -> Any:
        async for event in trigger.run():
            return event
        return None

    # A trigger that accepted a bad setting would poll until its deadline: stop it well before.
    return await asyncio.wait_for(run(), timeout=3.0)


TEXT_IDS = [b for b in BAD_IDS if isinstance(b.offending, str)]


@pytest.mark.parametrize("bad", TEXT_IDS, ids=[b.name for b in TEXT_IDS])
def test_trigger_refuses_a_bad_id_before_any_request(unchanged_api: DropboxSignEmulator, bad: BadId) -> None:
    # Its kwargs come from the database: a trigger must not trust them to be well formed.
    with pytest.raises(ValueError, match="signature_request_id") as refused:
        asyncio.run(first_event(trigger_for([bad.offending])))

    assert names(refused.value, bad), str(refused.value)
    assert unchanged_api.requests_log == []


def test_trigger_checks_every_id_before_it_polls_any(unchanged_api: DropboxSignEmulator) -> None:
    with pytest.raises(ValueError, match=re.escape("'../account'")):
        asyncio.run(first_event(trigger_for([GOOD, "../account", OTHER_GOOD])))

    assert unchanged_api.requests_log == []


# --- parameters -------------------------------------------------------------------------------------

BAD_SETTINGS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "operator negative poke_interval",
        lambda: CancelSignatureRequestOperator(task_id="t", signature_request_ids=GOOD, poke_interval=-1),
        "poke_interval -1",
    ),
    (
        "operator zero timeout",
        lambda: CancelSignatureRequestOperator(task_id="t", signature_request_ids=GOOD, timeout=0),
        "timeout 0",
    ),
    (
        "operator negative recancel_after",
        lambda: CancelSignatureRequestOperator(
            task_id="t", signature_request_ids=GOOD, timeout=600, recancel_after=-3600
        ),
        "recancel_after -3600",
    ),
    (
        "operator unknown on_completed",
        lambda: CancelSignatureRequestOperator(task_id="t", signature_request_ids=GOOD, on_completed="retry"),
        "on_completed 'retry'",
    ),
    (
        "operator zero max_cancel_attempts",
        lambda: CancelSignatureRequestOperator(
            task_id="t", signature_request_ids=GOOD, max_cancel_attempts=0
        ),
        "max_cancel_attempts 0",
    ),
    (
        "operator negative max_cancellations",
        lambda: CancelSignatureRequestOperator(task_id="t", signature_request_ids=GOOD, max_cancellations=-1),
        "max_cancellations -1",
    ),
    (
        "operator text max_cancellations",
        lambda: CancelSignatureRequestOperator(
            task_id="t", signature_request_ids=GOOD, max_cancellations="10"
        ),
        "max_cancellations '10'",
    ),
    (
        "sensor negative poke_interval",
        lambda: SignatureRequestCanceledSensor(task_id="t", signature_request_ids=GOOD, poke_interval=-5),
        "poke_interval -5",
    ),
    (
        "sensor text recancel_after",
        lambda: SignatureRequestCanceledSensor(
            task_id="t", signature_request_ids=GOOD, timeout=60, recancel_after="120"
        ),
        "recancel_after '120'",
    ),
    (
        "sensor unknown on_completed",
        lambda: SignatureRequestCanceledSensor(task_id="t", signature_request_ids=GOOD, on_completed="never"),
        "on_completed 'never'",
    ),
    (
        "sensor reschedule mode",
        lambda: SignatureRequestCanceledSensor(task_id="t", signature_request_ids=GOOD, mode="reschedule"),
        "reschedule",
    ),
    (
        "trigger unknown on_completed",
        lambda: trigger_for([UNKNOWN], on_completed="sometimes"),
        "on_completed 'sometimes'",
    ),
    ("trigger negative poll_interval", lambda: trigger_for([UNKNOWN], poll_interval=-1), "-1"),
    ("trigger negative recancel_after", lambda: trigger_for([UNKNOWN], recancel_after=-5), "-5"),
    (
        "trigger zero max_cancel_attempts",
        lambda: trigger_for([UNKNOWN], max_cancel_attempts=0),
        "max_cancel_attempts 0",
    ),
    (
        "hook negative max_retries",
        lambda: DropboxSignHook(retry_policy=RetryPolicy(max_retries=-1)),
        "max_retries -1",
    ),
    (
        "async hook negative max_retries",
        lambda: DropboxSignAsyncHook(retry_policy=RetryPolicy(max_retries=-1)),
        "max_retries -1",
    ),
    ("hook zero page_size", lambda: DropboxSignHook().list_signature_requests(page_size=0), "page_size 0"),
    (
        "hook page_size over 100",
        lambda: DropboxSignHook().list_signature_requests(page_size=101),
        "page_size 101",
    ),
    (
        "hook text page_size",
        lambda: DropboxSignHook().list_signature_requests(page_size="20"),
        "page_size '20'",
    ),
]


def make_and_use(make: Callable[[], Any]) -> None:
    result = make()
    if isinstance(result, SignatureRequestCanceledTrigger):
        # Accepted by the constructor: it must then fail before it polls anything.
        asyncio.run(first_event(result))


@pytest.mark.parametrize(
    ("make", "named"), [(m, n) for _, m, n in BAD_SETTINGS], ids=[s[0] for s in BAD_SETTINGS]
)
def test_bad_setting_is_refused_before_any_request(
    unchanged_api: DropboxSignEmulator, make: Callable[[], Any], named: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        make_and_use(make)

    assert unchanged_api.requests_log == []


# --- connections ------------------------------------------------------------------------------------

SECRET_KEY = "sk-live-BADINPUTKEY0001"
SECRET_TOKEN = "oauth-BADINPUTTOKEN0002"


def conn(host: str | None, *, password: str | None = SECRET_KEY, **extra: Any) -> str:
    value: dict[str, Any] = {"conn_type": "dropbox_sign"}
    if host is not None:
        value["host"] = host
    if password is not None:
        value["password"] = password
    if extra:
        value["extra"] = extra
    return json.dumps(value)


BAD_CONNECTIONS: list[tuple[str, Callable[[str], str], str]] = [
    ("no key nor token", lambda url: conn(url, password=None), "has no credentials"),
    ("blank key", lambda url: conn(url, password="   "), "has no credentials"),
    ("both key and token", lambda url: conn(url, access_token=SECRET_TOKEN), "both an API key"),
    ("scheme typo", lambda url: conn(url.replace("http://", "htp://")), "htp://"),
    ("ftp scheme", lambda url: conn("ftp://127.0.0.1/v3"), "'ftp://127.0.0.1/v3'"),
    ("no host name", lambda url: conn("https://"), "'https://'"),
    ("bad port", lambda url: conn("https://api.hellosign.com:99999"), "'https://api.hellosign.com:99999'"),
    ("space in host", lambda url: conn("https://api hellosign.com"), "'https://api hellosign.com'"),
    ("plain http to a remote host", lambda url: conn("http://api.hellosign.com"), "'api.hellosign.com'"),
    (
        "plain http, allow_insecure_http false",
        lambda url: conn("http://10.1.2.3:8080", allow_insecure_http="false"),
        "'10.1.2.3'",
    ),
    ("negative timeout", lambda url: conn(url, timeout=-3), "timeout -3"),
    (
        "zero requests per minute",
        lambda url: conn(url, max_requests_per_minute=0),
        "max_requests_per_minute 0",
    ),
]


def sync_settings(conn_id: str) -> Any:
    return DropboxSignHook(conn_id).get_account()


def async_settings(conn_id: str) -> Any:
    async def go() -> Any:
        return await DropboxSignAsyncHook(conn_id).get_signature_request(GOOD)

    return asyncio.run(go())


@pytest.mark.parametrize("use", [sync_settings, async_settings], ids=["hook", "async hook"])
@pytest.mark.parametrize(
    ("make", "named"), [(m, n) for _, m, n in BAD_CONNECTIONS], ids=[c[0] for c in BAD_CONNECTIONS]
)
def test_bad_connection_is_refused_before_any_request(
    unchanged_api: DropboxSignEmulator,
    monkeypatch: pytest.MonkeyPatch,
    use: Callable[[str], Any],
    make: Callable[[str], str],
    named: str,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_BAD", make(unchanged_api.base_url))

    with pytest.raises(ValueError, match="'dropbox_sign_bad'") as refused:
        use("dropbox_sign_bad")

    message = str(refused.value)
    assert named in message
    assert SECRET_KEY not in message
    assert SECRET_TOKEN not in message
    assert unchanged_api.requests_log == []


def test_plain_http_to_a_remote_host_needs_an_explicit_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_BAD", conn("http://sign-proxy.internal:8080", allow_insecure_http=True)
    )

    assert DropboxSignHook("dropbox_sign_bad").settings.base_url == "http://sign-proxy.internal:8080/v3"


def test_the_connection_test_reports_a_bad_connection_without_a_request(
    unchanged_api: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DROPBOX_SIGN_BAD", conn("http://api.hellosign.com"))

    ok, message = DropboxSignHook("dropbox_sign_bad").test_connection()

    assert ok is False
    assert "'api.hellosign.com'" in message
    assert SECRET_KEY not in message
    assert unchanged_api.requests_log == []


# --- the example DAG's trigger form ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cancel_dag_params() -> Any:
    if not CANCEL_DAG_FILE.exists():
        pytest.skip(f"{CANCEL_DAG_FILE.relative_to(REPO)} is missing: no trigger form to check")
    return import_file(CANCEL_DAG_FILE, "f_bad_input_cancel_dag").dag.params


FORM_VALUES = [
    pytest.param(b.value if isinstance(b.value, list) else [b.value], id=b.name)
    for b in BAD_IDS
    if not isinstance(b.value, set | bytes) and not (isinstance(b.value, str) and b.value.startswith("["))
]


@pytest.mark.parametrize("ids", FORM_VALUES)
def test_trigger_form_refuses_the_same_ids(cancel_dag_params: Any, ids: list[Any]) -> None:
    params = copy.deepcopy(cancel_dag_params)

    with pytest.raises(ParamValidationError, match="signature_request_ids"):
        params["signature_request_ids"] = ids


def test_trigger_form_accepts_what_the_operator_accepts(cancel_dag_params: Any) -> None:
    params = copy.deepcopy(cancel_dag_params)

    params["signature_request_ids"] = [GOOD, OTHER_GOOD]

    assert params.validate()["signature_request_ids"] == [GOOD, OTHER_GOOD]


@pytest.mark.parametrize(
    ("setting", "value"),
    [("wait_for_confirmation", "maybe"), ("on_completed", "skip"), ("dry_run", "perhaps")],
)
def test_a_rendered_setting_that_cannot_work_fails_before_the_first_cancel(
    emulator: Any, dropbox_sign_conn: str, setting: str, value: str
) -> None:
    target = emulator.create_signature_request()["signature_request_id"]
    operator = CancelSignatureRequestOperator(
        task_id="cancel",
        signature_request_ids=[target],
        wait_for_confirmation="{{ params.wait }}",
        on_completed="{{ params.on_completed }}",
        dry_run="{{ params.dry_run }}",
    )
    # What rendering produced: good values, but for the one under test.
    operator.wait_for_confirmation, operator.on_completed, operator.dry_run_setting = "false", "fail", "false"
    setattr(operator, "dry_run_setting" if setting == "dry_run" else setting, value)

    with pytest.raises(ValueError, match=f"{setting} '{value}'"):
        operator.execute(context())
    assert emulator.requests_log == []
