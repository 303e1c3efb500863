"""Offline checks of redguard's container image recipe and Kubernetes manifests.

Run from the repository root:  bash deploy/check.sh   (or: python3 -m pytest -q deploy/tests)

- The kustomize base (native sidecar) and the classic-sidecar overlay are rendered with
  `kubectl kustomize` (no cluster involved).
- Every built-in object is validated with kubernetes-validate against the Kubernetes OpenAPI
  schemas bundled in the package, in strict mode (unknown fields fail), with the network
  disabled for the duration of the check.
- PodMonitor and PrometheusRule are validated against the JSON Schemas in ./schemas.
- Then the wiring between the objects is checked: socket, probes, ports, secrets, security,
  resources, and the generated alert rules and dashboard against their sources.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path, PurePosixPath

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "kubernetes" / "base"
OVERLAY = DEPLOY / "kubernetes" / "overlays" / "classic-sidecar"
KPS_OVERLAY = DEPLOY / "kubernetes" / "overlays" / "kube-prometheus-stack"
COMPONENT = DEPLOY / "kubernetes" / "components" / "redguard-sidecar"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
RULES_FILE = REPO / "alerts" / "redguard.rules.yml"
DASHBOARD_FILE = REPO / "dashboards" / "redguard.json"
LINKS_FILE = DEPLOY / "links.yaml"
SIDECAR_CONFIG = COMPONENT / "redguard.yaml"

# Native sidecars (init containers with restartPolicy: Always) are on by default from 1.29.
K8S_VERSION = "1.29.0"
# The oldest schema kubernetes-validate ships: the classic-sidecar overlay must be valid there.
OLDEST_K8S_VERSION = "1.25.0"
# The newest release without `restartPolicy` on containers: the base must NOT be valid there.
PRE_SIDECAR_K8S_VERSION = "1.27.0"

VARIANTS = {"base": BASE, "classic-sidecar": OVERLAY, "kube-prometheus-stack": KPS_OVERLAY}
SIDECAR = "redguard"
REDGUARD_UID = 65532
CRD_GROUP = "monitoring.coreos.com/"

# Keys of redguard's configuration file, from examples/redguard.yaml, which holds every key (tests/docs.rs
# holds it to the config structs): a misspelt key in the shipped configs fails here rather than at pod start.
CONFIG_KEYS = {
    section: set(keys or {})
    for section, keys in yaml.safe_load((REPO / "examples" / "redguard.yaml").read_text()).items()
}
SINK_KEYS = {"slack": {"type", "url_file"}, "pagerduty": {"type", "routing_key_file"}}
NOTIFY_GRACE_SECONDS = 5


# --------------------------------------------------------------------------------------------
# helpers


def kustomize(path: Path) -> list[dict]:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def objects(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def only(docs: list[dict], kind: str) -> dict:
    found = objects(docs, kind)
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def pod_spec(docs: list[dict]) -> dict:
    return only(docs, "Deployment")["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec.get("containers", [])


def sidecar(spec: dict) -> dict:
    found = [c for c in all_containers(spec) if c["name"] == SIDECAR]
    assert len(found) == 1, f"expected one container named {SIDECAR}, found {len(found)}"
    return found[0]


def app_containers(spec: dict) -> list[dict]:
    apps = [c for c in spec.get("containers", []) if c["name"] != SIDECAR]
    assert apps, "no application container"
    return apps


def volume(spec: dict, name: str) -> dict:
    found = [v for v in spec.get("volumes", []) if v["name"] == name]
    assert len(found) == 1, f"expected one volume named {name}"
    return found[0]


def mount_of(container: dict, volume_name: str) -> dict | None:
    for m in container.get("volumeMounts", []):
        if m["name"] == volume_name:
            return m
    return None


def config_mount(docs: list[dict]) -> tuple[dict, str]:
    """The redguard config as rendered: parsed file, and its path inside the container."""
    spec = pod_spec(docs)
    rg = sidecar(spec)
    args = rg.get("args", [])
    assert "--config" in args, "redguard must be started with --config"
    config_path = PurePosixPath(args[args.index("--config") + 1])
    # Find the volume mounted at the config's directory and the ConfigMap behind it.
    for m in rg.get("volumeMounts", []):
        if PurePosixPath(m["mountPath"]) == config_path.parent:
            cm_name = volume(spec, m["name"])["configMap"]["name"]
            cms = [c for c in objects(docs, "ConfigMap") if c["metadata"]["name"] == cm_name]
            assert len(cms) == 1, f"ConfigMap {cm_name} (referenced by the pod) is not rendered"
            data = cms[0]["data"]
            assert config_path.name in data, f"{cm_name} has no key {config_path.name}"
            return yaml.safe_load(data[config_path.name]), str(config_path)
    raise AssertionError(f"no volume is mounted at {config_path.parent}")


def rendered_config(docs: list[dict]) -> dict:
    return config_mount(docs)[0]


def admin_port(config: dict) -> int:
    host, _, port = config["admin"]["listen"].rpartition(":")
    assert host in ("0.0.0.0", "[::]", "::"), (
        f"admin.listen {config['admin']['listen']!r} is not reachable by the kubelet or "
        "Prometheus from outside the pod"
    )
    return int(port)


def resolve_port(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert named, f"container {container['name']} has no port named {port!r}"
    return named[0]


def load_schema(name: str) -> dict:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


CRD_SCHEMAS = {
    "PodMonitor": "podmonitor.schema.json",
    "PrometheusRule": "prometheusrule.schema.json",
}


def crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(CRD_SCHEMAS[kind]))


def parse_quantity(q: str | int) -> float:
    """Kubernetes resource quantity to a float (cores or bytes)."""
    units = {
        "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9,
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
    }
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q))
    assert match and match.group(2) in units, f"unsupported quantity {q!r}"
    return float(match.group(1)) * units[match.group(2)]


def parse_seconds(duration: str) -> float:
    units = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


@pytest.fixture
def no_network(monkeypatch):
    """Fail any attempt to open a network connection during the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted during an offline check: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


