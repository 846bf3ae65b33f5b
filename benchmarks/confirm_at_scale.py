"""
``confirm_at_scale``: ``n_triggers`` triggers in one event loop, as one triggerer runs them, each
waiting for the cancellation of its own signature request, under an account budget of
``limit_per_window`` requests per ``window_s`` seconds.

Every request's cancellation is queued before the measured phase and completes at its own random
moment over ``spread_s`` seconds after the start (the emulator's ``cancel_delay`` is set per cancel
call while queueing, with the rate limit lifted, in windows that end before the measured phase).
Each trigger starts at its own random offset within one poll interval, the same offsets on both
sides, as tasks deferred over a few seconds would.

* ours: :class:`~dropbox_sign_provider.triggers.signature_request.SignatureRequestCanceledTrigger`
  with one pending id each (``recancel_after`` beyond the run, so no re-cancel is due).
* baseline: :class:`NaivePollTrigger`, the trigger one writes with the HTTP provider's tools:
  its own ``aiohttp`` session, ``GET`` at a fixed interval until the answer is 410. (The HTTP
  provider's ``HttpSensorTrigger`` fires on the first answer that is not a 404, so it cannot wait
  for a 410 itself.)

Run as a module, this file is the measured client (see :func:`benchmarks.common.client_main`).
"""

from __future__ import annotations

import asyncio
import base64
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import requests

from benchmarks.common import (
    API_KEY,
    ClientProcess,
    client_main,
    cpu_seconds,
    create_requests,
    dropbox_sign_connection,
    finite_or_none,
    http_connection,
    percentile,
    ratio,
    rss_kb,
    save_log,
    start_emulator,
    window_counts,
)
from benchmarks.receiver import EventsReceiver
from dropbox_sign_provider.testing.emulator import DropboxSignEmulator

DROPBOX_SIGN_CONN = "dropbox_sign_bench"
HTTP_CONN = "http_bench"
SIDES = ("ours", "baseline")
#: A trigger's own deadline, far beyond any run: the benchmark ends the run itself.
TRIGGER_TIMEOUT_S = 3600.0
_RSS_SAMPLE_S = 0.25
# Queueing starts with this many cancellations of spare requests, timed to foresee how long the
# rest will take; the estimate is then doubled, as the machine may be shared.
_CALIBRATION_CANCELS = 20
_QUEUE_SAFETY = 2.0
_QUEUE_S_FIXED = 0.5


def run(
    n_triggers: int,
    limit_per_window: int,
    window_s: float,
    poll_interval: float,
    spread_s: float,
    tail_s: float,
    seed: int,
    workdir: Path,
) -> dict[str, Any]:
    """
    Both sides, each against a fresh emulator; returns the scenario's JSON section.

    :param n_triggers: triggers, each waiting on its own signature request.
    :param limit_per_window: requests the emulator allows per window (the budget).
    :param window_s: the emulator's rate-limit window, in seconds.
    :param poll_interval: every trigger's poll interval, in seconds.
    :param spread_s: the cancellations complete at random over this many seconds after the start.
    :param tail_s: seconds after the spread before triggers that have not fired are given up.
    :param seed: seeds the start offsets and completion times, the same for both sides.
    :param workdir: where the clients' specs, results, logs and request lists go.
    """
    plan = make_plan(n_triggers, poll_interval, spread_s, seed)
    allowed_rps = limit_per_window / window_s
    section: dict[str, Any] = {
        "n_triggers": n_triggers,
        "limit_per_window": limit_per_window,
        "window_s": window_s,
        "poll_interval_s": poll_interval,
        "spread_s": spread_s,
        # One poll of every trigger at the allowed rate, plus one poll interval.
        "p99_target_s": round(n_triggers / allowed_rps + poll_interval, 3),
    }
    for side in SIDES:
        section[side] = run_side(
            side, n_triggers, limit_per_window, window_s, poll_interval, spread_s, tail_s, plan, workdir
        )
    ours, baseline = section["ours"], section["baseline"]
    section["ratios"] = {
        f"{key}_baseline_over_ours": ratio(baseline[key], ours[key])
        for key in (
            "requests",
            "peak_per_window",
            "p50_latency_s",
            "p99_latency_s",
            "rss_kb_per_trigger",
            "cpu_s",
        )
    }
    return section


