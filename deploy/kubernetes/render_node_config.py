#!/usr/bin/env python3
"""Render one StatefulSet pod's phalanx node.toml (run as the init container of every pod).

The image ships this file as /usr/local/bin/phalanx-render-config (see deploy/Dockerfile).

Identity and addresses come from the downward API: node id = pod name (phalanx-1), and every
listener binds the pod's stable DNS name <pod>.<service>.<namespace>.svc.<domain> (the kubelet
writes that name into the pod's /etc/hosts, so the bind never waits for DNS; the headless
Service publishes not-ready addresses, so peers resolve it before the pod is Ready).

Zones: a node's topology.kubernetes.io/zone label is not available through the downward API,
and every bootstrap member must be started with the same peers list, zones included (each
bootstrap node computes the same initial cluster map from it). So with --zone-source api (the
default in the manifests) the init container of a bootstrap pod (ordinal < --bootstrap)
waits until every bootstrap pod is scheduled (podManagementPolicy: Parallel), reads each
pod's spec.nodeName and that node's zone and region labels through the API server (the pod's
service account may get pods in its namespace and get nodes), and freezes the result in
DATA_DIR/phalanx-bootstrap-peers.json. Later restarts reuse that file and never wait for
other pods; the volume is zonal, so a pod never moves to another zone. A pod with ordinal >=
--bootstrap (after `kubectl scale`) joins the running cluster through the client Service with
only itself in peers: it needs only its own zone. --zone-source static takes the zones from
PHALANX_ZONES ("zone-a,zone-b,zone-c", by ordinal) instead, without any API access.

Base settings (shards, survival goal, timing, ...) come from the ConfigMap's base.toml; secrets
(cluster_secret, admin_token, requirepass) from the environment, so they never sit in a
ConfigMap. The result is validated with phalanx's own config loader before it is written.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
FROZEN_PEERS = "phalanx-bootstrap-peers.json"
SECRET_ENV = {"cluster_secret": "PHALANX_CLUSTER_SECRET", "admin_token": "PHALANX_ADMIN_TOKEN",
              "requirepass": "PHALANX_REQUIREPASS"}
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class RenderError(Exception):
    """The config cannot be rendered; the message says why."""


def split_pod_name(pod: str) -> tuple[str, int]:
    """"phalanx-1" -> ("phalanx", 1)."""
    base, _, ordinal = pod.rpartition("-")
    if not base or not ordinal.isdigit():
        raise RenderError(f"pod name {pod!r} is not <statefulset>-<ordinal>")
    return base, int(ordinal)


class Api:
    """The few API server reads the render needs (stdlib only, service account auth)."""

    def __init__(self, server: str, token_file: Path, ca_file: Path | None) -> None:
        self.server = server.rstrip("/")
        self.token = token_file.read_text().strip() if token_file.exists() else ""
        self.context: ssl.SSLContext | None = None
        if self.server.startswith("https://"):
            self.context = ssl.create_default_context(
                cafile=str(ca_file) if ca_file and ca_file.exists() else None)

    def get(self, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.server + path)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
            body: dict[str, Any] = json.load(response)
            return body

    def zone_of_pod(self, namespace: str, pod: str, wait_s: float) -> tuple[str, str]:
        """(zone, region) of the node `pod` is scheduled on; waits for the scheduling."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                node_name = self.get(f"/api/v1/namespaces/{namespace}/pods/{pod}")\
                    .get("spec", {}).get("nodeName")
            except urllib.error.HTTPError as error:
                if error.code != 404:  # 404: the StatefulSet has not created it yet
                    raise RenderError(f"reading pod {pod}: HTTP {error.code}") from error
                node_name = None
            if node_name:
                break
            if time.monotonic() > deadline:
                raise RenderError(f"pod {pod} is not scheduled after {wait_s:.0f} s (every "
                                  "bootstrap pod must be scheduled, one per zone, before the "
                                  "cluster can be bootstrapped)")
            time.sleep(2)
        labels = self.get(f"/api/v1/nodes/{node_name}").get("metadata", {}).get("labels", {})
        zone = labels.get(ZONE_LABEL)
        if not zone:
            raise RenderError(f"node {node_name} (of pod {pod}) has no {ZONE_LABEL} label; "
                              "label it or use --zone-source static with PHALANX_ZONES")
        return zone, labels.get(REGION_LABEL) or "region-1"


def static_zone(ordinal: int) -> tuple[str, str]:
    zones = [zone.strip() for zone in os.environ.get("PHALANX_ZONES", "").split(",") if zone.strip()]
    if ordinal >= len(zones):
        raise RenderError(f"PHALANX_ZONES has no zone for ordinal {ordinal} (got {zones})")
    return zones[ordinal], os.environ.get("PHALANX_REGION", "region-1")


