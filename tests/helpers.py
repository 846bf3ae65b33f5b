"""
What several test files share besides fixtures: constants, connection values, the runners of the
tasks and the trigger, a callback receiver, a few small tools. Fixtures live in the ``conftest.py``
files (``tests/`` and each tier's); test modules import from here and never from each other.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import importlib.util
import ipaddress
import json
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import aiohttp
import pytest
import requests
from aiohttp import web
from airflow.providers.common.compat.sdk import TaskDeferred
from airflow.triggers.base import TriggerEvent

from dropbox_sign_provider.events.assets import event_asset_uri
from dropbox_sign_provider.events.callback import CALLBACK_ACKNOWLEDGEMENT
from dropbox_sign_provider.exceptions import DropboxSignError, error_from_response
from dropbox_sign_provider.hooks.connection import ApiSettings
from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignAsyncHook, DropboxSignHook
from dropbox_sign_provider.hooks.policy import RetryPolicy
from dropbox_sign_provider.links import DropboxSignRequestLink
from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator
from dropbox_sign_provider.sensors.signature_request import SignatureRequestCanceledSensor
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator, OddAnswer
from dropbox_sign_provider.triggers.signature_request import SignatureRequestCanceledTrigger
from dropbox_sign_provider.version_compat import AIRFLOW_V_3_3_PLUS
from tests.compat import DagBag

T = TypeVar("T")

#: The credentials the ``emulator`` fixture accepts unless a test marks it otherwise.
API_KEY = "test-key"
ACCESS_TOKEN = "test-token"
REPO = Path(__file__).parent.parent
#: The example DAGs, as shipped.
DAGS = REPO / "dags"
#: The DAGs the system tests run under ``dag.test()`` (the ``test-dags`` bundle).
TEST_DAGS = REPO / "tests" / "system" / "dags"
#: The DAGs the documentation shows, included in its pages from these files (the ``docs-examples`` bundle).
DOCS_EXAMPLES = REPO / "docs" / "examples"
CANCEL_DAG = "dropbox_sign_cancel_request"
CLEANUP_DAG = "dropbox_sign_expiry_cleanup"
AUDIT_DAG = "dropbox_sign_cancellation_audit"
BULK_SEND_JOB_DAG = "dropbox_sign_cancel_bulk_send_job"
EXAMPLE_DAG_IDS = {CANCEL_DAG, CLEANUP_DAG, AUDIT_DAG, BULK_SEND_JOB_DAG}
DAY = 86400.0

#: Credentials that are easy to spot if they leak (the hook suites use these).
SECRET_API_KEY = "sk-live-SECRETKEY123"
SECRET_ACCESS_TOKEN = "tok-live-SECRETTOKEN456"
#: Every form in which a credential could leak: as configured, and as sent on the wire.
SECRETS = (
    SECRET_API_KEY,
    SECRET_ACCESS_TOKEN,
    "SECRETKEY",
    "SECRETTOKEN",
    base64.b64encode(f"{SECRET_API_KEY}:".encode()).decode(),
)
#: The asset of ``ds_cb_a``'s cancellations, on which the callback receiver's test DAG is scheduled.
CANCELED_A = event_asset_uri("signature_request_canceled", "ds_cb_a")
UNKNOWN_ID = "0123456789abcdef0123456789abcdef01234567"
#: Ids a hook must refuse before sending anything.
BAD_IDS = [
    "",
    "   ",
    "g" * 40,
    "0123456789abcde",
    "f" * 65,
    "../account",
    "%2e%2e/account",
    f"{UNKNOWN_ID}/../../account",
    f"{UNKNOWN_ID[:10]}\x00{UNKNOWN_ID[10:]}",
    f"{UNKNOWN_ID}\r\nX-Injected: 1",
    UNKNOWN_ID.replace("a", "\u0430"),
    UNKNOWN_ID.replace("1", "\uff11"),
    None,
    12345678901234567890,
]

#: Retries that take milliseconds, not seconds.
FAST = RetryPolicy(max_retries=6, backoff_base=0.01, backoff_max=0.05, max_rate_limit_wait=10.0)
NO_RETRY = RetryPolicy(max_retries=0, backoff_base=0.01, backoff_max=0.05, max_rate_limit_wait=10.0)


def answer_error(status: int, retry_after: float | None = None) -> DropboxSignError:
    """The typed error of an answer with this status (and this ``Retry-After``, in seconds)."""
    return error_from_response(
        status,
        b'{"error": {"error_name": "x", "error_msg": "y"}}',
        method="GET",
        path="/p",
        retry_after=retry_after,
    )


def connection_uri_json(base_url: str, *, api_key: str | None = API_KEY, **extra: object) -> str:
    """An ``AIRFLOW_CONN_*`` value (JSON form) for a dropbox_sign connection."""
    conn: dict[str, object] = {"conn_type": "dropbox_sign", "host": base_url}
    if api_key is not None:
        conn["password"] = api_key
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> str:
    """Define ``conn_id`` (a dropbox_sign connection) through its environment variable."""
    conn = {"conn_type": "dropbox_sign", **fields}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


#: The OAuth API app the emulators of the OAuth tests register, and its secret.
CLIENT_ID = "app-client-0001"
CLIENT_SECRET = "cs-live-APPSECRET789"


def set_oauth_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, emulator: Any, **extra: Any) -> str:
    """
    Define ``conn_id`` as an API app's connection to ``emulator`` (which registers
    :data:`CLIENT_ID`), holding a refresh token the emulator grants now.
    """
    refresh_token = emulator.grant_refresh_token(CLIENT_ID)
    fields = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": refresh_token,
        "oauth_refresh_url": emulator.oauth_refresh_url,
        **extra,
    }
    return set_connection(monkeypatch, conn_id, host=emulator.url, extra=fields)


def assert_acknowledged(response: Any) -> None:
    """The answer Dropbox Sign takes as delivered: 200, ``Hello API Event Received``, plain text."""
    assert response.status_code == 200, response.text
    assert response.text == CALLBACK_ACKNOWLEDGEMENT
    assert response.headers["content-type"].startswith("text/plain")


#: Dropbox Sign's error name and message for each refusal the tests serve to the calls of one id.
REFUSALS = {
    400: ("bad_request", "Signature request is in an invalid state."),
    402: ("payment_required", "Payment required for this account."),
    403: ("forbidden", "You do not have access to this resource."),
}


def refusal(status: int, sr_id: str, *, cancel: bool = False, times: int = 100) -> OddAnswer:
    """The emulator's answer ``status`` (one of :data:`REFUSALS`) to the next ``times`` GETs of
    ``sr_id``, or to its cancels; no other call meets it."""
    name, message = REFUSALS[status]
    method, path = (
        ("POST", f"/v3/signature_request/cancel/{sr_id}")
        if cancel
        else ("GET", f"/v3/signature_request/{sr_id}")
    )
    return OddAnswer.error(status, name, message, method=method, path_prefix=path, times=times)


def make_requests(emulator: DropboxSignEmulator, n: int, **fields: object) -> list[str]:
    """Create ``n`` signature requests and return their ids."""
    return [emulator.create_signature_request(**fields)["signature_request_id"] for _ in range(n)]


def make_bulk_send_job(emulator: DropboxSignEmulator, n: int, **fields: object) -> tuple[str, list[str]]:
    """Create a bulk send job of ``n`` pending signature requests; return its id and theirs, in order."""
    job = emulator.create_bulk_send_job(n, **fields)
    return job["bulk_send_job"]["bulk_send_job_id"], [
        sr["signature_request_id"] for sr in job["signature_requests"]
    ]


def statuses(emulator: DropboxSignEmulator) -> list[int]:
    """The HTTP status of every call the emulator answered, in order."""
    return [entry.status for entry in emulator.requests_log]


class FakeTI:
    """The part of Airflow's task instance a task's execute() touches here."""

    def __init__(self, dag_id: str = "unit_dag", run_id: str = "unit_run", map_index: int = -1) -> None:
        self.dag_id, self.run_id, self.map_index = dag_id, run_id, map_index
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)  # XCom values must be plain data
        self.xcoms[key] = value


class Recorder:
    """Collects log calls, as the task and trigger loggers would receive them."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def debug(self, event: Any, *args: Any, **kw: Any) -> None:
        self.lines.append(("debug", event % args if args else str(event)))

    def info(self, event: Any, *args: Any, **kw: Any) -> None:
        self.lines.append(("info", event % args if args else str(event)))

    def warning(self, event: Any, *args: Any, **kw: Any) -> None:
        self.lines.append(("warning", event % args if args else str(event)))

    def text(self, level: str) -> str:
        return "\n".join(line for lvl, line in self.lines if lvl == level)