class _Rendered(dict):
    """Variant name -> rendered objects, rendered on first use (a broken overlay must not
    hide what the base tests have to say)."""

    def __missing__(self, name: str) -> list[dict]:
        assert shutil.which("kubectl"), "kubectl (with built-in kustomize) is required"
        self[name] = kustomize(VARIANTS[name])
        return self[name]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    return _Rendered()


@pytest.fixture(params=list(VARIANTS))
def variant(request, rendered) -> tuple[str, list[dict]]:
    return request.param, rendered[request.param]


# --------------------------------------------------------------------------------------------
# rendering and schema validation


def test_renders_expected_objects(variant):
    name, docs = variant
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    config_maps = [n for k, n in kinds if k == "ConfigMap"]
    assert ("Deployment", "example-app") in kinds
    assert ("PodMonitor", "redguard") in kinds
    assert ("PrometheusRule", "redguard") in kinds
    assert "redguard-dashboard" in config_maps
    # Generated from redguard.yaml with a content hash, so a config change rolls the pods.
    assert any(re.fullmatch(r"redguard-config-[a-z0-9]{10}", n) for n in config_maps), kinds
    # Secrets are never part of the rendered manifests.
    assert not objects(docs, "Secret"), f"{name} renders a Secret"
    assert len(docs) == 5, kinds


def test_builtin_objects_are_valid_kubernetes_offline(variant, no_network):
    name, docs = variant
    versions = [K8S_VERSION] + ([OLDEST_K8S_VERSION] if name == "classic-sidecar" else [])
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUP):
            continue
        for version in versions:
            # strict: unknown fields are errors (as with kubectl's default field validation)
            kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 3


def test_base_needs_native_sidecar_support(rendered, no_network):
    """The base is only valid from 1.28 on (container restartPolicy); the overlay covers older."""
    deployment = only(rendered["base"], "Deployment")
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolicy"):
        kubernetes_validate.validate(deployment, PRE_SIDECAR_K8S_VERSION, strict=True)


def test_strict_validation_rejects_unknown_fields(rendered, no_network):
    deployment = copy.deepcopy(only(rendered["base"], "Deployment"))
    deployment["spec"]["template"]["spec"]["initContainers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_crd_objects_match_schemas(variant):
    _, docs = variant
    crds = [d for d in docs if d["apiVersion"].startswith(CRD_GROUP)]
    assert sorted(d["kind"] for d in crds) == ["PodMonitor", "PrometheusRule"]
    for doc in crds:
        crd_validator(doc["kind"]).validate(doc)


@pytest.mark.parametrize(
    "kind,break_it",
    [
        ("PodMonitor", lambda d: d["spec"].update(podMetricEndpoints=d["spec"].pop("podMetricsEndpoints"))),
        ("PodMonitor", lambda d: d["spec"]["podMetricsEndpoints"][0].update(port=9190)),
        ("PodMonitor", lambda d: d["spec"]["podMetricsEndpoints"][0].update(intervall="30s")),
        ("PodMonitor", lambda d: d["spec"].pop("selector")),
        ("PodMonitor", lambda d: d["metadata"].update(lables={})),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0].update(rule=[])),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0].pop("name")),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(exp="up")),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(alert="A", record="r")),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update({"for": "5 minutes"})),
        ("PrometheusRule", lambda d: d.update(kind="PrometheusRules")),
    ],
    ids=[
        "podmonitor-misspelt-endpoints", "podmonitor-port-not-a-name", "podmonitor-misspelt-interval",
        "podmonitor-no-selector", "podmonitor-misspelt-labels", "rule-misspelt-rules",
        "rule-group-without-name", "rule-misspelt-expr", "rule-alert-and-record",
        "rule-bad-duration", "rule-wrong-kind",
    ],
)
def test_crd_schemas_reject_mistakes(rendered, kind, break_it):
    doc = copy.deepcopy(only(rendered["base"], kind))
    crd_validator(kind).validate(doc)  # valid before
    break_it(doc)
    with pytest.raises(jsonschema.ValidationError):
        crd_validator(kind).validate(doc)


# --------------------------------------------------------------------------------------------
# sidecar placement


