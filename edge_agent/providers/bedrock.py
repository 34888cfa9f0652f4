"""Amazon Bedrock's Converse API (bedrock-runtime), reached through the OpenAI chat pivot.

Requests go to `{base}/model/{modelId}/converse` (JSON answer) or `/converse-stream`
(an `application/vnd.amazon.eventstream` answer of binary frames). Credentials are either a
Bedrock API key (`api_key_env`, sent as `Authorization: Bearer`) or IAM credentials
(`aws_access_key_id_env` / `aws_secret_access_key_env` / `aws_session_token_env`) that sign
every request with SigV4 (service `bedrock`). The region is `region`, or the one in a
`bedrock-runtime.<region>.amazonaws.com` host.

What Converse cannot express is refused with a 400 (`untranslatable`), as in
translate/anthropic.py. One deliberate choice: `tool_choice: "none"` has no Converse counterpart,
so the tools are left out of the request (the model then cannot call one, which is what
"none" asks); when the conversation already holds tool calls or results, Bedrock demands
`toolConfig`, and the request is refused instead.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pydantic import Field

from edge_agent.api.openai import Endpoint
from edge_agent.providers.base import Schema
from edge_agent.providers.kind import EnvVarName, ProviderType, read_secret
from edge_agent.translate.bedrock import CODEC

if TYPE_CHECKING:
    from edge_agent.config import Provider

#: SigV4 signing name of bedrock-runtime (its endpoint prefix differs: bedrock-runtime).
SERVICE = "bedrock"
SIGV4_ALGORITHM = "AWS4-HMAC-SHA256"
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
# bedrock-runtime[-fips].<region>.amazonaws.com[.cn], also behind a VPC endpoint.
_HOST_REGION = re.compile(
    r"(?:^|\.)bedrock-runtime(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-\d+)\."
    r"(?:vpce\.)?amazonaws\.com(?:\.cn)?$"
)


def region_of(provider: Provider) -> str | None:
    """The provider's AWS region: configured, or read from a bedrock-runtime host."""
    if provider.region:
        return provider.region
    match = _HOST_REGION.search(provider.host.lower())
    return match.group(1) if match else None


def _env(environ: Mapping[str, str], var: str | None) -> str | None:
    if var is None:
        return None
    return (environ.get(var) or "").strip() or None  # mounted secrets often end in "\n"


