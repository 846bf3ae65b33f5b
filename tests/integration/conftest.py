"""
Fixtures of the integration tests besides the root ones (the emulator, connections):

- the callback receiver's: the plugin's app over FastAPI's TestClient, Airflow's SQLite metadata
  database with a DAG scheduled on event assets (parsed and written as the DAG processor does), two
  accounts with API keys, and readers of what a callback left in the database;
- the emulator's events': receivers of what the emulator posts (``tests.helpers.Receiver``);
- the Dropbox Sign page's: the manual cancel DAG in the database, whose runs Airflow's REST API
  starts as the page's button asks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dropbox_sign_provider.events.accounts import forget_callback_accounts
from dropbox_sign_provider.events.board import recent_events_variable
from dropbox_sign_provider.events.callback import CallbackEvent, event_hash
from dropbox_sign_provider.plugins.callbacks import app
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator
from dropbox_sign_provider.version_compat import AIRFLOW_V_3_2_PLUS
from tests.helpers import (
    CANCEL_DAG,
    SECRET_ACCESS_TOKEN,
    SECRET_API_KEY,
    Receiver,
    connection_uri_json,
    set_connection,
)
from tests.helpers import DAGS as REPO_DAGS

DAGS = Path(__file__).parent / "dags"
BUNDLE = "callback-test-dags"
#: The DAG of ``dags/t_callback_assets.py``: canceled and all_signed of ds_cb_a, canceled of ds_cb_b.
ASSET_DAG_ID = "t_callback_assets"
#: The accounts the receiver accepts unless a test says otherwise, and their API keys.
KEYS = {"ds_cb_a": SECRET_API_KEY, "ds_cb_b": "sk-live-OTHERKEY789"}


def _written_unpaused(dag_folder: Path, bundle_path: Path, bundle: str, dag_id: str) -> str:
    # Parsed and written to the database as the DAG processor does, then unpaused.
    if AIRFLOW_V_3_2_PLUS:
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    else:
        from airflow.models.dagbag import (  # type: ignore[no-redef,attr-defined,unused-ignore]
            DagBag,
            sync_bag_to_db,
        )
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.utils.session import create_session

    bag = DagBag(dag_folder=dag_folder, bundle_path=bundle_path)
    assert not bag.import_errors, bag.import_errors
    assert dag_id in bag.dags
    with create_session() as session:
        if session.get(DagBundleModel, bundle) is None:
            session.add(DagBundleModel(name=bundle))
    sync_bag_to_db(bag, bundle, None)
    with create_session() as session:
        dag_model = session.get(DagModel, dag_id)
        assert dag_model is not None
        dag_model.is_paused = False
    return dag_id


@pytest.fixture(scope="session")
def asset_dag(airflow_db: Path) -> str:
    """``t_callback_assets`` parsed, written to the database as the DAG processor does, unpaused."""
    return _written_unpaused(DAGS, DAGS, BUNDLE, ASSET_DAG_ID)


@pytest.fixture(scope="session")
def manual_dag(airflow_db: Path) -> str:
    """The manual cancel DAG (``dags/dropbox_sign_cancel_request.py``) written to the database as
    the DAG processor does, unpaused: Airflow's REST API may start its runs."""
    return _written_unpaused(REPO_DAGS / f"{CANCEL_DAG}.py", REPO_DAGS, "dags-folder", CANCEL_DAG)


class Recorded:
    """Reads what callbacks left in Airflow's database."""

    def board(self, conn_id: str) -> Any:
        """The board of recent events as stored (JSON text), or ``None`` when there is none."""
        from airflow.models.variable import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            row = session.scalar(select(Variable).where(Variable.key == recent_events_variable(conn_id)))
            return None if row is None else row.val

    def board_description(self, conn_id: str) -> str | None:
        from airflow.models.variable import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            return session.scalar(
                select(Variable.description).where(Variable.key == recent_events_variable(conn_id))
            )

    def board_keys(self, conn_id: str) -> list[str]:
        board = self.board(conn_id)
        return [] if board is None else [entry[1] for entry in json.loads(board)["events"]]

    def asset_events(self, uri: str | None = None) -> list[dict[str, Any]]:
        """The extras of the asset events of one ``dropbox-sign://`` asset (or all), oldest first."""
        from airflow.models.asset import AssetEvent, AssetModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        query = select(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
        query = query.where(AssetModel.uri == uri if uri else AssetModel.uri.like("dropbox-sign://%"))
        with create_session() as session:
            return [dict(extra) for extra in session.scalars(query.order_by(AssetEvent.id))]

    def queued(self, dag_id: str) -> int:
        """How many asset events wait to start a run of ``dag_id`` (Airflow's asset queue)."""
        from airflow.models.asset import AssetDagRunQueue
        from airflow.utils.session import create_session
        from sqlalchemy import func, select

        with create_session() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(AssetDagRunQueue)
                    .where(AssetDagRunQueue.target_dag_id == dag_id)
                )
                or 0
            )

    def ledgers(self) -> dict[str, Any]:
        """Every ledger of an event time, by Variable key, as stored (parsed)."""
        from airflow.models.variable import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            rows = session.scalars(select(Variable).where(Variable.key.like("dropbox_sign_event_ids.%")))
            return {row.key: json.loads(row.val) for row in rows}

    def nothing(self) -> bool:
        """Whether no board, ledger or asset event exists for any of the test accounts."""
        return (
            all(self.board(c) is None for c in (*KEYS, "ds_cb_token"))
            and not self.asset_events()
            and not self.ledgers()
        )

    def forget_board(self, conn_id: str) -> None:
        """Delete one account's board, as when it rotated its oldest events out."""
        from airflow.models.variable import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import delete

        with create_session() as session:
            session.execute(delete(Variable).where(Variable.key == recent_events_variable(conn_id)))

    def forget(self) -> None:
        from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
        from airflow.models.variable import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import delete, select

        with create_session() as session:
            for prefix in ("dropbox_sign_recent_events.%", "dropbox_sign_event_ids.%"):
                session.execute(delete(Variable).where(Variable.key.like(prefix)))
            ours = select(AssetModel.id).where(AssetModel.uri.like("dropbox-sign://%"))
            session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.asset_id.in_(ours)))
            session.execute(delete(AssetEvent).where(AssetEvent.asset_id.in_(ours)))