def test_sidecar_is_native_in_base(rendered):
    spec = pod_spec(rendered["base"])
    init = {c["name"]: c for c in spec.get("initContainers", [])}
    assert SIDECAR in init, "redguard must be an init container in the base"
    assert init[SIDECAR].get("restartPolicy") == "Always", "native sidecar needs restartPolicy Always"
    assert SIDECAR not in {c["name"] for c in spec["containers"]}
    # A native sidecar's startupProbe gates the start of the app containers.
    assert "startupProbe" in init[SIDECAR]


def test_sidecar_is_classic_in_overlay(rendered):
    spec = pod_spec(rendered["classic-sidecar"])
    assert SIDECAR not in {c["name"] for c in spec.get("initContainers", [])}
    containers = {c["name"]: c for c in spec["containers"]}
    assert SIDECAR in containers, "redguard must be a regular container in the overlay"
    assert "restartPolicy" not in containers[SIDECAR]
    # Same container otherwise.
    native = dict(sidecar(pod_spec(rendered["base"])))
    native.pop("restartPolicy")
    assert containers[SIDECAR] == native


# --------------------------------------------------------------------------------------------
# wiring


def test_socket_is_shared_through_emptydir(variant):
    _, docs = variant
    spec = pod_spec(docs)
    config = rendered_config(docs)
    socket_path = PurePosixPath(config["listen"]["socket"])
    rg = sidecar(spec)
    socket_mounts = [
        m for m in rg.get("volumeMounts", [])
        if socket_path.parent == PurePosixPath(m["mountPath"])
    ]
    assert len(socket_mounts) == 1, f"no volume mounted at {socket_path.parent} in redguard"
    mount = socket_mounts[0]
    assert not mount.get("readOnly", False) and not mount.get("subPath")
    vol = volume(spec, mount["name"])
    assert "emptyDir" in vol, "the socket volume must be an emptyDir"
    for app in app_containers(spec):
        app_mount = mount_of(app, vol["name"])
        assert app_mount, f"{app['name']} does not mount the socket volume"
        assert app_mount["mountPath"] == mount["mountPath"]
        env = {e["name"]: e.get("value") for e in app.get("env", [])}
        assert env.get("REDGUARD_SOCKET") == str(socket_path), (
            f"{app['name']}: REDGUARD_SOCKET must equal listen.socket ({socket_path})"
        )
    # Group-accessible socket, and the group is shared through fsGroup.
    assert config["listen"]["socket_mode"] == "0660"
    assert spec["securityContext"]["fsGroup"] == rg["securityContext"]["runAsGroup"]


def test_resp_socket_is_in_the_shared_volume_and_the_app_has_its_url(variant):
    """The RESP socket sits beside the JSON one, in the volume the app mounts, under the same mode and group (so
    the app connects whatever uid it runs as), and the app's REDIS_URL names exactly it."""
    _, docs = variant
    spec = pod_spec(docs)
    config = rendered_config(docs)
    resp = PurePosixPath(config["listen"]["resp_socket"])
    socket_path = PurePosixPath(config["listen"]["socket"])
    assert resp.is_absolute() and resp != socket_path
    assert resp.parent == socket_path.parent, "the RESP socket must be in the shared socket volume"
    rg = sidecar(spec)
    mounts = [m for m in rg["volumeMounts"] if PurePosixPath(m["mountPath"]) == resp.parent]
    assert len(mounts) == 1 and "emptyDir" in volume(spec, mounts[0]["name"]), mounts
    for app in app_containers(spec):
        app_mount = mount_of(app, mounts[0]["name"])
        assert app_mount and PurePosixPath(app_mount["mountPath"]) == resp.parent, app["name"]
        env = {e["name"]: e.get("value") for e in app.get("env", [])}
        assert env.get("REDIS_URL") == f"unix://{resp}", (
            f"{app['name']}: REDIS_URL must be unix:// + listen.resp_socket ({resp})"
        )
    # The same group access as the JSON socket: socket_mode and socket_group cover both.
    assert config["listen"]["socket_mode"] == "0660" and "socket_group" not in config["listen"]
    assert spec["securityContext"]["fsGroup"] == rg["securityContext"]["runAsGroup"]


def test_logs_are_json_by_the_config_not_a_flag(variant):
    _, docs = variant
    assert rendered_config(docs)["log"]["format"] == "json"
    args = sidecar(pod_spec(docs)).get("args", [])
    assert not any(a.startswith("--log-format") for a in args), args


def test_probes_use_admin_listener(variant):
    _, docs = variant
    rg = sidecar(pod_spec(docs))
    port = admin_port(rendered_config(docs))
    expected = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for probe_name, path in expected.items():
        probe = rg.get(probe_name)
        assert probe, f"redguard has no {probe_name}"
        assert probe["httpGet"]["path"] == path, probe_name
        assert resolve_port(rg, probe["httpGet"]["port"]) == port, probe_name
        assert probe.get("periodSeconds", 10) >= 1 and probe.get("failureThreshold", 3) >= 1
    # The startup probe must give redguard some seconds to start before liveness takes over.
    startup = rg["startupProbe"]
    assert startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) >= 10
    admin_ports = [p for p in rg["ports"] if p["containerPort"] == port]
    assert [p["name"] for p in admin_ports] == ["admin"]


