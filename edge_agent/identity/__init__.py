"""Who is calling: API keys, JWT/OIDC and mesh identity, tenants (docs/security.md)."""
