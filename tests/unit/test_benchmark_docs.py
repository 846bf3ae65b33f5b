"""The performance page shows what the committed growth JSON holds, and its images are drawn from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.plots import IMAGES, draw
from benchmarks.run import format_growth
from tests.helpers import REPO

GROWTH_JSON = REPO / "docs" / "bench-growth.json"
PAGE = REPO / "docs" / "performance.md"


@pytest.fixture(scope="module")
def growth() -> dict[str, object]:
    loaded: dict[str, object] = json.loads(GROWTH_JSON.read_text())
    return loaded


def test_the_page_shows_the_growth_table_of_the_json(growth: dict[str, object]) -> None:
    assert format_growth(growth, markdown=True) in PAGE.read_text()


def test_the_page_uses_every_image(growth: dict[str, object]) -> None:
    page = PAGE.read_text()
    for name in IMAGES:
        assert f"images/{name}" in page
        assert (REPO / "docs" / "images" / name).stat().st_size > 10_000


def test_the_images_are_drawn_from_the_json(growth: dict[str, object], tmp_path: Path) -> None:
    # matplotlib is a development dependency: the compatibility runs install the test group only.
    pytest.importorskip("matplotlib")
    drawn = draw(growth, tmp_path)
    assert [path.name for path in drawn] == list(IMAGES)
    for path in drawn:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000
