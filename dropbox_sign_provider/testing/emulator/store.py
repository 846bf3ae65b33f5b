"""
The signature requests and their life: stored bodies, the state each is in, and the transitions
the API (cancel, remove) and the tests (sign, decline, expire) make them go through.

A request is ``awaiting_signature`` until it is signed by all (``completed``), declined
(``declined``) or cancelled. Cancellation is asynchronous, as in Dropbox Sign: an accepted cancel
call queues it (``cancel_requested``) and it happens ``cancel_delay`` seconds later
(``canceled``), completed lazily whenever the request is next looked at, so no timer is needed.
Expiry is not a state of its own: an awaiting request past its ``expires_at`` shows its unsigned
signatures as ``expired``, as Dropbox Sign does, and its cancel is refused
(``signature_request_expired``).
"""

from __future__ import annotations

import copy
import math
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dropbox_sign_provider.testing.emulator import clock
from dropbox_sign_provider.testing.emulator.errors import ApiError
from dropbox_sign_provider.testing.emulator.faults import Faults
from dropbox_sign_provider.testing.emulator.query import parse_query

#: Every state :meth:`DropboxSignEmulator.get_state` can answer.
STATES = ("awaiting_signature", "cancel_requested", "canceled", "completed", "declined")


class TransitionRefused(ValueError):
    """A test asked for a transition the request's state does not allow (e.g. signing a cancelled one)."""


@dataclass
class Record:
    """One stored request: its body as the API answers it, and where its cancellation stands."""

    body: dict[str, Any]
    forbidden: bool
    accepted_cancels: int = 0
    cancel_due: float | None = None
    cancel_lost: bool = False
    canceled_at: float | None = None
    removed: bool = False

    @property
    def request_id(self) -> str:
        """The ``signature_request_id``."""
        return str(self.body["signature_request_id"])

    @property
    def expired(self) -> bool:
        """Whether ``expires_at`` has passed."""
        expires_at = self.body.get("expires_at")
        return expires_at is not None and clock.now() >= expires_at


#: Told of each event a request's life produces: the event type, the request and the signature the
#: event is about (``event_metadata.related_signature_id``), if one.
EventSink = Callable[[str, Record, "str | None"], None]


