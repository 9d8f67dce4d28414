"""A griffe extension for the API reference: Sphinx roles in loopthread's docstrings become links.

loopthread's docstrings are Google style and name other objects with Sphinx roles
(``:meth:`run```, ``:class:`loopthread.Channel```, ``:mod:`loopthread.metrics```), which
mkdocstrings would print as they are. This rewrites each role into an *optional* autorefs
cross-reference: a link when the target is rendered somewhere on the site, the name in code
otherwise (a private helper named in a docstring is not an error). Targets are resolved the way a
reader would: relative to the class, then the module, then the package.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(meth|func|class|mod|attr|data|exc|obj):`(~?)([^`<>]+)`")


def _lookup(root: griffe.Module, path: str) -> griffe.Object | griffe.Alias | None:
    parts = path.split(".")
    if parts[0] != root.name:
        return None
    node: Any = root
    try:
        for part in parts[1:]:
            node = (node.all_members if node.is_class else node.members)[part]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    return node  # type: ignore[no-any-return]


def _resolve(obj: griffe.Object, root: griffe.Module, target: str) -> str | None:
    target = target.lstrip(".")
    scopes: list[str] = []
    scope: griffe.Object | None = obj
    while scope is not None:
        scopes.append(scope.path)
        scope = scope.parent
    for base in [*scopes, ""]:
        candidate = f"{base}.{target}" if base else target
        found = _lookup(root, candidate)
        if found is not None:
            try:
                return found.canonical_path
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return candidate
    return None


def _rewrite(obj: griffe.Object, root: griffe.Module, text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        _role, short, target = match.groups()
        title = target.rsplit(".", 1)[-1] if short else target
        code = f"<code>{html.escape(title)}</code>"
        identifier = _resolve(obj, root, target)
        if identifier is None:
            return code
        return f'<autoref identifier="{html.escape(identifier)}" optional>{code}</autoref>'

    return _ROLE.sub(replace, text)


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles of every docstring in the package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()

        def visit(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(obj, pkg, obj.docstring.value)
            for member in obj.members.values():
                if not member.is_alias:
                    visit(member)  # type: ignore[arg-type]

        visit(pkg)
