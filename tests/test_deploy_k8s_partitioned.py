"""deploy/k8s-partitioned/: the collectors partitioned over deploy/k8s/nats's MQTT gateways.

No cluster runs here: the overlay's files are parsed and checked against the manifests
they build on (deploy/k8s, deploy/k8s/nats, deploy/k8s/postgres), the ConfigMap's
collector config goes through enoc's own checks once per pod, with make-certs' files
and each pod's name as ENOC_COLLECTOR_ID, and `kubectl kustomize` renders the overlay
where kubectl is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from deploykit import DEPLOY, REPO, load_make_certs

from collector.config import CollectorConfig, check_collector

OVERLAY = DEPLOY / "k8s-partitioned"
NAMESPACE = "enoc"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    return data


def config_text() -> str:
    """The file the overlay puts in the ConfigMap enoc-collector as collector.yaml."""
    (generator,) = kustomization()["configMapGenerator"]
    (entry,) = generator["files"]
    key, _, source = str(entry).partition("=")
    assert key == "collector.yaml"
    return (OVERLAY / source).read_text()


def base_collector() -> dict[str, Any]:
    return find(documents(DEPLOY / "k8s" / "collector.yaml"), "StatefulSet", "enoc-collector")


def patched_collector() -> dict[str, Any]:
    return find(documents(OVERLAY / "collector.yaml"), "StatefulSet", "enoc-collector")


def nats_documents() -> list[dict[str, Any]]:
    return documents(DEPLOY / "k8s" / "nats" / "nats.yaml")


def number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern} not found"
    return int(match.group(1).replace(",", ""))


def pod_names() -> list[str]:
    """The StatefulSet's pods, as Kubernetes names them: <name>-<ordinal>."""
    workload = patched_collector()
    name, replicas = workload["metadata"]["name"], workload["spec"]["replicas"]
    return [f"{name}-{i}" for i in range(replicas)]


def in_cluster(name: str, service: str) -> str:
    return f"{name}.{service}.{NAMESPACE}.svc.cluster.local"


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deploy") / "secrets"
    load_make_certs().make_all(out, broker_names=["127.0.0.1"], agents=["nyc/nyc-1"], chown=False)
    return out


