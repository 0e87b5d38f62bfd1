"""The operation registry: what each operation declares about itself.

An operation is registered once, as an `OperationSpec`: its name, the canonical URL of its
OperationDefinition, the levels it runs at (system, type, instance), the types it applies
to and whether it changes data. The spec is itself the handler the router calls (it sits in
`Interactions.operations` by name), so the level and method checks happen in one place and
the CapabilityStatement lists exactly what is registered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fhirpm.errors import Category, FhirError
from fhirpm.repository.interactions import FhirRequest, FhirResponse, Interactions

OperationHandler = Callable[[Interactions, FhirRequest, str | None, str | None],
                            Awaitable[FhirResponse]]


@dataclass(frozen=True)
class OperationSpec:
    name: str  # without the leading $
    definition: str  # canonical URL of the OperationDefinition
    handler: OperationHandler
    system: bool = False
    type: bool = False
    instance: bool = False
    types: tuple[str, ...] = ()  # the types it applies to; empty: every type
    affects_state: bool = False  # GET is allowed only for operations that change nothing
    documentation: str = ""

    def level(self, type: str | None, id: str | None) -> str:
        return "instance" if id is not None else "type" if type is not None else "system"

    async def __call__(self, ix: Interactions, req: FhirRequest, type: str | None,
                       id: str | None) -> FhirResponse:
        level = self.level(type, id)
        if not getattr(self, level):
            raise FhirError(Category.NOT_SUPPORTED,
                            f"${self.name} is not available at {level} level "
                            f"(available: {', '.join(self.levels())})")
        if type is not None and self.types and type not in self.types:
            raise FhirError(Category.NOT_SUPPORTED,
                            f"${self.name} does not apply to {type}")
        if req.method != "POST" and self.affects_state:
            raise FhirError(Category.METHOD_NOT_ALLOWED,
                            f"${self.name} changes data, so it must be invoked with POST",
                            headers={"Allow": "POST"})
        return await self.handler(ix, req, type, id)

    def levels(self) -> list[str]:
        return [name for name in ("system", "type", "instance") if getattr(self, name)]


def register(interactions: Interactions, spec: OperationSpec) -> None:
    interactions.operations[spec.name] = spec


def registered(interactions: Interactions) -> list[OperationSpec]:
    """Every registered operation that declared itself (sorted by name)."""
    specs = [op for op in interactions.operations.values() if isinstance(op, OperationSpec)]
    return sorted(specs, key=lambda s: s.name)
