"""
Validation of signature request ids: the one place that decides what an id may look like.

Every id is checked before anything is sent, so a typo, a path fragment or a template that
rendered to something odd fails the task with the value named instead of reaching the API.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from typing import Any

#: The official examples use lowercase hex ids of 24, 37 and 40 characters; a range, not one length.
SIGNATURE_REQUEST_ID_PATTERN = r"^[0-9a-f]{16,64}$"
_ID_RE = re.compile(r"[0-9a-f]{16,64}", re.ASCII)
_SEPARATORS = re.compile(r"[,\s]+")
#: Longest ``repr`` of a bad value an error message quotes whole: a value can be anything a payload
#: or a template held, up to a megabyte, and the message ends up in logs and HTTP answers.
MAX_SHOWN_CHARS = 120
#: The manual cancel DAG (``dags/dropbox_sign_cancel_request.py``) and the most ids one of its runs
#: takes: a person picking ids cancels a handful; bulk clean-ups belong to the clean-up DAG. Its
#: trigger form and the provider's UI page read both from here.
CANCEL_REQUEST_DAG_ID = "dropbox_sign_cancel_request"
MAX_IDS_PER_RUN = 50


def shown(value: Any) -> str:
    """
    The ``repr`` of ``value`` for an error message, cut to :data:`MAX_SHOWN_CHARS` characters.

    :param value: the bad value to name.
    """
    text = repr(value)
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[: MAX_SHOWN_CHARS - 30]}... ({len(text)} characters)"


def validate_signature_request_id(value: Any) -> str:
    """
    Return ``value`` as a signature request id, surrounding whitespace stripped.

    The one rule for ids, wherever they come from: a task's arguments, an API answer, a callback
    event's payload. Upper-case hex is refused rather than lowered: Dropbox Sign writes its ids in
    lowercase, so an upper-cased one was changed on the way, and two spellings of one id must never
    count as two requests.

    :param value: the candidate id.
    :raises ValueError: naming the value, when it is not 16 to 64 lowercase hex characters.
    """
    if not isinstance(value, str):
        raise ValueError(
            f"signature_request_id {shown(value)} is not a Dropbox Sign id: expected a string of 16 to 64 "
            f"lowercase hex characters, got {type(value).__name__}"
        )
    candidate = value.strip()
    if not _ID_RE.fullmatch(candidate):
        raise ValueError(
            f"signature_request_id {shown(value)} is not a Dropbox Sign id: expected 16 to 64 lowercase hex "
            "characters"
        )
    return candidate


def validate_bulk_send_job_id(value: Any) -> str:
    """
    Return ``value`` as a bulk send job id, surrounding whitespace stripped. Dropbox Sign's examples
    write them like signature request ids (40 lowercase hex characters,
    ``6e683bc0369ba3d5b6f43c2c22a8031dbf6bd174``), so the same rule holds for both.

    :param value: the candidate id.
    :raises ValueError: naming the value, when it is not 16 to 64 lowercase hex characters.
    """
    candidate = value.strip() if isinstance(value, str) else None
    if candidate is None or not _ID_RE.fullmatch(candidate):
        got = "" if isinstance(value, str) else f", got {type(value).__name__}"
        raise ValueError(
            f"bulk_send_job_id {shown(value)} is not a Dropbox Sign bulk send job id: expected 16 to 64 "
            f"lowercase hex characters{got}"
        )
    return candidate


def normalize_signature_request_ids(value: Any) -> list[str]:
    """
    Turn what a task was given into a list of validated ids, duplicates dropped and order kept.

    Accepted: one id; a string of ids separated by commas or white space (as typed in a form); a
    string holding a list or dict literal (what a Jinja template renders them to); a list or tuple
    of ids, or of summaries naming one each (``{"signature_request_id": ..., ...}``, as a list step
    returns them); a mapping whose keys are ids (the result of
    :class:`~dropbox_sign_provider.operators.signature_request.CancelSignatureRequestOperator`).

    Empty input is no error, whatever its form (``[]``, ``()``, ``{}``, ``""``, ``"  "``, ``"[]"``):
    there is nothing to cancel. An empty id *inside* a list is a bad id.

    :param value: the ids.
    :raises ValueError: naming the first bad value; nothing is returned half-validated.
    """
    if isinstance(value, Mapping):
        items: Iterable[Any] = value.keys()
    elif isinstance(value, str):
        items = _split_string(value)
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise ValueError(
            f"signature_request_ids {value!r} must be an id, a list of ids or a mapping keyed by id, "
            f"got {type(value).__name__}"
        )
    # A list step's summaries name their request; anything else in a list must be an id itself.
    items = [
        item["signature_request_id"] if isinstance(item, Mapping) and "signature_request_id" in item else item
        for item in items
    ]
    return list(dict.fromkeys(validate_signature_request_id(item) for item in items))


def reported_outcomes(value: Any) -> dict[str, str] | None:
    """
    The ``{id: outcome}`` mapping held by ``value`` (the operator's result, as a mapping or as the
    string a template renders it to), keys validated; ``None`` when ``value`` holds plain ids.

    :raises ValueError: naming the first bad id.
    """
    if isinstance(value, str) and value.strip().startswith("{"):
        value = _literal(value)
    if not isinstance(value, Mapping):
        return None
    return {validate_signature_request_id(k): str(v) for k, v in value.items()}


def _literal(value: str) -> Any:
    try:
        return ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        raise ValueError(
            f"signature_request_ids {value!r} looks like a list but cannot be read as one"
        ) from None


def _split_string(value: str) -> list[Any]:
    text = value.strip()
    if text.startswith(("[", "(", "{")):
        parsed = _literal(text)
        if isinstance(parsed, dict):
            return list(parsed)  # the operator's result, rendered by a template: its keys are the ids
        if not isinstance(parsed, list | tuple):
            raise ValueError(f"signature_request_ids {value!r} looks like a list but is not one")
        return list(parsed)
    if not text:
        return []
    return _SEPARATORS.split(text)


def resolved_at_run_time(value: Any) -> bool:
    """
    Whether ``value`` is known only when the task runs: a Jinja template, an XCom (an ``XComArg``,
    or anything else Airflow resolves), or a list, tuple or mapping holding one. Anything else is a
    literal, checked when the DAG file is parsed.
    """
    from airflow.sdk.definitions._internal.mixins import ResolveMixin

    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, ResolveMixin):
        return True
    if isinstance(value, Mapping):
        return any(resolved_at_run_time(key) for key in value)
    return isinstance(value, list | tuple) and any(resolved_at_run_time(item) for item in value)


def dry_run_flag(value: Any, name: str = "dry_run") -> bool:
    """
    A templated flag (``dry_run``, ``require_approval``) as a boolean: ``True`` or ``False``, or what
    a template renders them to, ``"true"`` or ``"false"`` in any case and with surrounding white space.

    :param value: the flag as given or rendered.
    :param name: the argument's name, for the error.

    :raises ValueError: naming the value otherwise: any other text would be a non-empty string,
        true in Python, and a template meant to say "cancel" would silently make a dry run.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{name} {value!r} must be True or False, or a template rendering to 'true' or 'false'")
