"""
Every day, cancel the Dropbox Sign signature requests that are still out for signature but stale
(older than ``max_age_days``) or past their ``expires_at``.

It cancels nothing until a person arms it by setting the Airflow Variable
``dropbox_sign_cleanup_armed`` to ``true``: until then every run is a dry run that says so. A run
that finds more than ``max_cancellations`` fails before cancelling anything or, with ``over_cap``
set to ``ask``, asks a person to approve in the Airflow UI first.

Everything that talks to Dropbox Sign happens inside tasks: parsing this file sends no request.
"""

from __future__ import annotations

import logging
import os
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import DAG, Param, TriggerRule, Variable, get_current_context, task

from dropbox_sign_provider.cancellation.approval import ANSWER_KEY, GRANT_KEY, decision
from dropbox_sign_provider.cancellation.grants import SELECTION, mint, selection_digest
from dropbox_sign_provider.cancellation.outcomes import Outcome, count_outcomes, outcome_table, summarize
from dropbox_sign_provider.cancellation.policy import CancellationPolicy
from dropbox_sign_provider.cancellation.state import RequestState, request_state
from dropbox_sign_provider.hooks.connection import grant_key
from dropbox_sign_provider.operators.approval import CancellationApprovalOperator
from dropbox_sign_provider.operators.signature_request import CancelSignatureRequestOperator

log = logging.getLogger(__name__)

#: The Airflow Variable that arms the clean-up: only ``true`` lets a run cancel anything. It is read
#: by the first task of each run, never when the file is parsed.
ARMED_VARIABLE = "dropbox_sign_cleanup_armed"
#: The command that arms it, quoted in the logs and the report of every unarmed run.
ARM_COMMAND = f"airflow variables set {ARMED_VARIABLE} true"

#: The Airflow pool of the API tasks. Airflow's ``default_pool`` always exists; a task naming a pool
#: that does not exist is never scheduled, and Airflow says so only in the scheduler's log. To share
#: a pool with other Dropbox Sign DAGs, create it first, then set the environment variable on the
#: dag-processor (it is read when the file is parsed).
POOL = os.environ.get("DROPBOX_SIGN_POOL") or "default_pool"
#: Cancel batches running at once within a run (with one run at a time): like a pool of this size,
#: it keeps the run's calls within the account's rate limit whatever the number of workers.
MAX_PARALLEL_BATCHES = 4
#: Ids per cancel task: one mapped task instance per batch.
BATCH_SIZE = 50
#: The cancel operator is idempotent (it asks Dropbox Sign what state a refused id is in), so a
#: task that failed on a lasting API outage is safe to run again.
API_TASK_ARGS: dict[str, Any] = {"pool": POOL, "retries": 2, "retry_delay": timedelta(minutes=2)}

#: Seconds between two checks of the queued cancellations, one API call per id still pending: with
#: hundreds of ids, checking more often would spend the account's rate limit on polling. A test or
#: demo deployment whose API answers faster sets the environment variable (on every Airflow
#: component, as it is read when the file is parsed).
CONFIRM_POKE_INTERVAL = float(os.environ.get("DROPBOX_SIGN_CONFIRM_POKE_INTERVAL", "60"))

#: Confirm on Dropbox Sign's ``signature_request_canceled`` events first, polling every
#: ``CONFIRM_POKE_INTERVAL`` only as the fallback (which can then be minutes). Needs the callback
#: receiver set up (the provider's *Events and callbacks* page); environment variable, read when the
#: file is parsed.
CONFIRM_EVENT_FIRST = os.environ.get("DROPBOX_SIGN_EVENT_FIRST", "").strip().lower() in ("1", "true", "yes")

#: Requests the approval form lists, oldest first.
SAMPLE_SIZE = 10

STALE = "stale"
EXPIRED = "expired"