def resume(task: Any, deferred: TaskDeferred, context: Any) -> Any:
    """What Airflow does with a deferral: run the trigger to its one event, then resume the task."""
    assert task.deferrable
    assert isinstance(deferred.trigger, SignatureRequestCanceledTrigger)
    # The trigger is rebuilt from its plain-JSON kwargs, as the triggerer would.
    _, kwargs = deferred.trigger.serialize()
    trigger = SignatureRequestCanceledTrigger(**json.loads(json.dumps(kwargs)))

    async def one_event() -> Any:
        events = [event async for event in trigger.run()]
        assert len(events) == 1
        return events[0].payload

    return task.resume_execution(deferred.method_name, {"event": asyncio.run(one_event())}, context)


# --- the operator, the sensor and the trigger, run as Airflow runs them ---------------------------

#: The XCom key of the operator's link to the request's page.
LINK_KEY = DropboxSignRequestLink().xcom_key
#: An id the emulator does not know.
MISSING = "0f" * 20


#: The waits of the operator and the sensor the tests build, unless a test says otherwise: polls every
#: 0.1 s, a cancel sent again after 5 s, a timeout of 10 s.
SHORT_WAITS: dict[str, Any] = {"poke_interval": 0.1, "timeout": 10, "recancel_after": 5}


