"""Static and executable checks of deploy/: the Kubernetes manifests (against the Kubernetes
JSON schemas, offline, via kubernetes-validate), their semantics (quorum, probes, zone spread),
the pod config renderer (run for real, its output loaded by phalanx's own config loader), the
Dockerfile (parsed; its HEALTHCHECK command run against a real node) and the systemd unit
(systemd-analyze verify where the binary exists, INI checks always).

Every checker is a function returning a list of problems, and each one is shown to reject a
broken copy of the real file, so a green run means the checks can fail.
"""

from __future__ import annotations

import configparser
import copy
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # the dev extra: a missing validator fails, it does not skip
import pytest
import yaml

from phalanx.ops.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
RENDER = KUBE / "render_node_config.py"
DOCKERFILE = DEPLOY / "Dockerfile"
UNIT = DEPLOY / "systemd" / "phalanx@.service"
#: The oldest Kubernetes minor the manifests must be valid for, and the newest the package has.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
ZONE_KEY = "topology.kubernetes.io/zone"


# --- loading ---------------------------------------------------------------------------------
def manifest_files() -> list[Path]:
    return sorted(path for path in KUBE.glob("*.yaml") if path.name != "kustomization.yaml")


def load_documents() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents.append((path.name, document))
    return documents


DOCUMENTS = load_documents()


