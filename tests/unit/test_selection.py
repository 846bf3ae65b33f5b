"""What a list step selects, what it leaves alone and how it hands the selection on."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from dropbox_sign_provider.cancellation.grants import SELECTION, verify
from dropbox_sign_provider.cancellation.policy import CancellationPolicy
from dropbox_sign_provider.cancellation.preview import SHOWN_REQUESTS, preview_markdown
from dropbox_sign_provider.cancellation.selection import (
    COMPLETE,
    DECLINED,
    EXPIRED,
    FRESH,
    HAS_ERROR,
    RECEIVED,
    account_address,
    batch_size_within,
    batches,
    left_alone,
    max_age_seconds,
    oldest_first,
    search_of,
    search_query,
    selection_batches,
    summaries_of,
    summary,
    unsigned_reason,
)

NOW = 1_800_000_000.0
KEY = b"k" * 32
ME = "me@example.com"


def request(n: int, **fields: object) -> dict[str, object]:
    return {
        "signature_request_id": f"{n:040x}",
        "title": f"Request {n}",
        "created_at": NOW - 40 * 86400,
        "requester_email_address": ME,
        **fields,
    }


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        (30, 30 * 86400.0),
        ("14", 14 * 86400.0),
        (timedelta(hours=6), 21600.0),
        (timedelta(seconds=1), 1.0),
    ],
)
def test_max_age_is_a_timedelta_or_days(value: object, seconds: float | None) -> None:
    assert max_age_seconds(value) == seconds


@pytest.mark.parametrize("value", [0, -1, "soon", True, float("nan"), timedelta(0)])
def test_a_bad_max_age_is_named(value: object) -> None:
    with pytest.raises(ValueError, match="max_age"):
        max_age_seconds(value)


def test_the_fixed_terms_bind_every_or_branch() -> None:
    # Without the repetition, "... AND title:NDA OR title:Offer" would select every Offer, complete or not.
    assert search_query("title:NDA OR title:Offer", created_before=NOW) == (
        "from:me AND complete:false AND created:[* TO 2027-01-15] AND title:NDA OR "
        "from:me AND complete:false AND created:[* TO 2027-01-15] AND title:Offer"
    )
    assert search_query("  ") == "from:me AND complete:false"
    assert search_query(None) == "from:me AND complete:false"


def test_the_age_rule_is_a_utc_day_wherever_the_worker_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2027-01-15 08:00 UTC is still the 14th twelve hours west of Greenwich.
    monkeypatch.setenv("TZ", "Etc/GMT+12")
    time.tzset()
    try:
        assert search_query(None, created_before=NOW) == (
            "from:me AND complete:false AND created:[* TO 2027-01-15]"
        )
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"requester_email_address": "them@example.com"}, RECEIVED),
        ({"requester_email_address": None}, RECEIVED),
        ({"requester_email_address": "them@example.com", "is_complete": True}, RECEIVED),
        ({"requester_email_address": " Me@Example.COM"}, None),
        ({"is_complete": True}, COMPLETE),
        ({"is_declined": True}, DECLINED),
        ({"has_error": True}, HAS_ERROR),
        ({"expires_at": NOW - 1}, EXPIRED),
        ({"expires_at": NOW}, EXPIRED),
        ({"created_at": NOW - 86400}, FRESH),
        # Exactly max_age old is not older than max_age.
        ({"created_at": NOW - 30 * 86400}, FRESH),
        ({"created_at": NOW - 30 * 86400 - 1}, None),
        ({"created_at": None}, FRESH),
        ({}, None),
        ({"expires_at": NOW + 1}, None),
    ],
)
def test_what_is_left_alone_and_why(fields: dict[str, object], reason: str | None) -> None:
    assert left_alone(request(1, **fields), NOW, NOW - 30 * 86400, ME) == reason


def test_without_an_age_rule_nothing_is_fresh() -> None:
    assert left_alone(request(1, created_at=NOW), NOW, None, ME) is None


@pytest.mark.parametrize(
    "answer", [{}, {"email_address": None}, {"email_address": ""}, {"email_address": "me"}]
)
def test_an_account_without_an_address_selects_nothing(answer: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"'dropbox_sign_default'.*cannot be told .* nothing was selected$"):
        account_address(answer, "dropbox_sign_default")
    assert account_address({"email_address": ME}, "c") == ME


@pytest.mark.parametrize(
    ("count", "batch_size", "max_map_length", "size"),
    [
        (0, 50, 1024, 1),
        (120, None, 1024, 120),
        (120, 50, 1024, 50),
        (50_000, 10, 1024, 49),
        (1025, 1, 1024, 2),
    ],
)
def test_batches_stay_within_max_map_length(
    count: int, batch_size: int | None, max_map_length: int, size: int
) -> None:
    got = batch_size_within(count, batch_size, max_map_length)
    assert got == size
    assert -(-count // got) <= max_map_length


def selection(key: bytes | None, n: int = 5, size: int = 2) -> list[dict[str, object]]:
    chosen = oldest_first(summary(request(i, created_at=NOW - i * 86400), "old") for i in range(n))
    return batches(
        chosen,
        batch_size=size,
        key=key,
        dag_id="d",
        run_id="r",
        require_approval=False,
        search="s",
        why="NOT ARMED",
    )


def test_signed_batches_name_the_whole_selection_and_verify() -> None:
    made = selection(KEY)

    assert [len(b["ids"]) for b in made] == [2, 2, 1]
    grants = [verify(b, KEY, dag_id="d", run_id="r", kind=SELECTION) for b in made]
    assert {g.count for g in grants} == {5}
    assert len({g.selection for g in grants}) == 1
    # Oldest first, across the batches.
    assert [s["signature_request_id"] for s in summaries_of(made)] == [f"{i:040x}" for i in (4, 3, 2, 1, 0)]
    assert unsigned_reason(made) is None
    assert selection_batches(made) == made
    assert selection_batches(made[0]) == [made[0]]
    # The cancel step and the report name the search that selected them.
    assert search_of(made) == search_of(made[:1]) == "s"
    assert search_of([]) is None


def test_a_previews_selection_shows_its_requests_and_no_search() -> None:
    # A dry run's preview shows its requests as a list, with no search behind them.
    shown = [{"signature_request_id": "a" * 40, "title": "NDA"}, "not a request"]
    previewed = [{"kind": "selection", "ids": ["a" * 40], "shown": shown, "mac": None}]
    assert summaries_of(previewed) == [shown[0]]
    assert search_of(previewed) is None


def test_a_summary_keeps_when_the_request_expires_and_why_it_was_selected() -> None:
    chosen = summary(request(1, expires_at=NOW + 86400.5), "older than 30 days")
    assert (chosen["expires_at"], chosen["reason"]) == (int(NOW + 86400), "older than 30 days")
    assert summary(request(1), "old")["expires_at"] is None


def test_unsigned_batches_say_why_and_never_verify() -> None:
    made = selection(None)

    assert unsigned_reason(made) == "NOT ARMED"
    assert unsigned_reason([{**made[0], "why": None}]) == "the list step did not sign this selection"
    with pytest.raises(ValueError, match="signature does not match"):
        verify({**made[0], "mac": "0" * 64}, KEY, dag_id="d", run_id="r", kind=SELECTION)


@pytest.mark.parametrize(
    "value", [["a" * 40], [{"signature_request_id": "a" * 40}], [], "x", None, [{"kind": "selection"}]]
)
def test_ids_and_summaries_are_not_a_selection(value: object) -> None:
    assert selection_batches(value) is None


def test_the_approval_form_of_a_large_selection_counts_the_rest_and_reads_titles_as_text() -> None:
    chosen = [
        summary(request(i, title="[Deal](http://x) #0" if i == 0 else f"Request {i}"), "old")
        for i in range(30)
    ]

    body = preview_markdown({"search": "complete:false AND title:NDA", "requests": chosen})

    assert body.startswith("**Approve cancels 30 signature requests: this cannot be undone.**")
    assert "Selected by: complete:false AND title:NDA" in body
    assert "**\\[Deal\\]\\(http://x\\) \\#0**: **will be cancelled** if you approve" in body
    assert f"Request {SHOWN_REQUESTS - 1}" in body
    assert f"Request {SHOWN_REQUESTS}**" not in body
    assert f"...and {30 - SHOWN_REQUESTS} more" in body


@pytest.mark.parametrize(
    ("armed", "variable", "approved", "said"),
    [
        (False, None, False, "NOT ARMED"),
        (False, "true", False, "NOT ARMED"),
        (True, None, False, None),
        (True, "true", False, None),
        (True, " FALSE ", False, "DISARMED"),
        (False, None, True, None),
        (False, "false", True, "DISARMED"),
    ],
)
def test_only_the_deployment_arms_and_a_variable_only_disarms(
    armed: bool, variable: str | None, approved: bool, said: str | None
) -> None:
    why = CancellationPolicy(armed=armed).why_unarmed(variable, approved=approved)

    assert (why or "").split(":")[0] == (said or "")
