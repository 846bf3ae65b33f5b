"""What a Dropbox Sign callback event is, how it is verified, and what it may record."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

from dropbox_sign_provider.cancellation.ids import shown, validate_signature_request_id

#: The body Dropbox Sign waits for; any other answer makes it retry for about three days.
CALLBACK_ACKNOWLEDGEMENT = "Hello API Event Received"
#: Largest callback body accepted; real events are a few kilobytes.
MAX_CALLBACK_BYTES = 1024 * 1024
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

# A signature id as the event's key may hold it: hex in the official examples (32 characters);
# Undocumented (its alphabet), so letters, digits, '_' and '-'.
_SIGNATURE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
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
    :ivar related_signature_id: ``event_metadata.related_signature_id``, the one signature (signer)
        the event is about, if any: ``signature_request_signed`` comes once per signer with it.
    """

    event_type: str
    event_time: str
    event_hash: str
    signature_request_id: str | None = None
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    related_signature_id: str | None = None

    @property
    def known(self) -> bool:
        """Whether its type is one this release knows (and so records)."""
        return self.event_type in EVENT_TYPES

    @property
    def key(self) -> str:
        """
        What identifies this event among redeliveries: type, time and request id, and the related
        signature's id when the event names one (two signers of one request signing in the same
        second are two ``signature_request_signed`` events).
        """
        key = f"{self.event_type}/{self.event_time}/{self.signature_request_id or '-'}"
        return key if self.related_signature_id is None else f"{key}/{self.related_signature_id}"

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
            "related_signature_id": self.related_signature_id,
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
    related = _related_signature_id(event.get("event_metadata"))
    request = body.get("signature_request")
    if request is None:
        return CallbackEvent(event_type, event_time, hash_, related_signature_id=related)
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
        related,
    )


def _related_signature_id(event_metadata: Any) -> str | None:
    """``event_metadata.related_signature_id`` when it reads as an id, else ``None``."""
    related = event_metadata.get("related_signature_id") if isinstance(event_metadata, dict) else None
    # Part of the event's key, so bounded; but never a reason to refuse a verified event (Dropbox
    # Sign would retry it for three days): one it cannot be is dropped, and the event keyed as one
    # without a signature.
    if isinstance(related, str) and _SIGNATURE_ID.fullmatch(related):
        return related
    return None


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
