"""
The Dropbox Sign page as HTML: server-rendered, every value escaped (titles and names come from
Dropbox Sign and may hold markup), with a little plain JavaScript that triggers the manual cancel
DAG through Airflow's own REST API as the signed-in user. Nothing here reads a connection's fields:
the page shows what Dropbox Sign answered and nothing of the credentials that asked.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timezone
from urllib.parse import urlencode

from dropbox_sign_provider.ui.listing import Listing, Row

#: The page's script, with no value in it: what it needs is read from the page's data attributes.
_SCRIPT = """
(function () {
  var body = document.body;
  var max = parseInt(body.dataset.maxIds, 10);
  var boxes = Array.prototype.slice.call(document.querySelectorAll("input[name=sr]"));
  var button = document.getElementById("cancel-selected");
  var count = document.getElementById("selected-count");
  var result = document.getElementById("trigger-result");
  function chosen() { return boxes.filter(function (b) { return b.checked; }); }
  function update() {
    var n = chosen().length;
    count.textContent = n + " selected (at most " + max + ")";
    button.disabled = n === 0 || n > max;
    boxes.forEach(function (b) { if (!b.checked) { b.disabled = n >= max; } });
  }
  boxes.forEach(function (b) { b.addEventListener("change", update); });
  if (button) {
    button.addEventListener("click", function () {
      var ids = chosen().map(function (b) { return b.value; });
      if (!ids.length || ids.length > max) { return; }
      var question = "Start a run of " + body.dataset.dagId + " for " + ids.length +
        " request(s)? The run previews them and, where approval is required, waits for an Approve" +
        " before anything is cancelled.";
      if (!window.confirm(question)) { return; }
      button.disabled = true;
      result.textContent = "Starting the run\u2026";
      fetch(body.dataset.base + "/api/v2/dags/" + encodeURIComponent(body.dataset.dagId) + "/dagRuns", {
        method: "POST",
        credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "application/json"},
        body: JSON.stringify({
          logical_date: null,
          conf: {signature_request_ids: ids, dropbox_sign_conn_id: body.dataset.connId}
        })
      }).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (answer) {
          result.textContent = "";
          if (!response.ok) {
            var detail = answer && answer.detail;
            result.textContent = "Airflow refused the run (HTTP " + response.status + "): " +
              (typeof detail === "string" ? detail : JSON.stringify(detail || answer));
            update();
            return;
          }
          var link = document.createElement("a");
          link.href = body.dataset.base + "/dags/" + encodeURIComponent(answer.dag_id) + "/runs/" +
            encodeURIComponent(answer.dag_run_id);
          link.target = "_top";
          link.textContent = "Run " + answer.dag_run_id;
          result.append("Started: ", link, " \u2014 preview, approval and confirmation happen there.");
        });
      }).catch(function (error) {
        result.textContent = "The run could not be started: " + error;
        update();
      });
    });
    update();
  }
})();
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1rem; color: #1a202c; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { border-bottom: 1px solid #e2e8f0; padding: .35rem .5rem; text-align: left; vertical-align: top; }
.signed { color: #276749; } .waiting { color: #744210; }
.error { background: #fff5f5; border: 1px solid #feb2b2; padding: .5rem 1rem; }
.note { color: #4a5568; } form.filters label { margin-right: 1rem; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _date(when: int | None) -> str:
    if when is None:
        return "never"
    return datetime.fromtimestamp(when, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def render_page(
    *,
    conn_ids: Sequence[str],
    conn_id: str,
    max_age_days: str,
    query: str,
    listing: Listing | None,
    error: str | None,
    base_path: str,
    dag_id: str,
    max_ids: int,
    nonce: str,
) -> str:
    """
    The whole page.

    :param conn_ids: the connections offered.
    :param conn_id: the one chosen.
    :param max_age_days: the age asked for, as typed.
    :param query: the search asked for, as typed.
    :param listing: what was listed; ``None`` when nothing could be.
    :param error: what went wrong, in words; ``None`` when nothing did.
    :param base_path: the path Airflow is served under (``[api] base_url``), without a trailing ``/``.
    :param dag_id: the manual cancel DAG the page triggers.
    :param max_ids: the most ids one of its runs takes.
    :param nonce: the Content-Security-Policy nonce of the page's script and style.
    """
    options = "".join(
        f'<option value="{_e(c)}"{" selected" if c == conn_id else ""}>{_e(c)}</option>' for c in conn_ids
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Dropbox Sign</title>',
        f'<style nonce="{_e(nonce)}">{_STYLE}</style></head>',
        f'<body data-base="{_e(base_path)}" data-dag-id="{_e(dag_id)}" data-max-ids="{max_ids}" '
        f'data-conn-id="{_e(conn_id)}">',
        "<h1>Dropbox Sign: open requests this account sent</h1>",
        '<form class="filters" method="get">',
        f'<label>Connection <select name="conn_id">{options}</select></label>',
        '<label>Created more than <input name="max_age_days" size="4" inputmode="numeric" '
        f'value="{_e(max_age_days)}"> days ago</label>',
        f'<label>Search <input name="query" size="40" value="{_e(query)}" '
        'placeholder="title:NDA, metadata:onboarding"></label>',
        '<button type="submit">List</button></form>',
    ]
    if error is not None:
        parts.append(f'<p class="error" role="alert">{_e(error)}</p>')
    if listing is not None:
        parts.extend(_listing(listing, conn_id, max_age_days, query, max_ids))
    parts.append(f'<script nonce="{_e(nonce)}">{_SCRIPT}</script></body></html>')
    return "\n".join(parts)


def _listing(listing: Listing, conn_id: str, max_age_days: str, query: str, max_ids: int) -> list[str]:
    parts = [f'<p class="note">Search sent to Dropbox Sign: <code>{_e(listing.search)}</code></p>']
    if listing.rows:
        parts.append(
            "<table><thead><tr><th></th><th>Title</th><th>Signers</th><th>Created</th><th>Expires</th>"
            "<th>Age (days)</th><th></th></tr></thead><tbody>"
        )
        parts.extend(_row(row) for row in listing.rows)
        parts.append("</tbody></table>")
        parts.append(
            f'<p><button type="button" id="cancel-selected" disabled>Cancel selected\u2026</button> '
            f'<span id="selected-count">0 selected (at most {max_ids})</span></p>'
            '<p id="trigger-result" role="status"></p>'
        )
    else:
        parts.append("<p>No open request this account sent is on this page.</p>")
    if listing.left_alone:
        left = ", ".join(f"{n} {why}" for why, n in sorted(listing.left_alone.items()))
        parts.append(f'<p class="note">Left out on this page (not cancellable from here): {_e(left)}</p>')
    parts.append(_pager(listing, conn_id, max_age_days, query))
    return parts


def _row(row: Row) -> str:
    s = row.summary
    sr_id = s["signature_request_id"]
    signers = "<br>".join(
        f'<span class="{"signed" if signer["status_code"] == "signed" else "waiting"}">'
        f"{_e(signer['name'])} &lt;{_e(signer['email_address'])}&gt;: {_e(signer['status_code'])}</span>"
        for signer in s["signers"]
    )
    link = (
        f'<a href="{_e(row.details_url)}" target="_blank" rel="noopener noreferrer">Open in Dropbox Sign</a>'
        if row.details_url
        else ""
    )
    return (
        f'<tr data-id="{_e(sr_id)}"><td><input type="checkbox" name="sr" value="{_e(sr_id)}" '
        f'aria-label="select {_e(s["title"])}"></td><td>{_e(s["title"])}</td><td>{signers}</td>'
        f"<td>{_e(_date(s['created_at']))}</td><td>{_e(_date(s['expires_at']))}</td>"
        f"<td>{_e(row.age_days)}</td><td>{link}</td></tr>"
    )


def _pager(listing: Listing, conn_id: str, max_age_days: str, query: str) -> str:
    def href(page: int) -> str:
        params = {"conn_id": conn_id, "max_age_days": max_age_days, "query": query, "page": page}
        return "?" + urlencode(params)

    parts = [f"Page {listing.page} of {max(listing.num_pages, 1)}"]
    if listing.page > 1:
        parts.insert(0, f'<a href="{_e(href(listing.page - 1))}">Previous</a>')
    if listing.page < listing.num_pages:
        parts.append(f'<a href="{_e(href(listing.page + 1))}">Next</a>')
    return f'<nav class="pager">{" ".join(parts)}</nav>'
