"""Istio objects generated from the agent's config, beside the standalone bootstrap.

The EnvoyFilter carries the *same* Envoy objects `bootstrap.py` builds (the agent's
cluster, the ext_proc filter, provider and failover-chain clusters, the routes that read
the routing header), wrapped as Istio patches, so a mesh and the standalone gateway
cannot drift apart. ServiceEntry + DestinationRule register each provider host as plain
HTTP inside the mesh with TLS origination at the sidecar: the app's sidecar sees the
request body (which ext_proc needs) and the mesh encrypts it on the way out.

Two shapes (docs/deploy.md):
- ``sidecar``: an app pod with the agent injected beside its Istio proxy. The filter is
  installed disabled on the outbound HTTP listeners and enabled only in the provider
  hosts' virtual hosts, so the pod's other traffic never reaches the agent.
- ``gateway``: an Istio ingress gateway with the agent beside it; every virtual host of
  the gateway port goes through the agent.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from edge_agent.config import Config, Provider, failover_chains
from edge_agent.envoy import bootstrap
from edge_agent.envoy import telemetry as envoy_telemetry

MeshMode = Literal["sidecar", "gateway"]

# The label the injection template puts on pods that carry the agent (app pods and
# gateway pods alike): the EnvoyFilters select exactly those, so no proxy is patched to
# call an agent it does not have. The patches' contexts keep sidecars and gateways apart.
AGENT_LABEL = "llm-edge-agent.io/agent"
FILTER_NAME = "llm-edge-agent.ext_proc"
PROVIDER_CLUSTER_PREFIX = "edge_agent_provider_"
CONFIG_MOUNT = "/etc/edge-agent"  # where the image expects it (Dockerfile)
_HCM = "envoy.filters.network.http_connection_manager"
_ROUTER = "envoy.filters.http.router"
_FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
# Hosts that are Kubernetes Services, known to the mesh already: no ServiceEntry.
_IN_CLUSTER = re.compile(r"^(?P<service>[^.]+\.[^.]+)\.svc(?:\.(?P<domain>.+))?$")
# The CA bundle inside Istio's proxy images (the agent's own venv path means nothing there).
PROXY_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class MeshOptions:
    mode: MeshMode = "sidecar"
    name: str = "llm-edge-agent"
    namespace: str = "default"
    # More labels to narrow the workloads; the injection template's label is always
    # required, so a proxy is never patched to call an agent it does not have.
    selector: Mapping[str, str] = field(default_factory=dict)
    # gateway: the port of the gateway's HTTP listener (Istio's ingressgateway: 8080), the
    # Gateway server port in front of it (80), and the hosts whose traffic goes through
    # the agent (none: every host on that port).
    gateway_port: int = 8080
    gateway_server_port: int = 80
    gateway_hosts: tuple[str, ...] = ()
    ca_file: str = PROXY_CA_FILE
    cluster_domain: str = "cluster.local"

    def workload_labels(self) -> dict[str, str]:
        return {**self.selector, AGENT_LABEL: "true"}


@dataclass(frozen=True)
class MeshHost:
    """How apps in the mesh address one provider host."""

    host: str
    port: int  # what the app dials: 80 for https providers (the sidecar originates TLS)
    target_port: int  # where the provider listens
    tls: bool
    # A Kubernetes Service's full name (Istio names its virtual hosts after it), or "".
    service_fqdn: str = ""

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def name(self) -> str:
        """The host Istio knows: a Service's full name; for others the ServiceEntry host (a
        ServiceEntry needs a name, so an address-only upstream, e.g. a self-hosted model on
        a fixed IP, gets one and is matched by its address)."""
        if self.service_fqdn:
            return self.service_fqdn
        return f"{k8s_name(self.host)}.llm-edge-agent.internal" if self.is_ip else self.host

    @property
    def vhost(self) -> str:
        # Istio names a sidecar's outbound virtual hosts <service host>:<port>.
        return f"{self.name}:{self.port}"


class _EveryCredential(Mapping[str, str]):
    """An environment where every variable is set.

    Manifests are generated away from the pods that hold the keys; chains are built as
    if every provider were usable, which is what a pod with all its keys computes.
    """

    def __getitem__(self, key: str) -> str:
        return "present"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


ALL_CREDENTIALS: Mapping[str, str] = _EveryCredential()


class MeshConfigError(ValueError):
    """The config cannot be expressed in the mesh; the message says why and what to do."""


def mesh_hosts(config: Config, options: MeshOptions) -> list[MeshHost]:
    # Keyed by the name Istio knows: `x.ns.svc` and its full name are one virtual host.
    seen: dict[tuple[str, int], MeshHost] = {}
    for p in config.providers:
        entry = mesh_host(p, options)
        seen.setdefault((entry.name, entry.port), entry)
    return list(seen.values())


def mesh_host(provider: Provider, options: MeshOptions) -> MeshHost:
    service = _IN_CLUSTER.match(provider.host)
    fqdn = ""
    if service is not None:
        fqdn = f"{service['service']}.svc.{service['domain'] or options.cluster_domain}"
    elif "." not in provider.host and not provider.tls:
        # A bare Service name resolves in the namespace of the pods (as Kubernetes DNS does).
        fqdn = f"{provider.host}.{options.namespace}.svc.{options.cluster_domain}"
    if fqdn:
        if provider.tls:
            raise MeshConfigError(
                f"provider {provider.name!r}: {provider.base_url} is a Service of the cluster "
                "spoken to over TLS; the Istio proxy could not read its requests (the mesh "
                "encrypts in-cluster traffic itself): use http:// for in-cluster providers"
            )
        # In the mesh already: the app dials the Service's own port.
        return MeshHost(provider.host, provider.port, provider.port, False, fqdn)
    if provider.tls:
        # Apps speak plain HTTP on 80; DestinationRule originates TLS to the real port.
        return MeshHost(provider.host, 80, provider.port, True)
    return MeshHost(provider.host, provider.port, provider.port, False)


def k8s_name(*parts: str) -> str:
    """A DNS-1123 label from free text (provider names may hold '_' and '.'); a name
    too long is cut and given a hash of the whole, so two long hosts cannot collide."""
    whole = "-".join(parts).lower()
    text = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", whole).strip("-"))
    if len(text) <= 63:
        return text
    digest = hashlib.sha256(whole.encode()).hexdigest()[:8]
    return f"{text[:54].rstrip('-')}-{digest}"


def _metadata(options: MeshOptions, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": options.namespace,
        "labels": {
            "app.kubernetes.io/name": "llm-edge-agent",
            "app.kubernetes.io/part-of": "llm-edge-agent",
        },
    }


def service_entries(config: Config, options: MeshOptions) -> list[dict[str, Any]]:
    """One ServiceEntry per provider host outside the cluster."""
    objects = []
    for h in mesh_hosts(config, options):
        if h.service_fqdn:
            continue
        port = {"number": h.port, "name": f"http-{h.port}", "protocol": "HTTP"}
        if h.target_port != h.port:
            port["targetPort"] = h.target_port
        spec: dict[str, Any] = {
            "hosts": [h.host],
            "location": "MESH_EXTERNAL",
            "ports": [port],
            "resolution": "DNS",
            "exportTo": ["."],
        }
        if h.is_ip:
            spec["hosts"] = [h.name]
            spec["addresses"] = [h.host]
            spec["endpoints"] = [{"address": h.host}]
            spec["resolution"] = "STATIC"
        objects.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "ServiceEntry",
                "metadata": _metadata(options, k8s_name(options.name, h.host, str(h.port))),
                "spec": spec,
            }
        )
    return objects


def destination_rules(config: Config, options: MeshOptions) -> list[dict[str, Any]]:
    """TLS origination for https providers: the app's plain HTTP leaves encrypted, and the
    provider's certificate must name its host (Istio checks only what it is told to when
    `sni` is set)."""
    objects = []
    for h in mesh_hosts(config, options):
        if not h.tls or h.service_fqdn:
            continue
        objects.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": _metadata(options, k8s_name(options.name, h.host, "tls")),
                "spec": {
                    "host": h.host,
                    "exportTo": ["."],
                    "trafficPolicy": {
                        "portLevelSettings": [
                            {
                                "port": {"number": h.port},
                                "tls": {
                                    "mode": "SIMPLE",
                                    "sni": h.host,
                                    "subjectAltNames": [h.host],
                                },
                            }
                        ]
                    },
                },
            }
        )
    return objects


def _renamed(cluster: dict[str, Any], name: str) -> dict[str, Any]:
    cluster = {**cluster, "name": name}
    cluster["load_assignment"] = {**cluster["load_assignment"], "cluster_name": name}
    return cluster


def mesh_clusters(config: Config, options: MeshOptions) -> list[dict[str, Any]]:
    """The bootstrap's clusters; provider clusters prefixed so they cannot collide with
    Istio's own (a provider called 'agent' or 'xds-grpc' would otherwise). Providers that
    are Services of the cluster need none: Istio's own cluster (mutual TLS) serves them."""
    env = config.envoy
    limits = (env.max_response_bytes, env.max_connections)
    ca_file = options.ca_file
    clusters = [bootstrap.ext_proc_cluster(config)]
    for p in config.providers:
        if mesh_host(p, options).service_fqdn:
            continue
        cluster = bootstrap.provider_cluster(p, *limits, ca_file=ca_file)
        clusters.append(_renamed(cluster, PROVIDER_CLUSTER_PREFIX + p.name))
    chains = failover_chains(config, ALL_CREDENTIALS)
    clusters += bootstrap.chain_clusters(config, chains, *limits, ca_file=ca_file)
    return clusters


