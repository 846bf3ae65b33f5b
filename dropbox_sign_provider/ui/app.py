"""
The app that serves the Dropbox Sign page: ``GET <api-server>/dropbox-sign-ui/``.

Airflow does not protect a plugin's endpoints by itself: each route here depends on Airflow's own
security dependencies, which accept the ``Authorization: Bearer`` header or the signed-in browser's
session cookie and ask the configured auth manager. Listing a connection's requests needs the right
to trigger the manual cancel DAG (``POST`` on its runs): anonymous callers get 401, others 403.

The page changes nothing itself: its "Cancel selected…" button calls Airflow's REST API
(``POST /api/v2/dags/dropbox_sign_cancel_request/dagRuns``) from the browser as the signed-in user,
and Airflow's REST API decides whether they may. This app has no state-changing endpoint, so no
``Origin`` to check.

==========================================  =======  ==================================================
Request                                     Status   Page
==========================================  =======  ==================================================
no credentials, or an expired token         401      none (Airflow's ``{"detail": ...}``)
a user who may not trigger the manual DAG   403      none (Airflow's ``{"detail": ...}``)
a connection not in ``ui_conn_ids``         404      the form and why
an age that is not a positive number        400      the form and why
a search Dropbox Sign refuses               400      the form and Dropbox Sign's message
the rate budget spent                       429      the form and when to try again (``Retry-After``)
Dropbox Sign unreachable or failing         502      the form and what went wrong
the connection missing or unusable          503      the form and what to do
otherwise                                   200      the form, one page of requests, the pager
==========================================  =======  ==================================================
"""

from __future__ import annotations

import logging
import math
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from dropbox_sign_provider import DEFAULT_CONN_NAME
from dropbox_sign_provider.cancellation.ids import CANCEL_REQUEST_DAG_ID, MAX_IDS_PER_RUN
from dropbox_sign_provider.ui.html import render_page
from dropbox_sign_provider.ui.listing import Listing, ListingRefused, list_page, ui_conn_ids

log = logging.getLogger(__name__)

#: The most pages the page's pager goes to: Dropbox Sign's lists end long before.
MAX_PAGE = 10_000

app = FastAPI(
    title="Dropbox Sign page",
    description="Lists the incomplete requests a Dropbox Sign account sent; triggers the manual cancel DAG.",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)

#: The right the page needs: to trigger the manual cancel DAG.
may_trigger_cancel = Depends(
    requires_access_dag(method="POST", access_entity=DagAccessEntity.RUN, param_dag_id=CANCEL_REQUEST_DAG_ID)
)


@app.get("/", response_class=HTMLResponse, dependencies=[may_trigger_cancel])
async def requests_page(
    conn_id: Annotated[str | None, Query(max_length=250)] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    max_age_days: Annotated[str, Query(max_length=32)] = "",
    query: Annotated[str, Query(max_length=2000)] = "",
) -> HTMLResponse:
    """
    The page: the form, and one page of the chosen connection's open requests it sent.

    :param conn_id: the connection to list; the first of ``[dropbox_sign] ui_conn_ids`` by default.
    :param page: the API's list page, from 1.
    :param max_age_days: only requests created more than this many days ago.
    :param query: Dropbox Sign search syntax.
    """
    offered = ui_conn_ids()
    chosen = conn_id if conn_id is not None else (offered[0] if offered else DEFAULT_CONN_NAME)
    listing: Listing | None = None
    error: str | None = None
    status, headers = 200, {}
    try:
        listing = await run_in_threadpool(
            list_page, chosen, page=page, max_age_days=max_age_days, query=query
        )
    except ListingRefused as refused:
        log.info("Dropbox Sign page for %r: %d %s", chosen, refused.status_code, refused.message)
        error, status = refused.message, refused.status_code
        if refused.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(refused.retry_after)))
    nonce = secrets.token_urlsafe(16)
    headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
    )
    headers["Cache-Control"] = "no-store"
    body = render_page(
        conn_ids=offered,
        conn_id=chosen,
        max_age_days=max_age_days,
        query=query,
        listing=listing,
        error=error,
        base_path=_airflow_base_path(),
        dag_id=CANCEL_REQUEST_DAG_ID,
        max_ids=MAX_IDS_PER_RUN,
        nonce=nonce,
    )
    return HTMLResponse(body, status_code=status, headers=headers)


def _airflow_base_path() -> str:
    # Airflow's REST API and UI are served under [api] base_url's path ("" at the root).
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