def operator(ids: Any, **kw: Any) -> CancelSignatureRequestOperator:
    """The operator with :data:`SHORT_WAITS` (unless ``kw`` says otherwise)."""
    return CancelSignatureRequestOperator(
        task_id="cancel", signature_request_ids=ids, **{**SHORT_WAITS, **kw}
    )


def sensor(ids: Any, deferrable: bool, **kw: Any) -> SignatureRequestCanceledSensor:
    """The sensor with :data:`SHORT_WAITS` (unless ``kw`` says otherwise)."""
    settings = {**SHORT_WAITS, **kw}
    return SignatureRequestCanceledSensor(
        task_id="confirm", signature_request_ids=ids, deferrable=deferrable, **settings
    )


def run(task: Any, ti: FakeTI | None = None) -> Any:
    """Run as Airflow would: execute(); when it defers, the trigger, then resume_execution().
    The result must be plain JSON, as XCom keeps it."""
    ti = ti or FakeTI()
    context: Any = {"ti": ti, "task_instance": ti}
    try:
        result = task.execute(context)
    except TaskDeferred as deferred:
        result = resume(task, deferred, context)
    json.dumps(result)
    return result


def calls(emulator: DropboxSignEmulator) -> list[tuple[str, str, int]]:
    """(method, id, status) of every call, in order."""
    return [(r.method, r.path.rsplit("/", 1)[1], r.status) for r in emulator.requests_log]


