"""deploy/k8s-partitioned/: the collectors partitioned on deploy/k8s's EMQX cluster.

No cluster runs here: the overlay's files are parsed and checked against the manifests
they build on (deploy/k8s, its emqx.yaml, deploy/k8s/postgres), the ConfigMap's
collector config goes through enoc's own checks once per pod, with the files make-certs
writes for deploy/README.md's command and each pod's name as ENOC_COLLECTOR_ID, and
`kubectl kustomize` renders the overlay where kubectl is installed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from deploykit import DEPLOY, REPO, load_make_certs

from collector.config import CollectorConfig, check_collector
from enoc.wire import subscription

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


def emqx_documents() -> list[dict[str, Any]]:
    return documents(DEPLOY / "k8s" / "emqx.yaml")


def emqx_conf() -> str:
    conf: str = find(emqx_documents(), "ConfigMap", "emqx")["data"]["emqx.conf"]
    return conf


def scale_out() -> str:
    """deploy/README.md's paragraph on this variant, up to the next one in bold."""
    readme = (DEPLOY / "README.md").read_text()
    start = readme.index("**Partitioned collectors on Kubernetes**")
    return readme[start : readme.index("\n**", start + 1)]


def make_certs_command() -> list[str]:
    """The make-certs command that paragraph gives, as its words."""
    (block,) = re.findall(r"```sh\n(.*?)```", scale_out(), re.S)
    lines = block.replace("\\\n", " ").splitlines()
    (command,) = [line for line in lines if "deploy/make-certs" in line]
    return shlex.split(command)


def options(words: list[str], name: str) -> list[str]:
    return [words[i + 1] for i, word in enumerate(words) if word == name]


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
    words = make_certs_command()
    load_make_certs().make_all(
        out,
        broker_names=options(words, "--broker-name"),
        postgres_names=options(words, "--postgres-name"),
        influxdb_names=options(words, "--influxdb-name"),
        agents=options(words, "--agent"),
        chown=False,
    )
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


def resource_files(directory: Path) -> list[Path]:
    """Every manifest a kustomization takes in, through the kustomizations it names."""
    data = yaml.safe_load((directory / "kustomization.yaml").read_text())
    files: list[Path] = []
    for resource in data["resources"]:
        path = (directory / resource).resolve()
        files += resource_files(path) if path.is_dir() else [path]
    return files


def test_the_overlay_builds_on_deploy_k8s_alone_and_keeps_its_emqx() -> None:
    k = kustomization()
    assert k["namespace"] == NAMESPACE
    assert [(OVERLAY / r).resolve() for r in k["resources"]] == [DEPLOY / "k8s"]
    for patch in k["patches"]:
        assert set(patch) == {"path"}, f"EMQX and the collector as deploy/k8s ships them: {patch}"
        assert documents(OVERLAY / patch["path"]), patch["path"]
    assert DEPLOY / "k8s" / "emqx.yaml" in resource_files(OVERLAY)
    # The ConfigMap it replaces is the one the collector's pods mount and read.
    (generator,) = k["configMapGenerator"]
    assert generator["name"] == "enoc-collector" and generator["behavior"] == "replace"
    pod = base_collector()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == generator["name"]
    (container,) = pod["containers"]
    assert container["args"][-1] == "/etc/enoc/collector.yaml"


