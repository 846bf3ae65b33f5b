"""
What a person reads before approving a cancellation: each request as a dry run saw it.

A dry run (``CancelSignatureRequestOperator(dry_run=True)``) reads each id once and keeps, per id,
a :class:`RequestPreview`: the request's title, when it was sent, its signers and which of them
signed, and the outcome a cancel would have. :func:`preview_markdown` words them for the approval
form of Airflow's human-in-the-loop operators, whose ``body`` is Markdown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypedDict

from dropbox_sign_provider.cancellation.outcomes import Outcome


class SignerPreview(TypedDict):
    """One signer of a request; ``status_code`` is Dropbox Sign's (``signed``, ``awaiting_signature``)."""

    name: str
    email_address: str
    status_code: str
    signed_at: int | None


class RequestPreview(TypedDict):
    """
    One id as a dry run saw it; plain JSON, kept as the dry run's XCom ``preview``.

    :ivar signature_request_id: the id.
    :ivar outcome: what a cancel would do (``would_cancel``, ``completed``, ``not_found``, ...).
    :ivar title: the request's title; ``None`` when it could not be read.
    :ivar created_at: when it was sent (Unix time); ``None`` when it could not be read.
    :ivar signers: its signers, in Dropbox Sign's order.
    """

    signature_request_id: str
    outcome: str
    title: str | None
    created_at: int | None
    signers: list[SignerPreview]


def request_preview(sr_id: str, outcome: str, request: Mapping[str, Any] | None) -> RequestPreview:
    """
    The preview of one id.

    :param sr_id: the id.
    :param outcome: what a cancel would do.
    :param request: the signature request as ``GET`` returned it; ``None`` when the read failed
        (``not_found``, ``forbidden``, no answer).
    """
    request = request or {}
    created_at = request.get("created_at")
    return RequestPreview(
        signature_request_id=sr_id,
        outcome=outcome,
        title=request.get("title") if isinstance(request.get("title"), str) else None,
        created_at=int(created_at) if isinstance(created_at, int | float) else None,
        signers=[
            SignerPreview(
                name=str(signature.get("signer_name") or ""),
                email_address=str(signature.get("signer_email_address") or ""),
                status_code=str(signature.get("status_code") or "unknown"),
                signed_at=signature.get("signed_at") if isinstance(signature.get("signed_at"), int) else None,
            )
            for signature in request.get("signatures") or ()
            if isinstance(signature, Mapping)
        ],
    )


def would_cancel(previews: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The previewed ids a cancel would cancel (``would_cancel``), in the preview's order."""
    return [p["signature_request_id"] for p in previews or () if p["outcome"] == Outcome.WOULD_CANCEL]


# Characters that mean something in Markdown (CommonMark's escapable punctuation): a title or a
# signer's name is whatever the sender typed, and must read as text, not as a link or markup.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~])")


def _text(value: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(value.split()))


def _when(epoch: int | None) -> str:
    if epoch is None:
        return "unknown"
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _signer(signer: Mapping[str, Any]) -> str:
    who = _text(signer["name"] or signer["email_address"] or "(no name)")
    if signer["name"] and signer["email_address"]:
        who += f" ({_text(signer['email_address'])})"
    if signer["status_code"] == "signed":
        return f"{who}: **signed** {_when(signer['signed_at'])}"
    return f"{who}: not signed ({_text(signer['status_code'].replace('_', ' '))})"


#: What each outcome means to the person deciding, in the approval form.
_MEANING = {
    str(Outcome.WOULD_CANCEL): "**will be cancelled** if you approve",
    str(Outcome.COMPLETED): "signed by everyone: will not be cancelled",
    str(Outcome.DECLINED): "declined by a signer: will not be cancelled",
    str(Outcome.ALREADY_CANCELED): "already cancelled: nothing to do",
    str(Outcome.NOT_FOUND): "not found for this account: will not be cancelled",
    str(Outcome.FORBIDDEN): "another sender's request: cannot be cancelled",
    str(Outcome.UNAUTHORIZED): "the connection's credentials were refused",
}


#: Requests an approval form describes one by one, at most; the rest are counted.
SHOWN_REQUESTS = 25


def preview_markdown(previews: Any) -> str:
    """
    The approval form's body: how many requests an approval cancels, then each request with its
    title, id, when it was sent, its signers and what approving does to it (the first
    :data:`SHOWN_REQUESTS`, oldest first for a list step's selection).

    :param previews: the dry run's XCom ``preview`` (:class:`RequestPreview` values), or what a list
        step's selection shows (``{"search": ..., "requests": [...]}``).
    """
    search = previews.get("search") if isinstance(previews, Mapping) else None
    if isinstance(previews, Mapping):
        previews = previews.get("requests")
    previews = list(previews or ())
    cancelling = would_cancel(previews)
    others = len(previews) - len(cancelling)
    plural = "s" if len(cancelling) != 1 else ""
    headline = f"**Approve cancels {len(cancelling)} signature request{plural}: this cannot be undone.**"
    if others:
        headline += f" The other {others} listed here {'are' if others != 1 else 'is'} not touched."
    lines = [headline, ""]
    if search:
        lines += [f"Selected by: {_text(str(search))}", ""]
    lines += ["Reject, or no answer in time, cancels nothing.", ""]
    for number, preview in enumerate(previews[:SHOWN_REQUESTS], start=1):
        outcome = str(preview["outcome"])
        title = _text(preview["title"]) if preview["title"] else "(title unknown)"
        lines.append(f"{number}. **{title}**: {_MEANING.get(outcome, _text(outcome))}")
        lines.append(f"    - id: `{preview['signature_request_id']}`")
        lines.append(f"    - sent: {_when(preview['created_at'])}")
        signers = preview["signers"]
        if signers:
            signed = sum(1 for s in signers if s["status_code"] == "signed")
            lines.append(f"    - signers ({signed} of {len(signers)} signed):")
            lines.extend(f"        - {_signer(signer)}" for signer in signers)
    if len(previews) > SHOWN_REQUESTS:
        lines += ["", f"...and {len(previews) - SHOWN_REQUESTS} more, counted in what Approve covers below."]
    return "\n".join(lines)