DOC_MD = f"""
# Clean up stale Dropbox Sign signature requests

Every day, cancels the signature requests of the `dropbox_sign_default` connection's account that
are still out for signature and either

- **stale**: sent more than *max_age_days* ago, or
- **expired**: past their expiry date (`expires_at`), so nobody can sign them any more.

Requests that were signed by everyone or declined are never touched.
**Cancellation is irreversible**: try a new *query* with *dry_run* first.

## Arming: nothing is cancelled until you say so
Until the Airflow Variable `{ARMED_VARIABLE}` is `true`, **every run is a dry run**, scheduled or
triggered: it finds the requests and reports what it would cancel (`would_cancel`), and its logs and
report say `NOT ARMED`. First:

1. unpause this DAG (a run triggered on a paused DAG stays *queued*); its scheduled run and any run
   you trigger are dry runs while it is unarmed;
2. read **report**'s log: every id it would cancel, why, and when it was created;
3. when the list is right, arm it: `{ARM_COMMAND}` (or *Admin > Variables*). Runs from then on
   cancel. Set it to `false`, or delete it, to disarm.

A run triggered with *dry_run* on cancels nothing, armed or not.

## Tasks
0. **check_armed**: reads `{ARMED_VARIABLE}` and decides whether this run may cancel.
1. **find**: lists the incomplete requests (`complete:false`, plus *query*) page by page and keeps
   the stale and expired ones.
   When the run may cancel, it signs each batch of {BATCH_SIZE} (a selection grant): a batch
   cancels only ids this task found, whatever an XCom says.
2. **guard**: fails the run, before anything is cancelled, when there are more than
   *max_cancellations* of them (a mistyped query must not wipe out an account) and *over_cap* is
   `fail`. The deployment's `[dropbox_sign] max_cancellations` is the ceiling: a run's own is
   lower or equal, and every batch checks it again before it cancels.
3. **ask**: goes to **approve** when the run is over *max_cancellations*, *over_cap* is `ask` and
   the run really cancels (armed, not a dry run); otherwise straight to **cancel**.
4. **approve**: shows how many were found, the cap, the query and age, and the
   {SAMPLE_SIZE} oldest requests (title, created, stale or expired) in the Airflow UI (the run's
   *Required Actions*), and waits for a person to press **Approve** or **Reject**. **Approve**
   cancels everything found (it hands each batch a signed grant); **Reject** skips **cancel**:
   nothing is cancelled. Without an answer within `[dropbox_sign] approval_timeout` (a day by
   default) it counts as **Reject**, and the run fails so that somebody notices.
5. **cancel**: one task per batch. It cancels each id of its batch, then waits on the triggerer,
   without holding a worker or pool slot, until Dropbox Sign confirms every cancellation it queued
   (re-cancelling after 60 minutes without confirmation, as Dropbox Sign recommends). Only then
   does it fail, naming each id that failed, when some did: a failure on one id never leaves the
   others' cancellations unconfirmed. In a dry run it only reports what it would cancel.
6. **report**: who approved or rejected (when a person was asked), counts by outcome and a table
   of every id, why it was picked and what happened, in the task log and as XCom. It runs when
   every batch succeeded, or when **cancel** was skipped; a failed batch's log holds the table of
   its ids. Rejected: every id is `not_approved` and the run succeeds; not answered in time: the
   run fails. A dry run over the cap with *over_cap* `ask` asks nobody, and says an armed run
   would ask.

## Parameters
- **max_age_days** (default 30): requests created longer ago than this are stale.
- **query** (default empty): an extra Dropbox Sign search filter joined with ` AND `,
  e.g. `title:NDA` or `metadata:onboarding`.
- **dry_run** (default false): report what would be cancelled; cancel nothing. While the DAG is
  not armed, every run is a dry run whatever this says.
- **max_cancellations** (default 200): the most requests one run may cancel without asking; the
  deployment's `[dropbox_sign] max_cancellations` caps it.
- **over_cap** (default `fail`): what a run that found more than *max_cancellations* does. `fail`:
  fails before cancelling anything. `ask`: a person approves or rejects in the Airflow UI (see
  **approve**).

## Setup
At most {MAX_PARALLEL_BATCHES} **cancel** batches run at once, so that all workers together stay
within the account's rate limit. The API tasks run in the pool `{POOL}` (environment variable
`DROPBOX_SIGN_POOL` on the dag-processor, for a pool you created). **cancel** checks its queued
cancellations every {CONFIRM_POKE_INTERVAL:g} seconds (environment variable
`DROPBOX_SIGN_CONFIRM_POKE_INTERVAL`), or, with `DROPBOX_SIGN_EVENT_FIRST=true` and the callback
receiver set up, as soon as Dropbox Sign's event arrives.
"""


