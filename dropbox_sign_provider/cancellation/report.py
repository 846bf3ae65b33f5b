"""
The report of a cancellation run: what a list step selected, what a person decided, and what
became of each request, in one table for the task log and one plain-JSON value for XCom.

It only words what happened: the decision comes from the approval's kept answer, which a report
may quote but no step trusts (the cancel steps check the signed grants).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from dropbox_sign_provider.cancellation.approval import ANSWER_KEY, decision
from dropbox_sign_provider.cancellation.outcomes import (
    Outcome,
    count_outcomes,
    outcome_table,
    summarize,
)
from dropbox_sign_provider.cancellation.selection import selection_batches, summaries_of, unsigned_reason

log = logging.getLogger(__name__)


def _day(epoch: Any) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).date().isoformat() if epoch else "?"


def report_cancellations(
    selection: Any,
    outcomes: Any,
    *,
    list_task_id: str | None = None,
    approval_task_id: str | None = None,
    cancel_task_id: str | None = None,
) -> dict[str, Any]:
    """
    Log and return the report of a run built from a list step, an approval and cancel steps.

    :param selection: the list step's ``.output`` (its batches).
    :param outcomes: what the cancel steps returned: one mapping id -> outcome, a list of them (one
        per mapped batch), or ``None`` when they were skipped (a rejection).
    :param list_task_id: the list step, whose XCom ``report`` (the search, what it left alone) is
        quoted; called from a task.
    :param approval_task_id: the approval, whose kept answer (when a person was asked) is quoted;
        called from a task.
    :param cancel_task_id: the cancel step (mapped or not), whose XCom ``refusals`` (each request
        Dropbox Sign refused to cancel, and why) is quoted; called from a task.
    :return: ``{"dry_run", "why", "decision", "counts", "outcomes", "refusals", "listed"}``.
    """
    listed: Mapping[str, Any] | None = None
    answer: Mapping[str, Any] | None = None
    batches = selection_batches(selection) or []
    mapped = isinstance(outcomes, Sequence) and not isinstance(outcomes, str)
    refusals: dict[str, str] = {}
    if list_task_id or approval_task_id or cancel_task_id:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
        if list_task_id:
            listed = ti.xcom_pull(task_ids=list_task_id, key="report")
        if approval_task_id:
            answer = ti.xcom_pull(task_ids=approval_task_id, key=ANSWER_KEY)
        if cancel_task_id:
            # One cancel task per batch when mapped; map indexes named, as Airflow versions differ
            # in what a pull without them returns.
            indexes = list(range(len(batches))) if mapped else [-1]
            for part in ti.xcom_pull(task_ids=[cancel_task_id], key="refusals", map_indexes=indexes):
                refusals.update(part or {})
    summaries = summaries_of(batches)
    why = unsigned_reason(batches)
    verdict = decision(dict(answer)) if answer is not None else None
    merged: dict[str, str] = {}
    for part in outcomes if mapped else [outcomes]:
        merged.update(part or {})
    if verdict is not None and not verdict.approved:
        merged = dict.fromkeys((s["signature_request_id"] for s in summaries), str(Outcome.NOT_APPROVED))
        decided = f"{verdict}: nothing was cancelled"
    elif verdict is not None:
        decided = str(verdict)
    elif why is not None:
        decided = "nobody was asked, as this run cancels nothing"
    else:
        decided = "no approval needed"
    details = {
        s["signature_request_id"]: [
            ("reason", str(s.get("reason") or "")),
            ("created", _day(s.get("created_at"))),
        ]
        for s in summaries
    }
    table = outcome_table({sr_id: merged.get(sr_id, "not handled") for sr_id in details}, details)
    counted = summarize(merged, {}) if merged else "nothing to cancel"
    left = (listed or {}).get("left_alone") or {}
    log.info(
        "Dropbox Sign cancellations%s, %s: %s%s%s\n%s",
        " (dry run)" if why else "",
        decided,
        counted,
        f"; left alone: {', '.join(f'{n} {r}' for r, n in sorted(left.items()))}" if left else "",
        f"; refused by Dropbox Sign: {'; '.join(f'{k}: {v}' for k, v in refusals.items())}"
        if refusals
        else "",
        table,
    )
    if why:
        log.warning("%s", why)
    return {
        "dry_run": why is not None,
        "why": why,
        "decision": {
            "asked": verdict is not None,
            "approved": None if verdict is None else verdict.approved,
            "by": None if verdict is None else verdict.by,
            "said": decided,
        },
        "counts": count_outcomes(merged),
        "outcomes": merged,
        "refusals": refusals,
        "listed": dict(listed or {}),
    }