def pod_config(
    pod: str, secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> CollectorConfig:
    """The ConfigMap's collector.yaml as pod `pod` reads it, through `check_collector`."""
    monkeypatch.setenv("ENOC_COLLECTOR_ID", pod)
    text = config_text().replace("/run/secrets/enoc/", f"{secrets}/collector/")
    path = tmp_path / pod / "collector.yaml"
    path.parent.mkdir()
    path.write_text(text.replace("/var/lib/enoc/", f"{path.parent}/"))
    checked = check_collector(path)
    assert not checked.errors, [str(e) for e in checked.errors]
    advice = [*checked.warnings, *checked.notes]
    assert not advice, [str(w) for w in advice]
    assert checked.value is not None
    return checked.value


# ---------------------------------------------------------------- the overlay's files


def test_the_overlay_builds_on_the_shipped_manifests_and_drops_emqx() -> None:
    k = kustomization()
    assert k["namespace"] == NAMESPACE
    for resource in k["resources"]:
        assert (OVERLAY / resource / "kustomization.yaml").is_file(), resource
    assert sorted(Path(r).name for r in k["resources"]) == ["k8s", "nats"]
    patches = k["patches"]
    for patch in patches:
        if "path" in patch:
            assert documents(OVERLAY / patch["path"]), patch["path"]
    deleted = set()
    for patch in patches:
        if "patch" in patch:
            doc = yaml.safe_load(patch["patch"])
            assert doc.pop("$patch") == "delete"
            deleted.add((doc["apiVersion"], doc["kind"], doc["metadata"]["name"]))
    emqx = {
        (d["apiVersion"], d["kind"], d["metadata"]["name"])
        for d in documents(DEPLOY / "k8s" / "emqx.yaml")
    }
    assert deleted == emqx, "every EMQX object and nothing else"
    # The ConfigMap it replaces is the one the collector's pods mount and read.
    (generator,) = k["configMapGenerator"]
    assert generator["name"] == "enoc-collector" and generator["behavior"] == "replace"
    pod = base_collector()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == generator["name"]
    (container,) = pod["containers"]
    assert container["args"][-1] == "/etc/enoc/collector.yaml"


def test_replicas_are_sized_as_the_readme_says() -> None:
    readme = (DEPLOY / "README.md").read_text()
    per_device = number(r"about (\d+) KiB per device", readme)
    most = number(r"at most (\d+,000) devices", readme)
    (container,) = patched_collector()["spec"]["template"]["spec"]["containers"]
    (shipped,) = base_collector()["spec"]["template"]["spec"]["containers"]
    assert container["name"] == shipped["name"]
    resources = container["resources"]

    def mib(quantity: str) -> int:
        return int(quantity[:-2]) * {"Mi": 1, "Gi": 1024}[quantity[-2:]]

    # A survivor of a lost replica keeps up to the window's limit: the request covers it.
    assert mib(resources["requests"]["memory"]) >= most * per_device / 1024
    assert mib(resources["limits"]["memory"]) > mib(resources["requests"]["memory"])
    assert len(pod_names()) >= 3, "one lost, the others still share the sites"


# ---------------------------------------------------------------- the config, per pod


def test_each_pods_config_passes_enocs_checks_with_an_id_of_its_own(
    secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = base_collector()["spec"]["serviceName"]
    (container,) = base_collector()["spec"]["template"]["spec"]["containers"]
    http = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["ENOC_COLLECTOR_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    headless = find(documents(DEPLOY / "k8s" / "collector.yaml"), "Service", service)
    assert headless["spec"]["clusterIP"] == "None"
    assert find(documents(OVERLAY / "collector.yaml"), "Service", service)["spec"] == {
        "publishNotReadyAddresses": True
    }
    ids, client_ids = [], []
    for pod in pod_names():
        config = pod_config(pod, secrets, tmp_path, monkeypatch)
        assert config.nats is None and config.partition is not None
        assert not config.mqtt.shared_group, "partitioned: subscribed by site, not shared"
        assert config.partition.id == pod
        url = urlsplit(config.partition.url)
        assert (url.hostname, url.port) == (in_cluster(pod, service), http)
        ids.append(config.partition.id)
        client_ids.append(config.mqtt.client_id)
    assert len(set(ids)) == len(ids) == len(set(client_ids)) >= 3


def test_the_gateway_urls_are_every_nats_node_by_a_name_its_certificate_holds(
    secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography import x509

    config = pod_config("enoc-collector-0", secrets, tmp_path, monkeypatch)
    nats = nats_documents()
    nodes = find(nats, "StatefulSet", "nats")["spec"]
    headless = find(nats, "Service", nodes["serviceName"])["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["selector"] == nodes["selector"]["matchLabels"]
    (port,) = [p for p in headless["ports"] if p["name"] == "mqtts"]
    (container,) = nodes["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[port["targetPort"]] == port["port"]
    conf = find(nats, "ConfigMap", "nats")["data"]["nats.conf"]
    gateway = re.search(r"mqtt \{\s*listen: \"0\.0\.0\.0:(\d+)\"", conf)
    assert gateway is not None and int(gateway.group(1)) == port["port"]
    hosts = [in_cluster(f"nats-{i}", nodes["serviceName"]) for i in range(nodes["replicas"])]
    assert sorted(config.mqtt.brokers) == [f"mqtts://{h}:{port['port']}" for h in hosts]
    # TLS: the collector checks each node's certificate against make-certs' CA.
    assert config.mqtt.tls is not None and config.mqtt.tls.ca_file is not None
    assert Path(config.mqtt.tls.ca_file).read_bytes() == (secrets / "nats" / "ca.pem").read_bytes()
    cert = x509.load_pem_x509_certificate((secrets / "nats" / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(hosts) <= set(names.get_values_for_type(x509.DNSName))
    assert config.mqtt.username == "collector"
    users = (secrets / "nats" / "users.conf").read_text()
    login = users[users.index('{user: "collector"') :].split("permissions")[0]
    assert '"MQTT"' in login, "make-certs lets the collector's login use the gateways"


def test_the_store_is_the_operators_pair_reached_at_its_primary(
    secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = pod_config("enoc-collector-0", secrets, tmp_path, monkeypatch)
    url = urlsplit(config.store.url)
    (cluster,) = documents(DEPLOY / "k8s" / "postgres" / "postgres.yaml")
    # The operator's Service, named after the cluster, follows the primary.
    host = f"{cluster['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    assert url.scheme == "postgresql" and url.hostname == host
    assert url.path.lstrip("/") in cluster["spec"]["databases"]
    assert url.username in cluster["spec"]["users"]
    query = {k: v for k, (v,) in parse_qs(url.query).items()}
    assert query["target_session_attrs"] == "read-write"
    assert query["sslmode"] == "verify-full"
    assert Path(query["sslrootcert"]).read_bytes() == (secrets / "pki" / "ca.pem").read_bytes()


def test_every_secret_the_variant_reads_comes_from_make_certs(secrets: Path) -> None:
    """Each Secret the pods mount or read is one the READMEs create from a make-certs
    directory, and every file the configs name under its mount is in that directory."""
    readme = (DEPLOY / "README.md").read_text()
    made = dict(
        re.findall(r"create secret generic (\S+) --from-file=deploy/secrets/(\w+)/\s", readme)
    )
    configs = {
        "enoc-collector": config_text(),
        "nats": find(nats_documents(), "ConfigMap", "nats")["data"]["nats.conf"],
    }
    nats = find(nats_documents(), "StatefulSet", "nats")
    seen = set()
    for workload in (base_collector(), nats):
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for mount in container["volumeMounts"]:
            secret = volumes.get(mount["name"], {}).get("secret")
            if secret is None:
                continue
            name = secret["secretName"]
            assert name in made, f"{name}: no `kubectl create secret` in deploy/README.md"
            files = re.findall(re.escape(mount["mountPath"]) + r"/([\w.-]+)", configs[name])
            assert files, f"nothing read from {mount['mountPath']}"
            for file in files:
                assert (secrets / made[name] / file).is_file(), f"{name}: {file}"
            seen.add(name)
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert (secrets / made[ref["name"]] / ref["key"]).is_file(), ref
    assert seen == set(configs)


# ---------------------------------------------------------------- kustomize and the docs


def test_kustomize_renders_the_partitioned_variant() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the overlay's files were checked above")
    result = subprocess.run(
        [kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    out = [d for d in yaml.safe_load_all(result.stdout) if d]
    names = {(d["kind"], d["metadata"]["name"]) for d in out}
    base = [
        *documents(DEPLOY / "k8s" / "collector.yaml"),
        *nats_documents(),
    ]
    expected = {(d["kind"], d["metadata"]["name"]) for d in base} | {("Namespace", NAMESPACE)}
    assert names == expected, "the collector and NATS, no EMQX"
    assert all(d["metadata"].get("namespace") == NAMESPACE for d in out if d["kind"] != "Namespace")
    assert find(out, "ConfigMap", "enoc-collector")["data"] == {"collector.yaml": config_text()}
    rendered = find(out, "StatefulSet", "enoc-collector")["spec"]
    assert rendered["replicas"] == len(pod_names())
    (container,) = rendered["template"]["spec"]["containers"]
    (patched,) = patched_collector()["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == patched["resources"]
    # Everything else is deploy/k8s's pod: its env, mounts, probes and security.
    (shipped,) = base_collector()["spec"]["template"]["spec"]["containers"]
    assert {**container, "resources": None} == {**shipped, "resources": None}
    headless = find(out, "Service", rendered["serviceName"])["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True


def test_the_readmes_say_when_to_choose_it() -> None:
    deploy = (DEPLOY / "README.md").read_text()
    scale = deploy[deploy.index("## 9. Scale-out") :]
    assert "kubectl apply -k deploy/k8s-partitioned" in scale
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Which engine at which size") :]
    assert "k8s-partitioned" in section[: section.index("\n## ", 3)]