def test_podmonitor_selects_pods_and_admin_port(variant):
    _, docs = variant
    monitor = only(docs, "PodMonitor")
    template = only(docs, "Deployment")["spec"]["template"]
    selector = monitor["spec"]["selector"]
    assert set(selector) == {"matchLabels"}, "keep the selector simple: matchLabels only"
    pod_labels = template["metadata"]["labels"]
    assert selector["matchLabels"].items() <= pod_labels.items(), "PodMonitor does not select the pods"
    spec = template["spec"]
    port_names = {p.get("name") for c in all_containers(spec) for p in c.get("ports", [])}
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    for endpoint in endpoints:
        assert endpoint["port"] in port_names, f"no container port named {endpoint['port']!r}"
        assert endpoint["path"] == "/metrics"
    # The port scraped is redguard's admin port.
    rg = sidecar(spec)
    assert resolve_port(rg, endpoints[0]["port"]) == admin_port(rendered_config(docs))


def test_podmonitor_job_matches_alert_rules(variant):
    """RedguardTargetDown/-Missing select `up{job=~".*redguard.*"}`; a PodMonitor's job label
    is <namespace>/<name> unless jobLabel overrides it."""
    _, docs = variant
    monitor = only(docs, "PodMonitor")
    assert "jobLabel" not in monitor["spec"]
    assert "redguard" in monitor["metadata"]["name"]
    expressions = [
        r["expr"] for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]
    ]
    for expr in expressions:
        for job_regex in re.findall(r'job=~"([^"]+)"', str(expr)):
            assert re.fullmatch(job_regex, f"some-namespace/{monitor['metadata']['name']}"), job_regex


def test_one_scrape_mechanism(variant):
    """The PodMonitor scrapes the pods; prometheus.io/* annotations as well would make an annotation job
    scrape every pod a second time (every series twice, every alert twice)."""
    _, docs = variant
    assert len(objects(docs, "PodMonitor")) == 1
    for doc in docs:
        for meta in (doc["metadata"], doc.get("spec", {}).get("template", {}).get("metadata", {})):
            scrape = [a for a in meta.get("annotations", {}) if a.startswith("prometheus.io/")]
            assert not scrape, f"{doc['kind']} {doc['metadata']['name']}: {scrape}"


def test_downward_api_env(variant):
    _, docs = variant
    env = {e["name"]: e for e in sidecar(pod_spec(docs)).get("env", [])}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_secrets_are_mounted_files(variant):
    _, docs = variant
    spec = pod_spec(docs)
    rg = sidecar(spec)
    secret_volumes = [v for v in spec["volumes"] if "secret" in v]
    assert len(secret_volumes) == 1
    vol = secret_volumes[0]
    assert vol["secret"]["secretName"] == "redguard-secrets"
    assert vol["secret"].get("defaultMode") in (0o400, 0o440), "secret files must not be world-readable"
    mount = mount_of(rg, vol["name"])
    assert mount and mount.get("readOnly") is True, "secrets must be mounted read-only"
    secret_dir = PurePosixPath(mount["mountPath"])
    for app in app_containers(spec):
        assert not mount_of(app, vol["name"]), "the app does not need redguard's secrets"

    # The config refers to the secrets by *_file keys that point into the mount.
    config = rendered_config(docs)
    files = [config["redis"]["password_file"]]
    assert "password" not in config["redis"]
    for path in files:
        assert PurePosixPath(path).parent == secret_dir, f"{path} is not in the secret mount"

    # No secret ever travels as an environment variable, literal or not.
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|ROUTING_KEY|WEBHOOK", re.I)
    for c in all_containers(spec):
        assert not c.get("envFrom"), f"{c['name']}: envFrom could inject secrets as env"
        for e in c.get("env", []):
            assert not secretish.search(e["name"]), f"{c['name']}: env {e['name']} looks like a secret"
            assert "secretKeyRef" not in e.get("valueFrom", {}), f"{c['name']}: secret as env"


def test_example_secret_is_documented_but_not_rendered(rendered, no_network):
    example_path = BASE / "secret.example.yaml"
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert example_path.name not in kustomization.get("resources", [])
    secret = yaml.safe_load(example_path.read_text())
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    spec = pod_spec(rendered["base"])
    secret_volume = next(v for v in spec["volumes"] if "secret" in v)
    assert secret["metadata"]["name"] == secret_volume["secret"]["secretName"]
    # Every file the config reads exists as a key of the example Secret.
    mount = mount_of(sidecar(spec), secret_volume["name"])
    config = rendered_config(rendered["base"])
    wanted = {config["redis"]["password_file"]} | {
        s.get("url_file") or s.get("routing_key_file") for s in (config.get("notify") or {}).get("sinks", [])
    }
    keys = set(secret["stringData"])
    assert {str(PurePosixPath(mount["mountPath"]) / k) for k in keys} == wanted
    # Obviously fake values, and none of them leaks into the rendered manifests.
    text = yaml.safe_dump_all(rendered["base"])
    for key, value in secret["stringData"].items():
        assert "CHANGE" in value, f"{key} does not look like a placeholder"
        assert value not in text