def cancel_times(emulator: DropboxSignEmulator, sr_id: str) -> list[float]:
    """When each cancel of ``sr_id`` reached the emulator."""
    return [
        r.time
        for r in emulator.requests_log
        if r.method == "POST" and r.path == f"/v3/signature_request/cancel/{sr_id}"
    ]


def cancel_now(conn_id: str, *ids: str) -> float:
    """Send the first cancel of each id, as the operator does before deferring; return when."""
    hook = DropboxSignHook(conn_id, retry_policy=RetryPolicy(max_retries=0))
    at = time.time()
    for sr_id in ids:
        hook.cancel_signature_request(sr_id)
    return at


def make_trigger(
    ids: list[str], cancelled_at: float, *, timeout: float = 10.0, may_recancel: bool = True, **kw: Any
) -> SignatureRequestCanceledTrigger:
    """A trigger as the operator defers it: its ids cancelled at ``cancelled_at``, by the task."""
    kw.setdefault("poll_interval", 0.1)
    kw.setdefault("recancel_after", 5.0)
    return SignatureRequestCanceledTrigger(
        pending={
            sr_id: {"last_cancel_at": cancelled_at, "cancel_attempts": 1, "may_recancel": may_recancel}
            for sr_id in ids
        },
        outcomes=dict.fromkeys(ids, "cancel_requested"),
        deadline=cancelled_at + timeout,
        **kw,
    )


async def collect(trigger: SignatureRequestCanceledTrigger) -> list[TriggerEvent]:
    """Every event of the trigger's run."""
    return [event async for event in trigger.run()]


def run_trigger(trigger: SignatureRequestCanceledTrigger) -> dict[str, Any]:
    """Run to the end; exactly one event must come out. Returns its payload."""
    events = asyncio.run(collect(trigger))
    assert len(events) == 1, events
    payload = events[0].payload
    json.dumps(payload)
    return dict(payload)


def parse_dags_folder() -> DagBag:
    """Parse ``dags/`` as the DAG processor would (Airflow 3's DagBag never adds Airflow's examples)."""
    return DagBag(dag_folder=DAGS)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def import_file(path: Path, module_name: str) -> ModuleType:
    """Import the Python file ``path`` afresh, as ``module_name`` (not added to ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_unread(module: str, report: str) -> str:
    """
    Import ``module`` in a fresh interpreter where reading a connection or a ``[dropbox_sign]``
    option fails, as every process that loads Airflow's plugins imports a plugin; then run
    ``report`` (Python; ``before`` holds the modules loaded before the import) and return the last
    line it printed.
    """
    code = (
        "import sys\n"
        "from airflow.configuration import conf\n"
        "from airflow.models.connection import Connection\n"
        "def refuse(*a, **k): raise AssertionError('connection read at import')\n"
        "Connection.get_connection_from_secrets = refuse\n"
        "get = conf.get\n"
        "def get_checked(section, *a, **k):\n"
        "    assert section != 'dropbox_sign', 'option read at import'\n"
        "    return get(section, *a, **k)\n"
        "conf.get = get_checked\n"
        "import airflow.plugins_manager, fastapi\n"
        "before = set(sys.modules)\n"
        f"import {module}\n"
        f"{report}\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def load_dag_module(name: str) -> ModuleType:
    """Import ``dags/<name>.py`` afresh (dag.test() needs the DAG object from its bundle file)."""
    return import_file(DAGS / f"{name}.py", f"example_{name}")


def task_states(dag_run: Any) -> dict[str, list[str]]:
    """Each task's states in ``dag_run``, one per task instance (mapped tasks have several)."""
    states: dict[str, list[str]] = {}
    for ti in dag_run.get_task_instances():
        states.setdefault(ti.task_id, []).append(str(ti.state))
    return states


def xcom_of(dag_run: Any, task_id: str) -> Any:
    """The result (XCom ``return_value``) of the unmapped task ``task_id`` in ``dag_run``."""
    ti = dag_run.get_task_instance(task_id)
    return ti.xcom_pull(task_ids=task_id)


