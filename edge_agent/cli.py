"""`edge-agent run | serve | envoy-config | check-config`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterator, Sequence

import yaml

from edge_agent import cli_keys
from edge_agent.config import CONFIG_ENV, Config, ConfigError, credential_problems, load_config
from edge_agent.telemetry import logs
from edge_agent.telemetry.logs import LOG_FORMAT_ENV


def _log_format(args: argparse.Namespace, config: Config) -> str:
    """--log-format, then EDGE_AGENT_LOG_FORMAT (the container image sets json), then
    the config's log_format."""
    fmt = args.log_format or os.environ.get(LOG_FORMAT_ENV) or config.log_format
    if fmt not in ("text", "json"):
        print(f"ignoring {LOG_FORMAT_ENV}={fmt!r}: expected text or json", file=sys.stderr)
        fmt = config.log_format
    return fmt


def _load(args: argparse.Namespace) -> Config | None:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _event_loop_runner() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _run_async(args: argparse.Namespace, which: str) -> int:
    config = _load(args)
    if config is None:
        return 2
    from edge_agent.pipeline.extensions import ExtensionError, load_response_stages, load_slots

    try:
        # Before any process starts: a stage that cannot be loaded is a config error.
        load_slots(config.pipeline)
        load_response_stages(config.pipeline)
    except ExtensionError as exc:
        print(f"invalid config {args.config or '$EDGE_AGENT_CONFIG'}: {exc}", file=sys.stderr)
        return 2
    from edge_agent.runtime.workers import WorkerContext, worker_command

    worker = WorkerContext.from_environ()
    log_level = args.log_level or config.log_level
    log_format = _log_format(args, config)
    logs.setup(log_level, log_format, worker.index if worker is not None else None)
    from edge_agent.runtime import gateway

    _event_loop_runner()
    if worker is not None:
        # Started by a supervisor: one agent process, whatever the config says.
        return asyncio.run(gateway.run_agent(config))
    workers = args.workers or config.workers
    # Workers read the same file the supervisor read (same cwd, same environment).
    command = worker_command(args.config or os.environ[CONFIG_ENV], log_level, log_format)
    main = gateway.run_gateway if which == "run" else gateway.run_agent
    return asyncio.run(main(config, workers=workers, worker_command=command))


def cmd_run(args: argparse.Namespace) -> int:
    return _run_async(args, "run")


def cmd_serve(args: argparse.Namespace) -> int:
    return _run_async(args, "serve")