def mesh_routes(config: Config, options: MeshOptions) -> list[dict[str, Any]]:
    """The bootstrap's routes in match order, without its fallback: in the mesh a request
    the agent did not route goes where the app sent it, by Istio's own route. Providers
    are matched by name (their clusters carry a prefix here)."""
    out = [
        {"name": f"llm-edge-agent.{r['route']['cluster']}", **r}
        for r in bootstrap.chain_routes(config, ALL_CREDENTIALS)
    ]
    for p in config.providers:
        route = bootstrap.provider_route(config, p, PROVIDER_CLUSTER_PREFIX + p.name)
        host = mesh_host(p, options)
        if host.service_fqdn:
            # Istio's cluster for the Service: its endpoints carry no host name to rewrite to.
            target = {k: v for k, v in route["route"].items() if k != "auto_host_rewrite"}
            target["cluster"] = f"outbound|{host.port}||{host.service_fqdn}"
            target["host_rewrite_literal"] = p.authority
            route["route"] = target
        out.append({"name": f"llm-edge-agent.{p.name}", **route})
    return out


def mesh_filter(config: Config, per_host: bool) -> dict[str, Any]:
    flt = {**bootstrap.ext_proc_filter(config), "name": FILTER_NAME}
    if per_host:
        # Off for the proxy's other traffic; each LLM virtual host turns it on.
        flt["disabled"] = True
    return flt