def test_security_context(variant):
    _, docs = variant
    spec = pod_spec(docs)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["fsGroup"] == REDGUARD_UID
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec.get("automountServiceAccountToken") is False
    for c in all_containers(spec):
        sc = c.get("securityContext", {})
        assert sc.get("runAsNonRoot") is True, c["name"]
        assert sc.get("readOnlyRootFilesystem") is True, c["name"]
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert sc.get("privileged", False) is False, c["name"]
        assert sc.get("capabilities") == {"drop": ["ALL"]}, c["name"]
        assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}, c["name"]
        assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0, c["name"]
    rg = sidecar(spec)["securityContext"]
    assert rg["runAsUser"] == REDGUARD_UID and rg["runAsGroup"] == REDGUARD_UID


def test_resources(variant):
    _, docs = variant
    for c in all_containers(pod_spec(docs)):
        res = c.get("resources", {})
        requests, limits = res.get("requests", {}), res.get("limits", {})
        assert {"cpu", "memory"} <= set(requests), f"{c['name']}: cpu and memory requests"
        assert "memory" in limits, f"{c['name']}: memory limit"
        for key, limit in limits.items():
            assert parse_quantity(requests.get(key, limit)) <= parse_quantity(limit), (c["name"], key)


def test_termination_grace_covers_drain(variant):
    _, docs = variant
    spec = pod_spec(docs)
    drain = parse_seconds(rendered_config(docs)["listen"].get("drain_timeout", "10s"))
    assert spec.get("terminationGracePeriodSeconds", 30) > drain + NOTIFY_GRACE_SECONDS


