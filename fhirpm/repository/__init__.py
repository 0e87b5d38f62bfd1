"""The one data path: every write and read, from REST, bundles, HL7 v2, operations and
workflows, goes through `Repository`. It validates once, assigns ids and versions, extracts
index entries and stores them atomically; it knows nothing of HTTP."""

from fhirpm.repository.service import Repository, WriteResult

__all__ = ["Repository", "WriteResult"]
