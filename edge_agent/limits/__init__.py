"""Limits and budgets per tenant and key (docs/limits.md)."""
