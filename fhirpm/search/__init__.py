"""FHIR search as one pipeline: registry -> write-time extraction into typed index values ->
parsed SearchQuery -> compiled by each store adapter. Nothing here knows SQL or MongoDB."""
