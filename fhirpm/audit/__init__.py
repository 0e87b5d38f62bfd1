"""The audit trail: AuditEvents in the IHE BALP shapes (`events`), the patients a resource
belongs to (`patients`) and the tamper-evident hash chain (`chain`). Pure so far: storing
events in the same unit of work as the writes they record comes with the write-path
integration (docs/operations.md, "Audit trail")."""
