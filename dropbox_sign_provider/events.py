"""
Dropbox Sign events: what a callback is, how it is verified, the assets it becomes and the board of
recent events that wakes waiting confirmations.

What is trusted, and why
------------------------
Dropbox Sign signs an event with ``event_hash = HMAC-SHA256(api key, event_time + event_type)``.
The hash covers those two fields only: it proves that *an event of this type happened on this
account at this second*, not which signature request it is about, nor its title or metadata. Two
real events of one type in the same second share a hash, and a captured event can be replayed with
another request in its payload. Hence:

- an event is recorded only when its hash verifies (the hash is the receiver's only
  authentication: Airflow does not authenticate plugin endpoints);
- an event is identified by its type, time *and* request id (:attr:`CallbackEvent.key`): two real
  events in one second are two events, and a redelivery of one is the same event;
- an event is a wake-up, never a proof: a waiting confirmation reads the request at once and only
  the API's 410 confirms it; a DAG scheduled on an event asset reads the request before doing
  anything it cannot undo;
- since ``event_time`` is covered by the hash, an event is recorded only while Dropbox Sign could
  still be delivering it (:func:`freshness_problem`): a captured event can be replayed within that
  window, never after it;
- what one verified ``(event_type, event_time)`` may record is bounded (:func:`add_to_ledger`,
  :meth:`CallbackEvent.payload_problem`): at most :data:`MAX_REQUESTS_PER_EVENT_TIME` requests and
  :data:`MAX_RECORDED_BYTES_PER_EVENT_TIME` bytes, titles and metadata no larger than Dropbox Sign
  allows. So one leaked event costs at most that much storage and one ``GET`` per request it names.

The ledger of an event time
---------------------------
Each recorded ``(account, event_type, event_time)`` has one Airflow Variable
(:func:`event_ledger_variable`) listing the requests recorded for it and the bytes they took. A
redelivery is recognised there with one lookup by Variable key, the column Airflow keeps a unique
index on; the key starts with the time zero-padded, so the ledgers that left the freshness window
are one key range, deleted through that same index (:func:`expired_ledgers_range`).

The board of recent events
--------------------------
The receiver keeps, per account, the last :data:`MAX_RECENT_EVENTS` events in one Airflow Variable
(:func:`recent_events_variable`): ``{"seq": n, "events": [[seq, key, signature_request_id], ...]}``.
Waiting triggers read that one Variable (one read per triggerer process per check, whatever the
number of waiting ids) and read at once the requests it names. The receiver writes it under a row
lock, so concurrent deliveries lose no entry; an entry a trigger never sees (the board rotated
past it, the receiver was down) costs latency only: the waiting id is still polled.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dropbox_sign_provider import DEFAULT_CONN_NAME
from dropbox_sign_provider.ids import shown, validate_signature_request_id

if TYPE_CHECKING:
    from urllib.parse import SplitResult

    from airflow.sdk import Asset

#: The body Dropbox Sign waits for; any other answer makes it retry for about three days.
CALLBACK_ACKNOWLEDGEMENT = "Hello API Event Received"
#: Largest callback body accepted; real events are a few kilobytes.
MAX_CALLBACK_BYTES = 1024 * 1024
#: Events kept on an account's board of recent events, for wake-ups and de-duplication.
MAX_RECENT_EVENTS = 1000
#: How long Dropbox Sign keeps delivering an event that was not acknowledged, in seconds. Its
#: documentation (Callbacks and Events, quoted in this project's API notes): a receiver that does not
#: answer ``Hello API Event Received`` is retried "with exponential backoff for about three days".
#: The OpenAPI description states no figure.
DELIVERY_RETRY_HORIZON_SECONDS = 3 * 24 * 3600
#: How far this machine's clock may be from Dropbox Sign's, either way, in seconds.
EVENT_CLOCK_SKEW_SECONDS = 10 * 60
#: Oldest ``event_time`` recorded: the retry horizon plus the clock skew (3 days and 10 minutes). An
#: older event verifies but is only acknowledged: a real one would have stopped being retried.
MAX_EVENT_AGE_SECONDS = DELIVERY_RETRY_HORIZON_SECONDS + EVENT_CLOCK_SKEW_SECONDS
#: Distinct requests recorded for one account's ``(event_type, event_time)``: the hash covers only
#: those two, so each further request id in a replay would be one more asset event and one more
#: ``GET``. 250 is the most requests one call makes (a bulk send job's signers), so a real second
#: of events stays whole.
MAX_REQUESTS_PER_EVENT_TIME = 250
#: Bytes of recorded ``title`` and ``metadata`` together for one account's ``(event_type,
#: event_time)``, whatever the number of requests: with :data:`MAX_REQUESTS_PER_EVENT_TIME`, what
#: one leaked event can add to the metadata database.
MAX_RECORDED_BYTES_PER_EVENT_TIME = 512 * 1024
#: Longest title recorded: Dropbox Sign's own limit on a signature request's title (``maxLength``
#: 255 in the OpenAPI description).
MAX_TITLE_CHARS = 255
#: Largest metadata recorded, as compact JSON. Dropbox Sign allows "up to 10 metadata keys (or 50
#: nested metadata keys), with key names up to 40 characters long and values up to 1000 characters
#: long" (OpenAPI description): about 52 KB at most, so 64 KiB refuses no real request's.
MAX_METADATA_BYTES = 64 * 1024
#: The URI scheme of the event assets: ``dropbox-sign://<connection id>/<event type>``.
ASSET_SCHEME = "dropbox-sign"
#: Sent by Dropbox Sign to check a callback URL; acknowledged, never recorded as an asset event.
CALLBACK_TEST = "callback_test"

#: Every ``event_type`` of ``EventCallbackRequestEvent`` in Dropbox Sign's OpenAPI description.
EVENT_TYPES = frozenset(
    {
        "account_confirmed",
        "unknown_error",
        "file_error",
        "sign_url_invalid",
        "signature_request_viewed",
        "signature_request_signed",
        "signature_request_sent",
        "signature_request_all_signed",
        "signature_request_email_bounce",
        "signature_request_remind",
        "signature_request_incomplete_qes",
        "signature_request_destroyed",
        "signature_request_canceled",
        "signature_request_downloadable",
        "signature_request_declined",
        "signature_request_reassigned",
        "signature_request_invalid",
        "signature_request_prepared",
        "signature_request_expired",
        "template_created",
        "template_error",
        CALLBACK_TEST,
        "signature_request_signer_removed",
    }
)

# An Airflow connection id, as it can appear in a URI host and a Variable key.
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")


def event_hash(api_key: str, event_time: str | int, event_type: str) -> str:
    """
    Compute the ``event_hash`` Dropbox Sign puts in every callback event.

    :param api_key: the API key of the account (the HMAC key).
    :param event_time: the event's ``event_time`` (epoch seconds, as sent: a string).
    :param event_type: the event's ``event_type``, e.g. ``"signature_request_canceled"``.
    :return: ``HMAC_SHA256(api_key, event_time + event_type)`` as lowercase hex.
    """
    message = f"{event_time}{event_type}".encode()
    return hmac.new(api_key.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class CallbackEvent:
    """
    One event Dropbox Sign posted, as parsed from the callback's ``json`` field.

    Only :attr:`event_type` and :attr:`event_time` are covered by :attr:`event_hash`; the
    signature request fields are what the payload claims.

    :ivar event_type: e.g. ``signature_request_canceled``.
    :ivar event_time: epoch seconds, as sent (a string of digits).
    :ivar event_hash: the hex HMAC the event came with.
    :ivar signature_request_id: the request the payload names, if any.
    :ivar title: the request's title, if any.
    :ivar metadata: the request's metadata (``{}`` when none).
    """

    event_type: str
    event_time: str
    event_hash: str
    signature_request_id: str | None = None
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        """Whether its type is one this release knows (and so records)."""
        return self.event_type in EVENT_TYPES

    @property
    def key(self) -> str:
        """What identifies this event among redeliveries: type, time and request id."""
        return f"{self.event_type}/{self.event_time}/{self.signature_request_id or '-'}"

    def verified_by(self, api_key: str) -> bool:
        """Whether :attr:`event_hash` is this account's, compared in constant time."""
        expected = event_hash(api_key, self.event_time, self.event_type)
        return hmac.compare_digest(expected, self.event_hash.lower())

    def recorded_bytes(self) -> int:
        """What recording this event stores of its payload: its title and metadata as JSON, in bytes."""
        try:
            return len(json.dumps([self.title, self.metadata], separators=(",", ":")).encode())
        except (RecursionError, ValueError):
            # Nested past what the encoder follows: far beyond any real metadata.
            return MAX_CALLBACK_BYTES + 1

    def payload_problem(self) -> str | None:
        """
        Why this event's payload is larger than Dropbox Sign ever sends, or ``None``.

        A verified event carrying one is a replay with a payload of someone else's making: it is
        acknowledged and not recorded.
        """
        if self.title is not None and len(self.title) > MAX_TITLE_CHARS:
            return f"its title has {len(self.title)} characters, over Dropbox Sign's {MAX_TITLE_CHARS}"
        size = self.recorded_bytes()
        if size > MAX_METADATA_BYTES:
            return f"its title and metadata take {size} bytes, over {MAX_METADATA_BYTES}"
        return None

    def asset_extra(self, dropbox_sign_conn_id: str) -> dict[str, Any]:
        """The ``extra`` of the asset event: the event and its request, never a credential or the body."""
        return {
            "dropbox_sign_conn_id": dropbox_sign_conn_id,
            "event_type": self.event_type,
            "event_time": int(self.event_time),
            "event_key": self.key,
            "signature_request_id": self.signature_request_id,
            "title": self.title,
            "metadata": self.metadata,
        }