def cmd_envoy_config(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 2
    from edge_agent.envoy.bootstrap import build_bootstrap

    bootstrap = build_bootstrap(config)
    if args.format == "json":
        print(json.dumps(bootstrap, indent=2))
    else:
        print(yaml.safe_dump(bootstrap, sort_keys=False), end="")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 1
    for provider, problem in credential_problems(config).items():
        print(
            f"warning: provider {provider!r} is disabled in this environment: {problem}; "
            "its models will answer 503",
            file=sys.stderr,
        )
    for warning in _security_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    if not args.skip_envoy:
        from edge_agent.envoy.bootstrap import build_bootstrap
        from edge_agent.envoy.process import EnvoyError, validate

        try:
            ok, output = validate(build_bootstrap(config))
        except EnvoyError as exc:
            print(f"warning: generated Envoy config not checked: {exc}", file=sys.stderr)
        else:
            if not ok:
                print(f"the generated Envoy config is invalid:\n{output}", file=sys.stderr)
                return 1
    print(
        f"{args.config or 'config'}: OK ({len(config.providers)} providers, "
        f"{len(config.models)} models)"
    )
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from edge_agent.audit.chain import verify

    def lines() -> Iterator[bytes]:
        for name in args.files:
            with open(name, "rb") as f:
                yield from f

    try:
        verdict = verify(lines())
    except OSError as exc:
        print(f"cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    for problem in verdict.problems:
        print(problem, file=sys.stderr)
    if not verdict.ok:
        print(
            f"FAILED: {len(verdict.problems)} problem(s) in {verdict.records} records",
            file=sys.stderr,
        )
        return 1
    print(f"OK: {verdict.records} records, {len(verdict.chains)} chain(s), none changed or removed")
    return 0


def _security_warnings(config: Config) -> list[str]:
    """What in the config lets callers past the agent's checks, or trusts too much."""
    import ipaddress

    out = []
    auth = config.auth
    host = config.listen.addr("envoy")[0]
    if not auth.required and not ipaddress.ip_address(host).is_loopback:
        out.append(
            f"listen.envoy is {config.listen.envoy} and auth.required is false: anyone who "
            "reaches it spends the providers' keys as tenant 'default'; set auth.required: "
            "true (docs/security.md)"
        )
    for i, issuer in enumerate(auth.jwt):
        if not issuer.audiences and issuer.secret_env is None:
            out.append(
                f"auth.jwt[{i}] ({issuer.issuer}) has no audiences: tokens its IdP issued "
                "for any other application are accepted too"
            )
    claims = auth.forwarded_claims
    if claims is not None and not claims.issuers:
        out.append(
            "auth.forwarded_claims has no issuers: a token from any issuer Istio trusts on "
            "this workload may name a tenant"
        )
    if auth.mesh.enabled is True:
        out.append(
            "auth.mesh.enabled trusts x-forwarded-client-cert: every connection must come "
            "through an Istio sidecar or gateway with STRICT mTLS (docs/security.md)"
        )
    return out


def cmd_keys(args: argparse.Namespace) -> int:
    config = None if args.keys_command == "hash" else _load(args)
    return cli_keys.cmd_keys(args, config)


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected a label as key=value, got {text!r}")
    return key, value


def cmd_mesh(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 2
    from edge_agent.envoy import mesh

    options = mesh.MeshOptions(
        mode=args.mode,
        name=args.name,
        namespace=args.namespace,
        selector=dict(args.selector or []),
        gateway_port=args.gateway_port,
        gateway_server_port=args.gateway_server_port,
        gateway_hosts=tuple(args.gateway_host or ()),
        ca_file=args.ca_file,
        cluster_domain=args.cluster_domain,
    )
    try:
        if args.format == "helm-values":
            text = mesh.to_yaml(mesh.helm_values(config, options))
        else:
            text = mesh.to_yaml(*mesh.manifests(config, options))
    except ValueError as exc:  # the config cannot be expressed in this mesh form
        print(f"edge-agent mesh: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


def cmd_injection(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 2
    from edge_agent.envoy.injection import InjectionOptions, injection_template, istiod_values
    from edge_agent.envoy.mesh import to_yaml

    options = InjectionOptions(image=args.image, config_map=args.config_map, secret=args.secret)
    make = injection_template if args.format == "template" else istiod_values
    try:
        text = to_yaml(make(config, options))
    except ValueError as exc:
        print(f"edge-agent injection-template: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


def _worker_count(text: str) -> int:
    # The same bounds as the config's `workers`.
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"expected 1 to 64 workers, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Envoy ext_proc agent for LLM traffic: routing, caching, metering.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "--config", "-c", metavar="FILE", help=f"YAML config (default: ${CONFIG_ENV})"
        )
        return p

    def workers_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--workers",
            "-w",
            type=_worker_count,
            metavar="N",
            help="agent processes sharing the ports, supervised (default: config 'workers')",
        )

    p = add("run", "Run the standalone gateway: Envoy and the agent together.")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["text", "json"])
    workers_arg(p)
    p.set_defaults(func=cmd_run)
    p = add("serve", "Run the agent alone (beside an Envoy you run, e.g. as a sidecar).")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["text", "json"])
    workers_arg(p)
    p.set_defaults(func=cmd_serve)
    p = add("envoy-config", "Print the Envoy bootstrap generated from the config.")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.set_defaults(func=cmd_envoy_config)
    p = add("check-config", "Validate the config (and the Envoy config generated from it).")
    p.add_argument("--skip-envoy", action="store_true", help="do not run envoy --mode validate")
    p.set_defaults(func=cmd_check_config)
    from edge_agent.envoy.mesh import MeshOptions

    mesh_defaults = MeshOptions()
    p = add(
        "mesh",
        "Print the Istio objects for the config: EnvoyFilter (and, for sidecars, "
        "ServiceEntry and DestinationRule per provider host), or the chart's values.",
    )
    p.add_argument("--mode", choices=["sidecar", "gateway"], default="sidecar")
    p.add_argument("--namespace", "-n", default="default", help="namespace of the objects")
    p.add_argument("--name", default="llm-edge-agent", help="prefix of the object names")
    p.add_argument(
        "--selector",
        type=_label,
        action="append",
        metavar="KEY=VALUE",
        help="workload labels the EnvoyFilter applies to (default: the label the injection "
        "template adds, so only proxies with an agent beside them are patched)",
    )
    p.add_argument(
        "--gateway-port",
        type=int,
        default=8080,
        metavar="PORT",
        help="gateway mode: the port of the gateway's HTTP listener (default 8080)",
    )
    p.add_argument(
        "--gateway-server-port",
        type=int,
        default=80,
        metavar="PORT",
        help="gateway mode: the Gateway server port in front of that listener (default 80)",
    )
    p.add_argument(
        "--gateway-host",
        action="append",
        metavar="HOST",
        help="gateway mode: a host whose traffic goes through the agent (repeatable; "
        "default: every host on the gateway port)",
    )
    p.add_argument(
        "--ca-file",
        default=mesh_defaults.ca_file,
        metavar="PATH",
        help=f"CA bundle inside the proxy image for provider TLS (default {mesh_defaults.ca_file})",
    )
    p.add_argument(
        "--cluster-domain",
        default=mesh_defaults.cluster_domain,
        metavar="DOMAIN",
        help="the cluster's DNS domain, for providers that are Services (default cluster.local)",
    )
    p.add_argument(
        "--format",
        choices=["manifests", "helm-values"],
        default="manifests",
        help="manifests: YAML for kubectl apply; helm-values: values for charts/edge-agent",
    )
    p.set_defaults(func=cmd_mesh)
    p = add(
        "injection-template",
        "Print the Istio injection template that adds the agent to opted-in pods.",
    )
    p.add_argument("--image", default=_default_image(), help="the agent's container image")
    p.add_argument("--config-map", default="llm-edge-agent-config", metavar="NAME")
    p.add_argument("--secret", default="llm-edge-agent-keys", metavar="NAME")
    p.add_argument(
        "--format",
        choices=["istiod-values", "template"],
        default="istiod-values",
        help="istiod-values: a values file for istiod's chart; template: the pod fragment",
    )
    p.set_defaults(func=cmd_injection)
    cli_keys.add_parser(sub, add)
    p = add("audit", "Work with audit trail files (docs/compliance.md).")
    audit_sub = p.add_subparsers(dest="audit_command", required=True)
    v = audit_sub.add_parser(
        "verify",
        help="Check that no record was changed or removed (hash chains).",
        description="Check that no record of the audit files was changed or removed: "
        "each record's hash, and each writer's chain (seq and prev) across the files, in "
        "the order given (oldest rotated file first).",
    )
    v.add_argument("files", nargs="+", metavar="FILE")
    v.set_defaults(func=cmd_audit_verify)
    sub.choices["keys"].set_defaults(func=cmd_keys)
    return parser


def _default_image() -> str:
    from edge_agent.envoy.injection import InjectionOptions

    return InjectionOptions().image


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
