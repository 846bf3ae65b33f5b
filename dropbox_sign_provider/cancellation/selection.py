"""
What a list step selects for cancelling, why it leaves the rest alone, and how it hands the
selection on: the rules of :class:`~dropbox_sign_provider.operators.signature_request.
ListSignatureRequestsOperator`, free of HTTP so that they are tested on their own.

A selection travels as a list of **batches**, each a selection grant
(:mod:`~dropbox_sign_provider.cancellation.grants`) whose ``shown`` holds a compact summary of each
of its requests (:class:`Summary`). One batch feeds one cancel task; the whole list feeds one cancel
task, an approval, or ``expand()``. A batch the list step did not sign (``mac`` is ``None``: a dry
run, or the deployment has not armed cancelling by rule) says why in ``why``; a cancel step only
previews it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from dropbox_sign_provider.cancellation.grants import SELECTION, mint, selection_digest
from dropbox_sign_provider.cancellation.outcomes import Outcome
from dropbox_sign_provider.cancellation.preview import RequestPreview, request_preview
from dropbox_sign_provider.cancellation.state import RequestState, request_state

#: Airflow's ``[core] max_map_length`` default: the most task instances one ``expand()`` may create.
DEFAULT_MAX_MAP_LENGTH = 1024

#: Why a listed request is left alone, counted in the list step's report.
RECEIVED = "received"
COMPLETE = "complete"
DECLINED = "declined"
HAS_ERROR = "has_error"
EXPIRED = "expired"
FRESH = "fresh"


class Summary(RequestPreview):
    """
    One selected request, compact enough for XCom: what a preview shows (title, created, signers
    and who signed, the outcome a cancel would have), and

    :ivar expires_at: when it expires (Unix time); ``None`` when it never does.
    :ivar reason: why it was selected, in words (``created more than 30 days ago``, ...).
    """

    expires_at: int | None
    reason: str


def max_age_seconds(value: Any) -> float | None:
    """
    A list step's ``max_age`` in seconds: a ``timedelta``, or a number of days (as a template
    renders it, text too).

    :param value: the argument as given or rendered; ``None`` or ``""``: no age rule.
    :raises ValueError: naming the value, when it is not a positive duration.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        try:
            days = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            days = math.nan
        seconds = days * 86400
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"max_age {value!r} must be a positive timedelta or number of days")
    return seconds


def search_query(query: str | None, created_before: float | None = None) -> str:
    """
    The Dropbox Sign search a list step sends: ``from:me`` (lists hold the requests the account
    received too, which only their sender may cancel), ``complete:false``, a ``created:`` range when
    there is an age rule, and the user's ``query``. The fixed terms are repeated in every ``OR``
    branch of the user's query (the search has no parentheses), so an ``OR`` can never widen the
    selection.

    :param query: the user's search, in Dropbox Sign's search syntax.
    :param created_before: Unix time; the range ends on its day (the list step checks the exact
        instant on each request, as the search counts whole days).
    """
    fixed = ["from:me", "complete:false"]
    if created_before is not None:
        day = datetime.fromtimestamp(created_before, tz=timezone.utc).date().isoformat()
        fixed.append(f"created:[* TO {day}]")
    branches = [branch.strip() for branch in (query or "").split(" OR ") if branch.strip()]
    if not branches:
        return " AND ".join(fixed)
    return " OR ".join(" AND ".join([*fixed, branch]) for branch in branches)