def parse_callback(text: str | bytes) -> CallbackEvent:
    """
    Parse the ``json`` field of a callback.

    :param text: the field's value.
    :raises ValueError: naming what is missing or malformed.
    """
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the json field is not valid JSON: {exc}") from None
    except RecursionError:
        # A few kilobytes of "[" are enough; no real event nests more than a few levels.
        raise ValueError("the json field is nested too deeply to be an event") from None
    if not isinstance(body, dict) or not isinstance(body.get("event"), dict):
        raise ValueError("the json field has no event object")
    event = body["event"]
    event_type, event_time, hash_ = (event.get(k) for k in ("event_type", "event_time", "event_hash"))
    # A type Dropbox Sign added after this release is still parsed, so that it can be verified and
    # acknowledged (refusing it would make Dropbox Sign retry it for three days); only known types
    # are recorded.
    if not isinstance(event_type, str) or not re.fullmatch(r"[a-z][a-z_]{0,63}", event_type):
        raise ValueError(f"event_type {shown(event_type)} is not a Dropbox Sign event type")
    if isinstance(event_time, int) and not isinstance(event_time, bool):
        event_time = str(event_time)
    if (
        not isinstance(event_time, str)
        or not event_time.isascii()
        or not event_time.isdigit()
        or len(event_time) > 12
    ):
        raise ValueError(f"event_time {shown(event_time)} is not epoch seconds")
    if not isinstance(hash_, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", hash_):
        raise ValueError("event_hash is missing or not a hex SHA-256")
    request = body.get("signature_request")
    if request is None:
        return CallbackEvent(event_type, event_time, hash_)
    if not isinstance(request, dict):
        raise ValueError("signature_request is not an object")
    sr_id, title, metadata = (request.get(k) for k in ("signature_request_id", "title", "metadata"))
    if sr_id is not None:
        # The hook's own rule, before anything is recorded: an id the hook would refuse to read
        # could never be confirmed, and an upper-cased spelling would pass for another request.
        sr_id = validate_signature_request_id(sr_id)
    return CallbackEvent(
        event_type,
        event_time,
        hash_,
        sr_id,
        title if isinstance(title, str) else None,
        metadata if isinstance(metadata, dict) else {},
    )


def freshness_problem(event_time: str, now: float) -> str | None:
    """
    Why an event of this time is not recorded now, or ``None`` when it may be.

    :param event_time: the verified event's ``event_time`` (epoch seconds, digits).
    :param now: the current time, epoch seconds.
    :return: too old (before ``now`` minus :data:`MAX_EVENT_AGE_SECONDS`: Dropbox Sign stopped
        retrying it), or from the future (after ``now`` plus :data:`EVENT_CLOCK_SKEW_SECONDS`).
    """
    age = now - int(event_time)
    if age > MAX_EVENT_AGE_SECONDS:
        return (
            f"event_time {event_time} is {int(age)} s old, over {MAX_EVENT_AGE_SECONDS} s "
            "(Dropbox Sign's retry horizon plus clock skew)"
        )
    if -age > EVENT_CLOCK_SKEW_SECONDS:
        return (
            f"event_time {event_time} is {int(-age)} s ahead, over the "
            f"{EVENT_CLOCK_SKEW_SECONDS} s clock skew"
        )
    return None


def check_conn_id(dropbox_sign_conn_id: str) -> str:
    """
    Return the connection id, checked for use in an asset URI and a Variable key.

    :raises ValueError: naming the id.
    """
    if not isinstance(dropbox_sign_conn_id, str) or not _CONN_ID.match(dropbox_sign_conn_id):
        raise ValueError(
            f"dropbox_sign_conn_id {shown(dropbox_sign_conn_id)} must be letters, digits, '_', '.' or '-'"
        )
    return dropbox_sign_conn_id


def event_asset_uri(event_type: str, dropbox_sign_conn_id: str = DEFAULT_CONN_NAME) -> str:
    """
    The URI of the asset of one account's events of one type.

    :param event_type: e.g. ``signature_request_canceled``.
    :param dropbox_sign_conn_id: the connection of the account.
    :raises ValueError: naming an unknown event type or a bad connection id.
    """
    if event_type not in EVENT_TYPES or event_type == CALLBACK_TEST:
        raise ValueError(f"event_type {event_type!r} is not a Dropbox Sign event type with an asset")
    return f"{ASSET_SCHEME}://{check_conn_id(dropbox_sign_conn_id)}/{event_type}"


def signature_request_event_asset(event_type: str, dropbox_sign_conn_id: str = DEFAULT_CONN_NAME) -> Asset:
    """
    The asset a DAG schedules on to run for each verified event of one type::

        schedule = [signature_request_event_asset("signature_request_canceled")]

    :param event_type: e.g. ``signature_request_all_signed``.
    :param dropbox_sign_conn_id: the connection whose account sends the events.
    """
    from airflow.sdk import Asset

    uri = event_asset_uri(event_type, dropbox_sign_conn_id)
    return Asset(uri=uri, name=uri, group="dropbox_sign")


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """
    Check a ``dropbox-sign://`` asset URI (registered with Airflow in the provider info).

    :raises ValueError: naming what is wrong.
    """
    event_type = uri.path.strip("/")
    event_asset_uri(event_type, uri.netloc)
    if uri.query or uri.fragment:
        raise ValueError(f"a {ASSET_SCHEME} asset URI has no query or fragment: {uri.geturl()!r}")
    return uri


_LEDGER_PREFIX = "dropbox_sign_event_ids."
# Airflow's Variable keys are at most 250 characters (ID_LEN).
_MAX_VARIABLE_KEY = 250


def event_ledger_variable(dropbox_sign_conn_id: str, event_type: str, event_time: str | int) -> str:
    """
    The key of the Variable listing the requests recorded for one account's events of one type and
    second: ``dropbox_sign_event_ids.<event_time, 12 digits>.<connection id>.<event type>``.

    The time comes first and zero-padded, so that all keys sort by time and the expired ones, of
    every account, are one key range (:func:`expired_ledgers_range`). After the connection id it
    could not be: ``a.0...`` would sort inside the range of connection ``a``.
    """
    conn_part = check_conn_id(dropbox_sign_conn_id)
    # Room for "<12 digits>." and ".<event type of up to 64>"; a longer connection id goes by its
    # digest.
    if len(_LEDGER_PREFIX) + 13 + len(conn_part) + 1 + 64 > _MAX_VARIABLE_KEY:
        conn_part = "sha256-" + hashlib.sha256(conn_part.encode()).hexdigest()[:32]
    return f"{_LEDGER_PREFIX}{int(event_time):012d}.{conn_part}.{event_type}"


def expired_ledgers_range(now: float) -> tuple[str, str]:
    """
    The keys ``[low, high)`` of the ledgers, of every account, whose events are too old to be
    recorded now (:func:`freshness_problem`).

    :param now: the current time, epoch seconds.
    """
    oldest_kept = max(0, int(now) - MAX_EVENT_AGE_SECONDS)
    return _LEDGER_PREFIX, f"{_LEDGER_PREFIX}{oldest_kept:012d}"


class LedgerVerdict(str, enum.Enum):
    """What the ledger of an event time says about one more event of that time."""

    #: not recorded before, and within the bounds: record it
    NEW = "new"
    #: recorded before: a redelivery
    REDELIVERY = "redelivery"
    #: :data:`MAX_REQUESTS_PER_EVENT_TIME` requests recorded for this time already
    TOO_MANY_REQUESTS = "too_many_requests"
    #: :data:`MAX_RECORDED_BYTES_PER_EVENT_TIME` would be exceeded
    TOO_MANY_BYTES = "too_many_bytes"


def add_to_ledger(ledger: Any, event: CallbackEvent) -> tuple[LedgerVerdict, dict[str, Any] | None]:
    """
    Decide whether ``event`` is recorded, against what its event time recorded before.

    :param ledger: the ledger as stored (``None``, or anything unreadable, starts a new one).
    :param event: a verified event.
    :return: the verdict, and the ledger with the event added when it is :attr:`LedgerVerdict.NEW`.
    """
    if isinstance(ledger, str | bytes):
        try:
            ledger = json.loads(ledger)
        except ValueError:
            ledger = None
    ids: list[str] = []
    used = 0
    if isinstance(ledger, dict) and isinstance(ledger.get("ids"), list):
        ids = [i for i in ledger["ids"] if isinstance(i, str)]
    if isinstance(ledger, dict) and isinstance(ledger.get("bytes"), int):
        used = ledger["bytes"]
    request = event.signature_request_id or "-"
    if request in ids:
        return LedgerVerdict.REDELIVERY, None
    if len(ids) >= MAX_REQUESTS_PER_EVENT_TIME:
        return LedgerVerdict.TOO_MANY_REQUESTS, None
    size = event.recorded_bytes()
    if used + size > MAX_RECORDED_BYTES_PER_EVENT_TIME:
        return LedgerVerdict.TOO_MANY_BYTES, None
    return LedgerVerdict.NEW, {"ids": [*ids, request], "bytes": used + size}


def recent_events_variable(dropbox_sign_conn_id: str) -> str:
    """The key of the Variable holding one account's board of recent events."""
    return f"dropbox_sign_recent_events.{check_conn_id(dropbox_sign_conn_id)}"


def add_recent_event(board: Any, event: CallbackEvent) -> dict[str, Any] | None:
    """
    The board with ``event`` added, or ``None`` when it is already there (a redelivery).

    :param board: the board as stored (``None`` or anything unreadable starts a new one).
    :param event: a verified event.
    """
    seq, events = _board(board)
    if any(entry[1] == event.key for entry in events):
        return None
    seq += 1
    events = [*events, [seq, event.key, event.signature_request_id]][-MAX_RECENT_EVENTS:]
    return {"seq": seq, "events": events}


def recent_event_requests(board: Any, after_seq: int | None = None) -> tuple[int, dict[str, int]]:
    """
    The requests named on a board since a sequence number.

    :param board: the board as stored (a dict, its JSON text, or ``None``).
    :param after_seq: the last sequence number already seen; ``None`` for every entry. A board whose
        sequence went back (its Variable was deleted) is read whole.
    :return: the board's sequence number and signature request id -> the latest entry naming it.
    """
    seq, events = _board(board)
    if after_seq is not None and seq < after_seq:
        after_seq = None
    named: dict[str, int] = {}
    for entry_seq, _key, sr_id in events:
        if sr_id and (after_seq is None or entry_seq > after_seq):
            named[sr_id] = entry_seq
    return seq, named


def board_problem(board: Any) -> str | None:
    """
    Why a stored board cannot be read (``None`` when it can, or when nothing is stored yet).

    A value that is not a board (encrypted with another Fernet key, written by hand) would otherwise
    wake nothing, silently.
    """
    if board is None:
        return None
    if isinstance(board, str | bytes):
        try:
            board = json.loads(board)
        except ValueError:
            return "it is not JSON (encrypted with another fernet_key?)"
    if (
        not isinstance(board, dict)
        or not isinstance(board.get("seq"), int)
        or not isinstance(board.get("events"), list)
    ):
        return "it is not a board of recent events"
    return None


def _board(board: Any) -> tuple[int, list[list[Any]]]:
    # Whatever is stored is read defensively: the board is a hint, and a bad one means polling.
    if board_problem(board) is not None or board is None:
        return 0, []
    if isinstance(board, str | bytes):
        board = json.loads(board)
    valid = [
        e
        for e in board["events"]
        if isinstance(e, list)
        and len(e) == 3
        and isinstance(e[0], int)
        and isinstance(e[1], str)
        and (e[2] is None or isinstance(e[2], str))
    ]
    return board["seq"], valid