class SignatureRequestStore:
    """
    Every stored request. Not thread-safe: the emulator's lock guards every call.

    :param on_event: called, lock held, when a transition produces an event (a cancellation taking
        effect, a request signed by all, declined or expired).
    """

    def __init__(self, on_event: EventSink) -> None:
        self.records: dict[str, Record] = {}
        self.cancel_calls: dict[str, int] = {}
        self._on_event = on_event

    # -- seeding and inspection -------------------------------------------------------------------

    def create(self, fields: dict[str, Any], requester_email: str) -> dict[str, Any]:
        """
        Store a request; see :meth:`DropboxSignEmulator.create_signature_request` for the fields.

        :return: the request as ``GET`` answers it.
        :raises TypeError: for an unknown field.
        :raises ValueError: for inconsistent or duplicate values.
        """
        record = self.build(fields, requester_email)
        self.add(record)
        return render(record)

    def build(self, fields: dict[str, Any], requester_email: str) -> Record:
        """
        A request from its fields, not stored yet: what :meth:`create` stores, once checked.

        :raises TypeError: for an unknown field.
        :raises ValueError: for inconsistent values or an id already stored.
        """
        fields = dict(fields)
        forbidden = bool(fields.pop("forbidden", False))
        record = Record(body=_build_body(fields, requester_email), forbidden=forbidden)
        if record.request_id in self.records:
            raise ValueError(f"signature request {record.request_id!r} already exists")
        return record

    def add(self, record: Record) -> None:
        """Store a request built by :meth:`build`."""
        self.records[record.request_id] = record

    def get(self, request_id: str) -> Record:
        """
        The stored request, whatever its state.

        :raises KeyError: naming an unknown id.
        """
        try:
            return self.records[request_id]
        except KeyError:
            raise KeyError(f"no signature request {request_id!r} in the emulator") from None

    def state(self, record: Record) -> str:
        """Where the request is in its life; completes a due cancellation on the way (lazily, no timers)."""
        if record.canceled_at is not None:
            return "canceled"
        if record.cancel_due is not None:
            if record.cancel_lost or clock.monotonic() < record.cancel_due:
                return "cancel_requested"
            record.canceled_at = clock.now()
            self._on_event("signature_request_canceled", record, None)
            return "canceled"
        if record.body["is_complete"]:
            return "completed"
        if record.body["is_declined"]:
            return "declined"
        return "awaiting_signature"

    # -- what the API does ------------------------------------------------------------------------

    def accessible(self, request_id: str) -> Record:
        """
        The request, if this account may read it now.

        :raises ApiError: 404 unknown, 403 another sender's, 410 cancelled or removed.
        """
        record = self.records.get(request_id)
        if record is None:
            raise ApiError(404, "Not found.")
        if record.forbidden:
            # Undocumented (the 403 wording): the status and error_name follow the official 403 example.
            raise ApiError(403, "You do not have access to this signature request.")
        if record.removed or self.state(record) == "canceled":
            raise ApiError(410, "This resource has been deleted.")
        return record

    def cancel(self, request_id: str, cancel_delay: float, faults: Faults, account_email: str) -> None:
        """
        Queue a cancellation, due ``cancel_delay`` seconds from now (or lost, as ``faults`` decide).

        :param account_email: the account's address: only the sender may cancel.
        :raises ApiError: as the API refuses it.
        """
        self.cancel_calls[request_id] = self.cancel_calls.get(request_id, 0) + 1
        # Undocumented (cancel of a cancelled request): accessible() answers 410 deleted, as it does
        # to every other access once the cancellation has happened (or the request was removed).
        record = self.accessible(request_id)
        # The error reference: signature_request_cancel_failed (400) when the caller did not send it.
        # Undocumented (its wording): the message.
        if received(record, account_email):
            raise ApiError(
                400,
                "Only the sender of a signature request can cancel it.",
                name="signature_request_cancel_failed",
            )
        state = self.state(record)
        # Undocumented (cancel of a completed or declined request): the docs only say they are not
        # eligible; 400 bad_request follows how the API refuses other ineligible operations.
        if state == "completed":
            raise ApiError(400, "This request has already been completed and cannot be canceled.")
        if state == "declined":
            raise ApiError(400, "This request has been declined and cannot be canceled.")
        # Undocumented (cancel of an expired request): the error reference lists
        # signature_request_expired (400) for operations on a request past its expiration, without
        # naming cancel among them.
        if state == "awaiting_signature" and record.expired:
            raise ApiError(
                400,
                "This signature request has expired and cannot be canceled.",
                name="signature_request_expired",
            )
        # Undocumented (cancel while one is queued): 200 again, keeping the first due time, since a
        # queued cancellation cannot be queued twice; a lost one (never_complete) is queued anew.
        if state == "cancel_requested" and not record.cancel_lost:
            return
        record.accepted_cancels += 1
        record.cancel_lost = faults.loses_cancel(record.accepted_cancels)
        record.cancel_due = clock.monotonic() + cancel_delay

    def send(self, fields: Sequence[tuple[str, Any]], requester_email: str) -> Record:
        """
        ``POST /signature_request/send`` (``signatureRequestSend``) with the fields of its multipart
        form, as Dropbox Sign names them: ``files[N]`` (uploaded files), ``signers[N][name]``,
        ``signers[N][email_address]``, ``title``, ``subject``, ``message``, ``test_mode`` and
        ``metadata[KEY]``. The request is stored as this account sent it, awaiting signature, and
        ``signature_request_sent`` is sent.

        :param fields: the form's fields in order, files as objects with a ``filename``.
        :param requester_email: the account's address.
        :raises ApiError: 400 naming the field at fault, or the fields the emulator does not support.
        """
        form = _SendForm()
        for name, value in fields:
            form.add(name, value)
        record = Record(body=_build_body(form.request_fields(), requester_email), forbidden=False)
        self.add(record)
        self._on_event("signature_request_sent", record, None)
        return record

    def remove(self, request_id: str) -> None:
        """
        End access to a finished request.

        :raises ApiError: as the API refuses it.
        """
        record = self.accessible(request_id)
        state = self.state(record)
        # The spec: removal needs a request "fully executed by all parties (signed or declined to sign)".
        # Undocumented (remove of an unfinished request): the answer; 400 bad_request, as for cancel.
        if state not in ("completed", "declined"):
            raise ApiError(400, "This request has not been completed yet. Cancel it instead.")
        record.removed = True

    def list(
        self, query: Mapping[str, str], account_id: str, account_email: str, faults: Faults
    ) -> dict[str, Any]:
        """
        One page of ``GET /signature_request/list``: the requests the account sent and those it
        received, as Dropbox Sign lists them.

        :param query: the call's query parameters.
        :param account_id: this account's id.
        :param account_email: this account's address, what ``from:me`` means.
        :param faults: the faults in force (``search_ignores``).
        :raises ApiError: 400 naming a bad parameter.
        """
        page, page_size = paging(query)
        asked = query.get("account_id")
        # Undocumented (another account_id): the answer for an account that is not a team member;
        # this account has no team.
        if asked not in (None, "", "all", account_id):
            message = f"account_id {asked!r} is not a member of your team."
            raise ApiError(400, message, path="account_id")
        matches_query = parse_query(query.get("query", ""), account_email, faults.search_ignores)
        # Undocumented (cancelled requests in lists): left out, like removed and forbidden ones, as
        # GET answers 410 or 403 for them.
        matches = [
            render(record)
            for record in self.records.values()
            if self.listed(record) and matches_query(record.body)
        ]
        matches.sort(key=lambda body: (-int(body["created_at"]), body["signature_request_id"]))
        return page_of("signature_requests", matches, page, page_size)

    def listed(self, record: Record) -> bool:
        """Whether lists show the request: not another sender's, not removed, not cancelled."""
        return not record.forbidden and not record.removed and self.state(record) != "canceled"

    # -- what the signers do (driven by tests) ----------------------------------------------------

    def sign(self, request_id: str, signer: int | None = None) -> Record:
        """
        One signer signs, or every signer still to sign; in the order Dropbox Sign documents (the
        Callbacks and Events glossary): ``signature_request_signed`` for each signature signed, with
        its ``related_signature_id``, then, once no signature is left unsigned,
        ``signature_request_all_signed`` and ``signature_request_downloadable``. A request signed by
        some only stays awaiting signature (and can still be cancelled).

        :param signer: the index (from 0) in ``signatures`` of the one signer who signs; ``None`` for
            every signer still to sign.
        :raises KeyError: for an unknown id.
        :raises TransitionRefused: naming the id and the state that forbids it, or a signer who is not
            there or has signed already.
        """
        record = self._awaiting(request_id, "signed")
        signatures = record.body["signatures"]
        if signer is None:
            signing = [s for s in signatures if s["status_code"] != "signed"]
        elif isinstance(signer, bool) or not isinstance(signer, int) or not 0 <= signer < len(signatures):
            raise TransitionRefused(
                f"signature request {request_id!r} has {len(signatures)} signer(s): signer must be an "
                f"index from 0 to {len(signatures) - 1}, got {signer!r}"
            )
        elif signatures[signer]["status_code"] == "signed":
            raise TransitionRefused(f"signer {signer} of signature request {request_id!r} has signed already")
        else:
            signing = [signatures[signer]]
        now = int(clock.now())
        for signature in signing:
            signature.update(status_code="signed", signed_at=now, last_viewed_at=now)
            if all(s["status_code"] == "signed" for s in signatures):
                record.body.update(is_complete=True, signing_url=None)
            # Each event carries the request as it stood once that signature was made.
            self._on_event("signature_request_signed", record, signature["signature_id"])
        if record.body["is_complete"]:
            self._on_event("signature_request_all_signed", record, None)
            # Undocumented (when the files are ready): the final copy exists at once here, so
            # downloadable follows all_signed immediately; Dropbox Sign sends it "once the final files exist".
            self._on_event("signature_request_downloadable", record, None)
        return record

    def decline(self, request_id: str, reason: str | None = None) -> Record:
        """
        The first signer still to sign declines: the request is declined.

        :raises KeyError: for an unknown id.
        :raises TransitionRefused: naming the id and the state that forbids it.
        """
        record = self._awaiting(request_id, "declined")
        now = int(clock.now())
        signature = next(s for s in record.body["signatures"] if s["status_code"] != "signed")
        signature.update(status_code="declined", decline_reason=reason, last_viewed_at=now)
        record.body.update(is_declined=True, signing_url=None)
        self._on_event("signature_request_declined", record, signature["signature_id"])
        return record

    def expire(self, request_id: str) -> Record:
        """
        The request reaches its ``expires_at``, set to now.

        :raises KeyError: for an unknown id.
        :raises TransitionRefused: naming the id and the state that forbids it.
        """
        record = self._awaiting(request_id, "expired")
        record.body["expires_at"] = int(clock.now())
        self._on_event("signature_request_expired", record, None)
        return record

    def _awaiting(self, request_id: str, becoming: str) -> Record:
        record = self.get(request_id)
        state = self.state(record)
        if record.removed:
            state = f"removed ({state})"
        if state != "awaiting_signature":
            raise TransitionRefused(
                f"signature request {request_id!r} is {state}: only a request awaiting signature "
                f"can be {becoming}"
            )
        if record.expired:
            raise TransitionRefused(
                f"signature request {request_id!r} expired at {record.body['expires_at']}: it cannot "
                f"be {becoming}"
            )
        # Every signer has signed yet the request is not complete: only a hand-made seed gets here.
        if becoming == "declined" and all(s["status_code"] == "signed" for s in record.body["signatures"]):
            raise TransitionRefused(f"signature request {request_id!r} has no signer left to decline")
        return record


