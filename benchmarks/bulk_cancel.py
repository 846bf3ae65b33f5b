"""
``bulk_cancel``: cancel ``n`` signature requests under a rate limit of ``limit_per_window`` requests per
``window_s`` seconds.

* ours: :class:`~dropbox_sign_provider.operators.signature_request.CancelSignatureRequestOperator`
  ``.execute()`` with a minimal context, the connection's ``max_requests_per_minute`` scaled to the
  window.
* baseline: the HTTP provider's ``HttpHook.run_with_advanced_retry`` on an ``http`` connection (the
  API key as login), one call per id, retried with tenacity's ``wait_exponential`` on 429 as the HTTP
  provider's documentation shows.

Run as a module, this file is the measured client (see :func:`benchmarks.common.client_main`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ClientProcess,
    client_main,
    cpu_seconds,
    create_requests,
    dropbox_sign_connection,
    http_connection,
    ratio,
    save_log,
    start_emulator,
    window_counts,
)

DROPBOX_SIGN_CONN = "dropbox_sign_bench"
HTTP_CONN = "http_bench"
SIDES = ("ours", "baseline")
#: Both sides start this far into a rate-limit window, so their wall times compare.
START_PHASE = 0.5


def start_in_window(window_s: float, phase: float = START_PHASE, after: float = 0.2) -> float:
    """The first Unix time ``after`` seconds or more from now that is ``phase`` of the way into a window."""
    earliest = time.time() + after
    return (math.ceil(earliest / window_s - phase) + phase) * window_s


def run(n: int, limit_per_window: int, window_s: float, workdir: Path) -> dict[str, Any]:
    """
    Both sides, each against a fresh emulator; returns the scenario's JSON section.

    :param n: signature requests to cancel.
    :param limit_per_window: requests the emulator allows per window.
    :param window_s: the emulator's rate-limit window, in seconds.
    :param workdir: where the clients' specs, results, logs and request lists go.
    """
    section: dict[str, Any] = {
        "n": n,
        "limit_per_window": limit_per_window,
        "window_s": window_s,
        "start_phase_of_window": START_PHASE,
    }
    for side in SIDES:
        section[side] = _run_side(side, n, limit_per_window, window_s, workdir)
    ours, baseline = section["ours"], section["baseline"]
    section["ratios"] = {
        "wall_s_baseline_over_ours": ratio(baseline["wall_s"], ours["wall_s"]),
        "requests_baseline_over_ours": ratio(baseline["requests"], ours["requests"]),
    }
    return section


def _run_side(side: str, n: int, limit_per_window: int, window_s: float, workdir: Path) -> dict[str, Any]:
    emulator = start_emulator(limit_per_window, window_s)
    try:
        ids = create_requests(emulator, n)
        connections = (
            {DROPBOX_SIGN_CONN: dropbox_sign_connection(emulator.url, limit_per_window, window_s)}
            if side == "ours"
            else {HTTP_CONN: http_connection(emulator)}
        )
        client = ClientProcess(__name__, {"side": side, "ids": ids}, connections, workdir)
        client.wait_ready()
        emulator.clear_log()
        start_at = start_in_window(window_s)
        client.go(start_at)
        # Generous: the baseline's backoff can skip windows; a hang still ends the run.
        measured = client.result(timeout=60.0 + 4 * window_s * (math.ceil(n / limit_per_window) + 2))
        log = list(emulator.requests_log)
        save_log(log, workdir / f"bulk_cancel-{side}.requests.json")
        queued = sum(1 for sr_id in ids if emulator.get_state(sr_id) in ("cancel_requested", "canceled"))
    finally:
        emulator.stop()

    per_window = window_counts(log, window_s)
    accepted = sum(1 for entry in log if entry.status not in (0, 429))
    first_window = min(per_window) if per_window else 0
    spanned = max(per_window) - first_window + 1 if per_window else 0
    # The fewest windows any client that never exceeds the limit needs for these requests, over the
    # windows this one kept the account busy (first to last request, idle ones included).
    fewest = math.ceil(accepted / limit_per_window)
    # From the same start, half a window before a reset, no client within the limit can be done
    # before the reset that opens the last window it needs.
    ideal_wall_s = (fewest - 1) * window_s - START_PHASE * window_s
    wall_s = float(measured["wall_s"])
    return {
        "wall_s": round(wall_s, 3),
        "rate_ratio": ratio(fewest, spanned),
        "http_429": sum(1 for entry in log if entry.status == 429),
        "http_429_after_first_window": sum(
            1 for entry in log if entry.status == 429 and math.floor(entry.time / window_s) > first_window
        ),
        "requests": len(log),
        "ideal_wall_s": round(max(0.0, ideal_wall_s), 3),
        "windows_used": spanned,
        "windows_needed": fewest,
        "achieved_rps": round(accepted / wall_s, 3) if wall_s else None,
        "allowed_rps": round(limit_per_window / window_s, 3),
        "cpu_s": round(float(measured["cpu_s"]), 3),
        "cancelled": queued,
    }


# --- the measured client ----------------------------------------------------------------------------


class _TaskInstance:
    """
    What ``execute()`` reads of a task instance: which run it is (the approval check names it; the
    ids are written in the code, so the deployment's policy needs no approval for them) and the
    extra link's XCom.
    """

    dag_id = "bench_bulk_cancel"
    run_id = "bench"
    map_index = -1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def _rate_limited(error: BaseException) -> bool:
    # HttpHook turns the HTTPError into an AirflowException raised inside its ``except``, so the
    # answer is on the implicit context; its message only repeats "429:Too Many Requests".
    response = getattr(error.__context__, "response", None)
    return getattr(response, "status_code", None) == 429


def _client(spec: dict[str, Any], ready: Callable[[], float]) -> dict[str, Any]:
    ids: list[str] = spec["ids"]
    if spec["side"] == "ours":
        from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator

        operator = CancelSignatureRequestOperator(
            task_id="bulk_cancel", signature_request_ids=ids, dropbox_sign_conn_id=DROPBOX_SIGN_CONN
        )

        def cancel_all() -> int:
            outcomes = operator.execute({"ti": _TaskInstance()})  # type: ignore[typeddict-item]
            return sum(1 for outcome in outcomes.values() if outcome == "cancel_requested")

    else:
        import tenacity
        from airflow.providers.http.hooks.http import HttpHook

        hook = HttpHook(method="POST", http_conn_id=HTTP_CONN)
        retry_args = {
            "wait": tenacity.wait_exponential(),
            "stop": tenacity.stop_after_attempt(10),
            "retry": tenacity.retry_if_exception(_rate_limited),
        }

        def cancel_all() -> int:
            for sr_id in ids:
                hook.run_with_advanced_retry(
                    _retry_args=retry_args, endpoint=f"v3/signature_request/cancel/{sr_id}"
                )
            return len(ids)

    start_at = ready()
    time.sleep(max(0.0, start_at - time.time()))
    cpu0, started = cpu_seconds(), time.perf_counter()
    cancelled = cancel_all()
    return {
        "wall_s": time.perf_counter() - started,
        "cpu_s": cpu_seconds() - cpu0,
        "cancelled": cancelled,
    }


if __name__ == "__main__":
    client_main(_client)