def _duration(delta: timedelta) -> str:
    """``delta`` in words: ``1 day``, ``2 hours``, ``90 seconds``."""
    seconds = delta.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


def _day(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).date().isoformat() if epoch else "?"


def cleanup_mode(dry_run: bool, variable: str | None) -> dict[str, Any]:
    """
    Whether a run may cancel: ``{"armed": bool, "dry_run": bool, "why": str}``, ``why`` in words for
    its log and its report. An unarmed run is a dry run whatever its ``dry_run`` param says.

    :param dry_run: the run's ``dry_run`` param.
    :param variable: the value of the Variable ``dropbox_sign_cleanup_armed``; ``None`` when unset.
        Only ``true`` (in any case, spaces around allowed) arms the clean-up.
    """
    if variable is not None and variable.strip().lower() == "true":
        if dry_run:
            why = "dry run: the run's dry_run is on, so it cancels nothing (the clean-up is armed)"
        else:
            why = f"armed: the Variable {ARMED_VARIABLE} is true, so this run cancels"
        return {"armed": True, "dry_run": dry_run, "why": why}
    seen = "is not set" if variable is None else f"is {variable!r}, not true"
    why = (
        f"NOT ARMED: the Variable {ARMED_VARIABLE} {seen}, so this run is a dry run and cancels "
        f"nothing. Read the report; when the list is right, arm the clean-up with: {ARM_COMMAND}"
    )
    return {"armed": False, "dry_run": True, "why": why}


# Characters that mean something in Markdown: a title or a query is whatever someone typed, and must
# read as text in the approval form, not as a link or markup.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~])")


def _markdown_text(value: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(value.split()))


def search_query(query: str) -> str:
    """The Dropbox Sign search **find** sends: ``complete:false``, and the run's ``query``."""
    return " AND ".join(part for part in ("complete:false", query.strip()) if part)


def approval_shown(candidates: list[dict[str, Any]], params: dict[str, Any], cap: int) -> dict[str, Any]:
    """
    What the approval form of a run over its cap shows (signed by **find** with the selection):
    how many were found, the cap, the search and the age, and the oldest ``SAMPLE_SIZE`` requests.

    :param candidates: what **find** found, oldest first.
    :param params: the run's params.
    :param cap: the run's cap, within the deployment's.
    """
    return {
        "found": len(candidates),
        "cap": cap,
        "query": search_query(params["query"]),
        "max_age_days": params["max_age_days"],
        "oldest": candidates[:SAMPLE_SIZE],
    }


def approval_markdown(shown: dict[str, Any]) -> str:
    """
    The body of the approval form of a run over ``max_cancellations``, as Markdown.

    :param shown: from :func:`approval_shown`.
    """
    found, cap, days = shown["found"], shown["cap"], shown["max_age_days"]
    policy = CancellationPolicy.from_config()
    lines = [
        f"**Approve cancels all {found} signature requests found, more than max\\_cancellations "
        f"({cap}): this cannot be undone.**",
        "",
        f"- Search: {_markdown_text(shown['query'])}",
        f"- Stale: created more than {days} days ago (max\\_age\\_days); expired: past its expiry date",
        "",
        f"The {min(found, SAMPLE_SIZE)} oldest of {found}:",
        "",
    ]
    for candidate in shown["oldest"]:
        title = _markdown_text(candidate.get("title") or "") or "(no title)"
        lines.append(
            f"- **{title}**: {candidate['reason']}, created {_day(candidate['created_at'])} "
            f"(`{candidate['signature_request_id']}`)"
        )
    if found > SAMPLE_SIZE:
        lines += ["", f"...and {found - SAMPLE_SIZE} more: the XCom of **find** lists every one."]
    lines += [
        "",
        f"**Reject** cancels nothing. Without an answer within {_duration(policy.approval_timeout)} "
        "nothing is cancelled and the run fails.",
    ]
    return "\n".join(lines)


def _warn_loudly(text: str) -> None:
    log.warning("%s\n%s\n%s", "!" * 100, text, "!" * 100)