@pytest.fixture
def recorded(asset_dag: str) -> Iterator[Recorded]:
    """What callbacks recorded; the test starts with no board and no event asset event."""
    reader = Recorded()
    reader.forget()
    yield reader
    reader.forget()


@pytest.fixture
def accounts(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """``ds_cb_a`` and ``ds_cb_b`` with API keys, both in ``callback_conn_ids``; ``ds_cb_token``
    with an access token only, not in it. Returns conn id -> API key."""
    for conn_id, key in KEYS.items():
        set_connection(monkeypatch, conn_id, password=key)
    set_connection(monkeypatch, "ds_cb_token", extra={"access_token": SECRET_ACCESS_TOKEN})
    monkeypatch.setenv("AIRFLOW__DROPBOX_SIGN__CALLBACK_CONN_IDS", ",".join(KEYS))
    forget_callback_accounts()
    yield dict(KEYS)
    forget_callback_accounts()


@pytest.fixture
def receiver_app(accounts: dict[str, str], recorded: Recorded) -> Iterator[TestClient]:
    """The plugin's app, as the API server mounts it, over FastAPI's TestClient."""
    with TestClient(app) as client:
        yield client


@pytest.fixture
def make_callback() -> Callable[..., dict[str, Any]]:
    """Builds a callback's ``json`` field: ``make_callback(event_type, key=..., event_time=...,
    signature_request_id=..., event_hash=...)``; signed with ``key`` unless ``event_hash`` is given."""
    counter = iter(range(1_000_000))
    # Recent, as the receiver records only events Dropbox Sign could still be delivering. Counted
    # back from one fixed second, never from the clock at each call: a test that takes as many
    # seconds between two calls as the counter advances would otherwise get one event time twice.
    latest = int(time.time()) - 60

    def make(
        event_type: str = "signature_request_canceled",
        *,
        key: str = SECRET_API_KEY,
        event_time: str | int | None = None,
        signature_request_id: str | None = "",
        **event: Any,
    ) -> dict[str, Any]:
        when = str(event_time if event_time is not None else latest - next(counter))
        body: dict[str, Any] = {
            "event": {
                "event_time": when,
                "event_type": event_type,
                "event_hash": event_hash(key, when, event_type),
                "event_metadata": {"reported_for_account_id": "acc"},
                **event,
            }
        }
        if signature_request_id is not None:
            body["signature_request"] = {
                "signature_request_id": signature_request_id or f"{next(counter):040x}",
                "title": "NDA",
                "metadata": {"order": 7},
            }
        return body

    return make


@pytest.fixture
def post(receiver_app: TestClient) -> Callable[..., Any]:
    """Posts a callback: ``post(body, form="multipart" | "urlencoded" | "file")``; ``body`` a dict
    (sent as JSON text) or the ``json`` field's text itself."""

    def send(body: dict[str, Any] | str, *, form: str = "multipart") -> Any:
        text = body if isinstance(body, str) else json.dumps(body)
        if form == "multipart":
            return receiver_app.post("/callback", files={"json": (None, text)})
        if form == "file":
            return receiver_app.post("/callback", files={"json": ("event.json", text, "application/json")})
        assert form == "urlencoded"
        return receiver_app.post("/callback", data={"json": text})

    return send


class Clock:
    """The receiver's clock, set to a fixed time: ``time.time()`` answers :attr:`now`."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Sets the receiver's clock (``clock.now = ...``); it starts at the real time."""
    from dropbox_sign_provider.plugins import callbacks

    fixed = Clock(time.time())
    monkeypatch.setattr(callbacks, "time", fixed)
    return fixed


@pytest.fixture
def event_of() -> Callable[[dict[str, Any]], CallbackEvent]:
    """The event a callback body parses to."""
    from dropbox_sign_provider.events.callback import parse_callback

    return lambda body: parse_callback(json.dumps(body))


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., Receiver]]:
    """
    Starts callback receivers, each stopped after the test: ``make_receiver(replies, host=...)``, on
    loopback unless ``host`` says otherwise.
    """
    with ExitStack() as stack:
        yield lambda replies=None, host="127.0.0.1": stack.enter_context(Receiver(replies, host))


@pytest.fixture
def receiver(make_receiver: Callable[..., Receiver]) -> Receiver:
    """A callback receiver that acknowledges every event."""
    return make_receiver()


@pytest.fixture
def one_call_a_minute(emulator: DropboxSignEmulator, monkeypatch: pytest.MonkeyPatch) -> DropboxSignEmulator:
    """The emulator, with ``dropbox_sign_default`` allowed one call a minute by the client-side cap
    (not by the API's window, which may happen to reset a second later): after one call, the next
    one would wait for about a minute."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_DROPBOX_SIGN_DEFAULT", connection_uri_json(emulator.url, max_requests_per_minute=1)
    )
    return emulator
