"""FHIR R4 knowledge: lossless JSON, validation, resource types and generated tables."""
