"""choice_elements.json: every choice element name of R4 (`value[x]`, `deceased[x]`, ...) ->
the sorted type suffixes its JSON names take (`Quantity`, `DateTime`, ...), over all
resources and datatypes. `fhirpm.search.fhirpath` uses it to navigate `Observation.value`
to `valueQuantity` on plain JSON without a type model. Some types have plain elements
spelled like another type's choice JSON name (ElementDefinition.contentReference); the
navigator only looks for suffixed names when the plain name is absent, and a valid
expression never asks for `content` on those types."""

from __future__ import annotations

from pathlib import Path

from scripts.gen_tables._defs import package_files, write_table


def generate(definitions: Path, out: Path) -> None:
    choices: dict[str, set[str]] = {}
    for sd in package_files(definitions, "StructureDefinition"):
        if sd.get("derivation") != "specialization":
            continue
        for element in sd["snapshot"]["element"]:
            name = element["path"].rsplit(".", 1)[-1]
            if name.endswith("[x]"):
                suffixes = {t["code"][0].upper() + t["code"][1:] for t in element.get("type", ())}
                choices.setdefault(name[:-3], set()).update(suffixes)
    write_table(out, "choice_elements.json", {n: sorted(s) for n, s in sorted(choices.items())})
