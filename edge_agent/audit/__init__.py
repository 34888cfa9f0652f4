"""The audit trail: one hash-chained JSON record per request and per admin change."""
