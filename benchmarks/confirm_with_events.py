"""
``confirm_with_events``: ``confirm_at_scale`` with Dropbox Sign's events on and off, side by side.

The same triggers, cancellations and completion times as ``confirm_at_scale`` (same seed), run twice
with this provider's trigger:

* ``events_on``: ``event_first=True`` with a fallback poll interval longer than the run. The
  emulator posts each ``signature_request_canceled`` event, signed, to the provider's callback
  receiver (its FastAPI app, in its own process, on a throw-away metadata database); the triggers'
  process reads the account's board of recent events there, once per check for all of them, and
  reads each id an event names.
* ``events_off``: polling only, every ``poll_interval`` seconds, as ``confirm_at_scale``'s ``ours``.

Requests per confirmed cancellation count the cancel (sent before the measured phase) and every
request of the wait. Latency is measured from the moment the cancellation took effect, which is when
the emulator sends its event.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import dropbox_sign_connection, ratio
from benchmarks.confirm_at_scale import DROPBOX_SIGN_CONN, make_plan, run_side
from benchmarks.receiver import EventsReceiver

SIDES = ("events_on", "events_off")


def run(
    n_triggers: int,
    limit_per_window: int,
    window_s: float,
    poll_interval: float,
    fallback_poll_interval: float,
    spread_s: float,
    tail_s: float,
    seed: int,
    workdir: Path,
) -> dict[str, Any]:
    """
    Both sides; returns the scenario's JSON section.

    :param n_triggers: triggers, each waiting on its own signature request.
    :param limit_per_window: requests the emulator allows per window (the budget).
    :param window_s: the emulator's rate-limit window, in seconds.
    :param poll_interval: the poll interval with events off, in seconds.
    :param fallback_poll_interval: the poll interval with events on (the fallback), in seconds.
    :param spread_s: the cancellations complete at random over this many seconds after the start.
    :param tail_s: seconds after the spread before triggers that have not fired are given up.
    :param seed: seeds the start offsets and completion times, the same for both sides.
    :param workdir: where the clients' specs, results, logs and request lists go.
    """
    section: dict[str, Any] = {
        "n_triggers": n_triggers,
        "limit_per_window": limit_per_window,
        "window_s": window_s,
        "poll_interval_s": poll_interval,
        "fallback_poll_interval_s": fallback_poll_interval,
        "spread_s": spread_s,
        "events_on": run_events_on(
            n_triggers,
            limit_per_window,
            window_s,
            poll_interval,
            fallback_poll_interval,
            spread_s,
            tail_s,
            seed,
            workdir,
        ),
        "events_off": run_side(
            "events_off",
            n_triggers,
            limit_per_window,
            window_s,
            poll_interval,
            spread_s,
            tail_s,
            make_plan(n_triggers, poll_interval, spread_s, seed),
            workdir,
        ),
    }
    on, off = section["events_on"], section["events_off"]
    section["ratios"] = {
        f"{key}_off_over_on": ratio(off[key], on[key])
        for key in ("requests_per_confirmation", "p50_latency_s", "p99_latency_s", "cpu_s")
    }
    return section


def run_events_on(
    n_triggers: int,
    limit_per_window: int,
    window_s: float,
    poll_interval: float,
    fallback_poll_interval: float,
    spread_s: float,
    tail_s: float,
    seed: int,
    workdir: Path,
) -> dict[str, Any]:
    """The ``events_on`` side alone (the same plan as a polling run of ``poll_interval``)."""
    # The triggers start within one poll interval of the polling side, as tasks deferred over a few
    # seconds would: both sides start alike.
    plan = make_plan(n_triggers, poll_interval, spread_s, seed)
    # The receiver only verifies events with the connection's key: its host is never called.
    connection = dropbox_sign_connection("http://127.0.0.1:9", limit_per_window, window_s)
    with EventsReceiver(DROPBOX_SIGN_CONN, connection, workdir) as receiver:
        return run_side(
            "events_on",
            n_triggers,
            limit_per_window,
            window_s,
            fallback_poll_interval,
            spread_s,
            tail_s,
            plan,
            workdir,
            events=receiver,
        )
