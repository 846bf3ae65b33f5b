"""
One captured event replayed 1,000 times, each time with another request id and a body of almost
1 MiB: what it costs the metadata database and the receiving process. The figures are printed
(``pytest -s``) and quoted in the reliability page.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from dropbox_sign_provider.events.callback import (
    MAX_CALLBACK_BYTES,
    MAX_METADATA_BYTES,
    MAX_RECORDED_BYTES_PER_EVENT_TIME,
    MAX_REQUESTS_PER_EVENT_TIME,
)
from tests.helpers import CANCELED_A

REPLAYS = 1000


def database_bytes() -> int:
    """Bytes of SQLite pages in use (the file's size less its free pages)."""
    from airflow.settings import engine

    assert engine is not None, "Airflow's ORM is not configured"
    with engine.connect() as conn:
        page_size, pages, free = (
            int(conn.exec_driver_sql(f"PRAGMA {name}").scalar() or 0)
            for name in ("page_size", "page_count", "freelist_count")
        )
    return page_size * (pages - free)


def flood_body(template: dict[str, Any], n: int, metadata_bytes: int) -> str:
    """The captured event with request ``n``, metadata of about ``metadata_bytes`` and padding in a
    field that is not recorded, to just under the body limit."""
    request = {
        **template["signature_request"],
        "signature_request_id": f"{n:040x}",
        "metadata": {"note": "m" * metadata_bytes},
    }
    text = json.dumps({**template, "signature_request": request})
    request["signatures"] = [{"padding": "p" * (MAX_CALLBACK_BYTES - len(text) - 1000)}]
    return json.dumps({**template, "signature_request": request})


@pytest.mark.parametrize(
    "metadata_bytes",
    [100, MAX_METADATA_BYTES - 200],
    ids=["small-metadata", "largest-metadata"],
)
def test_replaying_one_event_1000_times_costs_bounded_storage_and_memory(
    metadata_bytes: int,
    post: Callable[..., Any],
    make_callback: Callable[..., dict[str, Any]],
    recorded: Any,
) -> None:
    template = make_callback()
    assert_ok = post(template)
    assert assert_ok.status_code == 200
    recorded.forget()
    process = psutil.Process()
    db_before, rss_before = database_bytes(), process.memory_info().rss
    rss_peak = rss_before
    started = time.monotonic()
    tracemalloc.start()
    try:
        for n in range(REPLAYS):
            text = flood_body(template, n, metadata_bytes)
            assert MAX_CALLBACK_BYTES - 2000 < len(text) <= MAX_CALLBACK_BYTES - 500
            response = post(text)
            assert response.status_code == 200, response.text
            if n % 50 == 0:
                rss_peak = max(rss_peak, process.memory_info().rss)
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seconds = time.monotonic() - started
    rss_peak = max(rss_peak, process.memory_info().rss)
    growth = database_bytes() - db_before

    extras = recorded.asset_events(CANCELED_A)
    stored = sum(len(json.dumps(extra)) for extra in extras)
    print(
        f"\nflood ({metadata_bytes} B metadata): {REPLAYS} replays of ~1 MiB in {seconds:.1f} s; "
        f"{len(extras)} recorded, extras {stored} B; database grew {growth} B; "
        f"traced peak {traced_peak / 2**20:.1f} MiB; RSS {rss_before / 2**20:.0f} -> "
        f"{rss_peak / 2**20:.0f} MiB"
    )
    assert len(extras) <= MAX_REQUESTS_PER_EVENT_TIME
    assert len(extras) == min(
        MAX_REQUESTS_PER_EVENT_TIME, MAX_RECORDED_BYTES_PER_EVENT_TIME // (metadata_bytes + 30)
    )
    # Every recorded byte of payload is within the event time's budget; the rest of the growth is
    # the rows themselves (asset event, queue entry, board entry), a few hundred bytes each.
    assert growth < MAX_RECORDED_BYTES_PER_EVENT_TIME * 2 + MAX_REQUESTS_PER_EVENT_TIME * 4096
    # Python's own allocations, request bodies included: a few bodies at a time, never the flood
    # (about 1 GiB went through). The test client's copies count too; alone, this test peaks near
    # 47 MiB on Python 3.11 and 61 MiB on 3.13, so the bound leaves room for the interpreter, not
    # for buffering: a flood kept in memory would be over 900 MiB.
    assert traced_peak < 96 * 2**20
