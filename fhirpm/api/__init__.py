"""HTTP adapter: turns HTTP into FhirRequests and FhirResponses into HTTP. Thin on purpose."""
