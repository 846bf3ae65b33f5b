"""
The ``query`` parameter of ``GET /signature_request/list``: parsed into one predicate on a stored
request, refusing what the emulator cannot honour rather than guessing.

The language is Dropbox Sign's ("Using Search on List Endpoints"): free terms, which match the
signers (``to``), the sender (``from``), the title, subject, message and metadata; the fields
``to:``, ``from:`` (``me`` for the account itself), ``title:``, ``subject:``, ``message:`` and
``metadata:``; ``created:`` with an inclusive ``[A TO B]`` or exclusive ``{A TO B}`` range of
dates; ``complete:true|false``; joined by the case-sensitive ``AND`` and ``OR``.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Collection
from typing import Any

from dropbox_sign_provider.testing.emulator.errors import ApiError

#: Whether a stored request body matches.
Predicate = Callable[[dict[str, Any]], bool]

#: The fields a query may name before ``:``, besides ``created`` and ``complete``.
TEXT_FIELDS = ("to", "from", "title", "subject", "message", "metadata")

_WORD_RE = re.compile(r"[^\s\"*?:()\[\]{}\\]+")
_CREATED_RE = re.compile(r"created:([\[{])(\S+) TO (\S+)([\]}])")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_query(query: str, account_email: str, ignored: Collection[str] = ()) -> Predicate:
    """
    Turn a search query into one predicate on the stored body, refusing what the emulator cannot honour.

    :param query: the ``query`` parameter of ``GET /signature_request/list``.
    :param account_email: the account's address, what ``from:me`` and ``to:me`` stand for.
    :param ignored: fields the index ignores (a fault: every request matches them).
    :return: whether a stored body matches; every body matches an empty query.
    :raises ApiError: 400 naming the first part the emulator does not understand.
    """
    if not query.strip():
        return lambda body: True
    # Undocumented (parentheses in a query): grouping is never mentioned, so a parenthesis is left
    # in its clause, which is then refused as unsupported.
    # The operators are case-sensitive, as the docs say: a lower-case "or" stays inside a clause,
    # which then fails to parse as the free term it is. AND binds tighter than OR, the usual
    # precedence, so the query is an OR of AND groups.
    groups = [
        [
            _parse_clause(clause.strip(), query, account_email.lower(), ignored)
            for clause in alternative.split(" AND ")
        ]
        for alternative in query.split(" OR ")
    ]
    return lambda body: any(all(predicate(body) for predicate in group) for group in groups)


def _unsupported(part: str) -> ApiError:
    return ApiError(
        400,
        f"Unsupported search query {part!r}: this emulator supports free terms (WORD), "
        "to:, from: (me for this account), title:, subject:, message: and metadata: with a WORD, "
        "complete:true|false and created:[YYYY-MM-DD TO YYYY-MM-DD] ({...} exclusive, * open), "
        "joined by ' AND ' and ' OR ' (AND binds tighter; no parentheses).",
        path="query",
    )


def _parse_clause(clause: str, query: str, me: str, ignored: Collection[str]) -> Predicate:
    if not clause:
        raise _unsupported(query)
    field_name, colon, value = clause.partition(":")
    if not colon:
        if not _WORD_RE.fullmatch(clause):
            raise _unsupported(clause)
        needle = clause.lower()
        # A free term matches any of the fields the guide lists (the emulator stores no files).
        return lambda body: any(needle in text for name in TEXT_FIELDS for text in _texts(body, name))
    if field_name in ignored:
        return lambda body: True
    if field_name == "complete" and value in ("true", "false"):
        wanted = value == "true"
        return lambda body: bool(body["is_complete"]) is wanted
    if field_name in ("to", "from") and value == "me":
        # "me" is the account itself: an exact address, not a part of one.
        return lambda body: me in _addresses(body, field_name)
    if field_name in TEXT_FIELDS and _WORD_RE.fullmatch(value):
        # Undocumented (how text fields match): a case-insensitive substring of the field (of a
        # signer's or the sender's name or address for to: and from:), the most forgiving reading.
        needle = value.lower()
        return lambda body: any(needle in text for text in _texts(body, field_name))
    match = _CREATED_RE.fullmatch(clause)
    if match and (match.group(1), match.group(4)) in (("[", "]"), ("{", "}")):
        return _created_in(match, clause)
    raise _unsupported(clause)


def _created_in(match: re.Match[str], clause: str) -> Predicate:
    low, high = _date_bound(match.group(2), clause), _date_bound(match.group(3), clause)
    inclusive = match.group(1) == "["

    def created_in_range(body: dict[str, Any]) -> bool:
        day = datetime.datetime.fromtimestamp(int(body["created_at"]), tz=datetime.timezone.utc).date()
        if inclusive:
            return (low is None or day >= low) and (high is None or day <= high)
        return (low is None or day > low) and (high is None or day < high)

    return created_in_range


def _addresses(body: dict[str, Any], field_name: str) -> list[str]:
    if field_name == "from":
        return [str(body.get("requester_email_address") or "").lower()]
    return [str(s.get("signer_email_address") or "").lower() for s in body["signatures"]]


def _texts(body: dict[str, Any], field_name: str) -> list[str]:
    if field_name in ("to", "from"):
        names = (
            []
            if field_name == "from"
            else [str(s.get("signer_name") or "").lower() for s in body["signatures"]]
        )
        return _addresses(body, field_name) + names
    if field_name == "metadata":
        return [_metadata_text(item).lower() for item in body["metadata"].values()]
    return [str(body.get(field_name) or "").lower()]


def _date_bound(text: str, clause: str) -> datetime.date | None:
    if text == "*":
        return None
    if not _DATE_RE.fullmatch(text):
        raise _unsupported(clause)
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise _unsupported(clause) from None


def _metadata_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
