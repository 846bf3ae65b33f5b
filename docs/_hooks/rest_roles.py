"""
MkDocs hook: render the Sphinx roles of the package's reST docstrings as cross-references.

The docstrings follow Airflow's reST style (``:class:`~pkg.Name```), which Markdown would show as
literal text. Before Markdown reads a docstring, each role becomes an autorefs link to the object
(``[`Name`][pkg.Name]``, resolved in the docstring's scope), and a trailing ``::`` (a reST
literal-block marker) becomes ``:``. Names of other projects (``requests.Session``) become plain
code: their docs are not part of this site, and the build fetches no inventories.

Inside docstrings the links are optional, as Sphinx roles are outside nitpicky mode: a role whose
target is not on this site (an attribute inherited from Airflow, say) shows as code instead of
failing the build. ``mkdocs build -v`` lists them as "Unresolved optional cross-reference".
Links written in the pages themselves stay strict.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from markdown import Markdown
from markdown.extensions import Extension
from markdown.preprocessors import Preprocessor
from markdown.treeprocessors import Treeprocessor
from mkdocs.plugins import event_priority

_ROLE = re.compile(r":(?:py:)?(?P<role>class|meth|func|mod|attr|data|exc|obj):`(?P<target>[^`]+)`")
_LITERAL_MARKER = re.compile(r"(?<=\S)::$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_FOREIGN = ("requests", "aiohttp", "asyncio", "airflow", "typing", "collections", "datetime", "json")
# Registered by mkdocstrings only on the Markdown instance that renders docstrings.
_DOCSTRING_MARKDOWN = "mkdocstrings_headings"


def _link(match: re.Match[str]) -> str:
    target = match.group("target").strip()
    short = target.startswith("~")
    target = target.lstrip("~").removesuffix("()")
    shown = target.rsplit(".", 1)[-1] if short else target
    if match.group("role") in ("meth", "func"):
        shown += "()"
    if target.split(".", 1)[0] in _FOREIGN:
        return f"`{shown}`"
    return f"[`{shown}`][{target}]"


class _RestRoles(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        in_fence = False
        for line in lines:
            if _FENCE.match(line):
                in_fence = not in_fence
            if not in_fence:
                line = _LITERAL_MARKER.sub(":", _ROLE.sub(_link, line))
            out.append(line)
        return out


class _OptionalInDocstrings(Treeprocessor):
    def run(self, root: ET.Element) -> None:
        if _DOCSTRING_MARKDOWN not in self.md.treeprocessors:
            return
        for element in root.iter("autoref"):
            element.set("optional", "")


class RestRolesExtension(Extension):
    """Markdown extension: roles to links before parsing, links made optional in docstrings."""

    def extendMarkdown(self, md: Markdown) -> None:
        md.preprocessors.register(_RestRoles(md), "rest_roles", 1000)
        # After "inline" (20), which creates the autoref elements.
        md.treeprocessors.register(_OptionalInDocstrings(md), "rest_roles_optional", 15)


@event_priority(100)
def on_config(config: Any) -> Any:
    # Ahead of mkdocstrings, which hands this same list to the handlers that render docstrings.
    config.markdown_extensions.append(RestRolesExtension())
    return config
