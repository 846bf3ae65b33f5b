"""
The ``query`` parameter of ``GET /signature_request/list``: parsed into one predicate on a stored
request, refusing what the emulator cannot honour rather than guessing.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from typing import Any

from dropbox_sign_provider.testing.emulator.errors import ApiError

#: Whether a stored request body matches.
Predicate = Callable[[dict[str, Any]], bool]

_WORD_RE = re.compile(r"[^\s\"*?:()\[\]{}\\]+")
_CREATED_RE = re.compile(r"created:([\[{])(\S+) TO (\S+)([\]}])")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_query(query: str) -> Predicate:
    """
    Turn a search query into one predicate on the stored body, refusing what the emulator cannot honour.

    :param query: the ``query`` parameter of ``GET /signature_request/list``.
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
        [_parse_clause(clause.strip(), query) for clause in alternative.split(" AND ")]
        for alternative in query.split(" OR ")
    ]
    return lambda body: any(all(predicate(body) for predicate in group) for group in groups)


def _unsupported(part: str) -> ApiError:
    return ApiError(
        400,
        f"Unsupported search query {part!r}: this emulator supports complete:true|false, title:WORD, "
        "metadata:WORD and created:[YYYY-MM-DD TO YYYY-MM-DD] ({...} exclusive, * open) joined by "
        "' AND ' and ' OR ' (AND binds tighter; no parentheses).",
        path="query",
    )


def _parse_clause(clause: str, query: str) -> Predicate:
    if not clause:
        raise _unsupported(query)
    field_name, _, value = clause.partition(":")
    if field_name == "complete" and value in ("true", "false"):
        wanted = value == "true"
        return lambda body: bool(body["is_complete"]) is wanted
    if field_name in ("title", "metadata") and _WORD_RE.fullmatch(value):
        # Undocumented (how title: and metadata: match): a case-insensitive substring, the most
        # forgiving reading of a search.
        needle = value.lower()
        if field_name == "title":
            return lambda body: needle in str(body["title"]).lower()
        return lambda body: any(needle in _metadata_text(item).lower() for item in body["metadata"].values())
    match = _CREATED_RE.fullmatch(clause)
    if match and (match.group(1), match.group(4)) in (("[", "]"), ("{", "}")):
        low, high = _date_bound(match.group(2), clause), _date_bound(match.group(3), clause)
        inclusive = match.group(1) == "["

        def created_in_range(body: dict[str, Any]) -> bool:
            day = datetime.datetime.fromtimestamp(int(body["created_at"]), tz=datetime.timezone.utc).date()
            if inclusive:
                return (low is None or day >= low) and (high is None or day <= high)
            return (low is None or day > low) and (high is None or day < high)

        return created_in_range
    raise _unsupported(clause)


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