def reason_to_cancel(request: dict[str, Any], cutoff: float, now: float) -> str | None:
    """
    Why a listed signature request should be cancelled: ``stale``, ``expired``, or ``None`` to
    leave it alone.

    :param request: a signature request as the list endpoint returns it.
    :param cutoff: Unix time; requests created before it are stale.
    :param now: the current Unix time, for ``expires_at``.
    """
    # The search already asked for incomplete requests; the index may lag, so ask again here. A
    # request that was never sent successfully (has_error) cannot be cancelled: leave it alone.
    if request_state(request) is not RequestState.PENDING or request.get("has_error"):
        return None
    created_at = request.get("created_at")
    if isinstance(created_at, int | float) and created_at < cutoff:
        return STALE
    expires_at = request.get("expires_at")
    if isinstance(expires_at, int | float) and expires_at <= now:
        return EXPIRED
    return None


with DAG(
    dag_id="dropbox_sign_expiry_cleanup",
    description="Cancel Dropbox Sign signature requests that are stale or past their expiry "
    f"(a dry run until the Variable {ARMED_VARIABLE} is true)",
    schedule="@daily",
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    # Two overlapping runs would race to cancel the same requests.
    max_active_runs=1,
    doc_md=DOC_MD,
    tags=["dropbox-sign"],
    params={
        "max_age_days": Param(
            30,
            type="integer",
            minimum=1,
            title="Maximum age (days)",
            description="Incomplete requests created more than this many days ago are cancelled.",
        ),
        "query": Param(
            "",
            type="string",
            title="Extra search filter",
            description="Dropbox Sign search syntax, joined to complete:false with AND, "
            "e.g. title:NDA. Empty: every incomplete request of the account.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Report what would be cancelled; cancel nothing. Until the Variable "
            f"{ARMED_VARIABLE} is true, every run is a dry run whatever this says.",
        ),
        "max_cancellations": Param(
            200,
            type="integer",
            minimum=1,
            title="Maximum cancellations",
            description="The most requests one run may cancel. When more match, the run fails "
            "before cancelling anything, or asks a person first (see the next field).",
        ),
        "over_cap": Param(
            "fail",
            type="string",
            enum=["fail", "ask"],
            title="When more than the maximum are found",
            description="fail: fail the run before cancelling anything. ask: a person approves or "
            "rejects in the Airflow UI, shown how many were found and the oldest of them; Reject, "
            "or no answer in time, cancels nothing. A dry run asks nobody.",
        ),
    },
) as dag:

    @task
    def check_armed() -> dict[str, Any]:
        """
        Read the Variable ``dropbox_sign_cleanup_armed`` and decide whether this run may cancel (see
        ``cleanup_mode``). An unarmed run is a dry run, and its log says so.
        """
        mode = cleanup_mode(
            bool(get_current_context()["params"]["dry_run"]), Variable.get(ARMED_VARIABLE, default=None)
        )
        if mode["armed"]:
            log.info("%s", mode["why"])
        else:
            _warn_loudly(mode["why"])
        return mode

    @task(**API_TASK_ARGS)  # type: ignore[untyped-decorator]
    def find() -> list[dict[str, Any]]:
        """
        List the incomplete signature requests and keep the stale and the expired ones, oldest
        first. When the run may cancel, sign what it found (XCom ``batches``: one signed batch per
        **cancel** task; XCom ``selection``: what an approval form shows), so that nothing but what
        this task found can be cancelled, whatever an XCom says later.
        """
        # Imported here, not at the top: parsing this file then needs no HTTP client.
        from dropbox_sign_provider.hooks.dropbox_sign import DropboxSignHook

        context = get_current_context()
        params, ti = context["params"], context["ti"]
        # Decided again here, not taken from check_armed's XCom, which the REST API can rewrite.
        mode = cleanup_mode(bool(params["dry_run"]), Variable.get(ARMED_VARIABLE, default=None))
        now = time.time()
        cutoff = now - params["max_age_days"] * 86400
        # One listing of every incomplete request, with no created:[...] narrowing: expired requests
        # can be recent, and the search has no field for the expiry date.
        query = search_query(params["query"])
        log.info(
            "Looking for requests matching %r created before %s or past their expiry",
            query,
            datetime.fromtimestamp(cutoff, tz=timezone.utc).isoformat(timespec="seconds"),
        )
        candidates: dict[str, dict[str, Any]] = {}
        listed = 0
        for request in DropboxSignHook().list_signature_requests(query=query):
            listed += 1
            reason = reason_to_cancel(request, cutoff, now)
            if reason is not None:
                candidates[request["signature_request_id"]] = {
                    "signature_request_id": request["signature_request_id"],
                    "title": request.get("title"),
                    "created_at": request.get("created_at"),
                    "expires_at": request.get("expires_at"),
                    "reason": reason,
                }
        found = sorted(candidates.values(), key=lambda c: (c["created_at"] or 0, c["signature_request_id"]))
        log.info("%d incomplete requests listed, %d to cancel", listed, len(found))
        ids = [candidate["signature_request_id"] for candidate in found]
        cap = CancellationPolicy.from_config().cap(params["max_cancellations"])
        signed: dict[str, Any] = {"kind": SELECTION, "dag_id": ti.dag_id, "run_id": ti.run_id}
        signed.update(count=len(ids), selection=selection_digest(ids), require_approval=len(ids) > cap)
        key = grant_key() if not mode["dry_run"] else b""
        batches = []
        for start in range(0, len(ids), BATCH_SIZE):
            batch = ids[start : start + BATCH_SIZE]
            grant = None if mode["dry_run"] else mint(key, ids=batch, **signed)
            batches.append(
                {"signature_request_ids": batch, "dry_run": mode["dry_run"], "selection_grant": grant}
            )
        ti.xcom_push(key="batches", value=batches)
        if not mode["dry_run"]:
            shown = approval_shown(found, params, cap)
            ti.xcom_push(
                key="selection", value=mint(key, shown=shown, **{**signed, "require_approval": False})
            )
        return found

    @task
    def guard(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """
        Refuse an implausibly large clean-up before anything is cancelled, unless the run's
        ``over_cap`` is ``ask`` (then **ask** decides whether a person approves); otherwise hand on
        the keyword arguments of one **cancel** task per batch that **find** signed. Each batch
        checks its grant and the deployment's cap again before it cancels.

        :param candidates: what **find** returned.
        """
        context = get_current_context()
        params = context["params"]
        policy = CancellationPolicy.from_config()
        cap = policy.cap(params["max_cancellations"])
        if len(candidates) > cap and params["over_cap"] != "ask":
            raise AirflowFailException(
                f"Found {len(candidates)} signature requests to cancel, more than max_cancellations={cap}. "
                f"Nothing was cancelled. Check the query ({params['query']!r}) and max_age_days "
                f"({params['max_age_days']}) with dry_run, raise max_cancellations for this run (up to "
                f"[dropbox_sign] max_cancellations={policy.max_cancellations}), or ask for approval "
                "with over_cap=ask."
            )
        return list(context["ti"].xcom_pull(task_ids="find", key="batches") or [])

    @task.branch
    def ask(candidates: list[dict[str, Any]], mode: dict[str, Any]) -> str:
        """
        Go to **approve** when the run found more than ``max_cancellations``, its ``over_cap`` is
        ``ask`` and it really cancels (armed, not a dry run); push the form's text (XCom ``form``).
        Otherwise straight to **cancel**.

        :param candidates: what **find** returned.
        :param mode: what **check_armed** decided.
        """
        context = get_current_context()
        params = context["params"]
        cap = CancellationPolicy.from_config().cap(params["max_cancellations"])
        over = len(candidates) > cap and params["over_cap"] == "ask"
        if over and not mode["dry_run"]:
            return "approve"
        if over:
            log.info("More than max_cancellations found, but this run cancels nothing: asking nobody")
        return "cancel"

    # The tasks take what their upstream tasks returned; mypy sees the XComArg that carries it.
    mode = check_armed()
    found = find()
    mode >> found
    asked = ask(found, mode)  # type: ignore[arg-type]
    batches = guard(found)  # type: ignore[arg-type]
    batches >> asked
    # dry_run is not a template field: it reaches each batch through the mapped keyword arguments.
    cancel = CancelSignatureRequestOperator.partial(
        task_id="cancel",
        on_completed="ignore",
        max_cancellations=BATCH_SIZE,
        # Each batch confirms what it queued before it fails on other ids, so no failure leaves a
        # queued cancellation unconfirmed (a separate confirm task would be skipped by that failure).
        wait_for_confirmation=True,
        deferrable=True,
        poke_interval=CONFIRM_POKE_INTERVAL,
        event_first=CONFIRM_EVENT_FIRST,
        max_active_tis_per_dagrun=MAX_PARALLEL_BATCHES,
        # Each batch cancels only ids find signed (its mapped selection_grant), and, over the cap,
        # only with the approval's grant: the checks live in the operator, not in this wiring.
        require_selection=True,
        approval_grant=f"{{{{ ti.xcom_pull(task_ids='approve', key='{GRANT_KEY}') | tojson }}}}",
        # Runs after an approval, or when ask went straight here (approve is then skipped); a
        # rejection skips it, and a failed guard or approval stops it.
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
        **API_TASK_ARGS,
    ).expand_kwargs(batches)
    approve = CancellationApprovalOperator(
        task_id="approve",
        subject="Cancel more stale Dropbox Sign signature requests than max_cancellations allows? "
        "This cannot be undone.",
        selection="{{ ti.xcom_pull(task_ids='find', key='selection') | tojson }}",
        describe=approval_markdown,
    )
    asked >> [approve, cancel]
    approve >> cancel

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def report(
        candidates: list[dict[str, Any]], cancelled: list[dict[str, str]] | None, mode: dict[str, Any]
    ) -> dict[str, Any]:
        """
        Log who decided (when a person was asked), the counts by outcome and a table of every id,
        then return both, with whether the run was a dry run and why, and the decision. Fail when
        the approval timed out: nothing was cancelled, and somebody should notice.

        :param candidates: what **find** returned.
        :param cancelled: the confirmed outcomes of each **cancel** batch (in a dry run, what it
            would do); nothing when **cancel** was skipped.
        :param mode: what **check_armed** decided.
        """
        context = get_current_context()
        params, ti = context["params"], context["ti"]
        dry_run = bool(mode["dry_run"])
        cap = CancellationPolicy.from_config().cap(params["max_cancellations"])
        was_asked = ti.xcom_pull(task_ids="ask") == "approve"
        verdict = decision(ti.xcom_pull(task_ids="approve", key=ANSWER_KEY)) if was_asked else None
        outcomes: dict[str, str] = {}
        if verdict is not None and not verdict.approved:
            # Rejected, or nobody answered: cancel was skipped, and nothing was sent.
            outcomes = dict.fromkeys(
                (c["signature_request_id"] for c in candidates), str(Outcome.NOT_APPROVED)
            )
            decided = f"{verdict}: nothing was cancelled"
        else:
            for batch in cancelled or []:
                outcomes.update(batch or {})
            if verdict is not None:
                decided = str(verdict)
            elif len(candidates) > cap:
                decided = (
                    f"{len(candidates)} found, more than max_cancellations={cap}: nobody was asked, as "
                    "this run cancels nothing; an armed run that is not a dry run would ask for approval"
                )
            else:
                decided = "no approval needed"
        picked = {c["signature_request_id"]: c for c in candidates}
        table = outcome_table(
            {sr_id: outcomes.get(sr_id, "not handled") for sr_id in picked},
            {
                sr_id: [
                    ("reason", c["reason"]),
                    ("created", _day(c["created_at"])),
                ]
                for sr_id, c in picked.items()
            },
        )
        counted = summarize(outcomes, {}) if outcomes else "nothing to cancel"
        log.info(
            "Dropbox Sign clean-up%s, %s: %s\n%s", " (dry run)" if dry_run else "", decided, counted, table
        )
        if not mode["armed"]:
            _warn_loudly(mode["why"])
        # Only a person's rejection is a decision; no answer is for somebody to look at.
        if verdict is not None and not verdict.approved and verdict.by is None:
            raise AirflowFailException(f"Dropbox Sign clean-up {decided}")
        return {
            "dry_run": dry_run,
            "armed": mode["armed"],
            "why": mode["why"],
            "decision": {
                "asked": was_asked,
                "approved": None if verdict is None else verdict.approved,
                "by": None if verdict is None else verdict.by,
                "said": decided,
            },
            "counts": count_outcomes(outcomes),
            "outcomes": outcomes,
        }

    report(found, cancel.output, mode)  # type: ignore[arg-type]
