"""
How the cost of confirmation grows (``python -m benchmarks.run --growth``, ``make bench-growth``).

``confirm_at_scale``'s trigger, one pending id per trigger, all in one process as one triggerer
runs them, against the emulator at the same scaled account rate as ``make bench`` (200 requests per
2 s window, 100 a second):

* **sizes**: 500, 1,000, 3,000 and 10,000 triggers at a 30 s poll interval: memory and CPU per
  trigger, latency and requests per confirmation as the number of waiting triggers grows;
* **poll intervals**: 5, 30 and 60 s at 1,000 triggers, and events on (``event_first`` with a
  600 s fallback): requests per confirmation against latency, the trade-off a user picks from;
* the 5 s run is made beside the naive baseline trigger, for the requests per window against the
  limit and the latency distributions of both.

One triggerer runs 1,000 triggers by default (``[triggerer] capacity``): the larger sizes stand for
a triggerer whose capacity was raised, or for several triggerers sharing the account (the budget is
per account, whichever process sends). Every point is one run, written to the JSON with the machine
it ran on; :mod:`benchmarks.plots` draws the images from it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import confirm_at_scale, confirm_with_events

SIZES = (500, 1000, 3000, 10000)
POLL_INTERVALS = (5.0, 30.0, 60.0)
#: The poll interval of the size series, and the size of the poll-interval series.
SIZE_SERIES_POLL = 30.0
POLL_SERIES_SIZE = 1000
#: With events on, the fallback poll is beyond the run: every confirmation is an event's.
EVENTS_FALLBACK_POLL = 600.0


def run(
    sizes: Sequence[int],
    poll_intervals: Sequence[float],
    limit_per_window: int,
    window_s: float,
    spread_s: float,
    seed: int,
    workdir: Path,
    poll_series_n: int = POLL_SERIES_SIZE,
) -> dict[str, Any]:
    """
    Every point of both series; returns the ``growth`` section of the JSON.

    :param sizes: numbers of triggers of the size series (at :data:`SIZE_SERIES_POLL`).
    :param poll_intervals: poll intervals of the poll series (the first one is also run with the
        baseline beside it).
    :param limit_per_window: requests the emulator allows per window.
    :param window_s: the emulator's rate-limit window, in seconds.
    :param spread_s: the cancellations complete at random over this many seconds after the start.
    :param seed: seeds start offsets and completion times, the same for every point of one size.
    :param workdir: where the clients' files go.
    :param poll_series_n: triggers of every point of the poll series.
    """
    began = time.monotonic()
    points: list[dict[str, Any]] = []
    allowed_rps = limit_per_window / window_s

    def tail(n: int, poll: float) -> float:
        # As make bench: twice the p99 target (one poll of every trigger at the allowed rate, plus one
        # poll interval).
        return 2 * (n / allowed_rps + poll)

    def measure(series: str, n: int, poll: float, sides: Callable[[], dict[str, Any]]) -> None:
        print(f"  growth: {series} series, {n} triggers, poll {poll:g} s ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        measured = sides()
        points.append(
            {
                "series": series,
                "n_triggers": n,
                "poll_interval_s": poll,
                **measured,
                "point_s": round(time.monotonic() - started, 1),
            }
        )

    def ours(n: int, poll: float) -> Callable[[], dict[str, Any]]:
        plan = confirm_at_scale.make_plan(n, poll, spread_s, seed)
        return lambda: {
            "ours": confirm_at_scale.run_side(
                "ours", n, limit_per_window, window_s, poll, spread_s, tail(n, poll), plan, workdir
            )
        }

    n = poll_series_n
    first_poll, *other_polls = poll_intervals
    # The poll series' first point with the baseline beside it: the per-window picture, both curves.
    measure(
        "poll",
        n,
        first_poll,
        lambda: confirm_at_scale.run(
            n, limit_per_window, window_s, first_poll, spread_s, tail(n, first_poll), seed, workdir
        ),
    )
    for poll in other_polls:
        measure("poll", n, poll, ours(n, poll))
    measure(
        "events",
        n,
        EVENTS_FALLBACK_POLL,
        lambda: {
            "ours": confirm_with_events.run_events_on(
                n,
                limit_per_window,
                window_s,
                first_poll,
                EVENTS_FALLBACK_POLL,
                spread_s,
                tail(n, first_poll),
                seed,
                workdir,
            )
        },
    )
    for size in sizes:
        measure("size", size, SIZE_SERIES_POLL, ours(size, SIZE_SERIES_POLL))
    return {
        "limit_per_window": limit_per_window,
        "window_s": window_s,
        "spread_s": spread_s,
        "size_series_poll_interval_s": SIZE_SERIES_POLL,
        "poll_series_n_triggers": poll_series_n,
        "events_fallback_poll_interval_s": EVENTS_FALLBACK_POLL,
        "points": points,
        "growth_s": round(time.monotonic() - began, 1),
    }