class BedrockAdapter:
    schema: Schema = "bedrock"
    endpoints: frozenset[Endpoint] = frozenset()  # every request is translated
    codec = CODEC

    def __init__(self, provider: Provider, environ: Mapping[str, str] | None = None) -> None:
        env = environ or {}
        # base_url is the bedrock-runtime endpoint, https://bedrock-runtime.<region>.amazonaws.com
        self._base = provider.base_path
        self._scheme = urlsplit(provider.base_url).scheme
        # The signature covers Host: the value Envoy sends (auto_host_rewrite → authority).
        self._authority = provider.authority
        self.region = region_of(provider)
        self.credentials: Credentials | None = None
        #: why SigV4 credentials are configured but unusable (None: fine or not configured)
        self.problem: str | None = None
        if provider.aws_access_key_id_env is not None:
            key_id = _env(env, provider.aws_access_key_id_env)
            secret = _env(env, provider.aws_secret_access_key_env)
            token = _env(env, provider.aws_session_token_env)
            missing = [
                var
                for var, value in (
                    (provider.aws_access_key_id_env, key_id),
                    (provider.aws_secret_access_key_env, secret),
                    (provider.aws_session_token_env, token),
                )
                if var is not None and value is None
            ]
            if missing:
                self.problem = f"its AWS variable(s) {', '.join(missing)} are not set"
            elif self.region is None:
                raise ValueError(
                    f"providers.{provider.name}: SigV4 needs the AWS region: set 'region', or "
                    "use a base_url host of the form bedrock-runtime.<region>.amazonaws.com "
                    f"(got {provider.host!r})"
                )
            else:
                self.credentials = Credentials(key_id, secret, token)

    def upstream_path(
        self, endpoint: Endpoint, model: str, query: str = "", stream: bool = False
    ) -> str:
        # The client's query string belongs to the OpenAI API; Converse takes none (and a
        # query would have to be signed too), so it is not forwarded.
        operation = "converse-stream" if stream else "converse"
        return f"{self._base}/model/{quote(model, safe='')}/{operation}"

    def auth_headers(
        self, api_key: str | None, *, path: str = "", body: bytes = b""
    ) -> list[tuple[str, str]]:
        if api_key:
            return [("authorization", f"Bearer {api_key}")]
        if self.credentials is None or self.region is None:
            return []
        return self.sign(path, body)

    def sign(self, path: str, body: bytes) -> list[tuple[str, str]]:
        """SigV4 headers for `POST path` with `body`, as Envoy will send it upstream.

        Only `host` and the `x-amz-*` headers are signed (all SigV4 requires): a header
        that Envoy or the client may still change would break the signature.
        """
        if self.credentials is None or self.region is None:
            raise RuntimeError("no SigV4 credentials or region for this provider")
        request = AWSRequest(
            method="POST",
            url=f"{self._scheme}://{self._authority}{path}",
            data=body,
            headers={"host": self._authority},
        )
        SigV4Auth(self.credentials, SERVICE, self.region).add_auth(request)
        headers = [
            ("authorization", request.headers["Authorization"]),
            ("x-amz-date", request.headers["X-Amz-Date"]),
        ]
        token = request.headers.get("X-Amz-Security-Token")
        if token:
            headers.append(("x-amz-security-token", token))
        return headers

    @staticmethod
    def verify_sigv4(
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        service: str = SERVICE,
        session_token: str | None = None,
        now: dt.datetime | None = None,
        max_skew: dt.timedelta = dt.timedelta(minutes=5),
    ) -> str | None:
        """Why a received request's SigV4 signature is invalid, or None when it is valid.

        `path` is the raw request target (percent-encoding as sent, query included) and
        `headers` the received headers; the signature is recomputed with botocore over
        exactly the headers the request says it signed.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        auth = lower.get("authorization", "")
        scheme, _, rest = auth.partition(" ")
        if scheme != SIGV4_ALGORITHM:
            return "the Authorization header is not AWS4-HMAC-SHA256"
        fields = {}
        for item in rest.split(","):
            key, _, value = item.strip().partition("=")
            fields[key] = value
        credential = fields.get("Credential", "").split("/")
        signed = [h for h in fields.get("SignedHeaders", "").split(";") if h]
        given = fields.get("Signature", "")
        if len(credential) != 5 or credential[4] != "aws4_request" or not signed or not given:
            return "the Authorization header is malformed"
        key_id, day, scope_region, scope_service, _ = credential
        if key_id != access_key_id:
            return "unknown access key"
        if scope_region != region:
            return f"credential scoped to region {scope_region!r}, expected {region!r}"
        if scope_service != service:
            return f"credential scoped to service {scope_service!r}, expected {service!r}"
        if "host" not in signed:
            return "the host header is not signed"
        amz_date = lower.get("x-amz-date", "")
        try:
            when = dt.datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=dt.UTC)
        except ValueError:
            return "missing or malformed x-amz-date"
        if "x-amz-date" not in signed:
            return "x-amz-date is not signed"
        if day != amz_date[:8]:
            return "the credential date differs from x-amz-date"
        current = now or dt.datetime.now(dt.UTC)
        if abs(current - when) > max_skew:
            return "the signature has expired (x-amz-date too far from now)"
        if session_token is not None:
            if lower.get("x-amz-security-token") != session_token:
                return "missing or wrong x-amz-security-token"
            if "x-amz-security-token" not in signed:
                return "x-amz-security-token is not signed"
        absent = [h for h in signed if h not in lower]
        if absent:
            return f"signed headers not in the request: {', '.join(absent)}"
        request = AWSRequest(
            method=method,
            url=f"https://{lower['host']}{path}",
            data=body,
            headers={h: lower[h] for h in signed},
        )
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(
            Credentials(access_key_id, secret_access_key, session_token), service, region
        )
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if not hmac.compare_digest(expected, given):
            return "the signature does not match"
        return None


def _check(provider: Provider) -> None:
    if (provider.aws_access_key_id_env is None) != (provider.aws_secret_access_key_env is None):
        raise ValueError(
            "aws_access_key_id_env and aws_secret_access_key_env go together: set both"
        )
    sigv4 = provider.aws_access_key_id_env is not None
    if sigv4 == (provider.api_key_env is not None):
        raise ValueError(
            "a bedrock provider takes either api_key_env (a Bedrock API key) or "
            "aws_access_key_id_env + aws_secret_access_key_env (SigV4), not both "
            "and not neither"
        )
    if sigv4 and region_of(provider) is None:
        raise ValueError(
            "region: required for SigV4 when base_url's host does not name one "
            "(bedrock-runtime.<region>.amazonaws.com)"
        )


def _aws_problem(provider: Provider, environ: Mapping[str, str]) -> str | None:
    """Why the SigV4 credential variables are unusable, if they are."""
    for var in (
        provider.aws_access_key_id_env,
        provider.aws_secret_access_key_env,
        provider.aws_session_token_env,
    ):
        problem = None if var is None else read_secret(environ, var, "AWS")[1]
        if problem:
            return problem
    return None


BEDROCK = ProviderType(
    names=("bedrock",),
    adapter=BedrockAdapter,
    # The AWS region (default: the one in base_url's host) and SigV4 credentials by
    # environment variable (api_key_env may instead hold a Bedrock API key).
    fields={
        "region": Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")],
        "aws_access_key_id_env": EnvVarName,
        "aws_secret_access_key_env": EnvVarName,
        "aws_session_token_env": EnvVarName,
    },
    check=_check,
    credential_problem=_aws_problem,
    # Converse has no JSON output mode to translate response_format to.
    json_mode=False,
)