#: The form fields of ``POST /signature_request/send`` the emulator takes, besides ``files[N]``,
#: ``signers[N][...]`` and ``metadata[KEY]``.
SEND_FIELDS = ("title", "subject", "message", "test_mode")
#: What the spec allows of metadata (``SignatureRequestSendRequest.metadata``): "up to 10 metadata
#: keys, with key names up to 40 characters long and values up to 1000 characters long".
MAX_METADATA_KEYS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS = 10, 40, 1000
#: ``title``'s ``maxLength`` in the spec.
MAX_TITLE_CHARS = 255
_FILE = re.compile(r"files\[(\d+)\]")
_SIGNER = re.compile(r"signers\[(\d+)\]\[(name|email_address)\]")
_METADATA = re.compile(r"metadata\[([^\[\]]+)\]")


class _SendForm:
    """The fields of one send call, checked as they are added."""

    def __init__(self) -> None:
        self.files: dict[int, Any] = {}
        self.signers: dict[int, dict[str, str]] = {}
        self.metadata: dict[str, str] = {}
        self.plain: dict[str, str] = {}
        self.unsupported: list[str] = []

    def add(self, name: str, value: Any) -> None:
        is_file = getattr(value, "filename", None) is not None
        if (match := _FILE.fullmatch(name)) and is_file:
            self.files[int(match.group(1))] = value
        elif is_file:
            raise ApiError(400, f"{name} is not a file field.", path=name)
        elif match := _SIGNER.fullmatch(name):
            self.signers.setdefault(int(match.group(1)), {})[match.group(2)] = str(value)
        elif match := _METADATA.fullmatch(name):
            self.metadata[match.group(1)] = str(value)
        elif name in SEND_FIELDS:
            self.plain[name] = str(value)
        else:
            self.unsupported.append(name)

    def request_fields(self) -> dict[str, Any]:
        """The fields of the stored request (as :func:`_build_body` takes them), once all are checked."""
        if self.unsupported:
            # Undocumented (send fields the emulator does not support): Dropbox Sign takes many more
            # (file_urls, cc_email_addresses, form fields...); the emulator refuses them by name rather
            # than ignore what a test relies on.
            names = ", ".join(sorted(set(self.unsupported)))
            message = f"The emulator does not support these signature_request/send field(s): {names}."
            raise ApiError(400, message, path=sorted(self.unsupported)[0])
        # The spec: "This endpoint requires either files or file_urls[], but not both", and either
        # signers or grouped_signers.
        # Undocumented (the wording of send's 400s): the messages.
        if not self.files:
            raise ApiError(400, "files[0] is required: upload at least one file.", path="files")
        if not self.signers:
            raise ApiError(400, "signers[0] is required: name at least one signer.", path="signers")
        signers = []
        for index in sorted(self.signers):
            signer = self.signers[index]
            for part in ("name", "email_address"):
                if not signer.get(part, "").strip():
                    raise ApiError(
                        400, f"signers[{index}][{part}] is required.", path=f"signers[{index}][{part}]"
                    )
            if "@" not in signer["email_address"]:
                path = f"signers[{index}][email_address]"
                raise ApiError(400, f"{path} {signer['email_address']!r} is not an email address.", path=path)
            signers.append((signer["name"], signer["email_address"]))
        if len(self.metadata) > MAX_METADATA_KEYS:
            raise ApiError(400, f"metadata may have at most {MAX_METADATA_KEYS} keys.", path="metadata")
        for key, value in self.metadata.items():
            if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
                raise ApiError(400, f"metadata[{key[:50]}] is too long.", path=f"metadata[{key[:50]}]")
        title = self.plain.get("title", "")
        if len(title) > MAX_TITLE_CHARS:
            raise ApiError(400, f"title may have at most {MAX_TITLE_CHARS} characters.", path="title")
        test_mode = self.plain.get("test_mode", "0").lower()
        if test_mode not in ("0", "1", "true", "false"):
            raise ApiError(400, f"test_mode {test_mode!r} is not a boolean.", path="test_mode")
        fields: dict[str, Any] = {
            "signers": signers,
            "metadata": self.metadata,
            "test_mode": test_mode in ("1", "true"),
            # The spec's default title is the first file's name.
            # Undocumented (send's default subject and message): the title, the emulator's usual message.
            "title": title or self.files[min(self.files)].filename,
        }
        for name in ("subject", "message"):
            if name in self.plain:
                fields[name] = self.plain[name]
        return fields


