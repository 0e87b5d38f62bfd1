"""The HL7 v2 bridge: MLLP in and out, table-driven mappings (mappings/), nothing lost,
nothing duplicated. See docs/hl7v2.md."""