def test_images_are_pinned(variant):
    _, docs = variant
    for c in all_containers(pod_spec(docs)):
        image = c["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert "@sha256:" in image or (tag and tag != "latest"), f"{c['name']}: unpinned image {image}"


def check_config_keys(config: dict, where: str) -> None:
    unknown = set(config) - set(CONFIG_KEYS)
    assert not unknown, f"{where}: unknown sections {unknown}"
    for section, values in config.items():
        unknown = set(values or {}) - CONFIG_KEYS[section]
        assert not unknown, f"{where}: unknown keys in {section}: {unknown}"
    for sink in (config.get("notify") or {}).get("sinks", []):
        assert sink.get("type") in SINK_KEYS, f"{where}: unknown sink {sink}"
        assert set(sink) <= SINK_KEYS[sink["type"]], f"{where}: unknown sink keys {sink}"
    mode = (config.get("listen") or {}).get("socket_mode")
    assert mode is None or isinstance(mode, str), f"{where}: quote socket_mode, YAML reads 0660 as a number"


def test_kubernetes_config_follows_contract(variant):
    _, docs = variant
    check_config_keys(rendered_config(docs), "ConfigMap redguard-config")


def test_image_default_config():
    config = yaml.safe_load((DEPLOY / "redguard.yaml").read_text())
    check_config_keys(config, "deploy/redguard.yaml")
    assert config["listen"]["socket"] == "/var/run/redguard/redguard.sock"
    assert config["admin"]["listen"] == "0.0.0.0:9190"


@pytest.mark.skipif(
    not os.environ.get("REDGUARD_BIN"),
    reason="set REDGUARD_BIN=target/release/redguard to check the configs with the binary",
)
def test_configs_pass_redguard_check_config(rendered, tmp_path):
    binary = os.environ["REDGUARD_BIN"]
    # check-config reads the secret files: point them at placeholders.
    config = rendered_config(rendered["base"])
    secrets = tmp_path / "secrets"
    secrets.mkdir()

    def relocate(path: str, content: str = "placeholder") -> str:
        target = secrets / PurePosixPath(path).name
        target.write_text(content + "\n")
        return str(target)

    config["redis"]["password_file"] = relocate(config["redis"]["password_file"])
    for sink in config.get("notify", {}).get("sinks", []):
        if "url_file" in sink:
            sink["url_file"] = relocate(sink["url_file"], "https://hooks.example.invalid/placeholder")
        if "routing_key_file" in sink:
            sink["routing_key_file"] = relocate(sink["routing_key_file"])
    rendered_file = tmp_path / "redguard.yaml"
    rendered_file.write_text(yaml.safe_dump(config))
    # check-config also checks the socket paths on this host, as `run` would (their directory must exist): the
    # pod's /var/run/redguard is an emptyDir, so point the sockets at a temp dir here (the RESP socket only where
    # the config sets one).
    assert config["listen"].get("resp_socket"), "the sidecar's config sets listen.resp_socket"
    config["listen"]["resp_socket"] = str(tmp_path / "redis.sock")
    rendered_file.write_text(yaml.safe_dump(config))
    env = {**os.environ, "REDGUARD_LISTEN_SOCKET": str(tmp_path / "redguard.sock")}
    for path in (DEPLOY / "redguard.yaml", rendered_file):
        proc = subprocess.run([binary, "check-config", str(path)], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, f"{path}: {proc.stdout}{proc.stderr}"


# --------------------------------------------------------------------------------------------
# generated objects: alert rules and dashboard


def test_prometheusrule_groups_equal_rules_file(variant):
    _, docs = variant
    source = yaml.safe_load(RULES_FILE.read_text())
    rule = only(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == source["groups"], (
        f"PrometheusRule differs from {RULES_FILE.name}: run python3 deploy/generate.py"
    )
    names = [g["name"] for g in source["groups"]]
    assert len(names) == len(set(names)), "rule group names must be unique"


def test_dashboard_configmap_equals_dashboard_file(variant):
    _, docs = variant
    cm = [c for c in objects(docs, "ConfigMap") if c["metadata"]["name"] == "redguard-dashboard"]
    assert len(cm) == 1
    assert cm[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm[0]["data"] == {DASHBOARD_FILE.name: DASHBOARD_FILE.read_text(encoding="utf-8")}, (
        f"dashboard ConfigMap differs from {DASHBOARD_FILE.name}: run python3 deploy/generate.py"
    )


def run_generate(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "deploy" / "generate.py"), *args],
        capture_output=True, text=True, check=False,
    )


def test_generate_check_passes():
    proc = run_generate(REPO, "--check")
    assert proc.returncode == 0, proc.stderr


def test_generate_check_detects_drift(tmp_path):
    root = tmp_path / "repo"
    copy_generator_inputs(root)
    assert run_generate(root, "--check").returncode == 0

    # A changed source makes --check fail until the outputs are regenerated.
    rules = root / "alerts" / RULES_FILE.name
    doc = yaml.safe_load(rules.read_text())
    doc["groups"].append({"name": "drift-test", "rules": [{"record": "x:y", "expr": "1"}]})
    rules.write_text(yaml.safe_dump(doc))
    assert run_generate(root, "--check").returncode == 1
    assert run_generate(root).returncode == 0
    assert run_generate(root, "--check").returncode == 0

    # So does a hand-edited output.
    dashboard_cm = root / "deploy/kubernetes/base/generated/dashboard-configmap.yaml"
    dashboard_cm.write_text(dashboard_cm.read_text().replace("grafana_dashboard", "grafana_dashbord"))
    assert run_generate(root, "--check").returncode == 1
    assert run_generate(root).returncode == 0

    # And a hand-edited link in the sidecar's config: the setting in deploy/links.yaml wins.
    sidecar_config = root / SIDECAR_CONFIG.relative_to(REPO)
    edited = sidecar_config.read_text().replace("grafana.example.com", "grafana.elsewhere.example")
    assert edited != sidecar_config.read_text()
    sidecar_config.write_text(edited)
    proc = run_generate(root, "--check")
    assert proc.returncode == 1 and str(SIDECAR_CONFIG.relative_to(REPO)) in proc.stderr, proc.stderr
    assert run_generate(root).returncode == 0
    assert sidecar_config.read_text() == SIDECAR_CONFIG.read_text()


# --------------------------------------------------------------------------------------------
# container image recipe


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_contract():
    instructions = dockerfile_instructions()
    args = {}
    for op, rest in instructions:
        if op == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value

    def expand(s: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), s)

    stages = [expand(rest) for op, rest in instructions if op == "FROM"]
    assert len(stages) >= 2, "multi-stage build expected"
    assert re.match(r"rust:[\w.-]*bookworm AS builder", stages[0]), stages[0]
    assert stages[-1] == "gcr.io/distroless/cc-debian12:nonroot", stages[-1]
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM"):]
    final_ops = {op: rest for op, rest in final}
    builds = [r for op, rest in instructions if op == "RUN" for r in rest.split("&&") if "cargo build" in r]
    assert builds and all(b.split() == ["cargo", "build", "--release", "--locked"] for b in builds), builds
    assert final_ops["USER"] == "65532:65532"
    assert json.loads(final_ops["ENTRYPOINT"]) == ["/usr/local/bin/redguard"]
    assert json.loads(final_ops["CMD"]) == ["run", "--config", "/etc/redguard/redguard.yaml"]
    assert final_ops["EXPOSE"].split() == ["9190"]
    copies = [rest for op, rest in final if op == "COPY"]
    assert "deploy/redguard.yaml /etc/redguard/redguard.yaml" in copies
    assert any(c.endswith(" /usr/local/bin/redguard") for c in copies)
    # Dependencies are compiled before the sources are copied (layer cache).
    first_build = next(i for i, (op, r) in enumerate(instructions) if op == "RUN" and "cargo build" in r)
    first_src_copy = next(
        i for i, (op, r) in enumerate(instructions) if op == "COPY" and r.split()[0] in (".", "src")
    )
    assert first_build < first_src_copy


def test_dockerfile_dependency_layer_loads_the_manifest():
    """The dependency layer builds Cargo.toml with stub sources only. Explicit [[bench]],
    [[test]] or [[example]] targets make cargo look for their files even then, so each
    needs a stub in that layer, or `docker build` fails."""
    import tomllib

    manifest = tomllib.loads((REPO / "Cargo.toml").read_text())
    dockerfile = (REPO / "Dockerfile").read_text()
    defaults = {"bench": "benches", "test": "tests", "example": "examples"}
    for kind, folder in defaults.items():
        for target in manifest.get(kind, []):
            path = target.get("path", f"{folder}/{target['name']}.rs")
            assert path in dockerfile, (
                f"Cargo.toml declares [[{kind}]] {target['name']!r}: stub {path} in the "
                "Dockerfile's dependency layer"
            )


def test_dockerignore():
    patterns = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in ("target/", ".git/"):
        assert needed in patterns
    for kept in ("Cargo.toml", "Cargo.lock", "src", "src/", "README.md"):
        assert kept not in patterns
    # deploy/ is ignored except the config the image ships.
    assert patterns.index("!deploy/redguard.yaml") > patterns.index("deploy/")


# --------------------------------------------------------------------------------------------
# runbook links: one setting (deploy/links.yaml)


def copy_generator_inputs(root: Path) -> None:
    for rel in ("alerts", "dashboards", "deploy/kubernetes/base/generated", "deploy/kubernetes/components"):
        shutil.copytree(REPO / rel, root / rel)
    shutil.copy2(DEPLOY / "generate.py", root / "deploy" / "generate.py")
    shutil.copy2(LINKS_FILE, root / "deploy" / LINKS_FILE.name)
    shutil.copy2(REPO / "Cargo.toml", root / "Cargo.toml")


def test_runbook_links_follow_the_setting_and_default_to_a_placeholder(variant):
    """The committed rules, dashboard and objects carry deploy/links.yaml's URL (the --check above proves
    they match it); its default is a placeholder, and no link points at someone else's repository."""
    _, docs = variant
    base = yaml.safe_load(LINKS_FILE.read_text())["runbook_url"]
    assert "example.com" in base, "the shipped default must be a placeholder"
    for group in only(docs, "PrometheusRule")["spec"]["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["annotations"]["runbook_url"] == f"{base}#{rule['alert'].lower()}"
    cm = [c for c in objects(docs, "ConfigMap") if c["metadata"]["name"] == "redguard-dashboard"][0]
    links = json.loads(cm["data"][DASHBOARD_FILE.name])["links"]
    assert [link["url"] for link in links if "runbook" in link["tooltip"]] == [base]
    for path in [RULES_FILE, DASHBOARD_FILE, *sorted((REPO / "alerts" / "tests").glob("*.yml"))]:
        assert "github.com/redguard" not in path.read_text(), path


def test_the_sidecars_own_notification_links_follow_the_setting(variant):
    """The sidecar's notify.runbook_url / notify.dashboard_url (its PagerDuty links and Slack buttons, once sinks
    are enabled) are deploy/links.yaml's, as rendered into the ConfigMap; both defaults are placeholders."""
    _, docs = variant
    setting = yaml.safe_load(LINKS_FILE.read_text())
    assert set(setting) == {"runbook_url", "dashboard_url"}
    assert "example.com" in setting["dashboard_url"], "the shipped default must be a placeholder"
    notify = rendered_config(docs)["notify"]
    assert notify["runbook_url"] == setting["runbook_url"]
    assert notify["dashboard_url"] == setting["dashboard_url"]


def test_runbook_anchors_exist_in_the_runbook():
    runbook = (REPO / "alerts" / "RUNBOOK.md").read_text()
    headings = {line[3:].strip().lower() for line in runbook.splitlines() if line.startswith("## ")}
    for group in yaml.safe_load(RULES_FILE.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"].lower() in headings, f"RUNBOOK.md has no section for {rule['alert']}"


def test_changing_the_runbook_url_rewrites_every_link(tmp_path):
    root = tmp_path / "repo"
    copy_generator_inputs(root)
    url = "https://wiki.internal.example/sre/redguard-runbook"
    dashboard = "https://grafana.internal.example/d/redguard-overview/redguard?orgId=2&var-namespace=shop"
    (root / "deploy" / LINKS_FILE.name).write_text(f"runbook_url: {url}\ndashboard_url: {dashboard}\n")
    assert run_generate(root, "--check").returncode == 1, "a changed setting must show as drift"
    assert run_generate(root).returncode == 0
    assert run_generate(root, "--check").returncode == 0
    rules = yaml.safe_load((root / "alerts" / RULES_FILE.name).read_text())
    urls = [r["annotations"]["runbook_url"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert urls and all(u.startswith(url + "#") for u in urls), urls
    generated = (root / "deploy/kubernetes/base/generated/prometheusrule.yaml").read_text()
    assert generated.count(url + "#") == len(urls)
    dashboard_json = json.loads((root / "dashboards" / DASHBOARD_FILE.name).read_text())
    assert [link["url"] for link in dashboard_json["links"]] == [url]
    # The sidecar's config: the runbook's address as set (no anchor) and the dashboard's, comments kept.
    sidecar_text = (root / SIDECAR_CONFIG.relative_to(REPO)).read_text()
    notify = yaml.safe_load(sidecar_text)["notify"]
    assert (notify["runbook_url"], notify["dashboard_url"]) == (url, dashboard)
    shipped = yaml.safe_load(LINKS_FILE.read_text())
    assert sidecar_text == SIDECAR_CONFIG.read_text().replace(shipped["runbook_url"], url).replace(
        shipped["dashboard_url"], dashboard
    )
    tests = (root / "alerts" / "tests" / "paging_test.yml").read_text()
    assert f'runbook_url: "{url}#redguardredisunavailable"' in tests
    # Nothing but the links changed.
    original = RULES_FILE.read_text()
    base = yaml.safe_load(LINKS_FILE.read_text())["runbook_url"]
    assert (root / "alerts" / RULES_FILE.name).read_text() == original.replace(base, url)


@pytest.mark.parametrize(
    "setting",
    [
        "runbook_url: ftp://x.example/r\ndashboard_url: https://g.example/d\n",
        "runbook_url: https://x.example/r#frag\ndashboard_url: https://g.example/d\n",
        "runbook_url: https://x.example/r\ndashboard_url: javascript:alert(1)\n",
        "runbook_url: https://x.example/r\ndashboard_url: 'https://g.example/d x'\n",
        "runbook_url: https://x.example/r\ndashboard_url: https://g.example/" + "d" * 3000 + "\n",
        "runbook_url: https://x.example/r\n",
        "other: 1\n",
        "runbook_url: [\n",
    ],
)
def test_a_bad_runbook_setting_is_a_clear_error(tmp_path, setting):
    root = tmp_path / "repo"
    copy_generator_inputs(root)
    (root / "deploy" / LINKS_FILE.name).write_text(setting)
    proc = run_generate(root, "--check")
    assert proc.returncode == 2, proc.stderr
    assert "deploy/links.yaml" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_sidecar_config_without_its_link_lines_is_a_clear_error(tmp_path):
    root = tmp_path / "repo"
    copy_generator_inputs(root)
    config = root / SIDECAR_CONFIG.relative_to(REPO)
    lines = [line for line in config.read_text().splitlines(keepends=True) if not line.startswith("  dashboard_url:")]
    config.write_text("".join(lines))
    proc = run_generate(root, "--check")
    assert proc.returncode == 2, proc.stderr
    assert str(SIDECAR_CONFIG.relative_to(REPO)) in proc.stderr and "dashboard_url" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------------------
# paging path, labels, the component on its own


def test_base_ships_the_alertmanager_path_only(variant):
    """Prometheus -> Alertmanager pages once per Redis target; the sidecar's own sinks as well would page a
    second time for every outage (docs/operations.md, "Paging design")."""
    _, docs = variant
    config = rendered_config(docs)
    assert not (config.get("notify") or {}).get("sinks"), "the base must not enable notification sinks"
    rule = only(docs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts["RedguardRedisUnavailable"]["labels"]["severity"] == "critical"
    assert [a for a, r in alerts.items() if r["labels"]["severity"] == "critical"] == ["RedguardRedisUnavailable"]


RECOMMENDED = ("name", "instance", "version", "component", "part-of", "managed-by")


def test_recommended_labels_on_every_object(variant):
    import tomllib

    _, docs = variant
    version = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["version"]
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert [i["newTag"] for i in kustomization["images"] if i["name"] == SIDECAR] == [version]
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        where = f"{doc['kind']} {doc['metadata']['name']}"
        missing = [k for k in RECOMMENDED if f"app.kubernetes.io/{k}" not in labels]
        assert not missing, f"{where}: no app.kubernetes.io/{missing}"
        if labels["app.kubernetes.io/name"] == "redguard":
            assert labels["app.kubernetes.io/version"] == version, where
    # Shared labels never reach a selector (immutable on a Deployment).
    selector = only(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert set(selector) == {"app.kubernetes.io/name"}


def test_release_label_only_in_the_kube_prometheus_stack_overlay(rendered):
    for name in VARIANTS:
        docs = rendered[name]
        for doc in docs:
            has = "release" in doc["metadata"].get("labels", {})
            want = name == "kube-prometheus-stack" and doc["kind"] in ("PodMonitor", "PrometheusRule")
            assert has == want, f"{name}: {doc['kind']} {doc['metadata']['name']}"


FOREIGN = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {labels}
spec:
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: web
          image: nginx:1.27.3
          volumeMounts:
            - name: cache
              mountPath: /cache
      volumes:
        - name: cache
          emptyDir: {{}}
"""


def test_component_adds_the_sidecar_to_any_labelled_deployment(tmp_path, no_network):
    """Two Deployments of someone else's: the labelled one gets redguard, its volumes and its ConfigMap
    (with the hashed name wired into the volume), keeping its own volume; the other is untouched."""
    (tmp_path / "apps.yaml").write_text(
        FOREIGN.format(name="checkout", labels='{redguard/sidecar: "true"}')
        + "---\n"
        + FOREIGN.format(name="static", labels="{tier: web}")
    )
    rel = os.path.relpath(COMPONENT, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [apps.yaml]\ncomponents: [{rel}]\n"
    )
    docs = kustomize(tmp_path)
    deployments = {d["metadata"]["name"]: d for d in objects(docs, "Deployment")}
    checkout = deployments["checkout"]["spec"]["template"]
    spec = checkout["spec"]
    assert [c["name"] for c in spec["initContainers"]] == [SIDECAR]
    assert spec["initContainers"][0]["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["web"]
    assert {v["name"] for v in spec["volumes"]} == {"cache", "redguard-socket", "redguard-config", "redguard-secrets"}
    assert spec["securityContext"]["fsGroup"] == REDGUARD_UID
    assert checkout["metadata"]["labels"] == {"app": "checkout", "redguard/sidecar": "true"}
    config_map = only(docs, "ConfigMap")["metadata"]["name"]
    assert re.fullmatch(r"redguard-config-[a-z0-9]{10}", config_map)
    assert volume(spec, "redguard-config")["configMap"]["name"] == config_map
    assert yaml.safe_load(FOREIGN.format(name="static", labels="{tier: web}")) == deployments["static"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
