"""
Test helpers for code that talks to Dropbox Sign.

:class:`DropboxSignEmulator` is a local, faithful stand-in for the Dropbox Sign API (see
:mod:`dropbox_sign_provider.testing.emulator` for how to use it in your own DAG tests).
"""

from __future__ import annotations

from dropbox_sign_provider.testing.emulator import (
    CallbackAttempt,
    DropboxSignEmulator,
    LoggedRequest,
    OddAnswer,
    event_hash,
)

__all__ = ["CallbackAttempt", "DropboxSignEmulator", "LoggedRequest", "OddAnswer", "event_hash"]