def received(record: Record, account_email: str) -> bool:
    """Whether someone else sent the request to this account (its requester is not the account)."""
    return str(record.body.get("requester_email_address") or "").lower() != account_email.lower()


def render(record: Record) -> dict[str, Any]:
    """The request as ``GET /signature_request/{id}`` answers it (a copy)."""
    body = copy.deepcopy(record.body)
    # Dropbox Sign marks the unsigned signatures "expired" once expires_at has passed.
    if record.expired and not body["is_complete"]:
        for signature in body["signatures"]:
            if signature["status_code"] == "awaiting_signature":
                signature["status_code"] = "expired"
    return body


def paging(query: Mapping[str, str]) -> tuple[int, int]:
    """
    The ``page`` and ``page_size`` of a list call, defaults filled in (1 and 20, as the spec says).

    :raises ApiError: 400 naming a parameter that is not an integer or is out of range.
    """
    page = _int_param(query, "page", 1)
    page_size = _int_param(query, "page_size", 20)
    if page < 1:
        raise ApiError(400, f"page must be 1 or more, got {page}.", path="page")
    if not 1 <= page_size <= 100:
        raise ApiError(400, f"page_size must be between 1 and 100, got {page_size}.", path="page_size")
    return page, page_size


def page_of(member: str, items: Sequence[Any], page: int, page_size: int) -> dict[str, Any]:
    """One page of ``items`` under ``member``, with its ``list_info`` (ListInfoResponse)."""
    start = (page - 1) * page_size
    return {
        member: list(items[start : start + page_size]),
        "list_info": {
            "page": page,
            # Undocumented (num_pages of an empty list): 0 is what ceil(0 / page_size) gives.
            "num_pages": math.ceil(len(items) / page_size),
            "num_results": len(items),
            "page_size": page_size,
        },
    }


