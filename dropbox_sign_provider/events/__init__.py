"""
Dropbox Sign events: what a callback is and how it is verified (:mod:`.callback`), the assets it
becomes (:mod:`.assets`), the ledger that recognises a redelivery (:mod:`.ledger`), the board of
recent events (:mod:`.board`) that wakes waiting confirmations (:mod:`.wakeups`), the accounts whose
events are accepted (:mod:`.accounts`) and what a verified event leaves in Airflow
(:mod:`.recording`). The receiver itself is mounted on Airflow's API server by the provider's
plugin (:mod:`dropbox_sign_provider.plugins.callbacks`).

What is trusted, and why
------------------------
Dropbox Sign signs an event with ``event_hash = HMAC-SHA256(api key, event_time + event_type)``.
The hash covers those two fields only: it proves that *an event of this type happened on this
account at this second*, not which signature request it is about, nor its title or metadata. Two
real events of one type in the same second share a hash, and a captured event can be replayed with
another request in its payload. Hence:

- an event is recorded only when its hash verifies (the hash is the receiver's only
  authentication: Airflow does not authenticate plugin endpoints);
- an event is identified by its type, time *and* request id, and by its
  ``event_metadata.related_signature_id`` when it has one (:attr:`CallbackEvent.key`): two real
  events in one second are two events (two signers of one request signing in the same second too),
  and a redelivery of one is the same event;
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
"""

from __future__ import annotations

from dropbox_sign_provider.events.assets import event_asset_uri, signature_request_event_asset

__all__ = ["event_asset_uri", "signature_request_event_asset"]
