"""What an approval's kept answer says: approved, rejected, timed out, or ended without an answer."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from dropbox_sign_provider.approval import approval_timeout, decision

CAROL = {"id": "carol", "name": "Carol"}


@pytest.mark.parametrize(
    ("answer", "approved", "by", "timed_out", "said"),
    [
        (
            {"chosen_options": ["Approve"], "responded_by_user": CAROL},
            True,
            "Carol",
            False,
            "approved by Carol",
        ),
        (
            {"chosen_options": ["Reject"], "responded_by_user": CAROL},
            False,
            "Carol",
            False,
            "rejected by Carol",
        ),
        # On time-out the approval takes its default (Reject), and nobody responded.
        (
            {"chosen_options": ["Reject"], "responded_by_user": None},
            False,
            None,
            True,
            "not approved in time (the approval timed out)",
        ),
        # The approval failed before it kept an answer: not a time-out, and not an approval.
        (None, False, None, False, "not approved: the approval ended without an answer (see its log)"),
        # Approve among other options is not an approval of this question.
        (
            {"chosen_options": ["Approve", "Reject"], "responded_by_user": CAROL},
            False,
            "Carol",
            False,
            "rejected by Carol",
        ),
    ],
)
def test_decision(
    answer: dict[str, Any] | None, approved: bool, by: str | None, timed_out: bool, said: str
) -> None:
    verdict = decision(answer)

    assert (verdict.approved, verdict.by, verdict.timed_out) == (approved, by, timed_out)
    assert str(verdict) == said


@pytest.mark.parametrize(
    ("environ", "waits"),
    [({}, timedelta(days=1)), ({"DROPBOX_SIGN_APPROVAL_TIMEOUT": "3"}, timedelta(seconds=3))],
)
def test_approval_timeout(environ: dict[str, str], waits: timedelta) -> None:
    assert approval_timeout(environ) == waits


# Airflow reads a zero time-out as none: the approval would wait for ever.
@pytest.mark.parametrize("value", ["0", "-5", "", "a day", "nan", "inf"])
def test_approval_timeout_refuses_what_is_not_a_positive_number_of_seconds(value: str) -> None:
    with pytest.raises(ValueError, match=f"DROPBOX_SIGN_APPROVAL_TIMEOUT must be .* not {value!r}"):
        approval_timeout({"DROPBOX_SIGN_APPROVAL_TIMEOUT": value})