def load_test_dag(name: str) -> Any:
    """The DAG of ``tests/system/dags/<name>.py``, imported from its bundle file (dag.test() needs that)."""
    return import_file(TEST_DAGS / f"{name}.py", f"test_dags_{name}").dag


def load_docs_example(name: str) -> Any:
    """The DAG of ``docs/examples/<name>.py``, the file a documentation page shows, from its bundle file."""
    return import_file(DOCS_EXAMPLES / f"{name}.py", f"docs_examples_{name}").dag


def task_instances(dag_run: Any) -> dict[tuple[str, int], Any]:
    return {(ti.task_id, ti.map_index): ti for ti in dag_run.get_task_instances()}


def xcom(ti: Any, key: str = "return_value") -> Any:
    return ti.xcom_pull(task_ids=ti.task_id, key=key, map_indexes=ti.map_index)


class HookClient:
    """One calling interface over either hook, so one test covers both.

    ``sync`` calls one DropboxSignHook; ``async`` runs each call in ``asyncio.run`` on a fresh
    DropboxSignAsyncHook under ``async with``, as a trigger would.
    """

    def __init__(self, kind: str, conn_id: str, **hook_kwargs: Any) -> None:
        assert kind in ("sync", "async")
        self.kind = kind
        self.conn_id = conn_id
        self.hook_kwargs = hook_kwargs
        self._sync = DropboxSignHook(conn_id, **hook_kwargs) if kind == "sync" else None
        #: What the hook's HTTP client raises when the connection drops.
        self.transport_error: type[BaseException] = (
            requests.ConnectionError if kind == "sync" else aiohttp.ClientError
        )

    def _run(self, call: Callable[[DropboxSignAsyncHook], Awaitable[T]]) -> T:
        async def main() -> T:
            async with DropboxSignAsyncHook(self.conn_id, **self.hook_kwargs) as hook:
                return await call(hook)

        return asyncio.run(main())

    def get(self, sr_id: Any) -> dict[str, Any]:
        if self._sync is not None:
            return self._sync.get_signature_request(sr_id)
        return self._run(lambda hook: hook.get_signature_request(sr_id))

    def cancel(self, sr_id: Any) -> None:
        if self._sync is not None:
            self._sync.cancel_signature_request(sr_id)
            return
        self._run(lambda hook: hook.cancel_signature_request(sr_id))

    def settings(self) -> ApiSettings:
        if self._sync is not None:
            return self._sync.settings
        return self._run(lambda hook: hook.get_settings())

    def authorization(self) -> str:
        """The ``Authorization`` header the hook sends."""
        if self._sync is not None:
            return str(self._sync.get_conn().headers["Authorization"])

        async def header(hook: DropboxSignAsyncHook) -> str:
            return str((await hook.get_session()).headers["Authorization"])

        return self._run(header)


def run_answered(dag: Any, conf: dict[str, Any], answer: ApprovalAnswer) -> tuple[Any, dict[str, Any]]:
    """Run ``dag`` under dag.test() while ``answer`` answers its approval; the run and the form it saw."""
    answer.start()
    dag_run = dag.test(run_conf=conf)
    return dag_run, answer.result()


