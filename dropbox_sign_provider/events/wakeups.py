"""
Event-first confirmation: learning from the board of recent events which waiting ids to read now.

The callback receiver writes each verified event to the account's board (one Airflow Variable, see
:mod:`dropbox_sign_provider.events`). A wait that is *event-first* reads that board every
:data:`EVENT_CHECK_INTERVAL` seconds and reads at once, with one ``GET``, each waiting id an event
names; the 410 of that ``GET`` is the confirmation, never the event itself. Ids no event names are
still polled, every poll interval, which can then be long (minutes).

Why a Variable: Airflow lets triggers read Variables on every supported version (3.1 to 3.3), through
the triggerer's own connection to the metadata database; the asset state store (3.3 only) would
also need every account's assets to be registered by a DAG before an event could be recorded. One
Variable per account keeps the cost of a check at one read, whatever the number of waiting ids:
on the triggerer, all the triggers of one process share one reader.

Where the board cannot be read (no Variable support in the running Airflow, a secrets backend
that refuses the key), the wait says so once and simply polls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from dropbox_sign_provider.cancellation.outcomes import Logger
from dropbox_sign_provider.events.board import board_problem, recent_event_requests, recent_events_variable

#: Seconds between two reads of the board by one waiting process.
EVENT_CHECK_INTERVAL = 2.0

#: Board reads made by this process (every reader together): what an event-first wait costs the
#: metadata database, for the benchmarks.
board_reads = 0


class BoardUnavailableError(Exception):
    """The board of recent events cannot be read here; the wait polls instead."""


def read_board(dropbox_sign_conn_id: str) -> Any:
    """
    Read one account's board of recent events (``None`` when nothing was recorded yet).

    :raises BoardUnavailableError: when the running Airflow cannot read Variables here, or the
        Variable holds something else than a board.
    """
    global board_reads
    board_reads += 1
    from airflow.sdk import Variable

    key = recent_events_variable(dropbox_sign_conn_id)
    try:
        board = Variable.get(key, default=None)
    except Exception as exc:
        raise BoardUnavailableError(f"{type(exc).__name__}: {exc}") from exc
    problem = board_problem(board)
    if problem is not None:
        raise BoardUnavailableError(f"the Variable {key} cannot be read: {problem}")
    return board


class Wakeups:
    """
    Which waiting ids an event names and that were not read for it yet, for one wait.

    :param dropbox_sign_conn_id: the account whose board is read.
    :param enabled: whether the wait is event-first; a wait that only polls reads no board, and
        :meth:`check` wakes nothing.
    """

    def __init__(self, dropbox_sign_conn_id: str, enabled: bool = True) -> None:
        self.dropbox_sign_conn_id = dropbox_sign_conn_id
        self.available = enabled
        # id -> sequence number of the last board entry it was woken for: one read per event.
        self._seen: dict[str, int] = {}

    def take(self, named: Mapping[str, int], pending: Iterable[str]) -> list[str]:
        """
        The pending ids a board entry names that were not woken for that entry yet.

        :param named: signature request id -> its latest entry on the board, as
            :func:`~dropbox_sign_provider.events.board.recent_event_requests` reads it (once per read,
            however many waits share it).
        :param pending: the ids still waiting.
        """
        woken = []
        for sr_id in pending:
            entry = named.get(sr_id)
            if entry is not None and entry > self._seen.get(sr_id, 0):
                self._seen[sr_id] = entry
                woken.append(sr_id)
        return woken

    def unavailable(self, reason: str, log: Logger) -> None:
        """Stop reading the board: say once why, and that the wait polls from now on."""
        if self.available:
            self.available = False
            log.warning(
                "Events for %s cannot be read (%s); polling every poll interval instead",
                self.dropbox_sign_conn_id,
                reason,
            )

    @property
    def check_interval(self) -> float:
        """Seconds until a sync wait should read the board again (infinite once it cannot)."""
        return EVENT_CHECK_INTERVAL if self.available else float("inf")

    def check(self, pending: Iterable[str], log: Logger) -> list[str]:
        """Read the board once (sync: the operator's wait, the sensor's poke) and take what it wakes."""
        if not self.available:
            return []
        try:
            board = read_board(self.dropbox_sign_conn_id)
        except BoardUnavailableError as exc:
            self.unavailable(str(exc), log)
            return []
        return self.take(recent_event_requests(board)[1], pending)


class _SharedReader:
    # One reader per account and event loop: the triggers of one triggerer process share its reads.
    def __init__(self, dropbox_sign_conn_id: str) -> None:
        self.dropbox_sign_conn_id = dropbox_sign_conn_id
        self.subscribers: set[Subscription] = set()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        from asgiref.sync import sync_to_async

        read = sync_to_async(read_board, thread_sensitive=False)
        while self.subscribers:
            try:
                board = await read(self.dropbox_sign_conn_id)
            except BoardUnavailableError as exc:
                for subscriber in list(self.subscribers):
                    subscriber.fail(str(exc))
                return
            _seq, named = recent_event_requests(board)
            for subscriber in list(self.subscribers):
                subscriber.offer(named)
            await asyncio.sleep(EVENT_CHECK_INTERVAL)


_readers: dict[tuple[int, str], _SharedReader] = {}


class Subscription:
    """
    A trigger's share of its process's board reader: ids to wake, and a wait for them.

    Use as an async context manager; :meth:`wait` returns the ids woken since the last call.

    :param dropbox_sign_conn_id: the account whose board is read.
    :param pending: the ids waiting for confirmation; the trigger's own set, read at each check.
    :param log: the trigger's logger.
    """

    def __init__(self, dropbox_sign_conn_id: str, pending: Iterable[str], log: Logger) -> None:
        self.wakeups = Wakeups(dropbox_sign_conn_id)
        self.pending = pending
        self.log = log
        self._woken: list[str] = []
        self._changed = asyncio.Event()
        self._reader: _SharedReader | None = None

    async def __aenter__(self) -> Subscription:
        key = (id(asyncio.get_running_loop()), self.wakeups.dropbox_sign_conn_id)
        reader = _readers.get(key)
        if reader is None:
            reader = _readers[key] = _SharedReader(self.wakeups.dropbox_sign_conn_id)
        reader.subscribers.add(self)
        if reader.task is None or reader.task.done():
            reader.task = asyncio.create_task(reader.run())
        self._reader = reader
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        reader, self._reader = self._reader, None
        if reader is None:
            return
        reader.subscribers.discard(self)
        if not reader.subscribers:
            key = (id(asyncio.get_running_loop()), reader.dropbox_sign_conn_id)
            if _readers.get(key) is reader:
                del _readers[key]
            if reader.task is not None:
                reader.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader.task

    @property
    def available(self) -> bool:
        """Whether events can still wake this wait (otherwise it only polls)."""
        return self.wakeups.available

    def offer(self, named: Mapping[str, int]) -> None:
        """Take the ids a freshly read board wakes (called by the shared reader)."""
        if not named:
            return
        woken = self.wakeups.take(named, list(self.pending))
        if woken:
            self._woken.extend(woken)
            self._changed.set()

    def fail(self, reason: str) -> None:
        """The board cannot be read: stop waiting for events (called by the shared reader)."""
        self.wakeups.unavailable(reason, self.log)
        self._changed.set()

    async def wait(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` seconds for woken ids; return them (possibly none)."""
        if not self._woken and self.available:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, timeout))
        elif not self._woken:
            await asyncio.sleep(max(0.0, timeout))
        self._changed.clear()
        woken, self._woken = self._woken, []
        return woken


class _Polling:
    # The events of a trigger that only polls: none, and no object per trigger.
    async def __aenter__(self) -> _Polling:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def wait(self, timeout: float) -> list[str]:
        await asyncio.sleep(max(0.0, timeout))
        return []


_POLLING = _Polling()


def subscribe(
    dropbox_sign_conn_id: str, pending: Iterable[str], log: Logger, *, event_first: bool
) -> Subscription | _Polling:
    """
    What a trigger waits on between two steps: a :class:`Subscription` when it is event-first,
    otherwise plain sleeps (its :meth:`~Subscription.wait` returns no ids).

    :param dropbox_sign_conn_id: the account whose board is read.
    :param pending: the ids waiting for confirmation.
    :param log: the trigger's logger.
    :param event_first: whether the trigger wakes on events.
    """
    return Subscription(dropbox_sign_conn_id, pending, log) if event_first else _POLLING