def test_nats_is_no_part_of_the_variant(
    secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partitioning through NATS's MQTT gateways loses or stalls messages under load
    (docs/collector.md, "Partitioning"): no NATS object, no NATS node in the config."""
    nats = DEPLOY / "k8s" / "nats"
    files = resource_files(OVERLAY)
    assert not [f for f in files if f.is_relative_to(nats)], files
    kinds = {(d["kind"], d["metadata"]["name"]) for f in files for d in documents(f)}
    assert not kinds & {(d["kind"], d["metadata"]["name"]) for d in documents(nats / "nats.yaml")}
    config = pod_config("enoc-collector-0", secrets, tmp_path, monkeypatch)
    assert config.nats is None
    hosts = [urlsplit(url).hostname or "" for url in config.mqtt.brokers]
    assert hosts and not [h for h in hosts if "nats" in h], hosts


def test_replicas_and_emqx_sessions_are_sized_as_the_readme_says() -> None:
    readme = (DEPLOY / "README.md").read_text()
    per_device = number(r"about (\d+) KiB per device", readme)
    most = number(r"at most (\d+,000) devices", readme)
    message = number(r"a ([\d,]+)-byte message", readme)
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
    # EMQX's window and queue are per session: a lane's, whatever sites it owns.
    conf, text = emqx_conf(), config_text()
    assert number(r"max_inflight = (\d+)", conf) == yaml.safe_load(text)["mqtt"]["max_unacked"]
    queue = number(r"max_mqueue_len = (\d+)", conf)
    assert number(r"mqtt\.max_mqueue_len, ([\d,]+)", text) == queue
    (node,) = find(emqx_documents(), "StatefulSet", "emqx")["spec"]["template"]["spec"][
        "containers"
    ]
    memory = mib(node["resources"]["limits"]["memory"]) * 2**20
    # The node's memory, not the count, bounds what a stopped replica's sessions hold.
    assert queue * message > memory
    a_minute = most * message
    assert number(r"about (\d+) MB a minute", text) == round(a_minute / 1e7) * 10
    assert number(r"\((\d+) GiB\)", text) * 2**30 == memory
    assert number(r": (\d+) minutes at most", text) == round(memory / a_minute)
    assert f"about {round(a_minute / 1e7) * 10} MB a minute" in scale_out()


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


def covers(rule: str, wanted: str) -> bool:
    """Does an ACL rule's filter take in every topic of filter `wanted`?"""
    rules, levels = rule.split("/"), wanted.split("/")
    for i, level in enumerate(rules):
        if level == "#":
            return True
        if i >= len(levels) or (level != "+" and level != levels[i]):
            return False
    return len(rules) == len(levels)


def test_the_broker_urls_are_every_emqx_node_by_a_name_its_certificate_holds(
    secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography import x509

    config = pod_config("enoc-collector-0", secrets, tmp_path, monkeypatch)
    emqx = emqx_documents()
    nodes = find(emqx, "StatefulSet", "emqx")["spec"]
    headless = find(emqx, "Service", nodes["serviceName"])["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["selector"] == nodes["selector"]["matchLabels"]
    (port,) = [p for p in headless["ports"] if p["name"] == "mqtts"]
    (container,) = nodes["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[port["targetPort"]] == port["port"]
    listener = re.search(r"listeners\.ssl\.default \{\s*bind = \"0\.0\.0\.0:(\d+)\"", emqx_conf())
    assert listener is not None and int(listener.group(1)) == port["port"]
    hosts = [in_cluster(f"emqx-{i}", nodes["serviceName"]) for i in range(nodes["replicas"])]
    assert sorted(config.mqtt.brokers) == [f"mqtts://{h}:{port['port']}" for h in hosts]
    # TLS: the collector checks each node's certificate (emqx-tls: make-certs'
    # secrets/mosquitto/) against make-certs' CA, by the name it connects to.
    assert config.mqtt.tls is not None and config.mqtt.tls.ca_file is not None
    broker = secrets / "mosquitto"
    assert Path(config.mqtt.tls.ca_file).read_bytes() == (broker / "ca.pem").read_bytes()
    cert = x509.load_pem_x509_certificate((broker / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(hosts) <= set(names.get_values_for_type(x509.DNSName))
    # The collector's login: in EMQX's password database, and its ACL takes in each
    # site's filters the lanes subscribe to.
    assert config.mqtt.username == "collector"
    assert f'echo "{config.mqtt.username},' in (DEPLOY / "README.md").read_text()
    acl = find(emqx, "ConfigMap", "emqx")["data"]["acl.conf"]
    allowed = re.search(
        r'\{allow, \{user, "' + config.mqtt.username + r'"\}, subscribe, \[([^]]*)\]\}', acl
    )
    assert allowed is not None
    rules = re.findall(r'"([^"]+)"', allowed.group(1))
    for kind in ("metrics", "events", "status"):
        assert any(covers(r, subscription(kind, "nyc")) for r in rules), kind


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


def created_secrets(secrets: Path) -> dict[str, set[str]]:
    """What deploy/README.md's `kubectl create secret generic` lines put in each Secret,
    every file taken from deploy/secrets/ being one make-certs writes."""
    readme = (DEPLOY / "README.md").read_text().replace("\\\n", " ")
    made: dict[str, set[str]] = {}
    for line in readme.splitlines():
        if "create secret generic" not in line:
            continue
        words = shlex.split(line[line.index("create secret generic") :].split("&&")[0])
        keys = made.setdefault(words[3], set())
        for word in words[4:]:
            kind, _, value = word.partition("=")
            if kind == "--from-literal":
                keys.add(value.partition("=")[0])
            elif kind == "--from-file":
                key, _, source = value.rpartition("=")
                if source.startswith("deploy/secrets/"):
                    made_file = secrets / source.removeprefix("deploy/secrets/")
                    assert made_file.exists(), f"{words[3]}: make-certs writes no {source}"
                    if made_file.is_dir():
                        keys |= {f.name for f in made_file.iterdir()}
                        continue
                keys.add(key or Path(source).name)
    return made


def test_every_secret_the_variant_reads_is_one_the_readme_creates(secrets: Path) -> None:
    """Each Secret the pods mount or read is one the README creates (from make-certs'
    files), and every file the configs name under its mount is in it."""
    made = created_secrets(secrets)
    emqx = find(emqx_documents(), "StatefulSet", "emqx")
    configs = {"collector": config_text(), "emqx": emqx_conf()}
    seen = set()
    for workload in (base_collector(), emqx):
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for mount in container["volumeMounts"]:
            secret = volumes.get(mount["name"], {}).get("secret")
            if secret is None:
                continue
            name = secret["secretName"]
            assert name in made, f"{name}: no `kubectl create secret` in deploy/README.md"
            read = configs[container["name"]]
            files = re.findall(re.escape(mount["mountPath"]) + r"/([\w.-]+)", read)
            assert files, f"nothing read from {mount['mountPath']}"
            assert set(files) <= made[name], f"{name}: {set(files) - made[name]}"
            seen.add(name)
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["key"] in made[ref["name"]], ref
                seen.add(ref["name"])
    assert seen == {"enoc-collector", "emqx-tls", "emqx-users", "emqx-secrets"}


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
    base = [*documents(DEPLOY / "k8s" / "collector.yaml"), *emqx_documents()]
    expected = {(d["kind"], d["metadata"]["name"]) for d in base} | {("Namespace", NAMESPACE)}
    assert names == expected, "the collector and EMQX, no NATS"
    assert all(d["metadata"].get("namespace") == NAMESPACE for d in out if d["kind"] != "Namespace")
    assert find(out, "ConfigMap", "enoc-collector")["data"] == {"collector.yaml": config_text()}
    # EMQX as deploy/k8s ships it.
    for doc in emqx_documents():
        rendered_doc = find(out, doc["kind"], doc["metadata"]["name"])
        assert {k: v for k, v in rendered_doc.items() if k != "metadata"} == {
            k: v for k, v in doc.items() if k != "metadata"
        }
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
    section = section[: section.index("\n## ", 3)]
    rows = [row for row in section.splitlines() if "k8s-partitioned" in row]
    assert rows and all("EMQX" in row for row in rows), "partitioned on EMQX"