def render(args: argparse.Namespace) -> str:
    from phalanx.server.config import config_from_mapping, dump_config

    base_name, ordinal = split_pod_name(args.pod)
    domain = f"{args.service}.{args.namespace}.svc.{args.cluster_domain}"

    def peer_entry(index: int, zone: str, region: str) -> dict[str, str]:
        host = f"{base_name}-{index}.{domain}"
        return {"id": f"{base_name}-{index}", "peer": f"{host}:{args.peer_port}",
                "resp": f"{host}:{args.resp_port}", "admin": f"{host}:{args.admin_port}",
                "zone": zone, "region": region}

    def zone_of(index: int) -> tuple[str, str]:
        if args.zone_source == "static":
            return static_zone(index)
        api = Api(args.api_server, args.token_file, args.ca_file)
        return api.zone_of_pod(args.namespace, f"{base_name}-{index}", args.wait_s)

    base: dict[str, Any] = tomllib.loads(args.base.read_text()) if args.base else {}
    for reserved in ("id", "data_dir", "peers", "join"):
        if reserved in base:
            raise RenderError(f"{args.base}: {reserved} is set per pod; remove it from the base")
    data: dict[str, Any] = {**base, "id": args.pod, "data_dir": str(args.data_dir)}
    for key, variable in SECRET_ENV.items():
        if os.environ.get(variable):
            data[key] = os.environ[variable]

    frozen = args.data_dir / FROZEN_PEERS
    if frozen.exists():
        data.update(json.loads(frozen.read_text()))
    elif ordinal < args.bootstrap:
        data["peers"] = [peer_entry(index, *zone_of(index)) for index in range(args.bootstrap)]
    else:
        data["peers"] = [peer_entry(ordinal, *zone_of(ordinal))]
        data["join"] = args.join or f"{args.client_service}.{args.namespace}.svc." \
                                    f"{args.cluster_domain}:{args.resp_port}"
    config = config_from_mapping(data, "rendered config")  # raises ConfigError if wrong
    if not frozen.exists():
        args.data_dir.mkdir(parents=True, exist_ok=True)
        membership = {"peers": data["peers"], **({"join": data["join"]} if "join" in data else {})}
        frozen.write_text(json.dumps(membership, indent=2, sort_keys=True) + "\n")
    return dump_config(config)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pod", default=env("POD_NAME", ""), help="pod name (env POD_NAME)")
    parser.add_argument("--namespace", default=env("POD_NAMESPACE", "default"))
    parser.add_argument("--service", default=env("PHALANX_PEER_SERVICE", "phalanx-peers"),
                        help="the headless Service (the pods' DNS subdomain)")
    parser.add_argument("--client-service", default=env("PHALANX_CLIENT_SERVICE", "phalanx"))
    parser.add_argument("--cluster-domain", default=env("CLUSTER_DOMAIN", "cluster.local"))
    parser.add_argument("--bootstrap", type=int, default=int(env("PHALANX_BOOTSTRAP", "3")),
                        help="ordinals below this are bootstrap members; others join")
    parser.add_argument("--join", default=env("PHALANX_JOIN", ""),
                        help="host:port to join through (default: the client Service)")
    parser.add_argument("--resp-port", type=int, default=6379)
    parser.add_argument("--peer-port", type=int, default=7000)
    parser.add_argument("--admin-port", type=int, default=8080)
    parser.add_argument("--data-dir", type=Path, default=Path(env("PHALANX_DATA_DIR", "/data")))
    parser.add_argument("--base", type=Path, default=None, help="base TOML (from the ConfigMap)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--zone-source", choices=("api", "static"),
                        default=env("PHALANX_ZONE_SOURCE", "api"))
    parser.add_argument("--api-server", default=env("PHALANX_API_SERVER",
                                                    "https://kubernetes.default.svc"))
    parser.add_argument("--token-file", type=Path, default=SERVICE_ACCOUNT / "token")
    parser.add_argument("--ca-file", type=Path, default=SERVICE_ACCOUNT / "ca.crt")
    parser.add_argument("--wait-s", type=float, default=float(env("PHALANX_SCHEDULE_WAIT_S", "600")),
                        help="how long to wait for the bootstrap pods to be scheduled")
    args = parser.parse_args(argv)
    if not args.pod:
        parser.error("--pod (or env POD_NAME) is required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        text = render(args)
    except Exception as error:  # every failure: one clear line, non-zero exit, pod restarts
        print(f"phalanx-render-config: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(args.output)
    print(f"phalanx-render-config: wrote {args.output} for {args.pod}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