def make_plan(n_triggers: int, start_spread_s: float, spread_s: float, seed: int) -> dict[str, list[float]]:
    """Each trigger's start offset (within ``start_spread_s``) and its cancellation's completion."""
    rng = random.Random(seed)
    return {
        "start_offsets": [rng.uniform(0.0, start_spread_s) for _ in range(n_triggers)],
        "completions": [rng.uniform(0.0, spread_s) for _ in range(n_triggers)],
    }


def run_side(
    side: str,
    n: int,
    limit_per_window: int,
    window_s: float,
    poll_interval: float,
    spread_s: float,
    tail_s: float,
    plan: dict[str, list[float]],
    workdir: Path,
    events: EventsReceiver | None = None,
) -> dict[str, Any]:
    """
    One side of a confirmation scenario against a fresh emulator; returns its figures.

    :param side: ``baseline`` for the naive trigger, any other name for this provider's trigger.
    :param events: the receiver the emulator posts its events to, for event-first triggers
        (``None``: no events, the triggers poll).
    """
    emulator = start_emulator(
        limit_per_window, window_s, cancel_delay=0.0, callback_url=events.url if events else None
    )
    try:
        ids = create_requests(emulator, n)
        # Cancelled at once: the client's warm-up trigger fires on its first poll.
        warm_up_id = create_requests(emulator, 1)[0]
        with requests.Session() as session:
            _cancel(emulator, session, warm_up_id)
        connections = (
            {HTTP_CONN: http_connection(emulator)}
            if side == "baseline"
            else {DROPBOX_SIGN_CONN: dropbox_sign_connection(emulator.url, limit_per_window, window_s)}
        )
        spec = {
            "side": side,
            "event_first": events is not None,
            "ids": ids,
            "warm_up_id": warm_up_id,
            "start_offsets": plan["start_offsets"],
            "poll_interval": poll_interval,
            "run_for_s": spread_s + tail_s,
        }
        spawned = time.monotonic()
        client = ClientProcess(__name__, spec, connections, workdir, events.env if events else None)
        client.wait_ready()
        ready = time.monotonic()
        start_at = _queue_cancellations(emulator, ids, plan["completions"], window_s)
        queued = time.monotonic()
        emulator.clear_log()
        client.go(start_at)
        measured = client.result(timeout=(start_at - time.time()) + spread_s + tail_s + 120.0)
        ran_for = time.time() - start_at
        log = list(emulator.requests_log)
        save_log(log, workdir / f"confirm_at_scale-{side}.requests.json")
        acknowledged = len(emulator.callback_events)
    finally:
        emulator.stop()

    fired: dict[str, float] = measured["fired"]
    latencies = [
        fired[sr_id] - (start_at + completion) if sr_id in fired else math.inf
        for sr_id, completion in zip(ids, plan["completions"], strict=True)
    ]
    per_window = window_counts(log, window_s)
    first_window = math.floor(start_at / window_s)
    last_window = max(per_window, default=first_window)
    return {
        "requests": len(log),
        "http_429": sum(1 for entry in log if entry.status == 429),
        "peak_per_window": max(per_window.values(), default=0),
        "windows_over_budget": sum(1 for count in per_window.values() if count > limit_per_window),
        "p50_latency_s": finite_or_none(percentile(latencies, 50)),
        "p99_latency_s": finite_or_none(percentile(latencies, 99)),
        "max_latency_s": finite_or_none(max(latencies, default=math.nan)),
        "confirmed": len(fired),
        "unconfirmed": n - len(fired),
        "trigger_errors": measured["errors"],
        "first_trigger_errors": measured["first_errors"],
        "rss_kb_per_trigger": round((measured["rss_kb_peak"] - measured["rss_kb_start"]) / n, 2),
        "cpu_s": round(float(measured["cpu_s"]), 3),
        # The cancel (sent before the measured phase) and every request of the wait, per confirmation.
        "requests_per_confirmation": round(1 + len(log) / len(fired), 3) if fired else None,
        "board_reads": measured["board_reads"],
        "board_reads_per_waiting_id": round(measured["board_reads"] / n, 4),
        "events_acknowledged": acknowledged,
        # For the plots: requests in each window of the measured phase, in order, and the latency
        # at every whole percentile.
        "requests_per_window": [per_window.get(w, 0) for w in range(first_window, last_window + 1)],
        "latency_percentiles_s": [finite_or_none(percentile(latencies, q)) for q in range(101)],
        "phases_s": {
            "client_ready": round(ready - spawned, 1),
            "queue_cancellations": round(queued - ready, 1),
            "measured": round(ran_for, 1),
        },
    }


