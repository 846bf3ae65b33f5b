"""The operator that selects what a rule says to cancel: :class:`ListSignatureRequestsOperator`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, conf
from airflow.sdk import BaseOperator

from dropbox_sign_provider import DEFAULT_CONN_NAME
from dropbox_sign_provider.cancellation.ids import (
    dry_run_flag,
    resolved_at_run_time,
    validate_bulk_send_job_id,
)
from dropbox_sign_provider.cancellation.policy import DISARM_VARIABLE, CancellationPolicy
from dropbox_sign_provider.cancellation.selection import (
    DEFAULT_MAX_MAP_LENGTH,
    account_address,
    batch_size_within,
    batches,
    max_age_seconds,
    oldest_first,
    search_query,
    sort_out,
)
from dropbox_sign_provider.hooks.connection import grant_key

if TYPE_CHECKING:
    from airflow.sdk import Context


#: ``over_cap`` choices of :class:`ListSignatureRequestsOperator`.
OVER_CAP_CHOICES = ("fail", "ask")


class ListSignatureRequestsOperator(BaseOperator):
    """
    Select the account's incomplete signature requests that a rule says to cancel: by search query,
    by age, or every request of a bulk send job. Its result (``.output``) feeds
    :class:`CancelSignatureRequestOperator`, :class:`~dropbox_sign_provider.operators.approval.
    CancellationApprovalOperator`, or ``CancelSignatureRequestOperator.partial(...).expand(
    signature_request_ids=...)`` (one cancel task per batch).

    Only requests the account sent are selected: lists hold those it received too, which only
    their sender may cancel, so the search asks ``from:me`` and each listed request's
    ``requester_email_address`` must be the account's own (one ``GET /account`` a run). What cannot
    or must not be cancelled is left alone and counted by reason: sent by someone else
    (``received``), signed by everyone (``complete``), ``declined``, never sent (``has_error``),
    past its expiry date (``expired``: nobody can sign it any more), and, with ``max_age``,
    requests created more recently (``fresh``). The selection is sorted oldest first and costs only
    ``GET /account`` and the list pages (100 requests a page): its summaries (title, created,
    expires, signers and who signed, why it was selected) let a dry run and an approval form show
    each request without reading it again.

    The selection is signed, batch by batch (a selection grant, see
    :mod:`~dropbox_sign_provider.cancellation.grants`), only when the run may cancel: the
    deployment's ``[dropbox_sign] armed`` is True, the Variable ``dropbox_sign_cleanup_armed`` does
    not disarm it, and this is not a dry run. Otherwise each batch says why, and a cancel step given
    it only previews. A cancel step refuses ids added to a signed selection, whatever an XCom says.

    More than ``max_cancellations`` selected (the deployment's ``[dropbox_sign] max_cancellations``
    at most): with ``over_cap="fail"`` this task fails before anything is cancelled (a run that
    cancels nothing, dry or not armed, lists what it found instead, with a warning); with
    ``"ask"`` the selection requires a person's Approve.

    Returns (XCom) the list of batches; XCom ``report``: the search sent, how many requests were
    listed, selected and left alone by reason.

    :param query: Dropbox Sign search syntax (templated), for example ``title:NDA`` or
        ``metadata:onboarding``; joined to ``from:me AND complete:false`` (and the age's
        ``created:`` range) in every ``OR`` branch.
    :param max_age: select only requests created longer ago than this (templated): a ``timedelta``
        or a number of days. ``None``: no age rule.
    :param bulk_send_job_id: select the requests of this bulk send job (templated) instead of
        searching; ``query`` must then be empty.
    :param max_cancellations: the most requests this run cancels without a person's Approve
        (templated); ``None``: the deployment's.
    :param over_cap: ``fail`` or ``ask`` (templated): what a selection over ``max_cancellations``
        does.
    :param require_approval: a person must approve any selection, however small (templated).
    :param dry_run: sign nothing: the cancel steps only report what they would cancel (templated).
    :param batch_size: ids per batch; ``None``: one batch. Raised when needed so that the batches
        stay within Airflow's ``[core] max_map_length``.
    :param dropbox_sign_conn_id: the ``dropbox_sign`` connection.
    """

    template_fields: Sequence[str] = (
        "query",
        "max_age",
        "bulk_send_job_id",
        "max_cancellations",
        "over_cap",
        "require_approval_setting",
        "dry_run_setting",
    )
    ui_color = "#e8f0fd"

    def __init__(
        self,
        *,
        query: str = "",
        max_age: Any = None,
        bulk_send_job_id: str | None = None,
        max_cancellations: Any = None,
        over_cap: str = "fail",
        require_approval: bool | str = False,
        dry_run: bool | str = False,
        batch_size: int | None = None,
        dropbox_sign_conn_id: str = DEFAULT_CONN_NAME,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size {batch_size!r} must be a positive integer or None")
        self.query = query
        self.max_age = max_age
        self.bulk_send_job_id = bulk_send_job_id
        self.max_cancellations = max_cancellations
        self.over_cap = over_cap
        self.require_approval_setting = require_approval
        self.dry_run_setting = dry_run
        self.batch_size = batch_size
        self.dropbox_sign_conn_id = dropbox_sign_conn_id
        # Literals fail when the DAG file is parsed; templates once rendered, in execute().
        if not resolved_at_run_time([query, max_age, bulk_send_job_id, max_cancellations, over_cap]):
            self._rule()
        for name, flag in (("dry_run", dry_run), ("require_approval", require_approval)):
            if not resolved_at_run_time(flag):
                dry_run_flag(flag, name)

    def _rule(self) -> tuple[float | None, str | None, int | None]:
        """The checked rule: the age in seconds, the bulk send job, the run's cap."""
        age = max_age_seconds(self.max_age)
        job = (
            self.bulk_send_job_id.strip() if isinstance(self.bulk_send_job_id, str) else self.bulk_send_job_id
        )
        if job in ("", "None"):
            job = None
        if job is not None:
            job = validate_bulk_send_job_id(job)
        if job is not None and (self.query or "").strip():
            raise ValueError(
                f"Give a query ({self.query!r}) or a bulk_send_job_id ({job!r}), not both: a bulk send "
                "job's requests are listed by the job, not searched"
            )
        cap = self.max_cancellations
        if cap in (None, "", "None"):
            cap = None
        else:
            try:
                cap = int(str(cap)) if not isinstance(cap, bool) else -1
            except ValueError:
                cap = -1
            if cap < 1:
                raise ValueError(
                    f"max_cancellations {self.max_cancellations!r} must be a positive integer or None"
                )
        if self.over_cap not in OVER_CAP_CHOICES:
            raise ValueError(f"over_cap {self.over_cap!r} must be one of {', '.join(OVER_CAP_CHOICES)}")
        return age, job, cap

    def execute(self, context: Context) -> list[dict[str, Any]]:
        """List, select, apply the cap, and hand on the selection in batches."""
        from airflow.sdk import Variable

        from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook

        age, job, asked_cap = self._rule()
        dry_run = dry_run_flag(self.dry_run_setting)
        ask_always = dry_run_flag(self.require_approval_setting, "require_approval")
        policy = CancellationPolicy.from_config()
        ti = context["ti"]
        now = time.time()
        created_before = None if age is None else now - age
        hook = DropboxSignHook(self.dropbox_sign_conn_id)
        account_email = account_address(hook.get_account(), self.dropbox_sign_conn_id)
        if job is not None:
            search = f"bulk send job {job}"
            listed = hook.list_bulk_send_job_signature_requests(job)
            reason = f"in bulk send job {job}"
        else:
            search = search_query(self.query, created_before)
            listed = hook.list_signature_requests(query=search)
            reason = "matched the search"
        if age is not None:
            reason = f"created more than {_duration(age)} ago" + (f", {reason}" if job else "")
        self.log.info("Listing %s", search)
        sorted_out = sort_out(listed, now, created_before, account_email, reason)
        left, count = sorted_out.left_alone, sorted_out.listed
        chosen = oldest_first(sorted_out.selected.values())
        cap = policy.cap(asked_cap)
        over = len(chosen) > cap
        report_ = {"search": search, "listed": count, "selected": len(chosen), "left_alone": left, "cap": cap}
        ti.xcom_push(key="report", value=report_)
        self.log.info(
            "%d requests listed, %d selected, left alone: %s", count, len(chosen), _counted(left) or "none"
        )
        why = (
            "dry run: this run cancels nothing"
            if dry_run
            # A person approves everything this step selects: that Approve stands in for arming.
            else policy.why_unarmed(Variable.get(DISARM_VARIABLE, default=None), approved=ask_always)
        )
        if over and self.over_cap != "ask":
            over_cap = (
                f"Selected {len(chosen)} signature requests to cancel, more than max_cancellations={cap}."
            )
            if why is None:
                raise AirflowFailException(
                    f"{over_cap} Nothing was cancelled. Check the search ({search!r}) with a dry run, "
                    f"raise max_cancellations (up to [dropbox_sign] max_cancellations="
                    f"{policy.max_cancellations}), or ask for approval with over_cap='ask'."
                )
            # A run that cancels nothing lists what it found: what to check before raising the cap.
            self.log.warning("%s A run that may cancel would fail here; this one only lists them.", over_cap)
        if why is not None:
            self.log.warning("%s", why)
        max_map_length = conf.getint("core", "max_map_length", fallback=DEFAULT_MAX_MAP_LENGTH)
        return batches(
            chosen,
            batch_size=batch_size_within(len(chosen), self.batch_size, max_map_length),
            key=None if why is not None else grant_key(self.dropbox_sign_conn_id),
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            require_approval=ask_always or over,
            search=search,
            why=why,
        )


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} seconds"