class ApprovalAnswer(threading.Thread):
    """
    A person answering a DAG's human-in-the-loop task while ``dag.test()`` runs in the main thread.

    Waits until the task is parked waiting for input (``awaiting_input`` from Airflow 3.3; before,
    ``queued`` while ``dag.test()`` runs its trigger in line, or ``deferred``), keeps the form as
    Airflow stored it (``detail``), calls ``before_answer`` (to change the world meanwhile), then
    answers through the handler of the REST API's ``PATCH .../hitlDetails``, the call the UI's
    form makes, as the user ``user``.
    With ``option=None`` it gives no answer: once the deadline has passed it does what the
    scheduler does on 3.3 (its time-out sweep); before 3.3 the task's trigger times out by itself.
    """

    def __init__(
        self,
        dag_id: str,
        task_id: str,
        option: str | None,
        user: str = "reviewer",
        before_answer: Any = None,
        timeout: float = 120.0,
    ) -> None:
        super().__init__(daemon=True)
        # Imported here, in the test's thread: importing Airflow's models from two threads at once
        # deadlocks (the module locks against SQLAlchemy's mapper configuration lock).
        import airflow.api_fastapi.core_api.routes.public.hitl
        import airflow.jobs.scheduler_job_runner
        import airflow.models.dagbag  # noqa: F401
        from airflow.models import import_all_models
        from sqlalchemy.orm import configure_mappers

        import_all_models()
        configure_mappers()
        self.dag_id, self.task_id, self.option, self.user = dag_id, task_id, option, user
        self.before_answer = before_answer
        self.timeout = timeout
        self.detail: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._answer()
        except BaseException as error:  # raised by result(), in the test's thread
            self.error = error
            # dag.test() waits for the answer for ever: say at once why none will come, and end
            # the wait by failing the task.
            traceback.print_exc()
            self._end_the_run()

    def _end_the_run(self) -> None:
        """
        Fail the task until the run ends. Once is not enough: the task may not have reached its
        wait yet (a slow machine), and would then wait for an answer for ever.
        """
        deadline = time.monotonic() + self.timeout
        while self._fail_waiting_task() and time.monotonic() < deadline:
            time.sleep(0.5)

    def _fail_waiting_task(self) -> bool:
        """Fail the task in the newest run of the DAG, if not finished; whether that run still runs."""
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from airflow.utils.state import State
        from sqlalchemy import or_, select, update

        with create_session() as session:
            newest = session.scalar(
                select(DagRun).where(DagRun.dag_id == self.dag_id).order_by(DagRun.id.desc()).limit(1)
            )
            if newest is None or newest.state != "running":
                return False
            session.execute(
                update(TaskInstance)
                .where(
                    TaskInstance.dag_id == self.dag_id,
                    TaskInstance.run_id == newest.run_id,
                    TaskInstance.task_id == self.task_id,
                    or_(TaskInstance.state.is_(None), TaskInstance.state.not_in(State.finished)),
                )
                .values(state="failed")
            )
            return True

    def result(self) -> dict[str, Any]:
        """The form as Airflow stored it; raises what went wrong in the thread."""
        self.join(10)
        if self.error is not None:
            raise self.error
        assert self.detail is not None, f"{self.task_id} never waited for input"
        return self.detail

    def _parked(self) -> Any:
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select
        from sqlalchemy.orm import joinedload

        with create_session() as session:
            ti = session.scalar(
                select(TaskInstance)
                # The run dag.test() is running now, not one an aborted session left waiting.
                .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id))
                .where(
                    TaskInstance.dag_id == self.dag_id,
                    TaskInstance.task_id == self.task_id,
                    # dag.test() before 3.3 runs the approval's trigger in line with the task set
                    # back to queued; the form (hitl_detail) tells it has run.
                    TaskInstance.state.in_(("deferred", "awaiting_input", "queued")),
                    DagRun.state == "running",
                )
                .order_by(DagRun.id.desc())
                .limit(1)
                .options(joinedload(TaskInstance.hitl_detail))
            )
            if ti is None or ti.hitl_detail is None:
                return None
            detail = ti.hitl_detail
            self.detail = {
                "subject": detail.subject,
                "body": detail.body,
                "options": list(detail.options),
                "defaults": list(detail.defaults or []),
            }
            return ti.run_id, ti.trigger_timeout

    def _wait_until_parked(self) -> Any:
        """The run id and deadline of the task once it waits for input."""
        deadline = time.monotonic() + self.timeout
        while (parked := self._parked()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.dag_id}.{self.task_id} never waited for input")
            time.sleep(0.2)
        return parked

    def _answer(self) -> None:
        run_id, trigger_timeout = self._wait_until_parked()
        if self.before_answer is not None:
            self.before_answer()
        if self.option is None:
            if AIRFLOW_V_3_3_PLUS:
                self._time_out(trigger_timeout)
            return
        from airflow.api_fastapi.app import create_auth_manager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
        from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
        from airflow.utils.session import create_session

        # The handler checks assigned_users with the deployment's auth manager, as the API server does.
        create_auth_manager()
        with create_session() as session:
            update_hitl_detail(
                dag_id=self.dag_id,
                dag_run_id=run_id,
                task_id=self.task_id,
                update_hitl_detail_payload=UpdateHITLDetailPayload(chosen_options=[self.option]),
                user=SimpleAuthManagerUser(username=self.user, role="admin"),
                session=session,
                map_index=-1,
            )
        if AIRFLOW_V_3_3_PLUS:
            self._see_it_resumed(run_id)

    def _see_it_resumed(self, run_id: str) -> None:
        """
        Wait until dag.test() runs the answered task again, resuming it again if dag.test() parked
        it anew. dag.test() runs the task in line, then writes the state the run returned
        (``awaiting_input``) onto its own copy of the task instance: an answer that arrives in
        between is recorded, and its resume overwritten. A scheduler does not do that; the second
        resume is what the REST API's handler does for a parked task.
        """
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.trigger import handle_event_submit
        from airflow.triggers.base import TriggerEvent
        from airflow.utils.session import create_session
        from sqlalchemy import select
        from sqlalchemy.orm import joinedload

        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            with create_session() as session:
                ti = session.scalar(
                    select(TaskInstance)
                    .where(
                        TaskInstance.dag_id == self.dag_id,
                        TaskInstance.run_id == run_id,
                        TaskInstance.task_id == self.task_id,
                    )
                    .options(joinedload(TaskInstance.hitl_detail))
                )
                # Scheduled is not enough: dag.test() may still write its copy over it; once it runs
                # the task again it is past that write.
                if ti is None or ti.state not in ("awaiting_input", "scheduled"):
                    return
                if ti.hitl_detail is not None and ti.hitl_detail.response_received:
                    handle_event_submit(
                        TriggerEvent(ti.hitl_detail.as_resume_event_payload()),
                        task_instance=ti,
                        session=session,
                    )

    @staticmethod
    def _time_out(trigger_timeout: Any) -> None:
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

        # Real time passes: the DAG under test was given a deadline of seconds.
        while trigger_timeout is None or datetime.now(timezone.utc) <= trigger_timeout:
            time.sleep(0.2)
        time.sleep(0.5)
        scheduler = SchedulerJobRunner.__new__(SchedulerJobRunner)
        scheduler.check_awaiting_input_timeouts()