def _listener_match(context: str, port: int, sub_filter: str | None = None) -> dict[str, Any]:
    chain: dict[str, Any] = {"filter": {"name": _HCM}}
    if sub_filter:
        chain["filter"]["subFilter"] = {"name": sub_filter}
    return {"context": context, "listener": {"portNumber": port, "filterChain": chain}}


def _scope(config: Config, options: MeshOptions) -> tuple[list[int], list[dict[str, Any]]]:
    """(listener ports to patch, route-configuration matches of the LLM virtual hosts)."""
    if options.mode == "sidecar":
        hosts = mesh_hosts(config, options)
        matches = [{"portNumber": h.port, "vhost": {"name": h.vhost}} for h in hosts]
        return sorted({h.port for h in hosts}), matches
    # A gateway's route configuration is named after its listener port (8080); its
    # portNumber would match the Gateway server's port (80) instead.
    route_config = f"http.{options.gateway_port}"
    if not options.gateway_hosts:
        return [options.gateway_port], [{"name": route_config}]
    matches = [
        {"name": route_config, "vhost": {"name": f"{host}:{options.gateway_server_port}"}}
        for host in options.gateway_hosts
    ]
    return [options.gateway_port], matches


def config_patches(config: Config, options: MeshOptions) -> list[dict[str, Any]]:
    context = "SIDECAR_OUTBOUND" if options.mode == "sidecar" else "GATEWAY"
    env = config.envoy
    # Per host: the filter is installed off and turned on in the LLM virtual hosts only.
    per_host = options.mode == "sidecar" or bool(options.gateway_hosts)
    patches: list[dict[str, Any]] = [
        {
            "applyTo": "CLUSTER",
            "match": {"context": context},
            "patch": {"operation": "ADD", "value": c},
        }
        for c in mesh_clusters(config, options)
    ]
    ports, route_matches = _scope(config, options)
    # A gateway is the edge: slow clients are cut off as in the standalone gateway (on a
    # shared port, for every host on it). A sidecar's client is its own app, and its
    # outbound listener carries all of the app's traffic on that port: left alone.
    edge = bootstrap.edge_timeouts(config) if options.mode == "gateway" else {}
    # Appended to the proxy's own access logs (a MERGE appends to repeated fields).
    access_log = envoy_telemetry.access_logs(config, only_agent=True)
    if access_log:
        edge = {**edge, "access_log": access_log}
    for port in ports:
        patches.append(
            {
                # ext_proc buffers whole request bodies: they must fit (Envoy's default is
                # 1 MiB, too small for images). The listener serves the whole port.
                "applyTo": "LISTENER",
                "match": {"context": context, "listener": {"portNumber": port}},
                "patch": {
                    "operation": "MERGE",
                    "value": {"per_connection_buffer_limit_bytes": env.max_request_bytes},
                },
            }
        )
        patches.append(
            {
                # The route reads the routing header: clients must never supply it, and
                # it has to go before route selection (an HTTP filter runs too late).
                "applyTo": "NETWORK_FILTER",
                "match": _listener_match(context, port),
                "patch": {
                    "operation": "MERGE",
                    "value": {
                        "name": _HCM,
                        "typed_config": {
                            "@type": bootstrap.HCM_TYPE,
                            "early_header_mutation_extensions": [
                                bootstrap.strip_header_extension(env.routing_header)
                            ],
                            **edge,
                        },
                    },
                },
            }
        )
        patches.append(
            {
                "applyTo": "HTTP_FILTER",
                "match": _listener_match(context, port, _ROUTER),
                "patch": {"operation": "INSERT_BEFORE", "value": mesh_filter(config, per_host)},
            }
        )
    routes = mesh_routes(config, options)
    for route_match in route_matches:
        vhost_value: dict[str, Any] = {
            # Tells the agent how far along a failover chain Envoy went.
            "include_attempt_count_in_response": True,
        }
        if per_host:
            # A FilterConfig with an empty `config` turns on a filter that is disabled by
            # default (without `config` Envoy rejects the route configuration).
            vhost_value["typed_per_filter_config"] = {
                FILTER_NAME: {"@type": _FILTER_CONFIG, "config": {}}
            }
        patches.append(
            {
                "applyTo": "VIRTUAL_HOST",
                "match": {"context": context, "routeConfiguration": route_match},
                "patch": {"operation": "MERGE", "value": vhost_value},
            }
        )
        # INSERT_FIRST prepends: insert in reverse to keep the bootstrap's order.
        for route in reversed(routes):
            patches.append(
                {
                    "applyTo": "HTTP_ROUTE",
                    "match": {"context": context, "routeConfiguration": route_match},
                    "patch": {"operation": "INSERT_FIRST", "value": route},
                }
            )
    return patches


