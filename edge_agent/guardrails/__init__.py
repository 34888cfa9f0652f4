"""Guardrails: personal data kept from providers, denied prompts (docs/compliance.md)."""