# --- recognisable credentials, and where they could leak ------------------------------------------


#: Credentials that cannot be mistaken for anything else (the ``recognisable_account`` fixture takes
#: the first two; the API refuses the revoked key).
RECOGNISABLE_KEY = "sk-live-RECOGNISABLEKEY0001"
RECOGNISABLE_TOKEN = "oauth-RECOGNISABLETOKEN0002"
RECOGNISABLE_REVOKED_KEY = "sk-live-RECOGNISABLEREVOKED0003"


def b64(text: str) -> str:
    """``text`` in base64, as HTTP Basic sends it."""
    return base64.b64encode(text.encode()).decode()


#: Every form a credential could leak in: as typed, and as sent (HTTP Basic encodes "key:").
RECOGNISABLE_FORMS = [
    RECOGNISABLE_KEY,
    RECOGNISABLE_TOKEN,
    RECOGNISABLE_REVOKED_KEY,
    b64(f"{RECOGNISABLE_KEY}:"),
    b64(RECOGNISABLE_KEY),
    b64(f"{RECOGNISABLE_REVOKED_KEY}:"),
    b64(RECOGNISABLE_TOKEN),
    # The distinctive middles, in case a secret is cut, quoted or re-encoded around its edges.
    "RECOGNISABLEKEY0001",
    "RECOGNISABLETOKEN0002",
    "RECOGNISABLEREVOKED0003",
]