def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, got {raw!r}.", path=name) from None


def _build_body(fields: dict[str, Any], requester_email: str) -> dict[str, Any]:
    now = int(clock.now())
    request_id = str(fields.pop("signature_request_id", None) or secrets.token_hex(20))
    if "/" in request_id or not request_id.strip():
        raise ValueError(f"invalid signature_request_id {request_id!r}")
    is_complete = bool(fields.pop("is_complete", False))
    is_declined = bool(fields.pop("is_declined", False))
    if is_complete and is_declined:
        raise ValueError("a signature request cannot be both complete and declined")
    title = str(fields.pop("title", "Purchase Agreement"))
    metadata = fields.pop("metadata", None) or {}
    if not isinstance(metadata, dict):
        raise ValueError("metadata must be a dict")
    created_at = int(fields.pop("created_at", None) or now)
    expires_at = fields.pop("expires_at", None)
    signers = fields.pop("signers", None) or [("George Jetson", "george-jetson@example.com")]
    subject = fields.pop("subject", title)
    message = fields.pop("message", "Please sign and return.")

    signatures = [
        _build_signature(signer, index, created_at, is_complete, is_declined)
        for index, signer in enumerate(signers)
    ]
    body: dict[str, Any] = {
        "signature_request_id": request_id,
        "test_mode": False,
        "title": title,
        "original_title": title,
        "subject": subject,
        "message": message,
        "metadata": copy.deepcopy(metadata),
        "created_at": created_at,
        "expires_at": None if expires_at is None else int(expires_at),
        "is_complete": is_complete,
        "is_declined": is_declined,
        "has_error": False,
        "custom_fields": [],
        "response_data": [],
        "signing_url": None if is_complete or is_declined else f"https://app.hellosign.com/sign/{request_id}",
        "signing_redirect_url": None,
        "files_url": f"https://api.hellosign.com/v3/signature_request/files/{request_id}",
        "details_url": f"https://app.hellosign.com/home/manage?guid={request_id}",
        "requester_email_address": requester_email,
        "signatures": signatures,
        "cc_email_addresses": [],
        "template_ids": None,
        "signer_experience": {"form_view": "disabled"},
    }
    unknown = sorted(set(fields) - set(body))
    if unknown:
        raise TypeError(f"unknown signature request field(s): {', '.join(unknown)}")
    body.update(copy.deepcopy(fields))
    return body


def _build_signature(
    signer: Any, index: int, created_at: int, is_complete: bool, is_declined: bool
) -> dict[str, Any]:
    if isinstance(signer, Mapping):
        extra = dict(signer)
        name = extra.pop("name", extra.pop("signer_name", f"Signer {index + 1}"))
        email = extra.pop("email", extra.pop("email_address", extra.pop("signer_email_address", None)))
    else:
        name, email = signer
        extra = {}
    if is_complete:
        status = "signed"
    elif is_declined and index == 0:
        status = "declined"
    else:
        status = "awaiting_signature"
    status = extra.pop("status_code", status)
    acted = created_at + 60 * (index + 1) if status in ("signed", "declined") else None
    signature: dict[str, Any] = {
        "signature_id": secrets.token_hex(16),
        "signer_email_address": email or f"signer{index + 1}@example.com",
        "signer_name": name,
        "signer_role": None,
        "order": None,
        "status_code": status,
        "decline_reason": None,
        "signed_at": acted if status == "signed" else None,
        "last_viewed_at": acted,
        "last_reminded_at": None,
        "has_pin": False,
        "has_sms_auth": False,
    }
    signature.update(extra)
    return signature