def left_alone(
    request: Mapping[str, Any], now: float, created_before: float | None, account_email: str
) -> str | None:
    """
    Why a listed request must not be cancelled, or ``None`` when it may be.

    :param request: a signature request as a list answers it.
    :param now: the current Unix time, for ``expires_at``.
    :param created_before: Unix time; with an age rule, requests created later are ``fresh``.
    :param account_email: the account's own address (``GET /account``): a request whose
        ``requester_email_address`` is another was ``received``, and only its sender may cancel it.
    """
    # The search asked for from:me; an index that lags or ignores the field must not widen it.
    if not sent_by(request, account_email):
        return RECEIVED
    # The search asked for incomplete requests; its index may lag, so ask again here.
    state = request_state(request, now)
    if state is RequestState.COMPLETED:
        return COMPLETE
    if state is RequestState.DECLINED:
        return DECLINED
    # Never sent successfully: there is nothing to cancel.
    if request.get("has_error"):
        return HAS_ERROR
    # Nobody can sign it any more; Dropbox Sign may refuse to cancel it (signature_request_expired).
    if state is RequestState.EXPIRED:
        return EXPIRED
    created_at = request.get("created_at")
    if created_before is not None and not (
        isinstance(created_at, int | float) and created_at < created_before
    ):
        return FRESH
    return None


def account_address(account: Mapping[str, Any], conn_id: str) -> str:
    """
    The account's own address, from ``GET /account``: what :func:`sent_by` compares with.

    :param account: the ``account`` object ``GET /account`` answers.
    :param conn_id: the connection it was read with, for the error.
    :raises ValueError: when the answer has no address: nothing could tell sent requests from
        received ones, so nothing is selected.
    """
    address = account.get("email_address")
    if not isinstance(address, str) or "@" not in address:
        raise ValueError(
            f"GET /account with connection {conn_id!r} answered email_address {address!r}: without the "
            "account's address the requests it sent cannot be told from those it received, so "
            "nothing was selected"
        )
    return address


def sent_by(request: Mapping[str, Any], account_email: str) -> bool:
    """
    Whether the account sent the request: its ``requester_email_address`` is the account's
    address (email addresses compare without regard to case). A request without one is not.

    :param request: a signature request as the API answers it.
    :param account_email: the account's address, as ``GET /account`` answers it.
    """
    requester = request.get("requester_email_address")
    return isinstance(requester, str) and requester.strip().lower() == account_email.strip().lower()


def summary(request: Mapping[str, Any], reason: str) -> Summary:
    """
    The compact summary of a selected request.

    :param request: the signature request as a list answered it.
    :param reason: why it was selected, in words.
    """
    preview = request_preview(str(request["signature_request_id"]), str(Outcome.WOULD_CANCEL), request)
    expires_at = request.get("expires_at")
    return Summary(
        **preview,
        expires_at=int(expires_at) if isinstance(expires_at, int | float) else None,
        reason=reason,
    )


@dataclass
class Sorted:
    """
    Listed requests sorted out by :func:`sort_out`.

    :ivar selected: the summary of each request that may be cancelled, by id, in listed order.
    :ivar left_alone: how many were left alone, by reason (:func:`left_alone`'s words).
    :ivar listed: how many were listed.
    """

    selected: dict[str, Summary] = field(default_factory=dict)
    left_alone: dict[str, int] = field(default_factory=dict)
    listed: int = 0


def sort_out(
    listed: Iterable[Mapping[str, Any]],
    now: float,
    created_before: float | None,
    account_email: str,
    reason: str,
) -> Sorted:
    """
    What a list step (or the UI page) selects from what the API listed, by :func:`left_alone`'s
    rules; a request listed twice (pages shift as requests are sent) is selected once.

    :param listed: signature requests as a list answers them.
    :param now: the current Unix time.
    :param created_before: Unix time; with an age rule, requests created later are left alone.
    :param account_email: the account's own address (``GET /account``).
    :param reason: why a selected request was selected, in words.
    """
    out = Sorted()
    for request in listed:
        out.listed += 1
        why_not = left_alone(request, now, created_before, account_email)
        if why_not is None:
            out.selected.setdefault(str(request["signature_request_id"]), summary(request, reason))
        else:
            out.left_alone[why_not] = out.left_alone.get(why_not, 0) + 1
    return out


