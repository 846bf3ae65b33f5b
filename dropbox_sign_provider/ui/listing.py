"""
What the Dropbox Sign page lists: one page of the incomplete requests an account sent, selected by
the list step's own rules (:func:`~dropbox_sign_provider.cancellation.selection.sort_out`), and what
the page says when it cannot list them (:class:`ListingRefused`).

A page shown is one list call to Dropbox Sign (up to 100 requests) plus, once per connection and
:data:`ACCOUNT_TTL_SECONDS`, the ``GET /account`` that tells the requests the account sent from
those it received. Both draw on the account's shared rate budget through the hook, like every other
call; the page waits for it at most :data:`PAGE_RETRY_POLICY`'s ``max_rate_limit_wait`` and then
says when to try again.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from dropbox_sign_provider import CONFIG_SECTION, configured_conn_ids
from dropbox_sign_provider.cancellation.selection import (
    Summary,
    account_address,
    max_age_seconds,
    oldest_first,
    search_query,
    sort_out,
)
from dropbox_sign_provider.exceptions import (
    DropboxSignBadRequestError,
    DropboxSignError,
    DropboxSignRateLimitError,
    DropboxSignUnauthorizedError,
)
from dropbox_sign_provider.hooks.policy import RetryPolicy

#: The connections the page offers: ``[dropbox_sign] ui_conn_ids``.
UI_CONN_IDS_OPTION = "ui_conn_ids"
#: How long the account's address (``GET /account``) is kept per connection.
ACCOUNT_TTL_SECONDS = 300.0
#: A person waits for the page: one retry, and a few seconds for the rate budget, then an answer
#: that says when to try again (a task would wait two minutes).
PAGE_RETRY_POLICY = RetryPolicy(max_retries=1, backoff_base=0.5, backoff_max=1.0, max_rate_limit_wait=5.0)
#: Why each request shown is there, in a selection summary's words.
SELECTED_REASON = "listed on the Dropbox Sign page"


class ListingRefused(Exception):
    """
    The page cannot list what was asked, in words a person can act on.

    :param status_code: the HTTP status of the page's answer.
    :param message: what went wrong and what to do.
    :param retry_after: seconds until the account's rate budget has room again, when known.
    """

    def __init__(self, status_code: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Row:
    """
    One request the page shows.

    :ivar summary: what a list step's selection holds of it (title, created, expires, signers).
    :ivar details_url: its page in Dropbox Sign's web app; ``None`` when the answer had none.
    :ivar age_days: whole days since it was created; ``None`` when unknown.
    """

    summary: Summary
    details_url: str | None
    age_days: int | None


@dataclass(frozen=True)
class Listing:
    """
    One page of the list.

    :ivar conn_id: the connection listed.
    :ivar search: the search sent to Dropbox Sign.
    :ivar page: the page shown, from 1.
    :ivar num_pages: how many pages Dropbox Sign says the search has.
    :ivar rows: the requests of the page that the account sent and may cancel, oldest first.
    :ivar left_alone: how many of the page's requests were left out, by reason.
    """

    conn_id: str
    search: str
    page: int
    num_pages: int
    rows: list[Row]
    left_alone: dict[str, int]


def ui_conn_ids() -> list[str]:
    """The connection ids of ``[dropbox_sign] ui_conn_ids``, in order, each once."""
    return configured_conn_ids(UI_CONN_IDS_OPTION)


def checked_rule(max_age_days: str | None, query: str | None) -> tuple[float | None, str]:
    """
    The page's age and search, checked as the list step checks them.

    :param max_age_days: requests created more than this many days ago only; empty: any age.
    :param query: Dropbox Sign search syntax; empty: every incomplete request sent.
    :return: the age in seconds (``None``: no age rule) and the query, stripped.
    :raises ListingRefused: 400 naming a bad age.
    """
    try:
        age = max_age_seconds(max_age_days)
    except ValueError:
        raise ListingRefused(
            400, f"age (days) {max_age_days!r} must be a positive number of days, or empty for any age"
        ) from None
    return age, (query or "").strip()


class _Accounts:
    # One per API server process; requests are served by several threads.
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.addresses: dict[str, tuple[str, float]] = {}


_accounts = _Accounts()


def forget_accounts() -> None:
    """Drop the kept account addresses: the next page reads ``GET /account`` again."""
    with _accounts.lock:
        _accounts.addresses.clear()


def list_page(
    conn_id: str, *, page: int = 1, max_age_days: str | None = None, query: str | None = None
) -> Listing:
    """
    One page of the incomplete requests the account of ``conn_id`` sent. Blocks (connection,
    HTTP): call it from a worker thread.

    :param conn_id: a connection of ``[dropbox_sign] ui_conn_ids``.
    :param page: the API's list page, from 1.
    :param max_age_days: requests created more than this many days ago only.
    :param query: Dropbox Sign search syntax, joined to ``from:me AND complete:false``.
    :raises ListingRefused: with what to tell the person, for every failure the page expects.
    """
    allowed = ui_conn_ids()
    if conn_id not in allowed:
        raise ListingRefused(
            404,
            f"connection {conn_id!r} is not offered by this page: it lists only the connections of "
            f"[{CONFIG_SECTION}] {UI_CONN_IDS_OPTION} ({', '.join(allowed) or 'none'})",
        )
    age, query = checked_rule(max_age_days, query)
    now = time.time()
    created_before = None if age is None else now - age
    search = search_query(query, created_before)
    try:
        hook = _hook(conn_id)
        account_email = _account_email(hook, conn_id)
        items, num_pages = hook.list_signature_requests_page(search, page)
    except DropboxSignError as exc:
        raise _refused(exc, conn_id) from None
    sorted_out = sort_out(items, now, created_before, account_email, SELECTED_REASON)
    details = {
        str(item.get("signature_request_id")): item.get("details_url")
        for item in items
        if isinstance(item.get("details_url"), str)
    }
    rows = [
        Row(
            summary=s,
            details_url=_https(details.get(s["signature_request_id"])),
            age_days=None if s["created_at"] is None else max(0, math.floor((now - s["created_at"]) / 86400)),
        )
        for s in oldest_first(sorted_out.selected.values())
    ]
    return Listing(
        conn_id=conn_id,
        search=search,
        page=page,
        num_pages=num_pages,
        rows=rows,
        left_alone=sorted_out.left_alone,
    )


def _hook(conn_id: str) -> Any:
    from airflow.providers.common.compat.sdk import AirflowNotFoundException

    from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook

    hook = DropboxSignHook(conn_id, retry_policy=PAGE_RETRY_POLICY)
    try:
        # Read now, so that a missing or broken connection is told apart from the API's answers.
        hook.settings  # noqa: B018
    except AirflowNotFoundException:
        raise ListingRefused(
            503,
            f"connection {conn_id!r} is not defined: an administrator adds it, or removes it from "
            f"[{CONFIG_SECTION}] {UI_CONN_IDS_OPTION}",
        ) from None
    except ValueError as exc:
        raise ListingRefused(503, f"connection {conn_id!r} cannot be used: {exc}") from None
    return hook


def _account_email(hook: Any, conn_id: str) -> str:
    now = time.monotonic()
    with _accounts.lock:
        kept = _accounts.addresses.get(conn_id)
    if kept is not None and now - kept[1] < ACCOUNT_TTL_SECONDS:
        return kept[0]
    try:
        address = account_address(hook.get_account(), conn_id)
    except ValueError as exc:
        raise ListingRefused(502, str(exc)) from None
    with _accounts.lock:
        _accounts.addresses[conn_id] = (address, now)
    return address


def _refused(exc: DropboxSignError, conn_id: str) -> ListingRefused:
    if isinstance(exc, DropboxSignRateLimitError):
        wait = exc.retry_after
        when = f"in {math.ceil(wait)} s" if wait is not None and wait > 0 else "in a minute"
        return ListingRefused(
            429,
            f"the rate budget of connection {conn_id!r}'s account is spent for now (every task using "
            f"the account shares it): try again {when}",
            retry_after=wait,
        )
    if isinstance(exc, DropboxSignBadRequestError):
        return ListingRefused(400, f"Dropbox Sign refused the search: {exc.error_msg}")
    if isinstance(exc, DropboxSignUnauthorizedError):
        return ListingRefused(
            502, f"Dropbox Sign refused connection {conn_id!r}'s credentials: {exc.error_msg}"
        )
    status = f"HTTP {exc.status_code} " if exc.status_code is not None else ""
    return ListingRefused(
        502,
        f"Dropbox Sign could not list the requests of connection {conn_id!r} ({status}"
        f"{exc.error_name}: {exc.error_msg}); try again later",
    )


def _https(url: Any) -> str | None:
    # Shown as a link: only Dropbox Sign's web pages, never a javascript: or data: address.
    return url if isinstance(url, str) and url.startswith("https://") else None
