"""Generators of the compact tables the product carries at run time (fhirpm/fhir/tables/).

Each module here defines `generate(definitions: Path, out: Path) -> None`, reading the
official FHIR R4 4.0.1 definitions (HL7, CC0) and writing one table.
"""
