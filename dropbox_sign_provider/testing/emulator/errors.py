"""The API's error answers: the exception the model raises and the envelope the routes turn it into."""

from __future__ import annotations

from typing import Any

#: The ``error_name`` of each status the emulator answers, as in the official examples.
ERROR_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    410: "deleted",
    429: "exceeded_rate",
}


class ApiError(Exception):
    """
    An error the API answers in its envelope.

    :param status: the HTTP status.
    :param message: the envelope's ``error_msg``.
    :param path: the envelope's ``error_path``: the parameter at fault, if any.
    :param name: the envelope's ``error_name``, when it is not the status's own (for example
        ``signature_request_cancel_failed`` for a 400).
    """

    def __init__(
        self, status: int, message: str, *, path: str | None = None, name: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.path = path
        self.name = name


def envelope(
    status: int, message: str, *, name: str | None = None, path: str | None = None
) -> dict[str, Any]:
    """The error envelope, ``{"error": {"error_msg", "error_name"[, "error_path"]}}``."""
    error: dict[str, Any] = {"error_msg": message, "error_name": name or ERROR_NAMES.get(status, "error")}
    if path is not None:
        error["error_path"] = path
    return {"error": error}
