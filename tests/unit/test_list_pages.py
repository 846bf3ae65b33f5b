"""The pages of the hook's list calls, on their own: the parameters of a page and what a page holds."""

from __future__ import annotations

from typing import Any

import pytest

from dropbox_sign_provider.exceptions import DropboxSignResponseError
from dropbox_sign_provider.hooks.dropbox_sign import MAX_PAGE_SIZE, list_params, page_items, page_params


@pytest.mark.parametrize("page_size", [1, 20, MAX_PAGE_SIZE])
def test_a_page_asks_for_its_number_and_size(page_size: int) -> None:
    assert page_params(page_size, 3) == {"page": 3, "page_size": page_size}
    assert list_params("complete:false", "all", page_size, 2) == {
        "page": 2,
        "page_size": page_size,
        "query": "complete:false",
        "account_id": "all",
    }


@pytest.mark.parametrize("page_size", [0, -1, MAX_PAGE_SIZE + 1, 2.5, "10", None, True])
def test_a_bad_page_size_is_refused_with_the_value_named(page_size: Any) -> None:
    with pytest.raises(ValueError, match=f"page_size {page_size!r} must be an integer from 1 to 100"):
        page_params(page_size, 1)


@pytest.mark.parametrize(
    ("list_info", "num_pages"),
    [
        ({"page": 1, "num_pages": 3, "num_results": 250, "page_size": 100}, 3),
        ({"num_pages": 0}, 0),
        (None, 0),
    ],
)
def test_a_page_holds_its_items_and_the_number_of_pages(list_info: Any, num_pages: int) -> None:
    answer = {
        "bulk_send_job": {"total": 2},
        "signature_requests": [{"a": 1}, {"b": 2}],
        "list_info": list_info,
    }
    assert page_items(answer, "signature_requests", "GET", "/p") == ([{"a": 1}, {"b": 2}], num_pages)


@pytest.mark.parametrize("items", [None, {}, "[]", 0], ids=["missing", "object", "string", "zero"])
def test_a_page_without_its_list_is_an_invalid_answer_not_an_empty_page(items: Any) -> None:
    answer: dict[str, Any] = {"list_info": {"num_pages": 1}}
    if items is not None:
        answer["bulk_send_jobs"] = items
    with pytest.raises(DropboxSignResponseError) as raised:
        page_items(answer, "bulk_send_jobs", "GET", "/bulk_send_job/list")
    error = raised.value
    assert (error.status_code, error.error_name, error.method, error.path) == (
        200,
        "invalid_response",
        "GET",
        "/bulk_send_job/list",
    )
    assert "'bulk_send_jobs'" in str(error)
