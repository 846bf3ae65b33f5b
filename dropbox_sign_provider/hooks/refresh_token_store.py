"""
Where a connection's newest refresh token is kept when Dropbox Sign rotates it: the Airflow Variable
:func:`~dropbox_sign_provider.hooks.oauth.refresh_token_variable`, written only by the hooks and read
by every process before it refreshes (workers, triggerers, the API server), so that the next run
and the other processes refresh with the newest one.

Tasks and triggers reach Variables through the Task SDK; a process that is neither (the API
server's Test button, a script) through the metadata database. A store that cannot be read or
written is logged (never its value) and the process carries on with what it holds itself.
"""

from __future__ import annotations

from dropbox_sign_provider.cancellation.outcomes import Logger
from dropbox_sign_provider.hooks.oauth import refresh_token_variable

_DESCRIPTION = (
    "The newest OAuth refresh token of the Dropbox Sign connection {conn_id}, written by the "
    "provider's hooks when Dropbox Sign rotates it. Do not edit: whoever edits it decides which "
    "refresh token the connection uses."
)


def _in_task_or_trigger() -> bool:
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:  # pragma: no cover - the Task SDK ships with every supported Airflow
        return False
    return getattr(task_runner, "SUPERVISOR_COMMS", None) is not None


def read_refresh_token(conn_id: str, log: Logger) -> str | None:
    """The refresh token the connection's Variable holds, or ``None`` (none, or unreadable)."""
    key = refresh_token_variable(conn_id)
    try:
        if _in_task_or_trigger():
            from airflow.sdk import Variable

            value = Variable.get(key, default=None)
        else:
            from airflow.models.variable import Variable as StoredVariable

            value = StoredVariable.get(key, default_var=None)
    except Exception as exc:  # a secrets backend or database that refuses: refresh with what we hold
        log.warning("Dropbox Sign: the Variable %s could not be read (%s)", key, type(exc).__name__)
        return None
    if not isinstance(value, str) or not value.strip():
        return None
    from airflow.sdk.log import mask_secret

    # The Task SDK masks a Variable whose name says "token"; the metadata database's reader may not.
    mask_secret(value.strip())
    return value.strip()


def write_refresh_token(conn_id: str, refresh_token: str, log: Logger) -> bool:
    """Keep a rotated refresh token in the connection's Variable; whether it was written."""
    key = refresh_token_variable(conn_id)
    description = _DESCRIPTION.format(conn_id=conn_id)
    try:
        if _in_task_or_trigger():
            from airflow.sdk import Variable

            Variable.set(key, refresh_token, description=description)
        else:
            from airflow.models.variable import Variable as StoredVariable

            StoredVariable.set(key, refresh_token, description=description)
    except Exception as exc:
        log.warning(
            "Dropbox Sign: the rotated refresh token of connection %r could not be kept in the "
            "Variable %s (%s); other processes and later runs may be refused until this one "
            "refreshes again",
            conn_id,
            key,
            type(exc).__name__,
        )
        return False
    log.info("Dropbox Sign: connection %r rotated its refresh token; the newest is kept in %s", conn_id, key)
    return True