def _cancel(emulator: DropboxSignEmulator, session: requests.Session, sr_id: str) -> None:
    answer = session.post(
        f"{emulator.base_url}/signature_request/cancel/{sr_id}", auth=(API_KEY, ""), timeout=30
    )
    answer.raise_for_status()


def _queue_cancellations(
    emulator: DropboxSignEmulator, ids: list[str], completions: list[float], window_s: float
) -> float:
    """
    Cancel every id so that each completes at ``start + its completion offset``; return ``start``.

    The start is half a window into a rate-limit window that begins after the queueing is over, so
    none of these calls is counted in a window the measured client uses.
    """
    spare = create_requests(emulator, _CALIBRATION_CANCELS)
    session = requests.Session()
    limit, delay = emulator.rate_limit, emulator.cancel_delay
    # Queueing is set-up, not traffic of the client being measured: it must not spend the budget.
    emulator.rate_limit = 10**9
    try:
        began = time.perf_counter()
        for sr_id in spare:
            _cancel(emulator, session, sr_id)
        per_cancel = (time.perf_counter() - began) / len(spare)
        ready_by = time.time() + _QUEUE_S_FIXED + _QUEUE_SAFETY * per_cancel * len(ids)
        start_at = (math.floor(ready_by / window_s) + 1) * window_s + window_s / 2
        for sr_id, completion in zip(ids, completions, strict=True):
            emulator.cancel_delay = max(0.0, start_at + completion - time.time())
            _cancel(emulator, session, sr_id)
    finally:
        emulator.rate_limit, emulator.cancel_delay = limit, delay
        session.close()
    if math.floor(time.time() / window_s) >= math.floor(start_at / window_s):
        raise RuntimeError(
            "queueing the cancellations ran into the measured phase; the machine is too busy for "
            "this size (lower --confirm-n or rerun)"
        )
    return start_at


# --- the measured client ----------------------------------------------------------------------------


def _naive_trigger_class() -> type:
    # Defined on first use so the runner process never imports Airflow.
    from airflow.providers.common.compat.connection import get_async_connection
    from airflow.triggers.base import BaseTrigger, TriggerEvent

    class NaivePollTrigger(BaseTrigger):
        """
        Poll ``GET endpoint`` every ``poll_interval`` seconds with its own session until it answers 410.

        :param http_conn_id: an ``http`` connection (the API key as login).
        :param endpoint: path of the signature request.
        :param poll_interval: seconds between polls, whatever the answer.
        """

        def __init__(self, http_conn_id: str, endpoint: str, poll_interval: float) -> None:
            super().__init__()
            self.http_conn_id = http_conn_id
            self.endpoint = endpoint
            self.poll_interval = poll_interval

        def serialize(self) -> tuple[str, dict[str, Any]]:
            return (
                f"{__name__}.NaivePollTrigger",
                {
                    "http_conn_id": self.http_conn_id,
                    "endpoint": self.endpoint,
                    "poll_interval": self.poll_interval,
                },
            )

        async def run(self) -> AsyncIterator[Any]:
            import aiohttp

            conn = await get_async_connection(self.http_conn_id)
            url = f"{conn.schema or 'http'}://{conn.host}:{conn.port}{self.endpoint}"
            credentials = base64.b64encode(f"{conn.login or ''}:{conn.password or ''}".encode()).decode()
            async with aiohttp.ClientSession(headers={"Authorization": f"Basic {credentials}"}) as session:
                while True:
                    try:
                        async with session.get(url) as response:
                            await response.read()
                            if response.status == 410:
                                yield TriggerEvent({"status": "success"})
                                return
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(self.poll_interval)

    return NaivePollTrigger