def leaks(sources: dict[str, str | bytes]) -> dict[str, list[str]]:
    """Which secret forms occur in which source."""
    found: dict[str, list[str]] = {}
    for name, text in sources.items():
        hits = [
            form
            for form in RECOGNISABLE_FORMS
            if (form.encode() if isinstance(text, bytes) else form) in text
        ]
        if hits:
            found[name] = hits
    return found


def recognisable_connection(emulator: DropboxSignEmulator, credential: str, **extra: Any) -> str:
    """An ``AIRFLOW_CONN_*`` value to ``emulator`` with the ``credential`` named: ``"api key"``,
    ``"revoked api key"`` or ``"access token"``."""
    conn: dict[str, Any] = {"conn_type": "dropbox_sign", "host": emulator.base_url}
    if credential == "api key":
        conn["password"] = RECOGNISABLE_KEY
    elif credential == "revoked api key":
        conn["password"] = RECOGNISABLE_REVOKED_KEY
    else:
        extra["access_token"] = RECOGNISABLE_TOKEN
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


# --- a callback receiver for the emulator's events: a real aiohttp server on loopback -------------


@dataclass(frozen=True)
class Received:
    """One POST as the receiver got it."""

    content_type: str
    body: bytes
    at: float  # time.monotonic() on arrival

    def parts(self) -> dict[str, str]:
        """The form fields, parsed by the standard library (not by aiohttp, which wrote them)."""
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {self.content_type}\r\n\r\n".encode() + self.body
        )
        assert message.get_content_type() == "multipart/form-data", self.content_type
        fields = {}
        for part in message.iter_parts():
            assert part.get_content_disposition() == "form-data"
            fields[part.get_param("name", header="content-disposition")] = part.get_content()
        return fields

    def payload(self) -> dict[str, Any]:
        """The ``json`` field, parsed; asserts it is the one field."""
        fields = self.parts()
        assert list(fields) == ["json"], list(fields)
        return dict(json.loads(fields["json"]))


def non_loopback_address() -> str | None:
    """
    An address of this machine that is not a loopback one, or ``None`` when it has none.

    Found by routing a UDP socket towards a documentation address: ``connect`` on UDP sends nothing.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if ipaddress.ip_address(address).is_loopback else address


class Receiver:
    """
    Records every POST; answers the queued replies in turn, then the acknowledgement.

    :param replies: ``(status, body)`` or ``(status, body, headers)`` answers to give first, e.g.
        ``[(500, "oops")]``.
    :param host: the address to listen on; loopback unless a test needs a receiver the emulator
        must not reach.
    """

    def __init__(self, replies: list[tuple[Any, ...]] | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.replies = list(replies or [])
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.received.append(Received(request.headers.get("Content-Type", ""), body, time.monotonic()))
            reply = self.replies.pop(0) if self.replies else (200, CALLBACK_ACKNOWLEDGEMENT)
        status, text, headers = (*reply, {})[:3]
        return web.Response(status=status, text=text, headers=headers)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/callback", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.url = f"http://{self.host}:{self.port}/callback"

    @property
    def port(self) -> int:
        """The port listened on."""
        assert self._runner is not None
        return int(self._runner.addresses[0][1])

    def __enter__(self) -> Receiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def payloads(self) -> list[dict[str, Any]]:
        """The ``json`` field of every POST, in arrival order."""
        with self._lock:
            received = list(self.received)
        return [item.payload() for item in received]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` POSTs have arrived; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} callbacks expected, {len(self.received)} received")
            time.sleep(0.02)