def envoy_filter(config: Config, options: MeshOptions) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": _metadata(options, k8s_name(options.name, options.mode)),
        "spec": {
            "workloadSelector": {"labels": options.workload_labels()},
            "configPatches": config_patches(config, options),
        },
    }


def manifests(config: Config, options: MeshOptions) -> list[dict[str, Any]]:
    """Everything `kubectl apply` needs for one mode, in apply order."""
    objects = [envoy_filter(config, options)]
    if options.mode == "sidecar":
        objects = [*service_entries(config, options), *destination_rules(config, options), *objects]
    return objects


def helm_values(config: Config, options: MeshOptions) -> dict[str, Any]:
    """Values for charts/edge-agent in sidecar mode: the config and the Istio objects
    generated from it (Helm cannot run this generator). The chart's gateway mode runs
    `edge-agent run`, which generates its Envoy config itself, and needs none."""
    if options.mode != "sidecar":
        raise ValueError(
            "helm values are generated for the chart's sidecar mode only; its gateway mode "
            "needs no generated values, and an Istio ingress gateway takes the manifests "
            "(--format manifests --mode gateway) through kubectl"
        )
    filter_ = envoy_filter(config, options)
    values: dict[str, Any] = {
        "mode": options.mode,
        "mesh": {
            # The agent in the pods runs exactly this config (the chart writes `listen`
            # from `ports`), so the patches and the agent cannot disagree.
            "config": config.model_dump(mode="json", exclude={"listen"}, exclude_unset=True),
            "ports": {
                "grpc": config.listen.addr("grpc")[1],
                "admin": config.listen.addr("admin")[1],
            },
            "envoyFilter": {
                "name": filter_["metadata"]["name"],
                "configPatches": filter_["spec"]["configPatches"],
            },
            "serviceEntries": [
                {"name": o["metadata"]["name"], "spec": o["spec"]}
                for o in service_entries(config, options)
            ],
            "destinationRules": [
                {"name": o["metadata"]["name"], "spec": o["spec"]}
                for o in destination_rules(config, options)
            ],
        },
    }
    if options.selector:
        values["sidecar"] = {"workloadSelector": options.workload_labels()}
    return values


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (the injection template inside istiod values)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(*documents: Any, header: str = "") -> str:
    """YAML documents as written to istio/ and printed by the CLI."""
    body = yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False)
    return header + body
