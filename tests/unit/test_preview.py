"""The approval form's text: what a person reads before approving a cancellation."""

from __future__ import annotations

from typing import Any

from dropbox_sign_provider.cancellation.preview import preview_markdown, request_preview, would_cancel

NDA = "d10338cad145e1cb68afc828"
OFFER = "fa5c8a0b0f492d768749333ad6fcc214c111e967"
GONE = "0f" * 20


def previews() -> list[Any]:
    half_signed = {
        "title": "NDA *Acme* [v2](http://evil.example)",
        "created_at": 1_764_493_920,  # 2025-11-30 09:12 UTC
        "signatures": [
            {
                "signer_name": "Ann Lee",
                "signer_email_address": "ann@example.com",
                "status_code": "signed",
                "signed_at": 1_764_497_520,
            },
            {
                "signer_name": "Bob",
                "signer_email_address": "bob@example.com",
                "status_code": "awaiting_signature",
            },
        ],
    }
    return [
        request_preview(NDA, "would_cancel", half_signed),
        request_preview(
            OFFER, "completed", {"title": "Offer", "created_at": 1_764_493_920, "signatures": []}
        ),
        request_preview(GONE, "not_found", None),
    ]


def test_the_form_says_what_approving_cancels_and_who_signed() -> None:
    text = preview_markdown(previews())

    assert text.splitlines()[0] == (
        "**Approve cancels 1 signature request: this cannot be undone.** "
        "The other 2 listed here are not touched."
    )
    assert (
        "1. **NDA \\*Acme\\* \\[v2\\]\\(http://evil\\.example\\)**: **will be cancelled** if you approve"
        in text
    )
    assert f"    - id: `{NDA}`" in text
    assert "    - sent: 2025-11-30 09:12 UTC" in text
    assert "    - signers (1 of 2 signed):" in text
    assert "        - Ann Lee (ann@example\\.com): **signed** 2025-11-30 10:12 UTC" in text
    assert "        - Bob (bob@example\\.com): not signed (awaiting signature)" in text
    assert "2. **Offer**: signed by everyone: will not be cancelled" in text
    assert "3. **(title unknown)**: not found for this account: will not be cancelled" in text


def test_would_cancel_keeps_the_preview_order() -> None:
    listed = previews()
    listed.append(request_preview(OFFER + "00", "would_cancel", {}))

    assert would_cancel(listed) == [NDA, OFFER + "00"]
    assert would_cancel(None) == []
    assert preview_markdown([]).startswith("**Approve cancels 0 signature requests")