def _trigger_factory(spec: dict[str, Any]) -> Callable[[str, float], Any]:
    poll_interval = float(spec["poll_interval"])
    if spec["side"] != "baseline":
        from dropbox_sign_provider.triggers.signature_request import SignatureRequestCanceledTrigger

        def ours(sr_id: str, now: float) -> Any:
            return SignatureRequestCanceledTrigger(
                pending={sr_id: {"last_cancel_at": now, "cancel_attempts": 1}},
                outcomes={sr_id: "cancel_requested"},
                deadline=now + TRIGGER_TIMEOUT_S,
                dropbox_sign_conn_id=DROPBOX_SIGN_CONN,
                poll_interval=poll_interval,
                recancel_after=TRIGGER_TIMEOUT_S,
                event_first=bool(spec["event_first"]),
            )

        return ours

    naive = _naive_trigger_class()

    def baseline(sr_id: str, now: float) -> Any:
        return naive(
            http_conn_id=HTTP_CONN, endpoint=f"/v3/signature_request/{sr_id}", poll_interval=poll_interval
        )

    return baseline


async def _fire_time(trigger: Any, start_at: float) -> float:
    await asyncio.sleep(max(0.0, start_at - time.time()))
    fired = math.nan
    async for event in trigger.run():
        if event.payload.get("status") != "success":
            raise RuntimeError(f"trigger ended with {event.payload!r}")
        fired = time.time()
    return fired


async def _measure(
    spec: dict[str, Any], make: Callable[[str, float], Any], start_at: float
) -> dict[str, Any]:
    from dropbox_sign_provider.events import wakeups

    ids: list[str] = spec["ids"]
    rss_start, cpu_start, reads_start = rss_kb(), cpu_seconds(), wakeups.board_reads
    rss_peak = rss_start

    async def sample_rss() -> None:
        nonlocal rss_peak
        while True:
            rss_peak = max(rss_peak, rss_kb())
            await asyncio.sleep(_RSS_SAMPLE_S)

    sampler = asyncio.create_task(sample_rss())
    now = time.time()
    tasks = {
        asyncio.create_task(_fire_time(make(sr_id, now), start_at + offset)): sr_id
        for sr_id, offset in zip(ids, spec["start_offsets"], strict=True)
    }
    done, pending = await asyncio.wait(tasks, timeout=start_at + float(spec["run_for_s"]) - time.time())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    rss_peak = max(rss_peak, rss_kb())
    sampler.cancel()
    fired: dict[str, float] = {}
    errors: list[str] = []
    for task in done:
        if task.exception() is not None:
            errors.append(repr(task.exception()))
        elif not math.isnan(task.result()):
            fired[tasks[task]] = task.result()
    return {
        "fired": fired,
        "errors": len(errors),
        "first_errors": errors[:5],
        "rss_kb_start": rss_start,
        "rss_kb_peak": rss_peak,
        "cpu_s": cpu_seconds() - cpu_start,
        "board_reads": wakeups.board_reads - reads_start,
    }


def _client(spec: dict[str, Any], ready: Callable[[], float]) -> dict[str, Any]:
    make = _trigger_factory(spec)
    # One trigger of the same kind first, on an id already cancelled: the lazy imports, the first
    # connection lookup and the first session are paid before the memory baseline is taken.
    warm_up = asyncio.run(_fire_time(make(spec["warm_up_id"], time.time()), time.time()))
    if math.isnan(warm_up):
        raise RuntimeError("the warm-up trigger did not fire")
    start_at = ready()
    return asyncio.run(_measure(spec, make, start_at))


if __name__ == "__main__":
    client_main(_client)