def oldest_first(summaries: Iterable[Summary]) -> list[Summary]:
    """The summaries sorted oldest first (the cap and the approval form read them in this order)."""
    return sorted(summaries, key=lambda s: (s["created_at"] or 0, s["signature_request_id"]))


def batch_size_within(
    count: int, batch_size: int | None, max_map_length: int = DEFAULT_MAX_MAP_LENGTH
) -> int:
    """
    The ids per batch: ``batch_size``, raised when needed so that the batches of ``count`` ids stay
    within Airflow's ``[core] max_map_length`` (a mapped task over more fails after the work is done).

    :param count: ids selected.
    :param batch_size: ids per batch asked for; ``None``: one batch.
    :param max_map_length: the deployment's ``[core] max_map_length``.
    """
    if batch_size is None or count == 0:
        return max(count, 1)
    return max(batch_size, math.ceil(count / max_map_length))


def batches(
    summaries: Sequence[Summary],
    *,
    batch_size: int,
    key: bytes | None,
    dag_id: str,
    run_id: str,
    require_approval: bool,
    search: str,
    why: str | None = None,
) -> list[dict[str, Any]]:
    """
    The selection as batches: each a selection grant over its ids, naming the whole selection (its
    count and digest), with the batch's summaries as what an approval form shows.

    :param summaries: the selection, oldest first.
    :param batch_size: ids per batch.
    :param key: the grant key; ``None``: leave every batch unsigned (a preview only), saying ``why``.
    :param dag_id: the DAG whose run may cancel them.
    :param run_id: the run that may cancel them.
    :param require_approval: a person must approve before any is cancelled.
    :param search: what was listed, in words (the search sent, or the bulk send job).
    :param why: for unsigned batches, why nothing may be cancelled, in words.
    """
    ids = [s["signature_request_id"] for s in summaries]
    whole = {"count": len(ids), "selection": selection_digest(ids), "require_approval": require_approval}
    out = []
    for start in range(0, len(ids), batch_size):
        part = list(summaries[start : start + batch_size])
        shown = {"search": search, "requests": part}
        fields: dict[str, Any] = {"ids": ids[start : start + batch_size], "shown": shown, **whole}
        grant = mint(key or b"", kind=SELECTION, dag_id=dag_id, run_id=run_id, **fields)
        if key is None:
            grant = {**grant, "mac": None, "why": why}
        out.append(grant)
    return out


def selection_batches(value: Any) -> list[dict[str, Any]] | None:
    """
    The batches handed to a cancel step or an approval, when it was given a list step's selection
    (one batch or a list of them); ``None`` when it was given ids or summaries instead.

    :param value: what the step was handed, rendered.
    """
    items = [value] if isinstance(value, Mapping) else value
    if not isinstance(items, list) or not items:
        return None
    if all(isinstance(item, Mapping) and item.get("kind") == SELECTION and "mac" in item for item in items):
        return [dict(item) for item in items]
    return None


def unsigned_reason(selection: Sequence[Mapping[str, Any]]) -> str | None:
    """
    Why a selection may only be previewed, or ``None`` when every batch is signed.

    :param selection: from :func:`selection_batches`.
    """
    for batch in selection:
        if batch.get("mac") is None:
            return str(batch.get("why") or "the list step did not sign this selection")
    return None


def summaries_of(selection: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The summaries of every batch, in order."""
    return [dict(s) for batch in selection for s in _requests(batch.get("shown"))]


def search_of(selection: Sequence[Mapping[str, Any]]) -> str | None:
    """What the list step listed, in words; ``None`` for a selection made otherwise (a preview)."""
    shown = selection[0].get("shown") if selection else None
    return str(shown["search"]) if isinstance(shown, Mapping) and "search" in shown else None


def _requests(shown: Any) -> list[Mapping[str, Any]]:
    # A list step shows {"search", "requests"}; a preview shows its requests as a list.
    items = shown.get("requests") if isinstance(shown, Mapping) else shown
    return [item for item in items or () if isinstance(item, Mapping)]
