"""
Test helpers for code that talks to Dropbox Sign.

:class:`DropboxSignEmulator` is a local, faithful stand-in for the Dropbox Sign API (see
:mod:`dropbox_sign_provider.testing.emulator` for how to use it in your own DAG tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dropbox_sign_provider.testing.emulator import (
        DropboxSignEmulator,
        LoggedRequest,
        OddAnswer,
        event_hash,
    )

__all__ = ["DropboxSignEmulator", "LoggedRequest", "OddAnswer", "event_hash"]


def __getattr__(name: str) -> Any:
    # Imported lazily so ``python -m dropbox_sign_provider.testing.emulator`` does not find the
    # module already imported by its package (runpy warns and runs a second copy otherwise).
    if name in __all__:
        from dropbox_sign_provider.testing import emulator

        return getattr(emulator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
