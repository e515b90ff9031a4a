"""The deploy/ files that no program runs here, checked for what they promise.

compose.yaml (`docker compose config` where a Compose client exists, and always a
structural check: services, mounts that exist, ports, health checks, no secrets),
.env.example, the Dockerfile, the Grafana provisioning it mounts, the Kubernetes
manifests (rendered with `kubectl kustomize` where kubectl exists, and the
collector's ConfigMap loaded with enoc's own config loader) and the systemd units'
settings. tests/test_deploy.py runs the ones a program here can run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploykit import DEPLOY, REPO, load_make_certs

from collector.config import CollectorConfig
from enoc.config import load_config, parse_config
from enoc.inventory import Inventory, inventory_issues

SECRETS_DEFAULT = "${ENOC_SECRETS:-./secrets}"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}` / `${VAR:-default}` with .env.example's values."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3)
        return env.get(name) or default or ""

    return re.sub(r"\$\{([A-Z0-9_]+)(:-([^}]*))?\}", one, text)


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        variable, rest = "", volume
        if volume.startswith("${"):  # ${ENOC_SECRETS:-./secrets}/x:/target:ro
            variable, _, rest = volume.partition("}")
            variable += "}"
        source, target = rest.split(":")[:2]
        source = variable + source
        if source.startswith((".", "$")):
            mounts.append((source, target))
    return mounts


# ---------------------------------------------------------------- compose


def compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def compose_config(tmp_path: Path, *files: str) -> dict[str, Any]:
    """`compose.yaml` with the overlays `files` (names in deploy/), as the Compose client
    renders them with .env.example's values; skips where no client is installed."""
    client = compose_client()
    if client is None:
        pytest.skip("no Compose client here: the files' structure is checked elsewhere")
    env = tmp_path / ".env"
    env.write_text((DEPLOY / ".env.example").read_text())
    names = [a for name in ["compose.yaml", *files] for a in ("-f", str(DEPLOY / name))]
    result = subprocess.run(
        [*client, *names, "--env-file", str(env), "config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rendered: dict[str, Any] = yaml.safe_load(result.stdout)
    return rendered


def test_compose_config_validates_with_the_compose_client(tmp_path: Path) -> None:
    client = compose_client()
    if client is None:
        pytest.skip(
            "no Compose client here (`docker compose` plugin or docker-compose): "
            "test_compose_defines_the_central_stack checks the file's structure instead"
        )
    env = tmp_path / ".env"
    env.write_text((DEPLOY / ".env.example").read_text())
    result = subprocess.run(
        [*client, "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(env), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_defines_the_central_stack() -> None:
    services = compose()["services"]
    assert set(services) == {
        "mosquitto",
        "influxdb",
        "postgres",
        "collector-1",
        "collector-2",
        "grafana",
    }
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
        image = service["image"]
        tag = interpolate(image, env_example()).rpartition(":")[2]
        assert tag and tag != "latest" and any(c.isdigit() for c in tag), f"{name}: pin {image}"
        assert service.get("restart") == "unless-stopped"
        assert "no-new-privileges:true" in service.get("security_opt", [])

    # Only the broker faces the network; InfluxDB and PostgreSQL are not published at all.
    env = env_example()
    published = {
        name: [interpolate(p, env) for p in service.get("ports", [])]
        for name, service in services.items()
    }
    assert published["mosquitto"] == ["0.0.0.0:8883:8883"]
    assert not published["influxdb"] and not published["postgres"]
    for name in ("collector-1", "collector-2", "grafana"):
        assert all(p.startswith("127.0.0.1:") for p in published[name]), published[name]
    networks = compose()["networks"]
    assert networks["backend"]["internal"] is True
    assert services["influxdb"]["networks"] == ["backend"]
    assert services["postgres"]["networks"] == ["backend"]


def test_every_file_compose_mounts_exists_and_secrets_come_from_make_certs() -> None:
    services = compose()["services"]
    secret_dirs = set()
    for name, service in services.items():
        for source, target in bind_mounts(service):
            if source.startswith(SECRETS_DEFAULT):
                secret_dirs.add(source.removeprefix(SECRETS_DEFAULT + "/"))
                assert target.startswith(("/run/secrets/", "/mosquitto/secrets")), target
                assert f"{source}:{target}:ro" in service["volumes"], "secrets are read-only"
                continue
            path = (DEPLOY / source).resolve()
            assert path.exists(), f"{name} mounts {source}, which is not in the repository"
    # each service sees only its own directory of make-certs' output
    assert secret_dirs == {"mosquitto", "influxdb", "postgres", "collector", "grafana"}
    make_certs = load_make_certs()
    # and nats/, for compose.nats.yaml's nodes (tests/test_deploy_scaleout.py)
    assert set(make_certs.SERVICES) == secret_dirs | {"nats"}


def test_compose_keeps_secrets_out_of_its_environment() -> None:
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|TOKEN|SECRET|KEY", key):  # then it names a file
                assert str(value).startswith("/run/secrets/"), f"{name}: {key}={value!r}"
    for key, value in env_example().items():
        assert not re.search(r"PASSWORD|TOKEN", key), f".env.example has {key}"
        assert len(value) < 24 or "/" in value, f"{key}: no secrets in .env"


def test_every_variable_compose_uses_is_in_env_example() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    documented = set(env_example())
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"


def test_the_two_collectors_share_a_config_and_differ_in_client_id() -> None:
    services = compose()["services"]
    one, two = services["collector-1"], services["collector-2"]
    assert (
        one["volumes"][0]
        == two["volumes"][0]
        == ("./collector/collector.yaml:/etc/enoc/collector.yaml:ro")
    )
    assert one["environment"]["ENOC_COLLECTOR_ID"] != two["environment"]["ENOC_COLLECTOR_ID"]
    assert one["environment"]["PGPASSFILE"] == "/run/secrets/enoc/pgpass"
    for service in (one, two):
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert service["user"] == "10001:10001"
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert "/healthz" in " ".join(service["healthcheck"]["test"])
        assert {d: c["condition"] for d, c in service["depends_on"].items()} == {
            "mosquitto": "service_healthy",
            "influxdb": "service_healthy",
            "postgres": "service_healthy",
        }
    config = yaml.safe_load((DEPLOY / "collector" / "collector.yaml").read_text())
    assert config["mqtt"]["client_id"] == "enoc-${ENOC_COLLECTOR_ID}"
    assert config["mqtt"]["url"].startswith("mqtts://mosquitto:")
    assert config["http"]["listen"].endswith(":8080")


def test_influxdb_speaks_https_with_make_certs_certificate_and_the_collectors_check_it(
    tmp_path: Path,
) -> None:
    influxdb = compose()["services"]["influxdb"]
    env = influxdb["environment"]
    assert dict(bind_mounts(influxdb))[SECRETS_DEFAULT + "/influxdb"] == "/run/secrets/enoc"
    assert env["INFLUXD_TLS_CERT"] == "/run/secrets/enoc/server.pem"
    assert env["INFLUXD_TLS_KEY"] == "/run/secrets/enoc/server.key"
    health = influxdb["healthcheck"]["test"]
    assert "https://localhost:8086" in health and "SSL_CERT_FILE=/run/secrets/enoc/ca.pem" in health
    config = yaml.safe_load((DEPLOY / "collector" / "collector.yaml").read_text())
    assert config["influxdb"]["url"] == "https://influxdb:8086"
    assert config["influxdb"]["tls"] == {"ca_file": "/run/secrets/enoc/ca.pem"}
    # make-certs writes those files, for the names compose and the health check use
    make_certs = load_make_certs()
    out = tmp_path / "secrets"
    make_certs.make_all(out, broker_names=["mqtt.example.net"], chown=False)
    for name in ("ca.pem", "server.pem", "server.key"):
        assert (out / "influxdb" / name).exists(), name
    assert (out / "influxdb" / "server.key").stat().st_mode & 0o777 == 0o600
    assert (out / "influxdb" / "ca.pem").read_bytes() == (out / "collector" / "ca.pem").read_bytes()
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((out / "influxdb" / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"influxdb", "localhost"}


def test_the_brokers_settings_match_the_collectors() -> None:
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    settings = dict(
        line.split(None, 1) for line in conf.splitlines() if line and not line.startswith("#")
    )
    collector = yaml.safe_load((DEPLOY / "collector" / "collector.yaml").read_text())
    assert int(settings["max_inflight_messages"]) == collector["mqtt"]["max_unacked"]
    assert int(settings["max_queued_messages"]) > 1000
    assert settings["allow_anonymous"] == "false"
    assert settings["require_certificate"] == "true"
    assert settings["listener"] == "8883", "TLS only: one listener"
    assert settings["persistence"] == "true"


def test_the_dockerfile_installs_from_the_lock_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "uv sync --frozen --no-dev" in text
    assert re.search(r"^USER 10001", text, re.M)
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        for part in source.split():
            assert (REPO / part).exists(), f"the Dockerfile copies {part}, which does not exist"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*")] == "*" and "!uv.lock" in ignore


# ---------------------------------------------------------------- Grafana


def test_grafana_provisioning_fits_the_compose_mounts() -> None:
    provisioning = REPO / "dashboards" / "provisioning"
    grafana = compose()["services"]["grafana"]
    mounts = dict(bind_mounts(grafana))
    providers = yaml.safe_load((provisioning / "dashboards.yaml").read_text())["providers"]
    assert {p["type"] for p in providers} == {"file"}
    paths = {p["options"]["path"] for p in providers}
    assert paths == {mounts["../dashboards/json"]}, "the provider reads where compose mounts"
    assert mounts["../dashboards/provisioning/dashboards.yaml"].startswith(
        "/etc/grafana/provisioning/dashboards/"
    )
    ours = yaml.safe_load((DEPLOY / "grafana" / "datasources.yaml").read_text())["datasources"]
    assert mounts["./grafana/datasources.yaml"].startswith("/etc/grafana/provisioning/datasources/")
    theirs = yaml.safe_load((provisioning / "datasources.yaml").read_text())["datasources"]
    assert {d["uid"] for d in ours} == {d["uid"] for d in theirs}, "the dashboards' data source"
    (source,) = ours
    assert source["url"] == "https://influxdb:8086" and source["jsonData"]["version"] == "InfluxQL"
    assert "$ENOC_GRAFANA_INFLUX_TOKEN" in source["secureJsonData"]["httpHeaderValue1"]
    assert "ENOC_GRAFANA_INFLUX_TOKEN" in " ".join(grafana["entrypoint"])
    # InfluxDB's certificate checked against enoc's CA, which make-certs gives Grafana
    assert source["jsonData"]["tlsAuthWithCACert"] is True
    assert source["secureJsonData"]["tlsCACert"] == "$ENOC_GRAFANA_INFLUX_CA"
    entrypoint = " ".join(grafana["entrypoint"])
    assert 'ENOC_GRAFANA_INFLUX_CA="$$(cat /run/secrets/enoc/ca.pem)"' in entrypoint
    assert mounts[SECRETS_DEFAULT + "/grafana"] == "/run/secrets/enoc"
    dashboards = list((REPO / "dashboards" / "json").glob("*.json"))
    assert dashboards
    for path in dashboards:
        assert source["uid"] in path.read_text(), f"{path.name} does not use {source['uid']}"
        json.loads(path.read_text())


# ---------------------------------------------------------------- Kubernetes


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_kubernetes_collector_has_replicas_readiness_config_and_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = k8s_documents()
    collector = find(docs, "StatefulSet", "enoc-collector")
    spec = collector["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/healthz" and ports[probe["port"]] == 8080
    assert "httpGet" not in container["livenessProbe"], "a broker outage must not restart it"
    env = {e["name"]: e["valueFrom"] for e in container["env"]}
    assert env["ENOC_COLLECTOR_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "enoc-collector"
    assert volumes["secrets"]["secret"]["secretName"] == "enoc-collector"
    assert mounts["config"] == "/etc/enoc" and mounts["secrets"] == "/run/secrets/enoc"
    assert container["args"] == ["collector", "--config", "/etc/enoc/collector.yaml"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    service = find(docs, "Service", "enoc-collector")
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert spec["serviceName"] == "enoc-collector-headless"

    # The ConfigMap's collector.yaml is a valid config, given the Secret's files.
    text = find(docs, "ConfigMap", "enoc-collector")["data"]["collector.yaml"]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("mqtt-password", "influx-token"):
        (secrets / name).write_text("x" * 24 + "\n")
    monkeypatch.setenv("ENOC_COLLECTOR_ID", "enoc-collector-0")
    config = parse_config(
        text.replace("/run/secrets/enoc/", f"{secrets}/"), CollectorConfig, filename="configmap"
    )
    assert config.mqtt.client_id == "enoc-collector-0"
    assert config.mqtt.shared_group == "enoc-collectors" and config.mqtt.url.startswith("mqtts://")
    assert (
        config.store.url.startswith("postgresql://") and "sslmode=verify-full" in config.store.url
    )
    assert config.influxdb is not None and config.influxdb.url.startswith("https://")
    assert config.influxdb.tls is not None


def test_kubernetes_broker_is_a_tls_only_cluster_with_the_same_acl() -> None:
    docs = k8s_documents()
    emqx = find(docs, "StatefulSet", "emqx")
    assert emqx["spec"]["replicas"] >= 3
    conf = find(docs, "ConfigMap", "emqx")["data"]
    emqx_conf, acl = conf["emqx.conf"], conf["acl.conf"]
    for setting in (
        "listeners.tcp.default.enable = false",
        "verify = verify_peer",
        "fail_if_no_peer_cert = true",
        "no_match = deny",
        "max_inflight = 100",
        "discovery_strategy = dns",
    ):
        assert setting in emqx_conf, setting
    for kind in ("metrics", "events", "status"):
        assert f'"enoc/v1/${{username}}/{kind}"' in acl
    assert acl.rstrip().endswith("{deny, all}.")
    service = find(docs, "Service", "emqx")
    assert [p["port"] for p in service["spec"]["ports"]] == [8883]
    assert "$share" not in acl, "shared subscriptions are authorised on their topic"


def test_kustomize_renders_every_manifest() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the manifests were parsed above")
    result = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    names = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    assert names == {(d["kind"], d["metadata"]["name"]) for d in k8s_documents()}
    assert all(
        d["metadata"].get("namespace") == "enoc" for d in rendered if d["kind"] != "Namespace"
    )


# ---------------------------------------------------------------- systemd


def unit_settings(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_agent_unit_is_locked_down() -> None:
    s = unit_settings("enoc-agent.service")
    assert s["ExecStart"] == ["/opt/enoc/bin/enoc agent --config /etc/enoc/agent.yaml"]
    assert s["DynamicUser"] == ["yes"] and s["StateDirectory"] == ["enoc-agent"]
    assert s["ProtectSystem"] == ["strict"] and s["ProtectHome"] == ["yes"]
    assert s["PrivateTmp"] == ["yes"] and s["NoNewPrivileges"] == ["yes"]
    # UDP 162 for traps; raw ICMP sockets for ping (agent.ping), and nothing else
    both = ["CAP_NET_BIND_SERVICE CAP_NET_RAW"]
    assert s["AmbientCapabilities"] == s["CapabilityBoundingSet"] == both
    assert s["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert s["SystemCallFilter"][0] == "@system-service"
    assert "PrivateUsers" not in s, "a capability in a user namespace cannot bind port 162"
    assert s["MemoryMax"] == ["512M"]
    credentials = dict(c.split(":", 1) for c in s["LoadCredential"])
    agent = yaml.safe_load((DEPLOY / "agent" / "agent.yaml").read_text())
    tls = agent["mqtt"]["tls"]
    for path in (tls["ca_file"], tls["cert_file"], tls["key_file"], agent["mqtt"]["password_file"]):
        name = path.rsplit("/", 1)[1]
        assert path.startswith("${CREDENTIALS_DIRECTORY:-/etc/enoc/credentials}/")
        assert credentials[name] == f"/etc/enoc/credentials/{name}"
    assert agent["spool"]["path"].startswith("/var/lib/enoc-agent/")
    assert agent["traps"]["listen"].endswith(":162")
    assert agent["mqtt"]["url"].startswith("mqtts://")


def test_the_collector_unit_has_no_capabilities() -> None:
    s = unit_settings("enoc-collector.service")
    assert s["CapabilityBoundingSet"] == [""] and s["AmbientCapabilities"] == [""]
    assert s["DynamicUser"] == ["yes"] and s["ProtectSystem"] == ["strict"]
    assert s["PrivateUsers"] == ["yes"]
    loaded = {c.split(":", 1)[0] for c in s["LoadCredential"]}
    assert {"client.key", "mqtt-password", "pgpass", "users.yaml", "session-key"} <= loaded
    assert "ENOC_COLLECTOR_ID=collector-1" in s["Environment"]


def test_make_certs_is_executable_and_documented() -> None:
    script = DEPLOY / "make-certs"
    assert os.access(script, os.X_OK)
    readme = (DEPLOY / "README.md").read_text()
    for topic in ("make-certs", "Sizing", "Add a site", "Rotate", "Backup", "Upgrade"):
        assert topic in readme, topic
    result = subprocess.run(
        [str(script), "--help"],
        env={**os.environ, "ENOC_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--broker-name" in result.stdout and "--agent" in result.stdout


def test_the_example_inventory_is_v3_authpriv_with_keys_from_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "snmp-auth").write_text("auth-key-from-a-file")
    (tmp_path / "snmp-priv").write_text("priv-key-from-a-file")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    path = DEPLOY / "agent" / "devices.yaml"
    inventory = load_config(path, Inventory)
    assert inventory_issues(inventory, str(path)) == []
    (credential,) = inventory.credentials.values()
    assert credential.version == "3"
    assert credential.auth_key is not None and credential.priv_key is not None
    assert credential.auth_key.reveal() == "auth-key-from-a-file"
    assert credential.priv_key.reveal() == "priv-key-from-a-file"
    assert unit_settings("enoc-agent.service")["LoadCredential"][-2:] == [
        "snmp-auth:/etc/enoc/credentials/snmp-auth",
        "snmp-priv:/etc/enoc/credentials/snmp-priv",
    ]