def only(kind: str, documents: list[tuple[str, dict[str, Any]]] | None = None,
         name: str | None = None) -> dict[str, Any]:
    found = [doc for _, doc in (documents or DOCUMENTS)
             if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def schema_errors(document: dict[str, Any], version: str) -> str | None:
    """None if `document` is valid for Kubernetes `version` (strict: unknown fields fail)."""
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        return f"{path}: {error.message}"
    return None


# --- schemas ---------------------------------------------------------------------------------
def test_every_manifest_file_parses_and_has_documents() -> None:
    assert manifest_files(), "no manifests in deploy/kubernetes"
    kinds = {doc["kind"] for _, doc in DOCUMENTS}
    assert {"StatefulSet", "Service", "PodDisruptionBudget", "ConfigMap",
            "ServiceAccount"} <= kinds, kinds


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("document", [doc for _, doc in DOCUMENTS],
                         ids=[f"{name}:{doc['kind']}/{doc['metadata']['name']}"
                              for name, doc in DOCUMENTS])
def test_manifest_is_valid_against_the_kubernetes_schema(document: dict[str, Any],
                                                          version: str) -> None:
    assert schema_errors(document, version) is None


def _mutations() -> list[tuple[str, str, Any]]:
    def wrong_type(sts: dict[str, Any]) -> None:
        sts["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["maxSkew"] = "one"

    def missing_required(sts: dict[str, Any]) -> None:
        del sts["spec"]["selector"]

    def unknown_field(sts: dict[str, Any]) -> None:  # a typo: "replica" for "replicas"
        sts["spec"]["replica"] = sts["spec"].pop("replicas")

    def port_as_string(sts: dict[str, Any]) -> None:
        sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "6379"

    def probe_without_handler_port(sts: dict[str, Any]) -> None:
        del sts["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"]

    return [("wrong-type", "maxSkew", wrong_type), ("missing-required", "selector", missing_required),
            ("unknown-field", "replica", unknown_field),
            ("port-as-string", "containerPort", port_as_string),
            ("missing-probe-port", "port", probe_without_handler_port)]


@pytest.mark.parametrize(("label", "field", "mutate"), _mutations(),
                         ids=[label for label, _, _ in _mutations()])
def test_the_schema_check_rejects_a_broken_statefulset(label: str, field: str, mutate: Any) -> None:
    broken = copy.deepcopy(only("StatefulSet"))
    mutate(broken)
    error = schema_errors(broken, KUBE_VERSIONS[0])
    assert error is not None, f"the validator accepted a StatefulSet with {label}"
    assert field in error, error


# --- semantics -------------------------------------------------------------------------------
def pod_spec(sts: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = sts["spec"]["template"]["spec"]
    return spec


def node_container(sts: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod_spec(sts)["containers"] if c["name"] == "phalanx")


def named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def semantic_problems(documents: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """What is wrong with the manifests as a phalanx deployment (beyond the schema)."""
    problems = []
    sts = only("StatefulSet", documents)
    spec = pod_spec(sts)
    labels = sts["spec"]["template"]["metadata"]["labels"]
    replicas = sts["spec"]["replicas"]
    container = node_container(sts)
    if replicas < 3:
        problems.append(f"StatefulSet replicas {replicas}: a Raft quorum needs >= 3 to lose one")
    if sts["spec"].get("podManagementPolicy") != "Parallel":
        problems.append("podManagementPolicy must be Parallel (bootstrap needs a quorum at once)")
    if not selects(sts["spec"]["selector"]["matchLabels"], labels):
        problems.append("the StatefulSet selector does not select its own pods")

    pdb = only("PodDisruptionBudget", documents)
    if not selects(pdb["spec"]["selector"]["matchLabels"], labels):
        problems.append("the PodDisruptionBudget does not select the pods")
    unavailable = pdb["spec"].get("maxUnavailable")
    if not isinstance(unavailable, int):
        problems.append(f"PDB maxUnavailable must be an absolute number, got {unavailable!r}")
    elif replicas - unavailable < replicas // 2 + 1:
        problems.append(f"PDB maxUnavailable {unavailable} of {replicas} replicas loses quorum")

    probes = {"livenessProbe": "/health", "readinessProbe": "/ready"}
    for probe_name, path in probes.items():
        probe = container.get(probe_name, {}).get("httpGet")
        if probe is None:
            problems.append(f"{probe_name} must be an httpGet probe")
            continue
        if probe.get("path") != path:
            problems.append(f"{probe_name} path {probe.get('path')!r} is not {path}")
        if named_port(container, probe["port"]) != 8080:
            problems.append(f"{probe_name} does not hit the admin port 8080")

    spread = [c for c in spec.get("topologySpreadConstraints", []) if c["topologyKey"] == ZONE_KEY]
    if not spread:
        problems.append(f"no topologySpreadConstraint on {ZONE_KEY}")
    for constraint in spread:
        if constraint["maxSkew"] != 1 or constraint["whenUnsatisfiable"] != "DoNotSchedule":
            problems.append("the zone spread must be maxSkew 1, DoNotSchedule")
        if not selects(constraint["labelSelector"]["matchLabels"], labels):
            problems.append("the zone spread's labelSelector does not select the pods")

    security = spec.get("securityContext", {})
    if not security.get("runAsNonRoot") or security.get("runAsUser", 0) == 0:
        problems.append("pods must run as a non-root user")
    for each in spec["containers"] + spec.get("initContainers", []):
        if each.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {each['name']}: allowPrivilegeEscalation must be false")
        resources = each.get("resources", {})
        if not resources.get("requests") or not resources.get("limits", {}).get("memory"):
            problems.append(f"container {each['name']}: needs requests and a memory limit")

    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    if "data" not in claims or mounts.get("data") != "/data":
        problems.append("a volumeClaimTemplate 'data' must be mounted at /data")

    services = {doc["metadata"]["name"]: doc for _, doc in documents if doc["kind"] == "Service"}
    headless = services.get(sts["spec"]["serviceName"])
    if headless is None or headless["spec"].get("clusterIP") != "None":
        problems.append("serviceName must name a headless Service (clusterIP: None)")
    elif not headless["spec"].get("publishNotReadyAddresses"):
        problems.append("the headless Service must publish not-ready addresses (peer DNS)")
    port_names = {p["name"] for p in container["ports"]}
    for service in services.values():
        if not selects(service["spec"]["selector"], labels):
            problems.append(f"Service {service['metadata']['name']} does not select the pods")
        for port in service["spec"]["ports"]:
            if port.get("targetPort") not in port_names:
                problems.append(f"Service {service['metadata']['name']} targets unknown port "
                                f"{port.get('targetPort')!r}")
    if not any(s["spec"].get("clusterIP") != "None"
               and any(p["port"] == 6379 for p in s["spec"]["ports"]) for s in services.values()):
        problems.append("no client Service for RESP on 6379")
    return problems


def test_the_manifests_make_sense_as_a_phalanx_cluster() -> None:
    assert semantic_problems(DOCUMENTS) == []


@pytest.mark.parametrize("breakage", ["pdb-2", "pdb-percent", "readiness-health", "skew-2",
                                      "no-spread", "root", "probe-port", "not-headless"])
def test_the_semantic_checks_catch_a_broken_deployment(breakage: str) -> None:
    documents = copy.deepcopy(DOCUMENTS)
    sts = only("StatefulSet", documents)
    container = node_container(sts)
    spec = pod_spec(sts)
    if breakage == "pdb-2":
        only("PodDisruptionBudget", documents)["spec"]["maxUnavailable"] = 2
    elif breakage == "pdb-percent":
        only("PodDisruptionBudget", documents)["spec"]["maxUnavailable"] = "50%"
    elif breakage == "readiness-health":
        container["readinessProbe"]["httpGet"]["path"] = "/health"
    elif breakage == "skew-2":
        spec["topologySpreadConstraints"][0]["maxSkew"] = 2
    elif breakage == "no-spread":
        spec["topologySpreadConstraints"][0]["topologyKey"] = "kubernetes.io/hostname"
    elif breakage == "root":
        spec["securityContext"]["runAsUser"] = 0
    elif breakage == "probe-port":
        container["livenessProbe"]["httpGet"]["port"] = "resp"
    elif breakage == "not-headless":
        only("Service", documents, sts["spec"]["serviceName"])["spec"]["clusterIP"] = "10.0.0.1"
    assert semantic_problems(documents) != []


def test_the_pieces_of_the_statefulset_fit_together() -> None:
    sts = only("StatefulSet")
    spec = pod_spec(sts)
    init = next(c for c in spec["initContainers"] if c["name"] == "render-config")
    container = node_container(sts)
    init_args = dict(zip(init["args"][::2], init["args"][1::2], strict=True))
    # The init container writes the file the node reads, into a volume both mount.
    assert container["args"] == ["node", "--config", init_args["--output"]]
    config_dir = str(Path(init_args["--output"]).parent)
    init_mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    node_mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert init_mounts[config_dir] == node_mounts[config_dir]
    # The base config comes from the ConfigMap, mounted where --base points.
    base_dir = str(Path(init_args["--base"]).parent)
    volume = next(v for v in spec["volumes"] if v["name"] == init_mounts[base_dir])
    configmap = only("ConfigMap", name=volume["configMap"]["name"])
    assert Path(init_args["--base"]).name in configmap["data"]
    # The renderer freezes the bootstrap membership on the data volume.
    assert init_mounts["/data"] == "data"
    # Every environment variable the renderer reads is one it is given (or has a default).
    env = {e["name"]: e for e in init["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["PHALANX_PEER_SERVICE"]["value"] == sts["spec"]["serviceName"]
    assert int(env["PHALANX_BOOTSTRAP"]["value"]) == sts["spec"]["replicas"]
    client = [s for _, s in DOCUMENTS if s["kind"] == "Service"
              and s["metadata"]["name"] == env["PHALANX_CLIENT_SERVICE"]["value"]]
    assert client and client[0]["spec"].get("clusterIP") != "None"
    renderer_names = set(re.findall(r'"([A-Z][A-Z_]+)"', RENDER.read_text()))
    assert set(env) <= renderer_names, set(env) - renderer_names
    for secret in ("PHALANX_CLUSTER_SECRET", "PHALANX_ADMIN_TOKEN", "PHALANX_REQUIREPASS"):
        assert env[secret]["valueFrom"]["secretKeyRef"]["optional"] is True
    # RBAC: the pods' service account may read pods and nodes, and nothing more.
    assert spec["serviceAccountName"] == only("ServiceAccount")["metadata"]["name"]
    rules = [(tuple(r["resources"]), tuple(r["verbs"]))
             for kind in ("Role", "ClusterRole") for r in only(kind)["rules"]]
    assert sorted(rules) == [(("nodes",), ("get",)), (("pods",), ("get",))]
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        (subject,) = only(kind)["subjects"]
        assert subject["name"] == spec["serviceAccountName"]
        assert subject["namespace"] == sts["metadata"]["namespace"]


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifest_files())
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return  # the static comparison above is what can be checked without kubectl
    built = subprocess.run([kubectl, "kustomize", str(KUBE)], capture_output=True, text=True,
                           timeout=30, check=False)
    assert built.returncode == 0, built.stderr
    rendered = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert len(rendered) == len(DOCUMENTS)
    image = node_container(only("StatefulSet", [("", d) for d in rendered]))["image"]
    assert image == "phalanx:0.1.0"


# --- the config renderer ---------------------------------------------------------------------
def base_toml(tmp_path: Path) -> Path:
    path = tmp_path / "base.toml"
    path.write_text(only("ConfigMap")["data"]["base.toml"])
    return path


def run_render(tmp_path: Path, pod: str, *extra: str, env: dict[str, str] | None = None,
               data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(RENDER), "--pod", pod, "--namespace", "db",
               "--base", str(base_toml(tmp_path)), "--output", str(tmp_path / "node.toml"),
               "--data-dir", str(data_dir or tmp_path / "data"), *extra]
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("PHALANX_")}
    environment.update(env or {})
    return subprocess.run(command, capture_output=True, text=True, timeout=30, env=environment,
                          check=False)


def test_rendered_config_of_a_bootstrap_pod_loads(tmp_path: Path) -> None:
    from phalanx.server.config import load_config

    result = run_render(tmp_path, "phalanx-1", "--zone-source", "static",
                        env={"PHALANX_ZONES": "eu-a,eu-b,eu-c", "PHALANX_REGION": "eu",
                             "PHALANX_CLUSTER_SECRET": "s3cret"})
    assert result.returncode == 0, result.stderr
    config = load_config(tmp_path / "node.toml")
    assert config.id == "phalanx-1"
    assert config.data_dir == str(tmp_path / "data")
    assert config.join == ""
    assert config.shards == 3 and config.survival_goal == "zone"  # from the ConfigMap
    assert config.cluster_secret == "s3cret"
    assert [(p.id, p.zone, p.region) for p in config.peers] == [
        ("phalanx-0", "eu-a", "eu"), ("phalanx-1", "eu-b", "eu"), ("phalanx-2", "eu-c", "eu")]
    host = "phalanx-1.phalanx-peers.db.svc.cluster.local"
    assert (config.me.resp, config.me.peer, config.me.admin) == (
        f"{host}:6379", f"{host}:7000", f"{host}:8080")
    # The membership is frozen on the volume (without secrets): a restart renders the same
    # peers even if the zone source now says something else.
    frozen = (tmp_path / "data" / "phalanx-bootstrap-peers.json").read_text()
    assert "s3cret" not in frozen
    again = run_render(tmp_path, "phalanx-1", "--zone-source", "static",
                       env={"PHALANX_ZONES": "x,y,z"})
    assert again.returncode == 0, again.stderr
    assert [p.zone for p in load_config(tmp_path / "node.toml").peers] == ["eu-a", "eu-b", "eu-c"]


def test_a_pod_beyond_the_bootstrap_set_joins(tmp_path: Path) -> None:
    from phalanx.server.config import load_config

    result = run_render(tmp_path, "phalanx-3", "--zone-source", "static",
                        env={"PHALANX_ZONES": "a,b,c,d"})
    assert result.returncode == 0, result.stderr
    config = load_config(tmp_path / "node.toml")
    assert [p.id for p in config.peers] == ["phalanx-3"] and config.me.zone == "d"
    assert config.join == "phalanx.db.svc.cluster.local:6379"


def test_the_renderer_fails_loudly(tmp_path: Path) -> None:
    missing_zone = run_render(tmp_path, "phalanx-2", "--zone-source", "static",
                              env={"PHALANX_ZONES": "a,b"})
    assert missing_zone.returncode != 0 and "no zone for ordinal 2" in missing_zone.stderr
    (tmp_path / "bad.toml").write_text('id = "x"\nshards = 3\n')
    reserved = subprocess.run([sys.executable, str(RENDER), "--pod", "phalanx-0", "--base",
                               str(tmp_path / "bad.toml"), "--output", str(tmp_path / "o.toml"),
                               "--zone-source", "static", "--data-dir", str(tmp_path / "d")],
                              capture_output=True, text=True, timeout=30, check=False,
                              env={**os.environ, "PHALANX_ZONES": "a,b,c"})
    assert reserved.returncode != 0 and "id is set per pod" in reserved.stderr
    assert not (tmp_path / "o.toml").exists()
    (tmp_path / "typo.toml").write_text("shard = 3\n")
    typo = subprocess.run([sys.executable, str(RENDER), "--pod", "phalanx-0", "--base",
                           str(tmp_path / "typo.toml"), "--output", str(tmp_path / "o.toml"),
                           "--zone-source", "static", "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ, "PHALANX_ZONES": "a,b,c"})
    assert typo.returncode != 0 and "unknown field(s) shard" in typo.stderr


class FakeApiServer:
    """Just enough of the Kubernetes API for the renderer: GET pod, GET node (on loopback)."""

    def __init__(self, pods: dict[str, str], zones: dict[str, str | None]) -> None:
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append((self.path, self.headers.get("Authorization", "")))
                body: dict[str, Any] | None = None
                if match := re.fullmatch(r"/api/v1/namespaces/db/pods/([\w-]+)", self.path):
                    if match.group(1) in pods:
                        body = {"spec": {"nodeName": pods[match.group(1)]}}
                elif match := re.fullmatch(r"/api/v1/nodes/([\w-]+)", self.path):
                    zone = zones.get(match.group(1))
                    labels = {ZONE_KEY: zone, "topology.kubernetes.io/region": "eu"} if zone \
                        else {}
                    body = {"metadata": {"labels": labels}}
                payload = json.dumps(body).encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_renderer_reads_zones_through_the_api(tmp_path: Path) -> None:
    from phalanx.server.config import load_config

    token = tmp_path / "token"
    token.write_text("t0ken\n")
    pods = {"phalanx-0": "node-a", "phalanx-1": "node-b", "phalanx-2": "node-c"}
    zones: dict[str, str | None] = {"node-a": "eu-1a", "node-b": "eu-1b", "node-c": "eu-1c"}
    with FakeApiServer(pods, zones) as api:
        result = run_render(tmp_path, "phalanx-1", "--api-server", api.url,
                            "--token-file", str(token), "--wait-s", "5")
    assert result.returncode == 0, result.stderr
    config = load_config(tmp_path / "node.toml")
    assert [(p.zone, p.region) for p in config.peers] == [
        ("eu-1a", "eu"), ("eu-1b", "eu"), ("eu-1c", "eu")]
    assert api.requests and all(auth == "Bearer t0ken" for _, auth in api.requests)

    # A node without a zone label, or a bootstrap pod that never gets scheduled: no config.
    zones["node-c"] = None
    with FakeApiServer(pods, zones) as api:
        unlabeled = run_render(tmp_path, "phalanx-0", "--api-server", api.url,
                               "--token-file", str(token), data_dir=tmp_path / "d1")
    assert unlabeled.returncode != 0 and "has no topology.kubernetes.io/zone" in unlabeled.stderr
    del pods["phalanx-2"]
    with FakeApiServer(pods, zones) as api:
        pending = run_render(tmp_path, "phalanx-0", "--api-server", api.url,
                             "--token-file", str(token), "--wait-s", "0",
                             data_dir=tmp_path / "d2")
    assert pending.returncode != 0 and "phalanx-2 is not scheduled" in pending.stderr


# --- Dockerfile ------------------------------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def exec_form(arguments: str) -> list[str]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)
    return parsed


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    instructions = dockerfile_instructions(text)
    stages = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    if not stages:
        return ["no FROM"]
    for index in stages:
        image = instructions[index][1].split()[0]
        if not image.startswith("python:3.11-slim"):
            problems.append(f"FROM {image}: expected python:3.11-slim")
    final = instructions[stages[-1]:]
    keywords = [keyword for keyword, _ in final]
    for required in ("USER", "EXPOSE", "HEALTHCHECK", "VOLUME", "ENTRYPOINT", "CMD"):
        if required not in keywords:
            problems.append(f"the final stage has no {required}")
    arguments = {keyword: value for keyword, value in final}  # last one wins, as in Docker
    user = arguments.get("USER", "root").split(":")[0]
    if user in ("root", "0"):
        problems.append("the image must run as a non-root USER")
    exposed = set(arguments.get("EXPOSE", "").split())
    if not {"6379", "7000", "8080"} <= exposed:
        problems.append(f"EXPOSE {sorted(exposed)} lacks one of 6379 7000 8080")
    if "VOLUME" in arguments and "/data" not in arguments["VOLUME"]:
        problems.append("VOLUME must include /data")
    health = arguments.get("HEALTHCHECK", "")
    if "/health" not in health or "CMD" not in health:
        problems.append("HEALTHCHECK must run a command against /health")
    if re.search(r"\b(curl|wget)\b", health):
        problems.append("HEALTHCHECK must not depend on curl/wget (the slim image has neither)")
    if "ENTRYPOINT" in arguments:
        entrypoint = exec_form(arguments["ENTRYPOINT"])
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        if entrypoint[0] not in scripts:
            problems.append(f"ENTRYPOINT {entrypoint[0]!r} is not a [project.scripts] command")
    for keyword, value in instructions:
        if keyword != "COPY" or "--from=" in value:
            continue
        sources = [part for part in shlex.split(value) if not part.startswith("--")][:-1]
        for source in sources:
            if not (ROOT / source).exists():
                problems.append(f"COPY {source}: not in the repository (the build context)")
    return problems


def test_the_dockerfile_is_complete() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(("old", "new"), [
    ("USER 10001:10001", "USER root"),
    ("EXPOSE 6379 7000 8080", "EXPOSE 6379 8080"),
    ('ENTRYPOINT ["phalanx"]', 'ENTRYPOINT ["phalanx-server"]'),
    ("HEALTHCHECK", "# HEALTHCHECK"),
    ("COPY src ./src", "COPY source ./src"),
    ("FROM python:3.11-slim\n", "FROM python:3.12\n"),
])
def test_the_dockerfile_check_catches_mistakes(old: str, new: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    assert dockerfile_problems(text.replace(old, new)) != []


def test_the_image_command_is_a_real_cli_invocation() -> None:
    from phalanx.cli import main

    instructions = dict(dockerfile_instructions(DOCKERFILE.read_text()))
    command = exec_form(instructions["CMD"])
    assert command[0] in main.commands  # type: ignore[attr-defined]
    options = {opt for param in main.commands[command[0]].params  # type: ignore[attr-defined]
               for opt in param.opts}
    assert {arg for arg in command[1:] if arg.startswith("--")} <= options
    ignore = (DEPLOY / "dockerignore.example").read_text()
    for needed in ("!pyproject.toml", "!README.md", "!src/",
                   "!deploy/kubernetes/render_node_config.py"):
        assert needed in ignore.splitlines()




@pytest.fixture
def running_node(tmp_path: Path) -> Iterator[Path]:
    """One real single-node phalanx on loopback, from a TOML file like the image's."""
    resp, peer, admin = free_port(), free_port(), free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'id = "n1"\ndata_dir = "{tmp_path / "data"}"\n\n[[peers]]\nid = "n1"\n'
                      f'peer = "127.0.0.1:{peer}"\nresp = "127.0.0.1:{resp}"\n'
                      f'admin = "127.0.0.1:{admin}"\nzone = "z1"\n')
    process = subprocess.Popen([sys.executable, "-m", "phalanx", "node", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/health", timeout=1):
                    break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the node did not answer /health in 15 s"
                time.sleep(0.1)
        yield config
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_healthcheck_command_probes_a_real_node(running_node: Path, tmp_path: Path) -> None:
    health = dict(dockerfile_instructions(DOCKERFILE.read_text()))["HEALTHCHECK"]
    command = exec_form(health.split(" CMD ", 1)[1])
    assert command[0] == "python"
    command[0] = sys.executable
    environment = {**os.environ, "PHALANX_CONFIG": str(running_node)}
    healthy = subprocess.run(command, env=environment, capture_output=True, timeout=10,
                             check=False)
    assert healthy.returncode == 0, healthy.stderr
    # Nothing listening on the configured admin address: unhealthy.
    environment["PHALANX_HEALTH_ADDR"] = f"127.0.0.1:{free_port()}"
    unhealthy = subprocess.run(command, env=environment, capture_output=True, timeout=10,
                               check=False)
    assert unhealthy.returncode != 0


# --- systemd ---------------------------------------------------------------------------------
def unit_sections(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None,
                                          comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def unit_problems(text: str) -> list[str]:
    problems = []
    try:
        unit = unit_sections(text)
    except configparser.Error as error:
        return [f"not an INI file: {error}"]
    for section in ("Unit", "Service", "Install"):
        if not unit.has_section(section):
            problems.append(f"no [{section}] section")
    if problems:
        return problems
    service = unit["Service"]
    expected = {"Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                "User": "phalanx"}
    for key, value in expected.items():
        if service.get(key) != value:
            problems.append(f"{key}={service.get(key)} (expected {value})")
    exec_start = shlex.split(service.get("ExecStart", ""))
    if exec_start[1:] != ["node", "--config", "/etc/phalanx/%i.toml"] \
            or Path(exec_start[0] if exec_start else "").name != "phalanx":
        problems.append(f"ExecStart {exec_start} does not run `phalanx node --config "
                        "/etc/phalanx/%i.toml`")
    data_dir = "/var/lib/" + service.get("StateDirectory", "")
    if data_dir != "/var/lib/phalanx/%i":
        problems.append("StateDirectory must be phalanx/%i (data_dir /var/lib/phalanx/<id>)")
    if data_dir not in service.get("ReadWritePaths", "").split():
        problems.append("ReadWritePaths must include the data directory")
    if not service.get("LimitNOFILE", "").isdigit() or int(service["LimitNOFILE"]) < 10_000:
        problems.append("LimitNOFILE must allow >= 10000 files (max_clients defaults to 10000)")
    if unit["Install"].get("WantedBy") != "multi-user.target":
        problems.append("WantedBy=multi-user.target is missing")
    return problems


def test_the_systemd_unit_has_what_a_node_needs() -> None:
    assert unit_problems(UNIT.read_text()) == []


@pytest.mark.parametrize(("old", "new"), [
    ("Restart=on-failure", "Restart=always"),
    ("ProtectSystem=strict", "ProtectSystem=full"),
    ("ReadWritePaths=/var/lib/phalanx/%i", "ReadWritePaths=/var/lib/other"),
    ("[Install]", "[Installation]"),
    ("--config /etc/phalanx/%i.toml", "--config /etc/phalanx/node.toml"),
])
def test_the_unit_check_catches_mistakes(old: str, new: str) -> None:
    text = UNIT.read_text()
    assert old in text
    assert unit_problems(text.replace(old, new)) != []


def systemd_verify(text: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on an instance of the template, ExecStart pointed at this venv's
    phalanx (verify insists that the binary exists; /opt/phalanx is not installed here)."""
    phalanx = shutil.which("phalanx", path=str(Path(sys.executable).parent))
    assert phalanx, "the phalanx script is not installed next to this Python"
    instance = directory / "phalanx@n1.service"
    instance.write_text(text.replace("/opt/phalanx/bin/phalanx", phalanx))
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(instance)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        # Without the binary, test_the_systemd_unit_has_what_a_node_needs is the check.
        assert unit_problems(UNIT.read_text()) == []
        return
    result = systemd_verify(UNIT.read_text(), tmp_path)
    # verify exits 0 even for unknown keys and unparsable values: it prints them instead.
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_systemd_analyze_verify_catches_a_bad_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        assert unit_problems(UNIT.read_text().replace("[Service]", "[Servce]")) != []
        return
    broken = UNIT.read_text().replace("RestartSec=2s", "RestartSecs=2s")
    result = systemd_verify(broken, tmp_path)
    assert "Unknown key" in result.stderr, result.stderr


# --- docs/three-machines.md ------------------------------------------------------------------
def test_the_three_machine_guide_configs_load(tmp_path: Path) -> None:
    from phalanx.server.config import load_config

    guide = (ROOT / "docs" / "three-machines.md").read_text()
    # Whole node configs open with their id; other toml blocks are snippets (the peer TLS keys).
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", guide, re.DOTALL)
              if b.startswith("id = ")]
    assert len(blocks) == 2, "the guide shows n1.toml and n4.toml"
    bootstrap, joining = blocks
    configs = []
    for node in ("n1", "n2", "n3"):  # the guide: n2 and n3 differ only in id and data_dir
        path = tmp_path / f"{node}.toml"
        path.write_text(bootstrap.replace('"n1"\ndata_dir = "/var/lib/phalanx/n1"',
                                          f'"{node}"\ndata_dir = "/var/lib/phalanx/{node}"'))
        configs.append(load_config(path))
    assert [c.id for c in configs] == ["n1", "n2", "n3"]
    assert len({c.me.zone for c in configs}) == 3
    assert all(c.peers == configs[0].peers for c in configs)
    assert all(c.data_dir == f"/var/lib/phalanx/{c.id}" for c in configs)  # the unit's path
    (tmp_path / "n4.toml").write_text(joining)
    n4 = load_config(tmp_path / "n4.toml")
    assert n4.join == configs[0].me.resp and [p.id for p in n4.peers] == ["n4"]
    assert n4.cluster == configs[0].cluster and n4.cluster_secret == configs[0].cluster_secret
    for port in ("6379", "7000", "8080"):
        assert port in guide
    # The snippets name real NodeConfig keys (the peer TLS ones are loaded by the TLS tests).
    import dataclasses

    from phalanx.server.config import NodeConfig

    fields = {f.name for f in dataclasses.fields(NodeConfig)}
    for snippet in re.findall(r"```toml\n(.*?)```", guide, re.DOTALL):
        keys = re.findall(r"^(\w+) =", snippet, re.MULTILINE)
        assert keys and set(keys) <= fields | {"id", "peer", "resp", "admin", "zone", "region"}, keys
