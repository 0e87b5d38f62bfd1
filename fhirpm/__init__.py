"""fhirpm: an open-source FHIR R4 server that runs a medical practice."""

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"
