"""The parsed, storage-neutral search: what `search.parse` produces and adapters compile.

This first cut carries types, paging and sorting; the search issue grows `where` into the
full AST (parameters, modifiers, prefixes, chains, _has, includes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhirpm.storage.port import ResourceVersion


@dataclass(frozen=True, slots=True)
class SortKey:
    param: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class SearchQuery:
    types: tuple[str, ...]  # one type for type-level search; several (or none: all) for system
    where: tuple[Any, ...] = ()  # AND of clauses (defined by search.parse)
    sort: tuple[SortKey, ...] = ()
    count: int = 20
    offset: int = 0
    total: str = "none"  # none | estimate | accurate
    include: tuple[Any, ...] = ()
    revinclude: tuple[Any, ...] = ()


@dataclass(slots=True)
class SearchResult:
    matches: list[ResourceVersion]
    included: list[ResourceVersion] = field(default_factory=list)
    total: int | None = None
    has_more: bool = False
