"""Headers that belong to one side only (no imports: config and every provider read it)."""

# What a client may send that must never reach a provider under the gateway's key:
# credentials, and headers that pick the account the key is billed to.
CLIENT_ONLY_HEADERS = (
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "openai-organization",
    "openai-project",
    "anthropic-version",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "cookie",
    # The caller's mesh identity (Istio sidecar): names internal workloads.
    "x-forwarded-client-cert",
)
# What a provider answers about the gateway's account that clients have no business seeing.
PROVIDER_ONLY_HEADERS = (
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
    "set-cookie",
)
