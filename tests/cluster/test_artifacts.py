"""The deployment artifacts in deploy/ are well-formed and agree with the server's settings.

No container engine or Kubernetes runs here: YAML is parsed, nginx checks its
own configuration (``nginx -t``), the shell script is syntax-checked, and every
``YIHAO_…`` variable an artifact sets must be a real setting (a typo would stop
the nodes at start).
"""

from __future__ import annotations

import configparser
import datetime
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.cluster import LocalCluster, nginx_binary
from server.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Settings the consults capability adds (its branch, merged alongside this one).
CONSULTS_SETTINGS = {"ice_servers", "turn_secret"}


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_objects() -> dict[str, dict[str, Any]]:
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml_documents(path):
            objects[doc["kind"]] = doc
    return objects


def test_every_yihao_variable_in_the_artifacts_is_a_setting() -> None:
    known = set(Settings.model_fields) | CONSULTS_SETTINGS
    files = [p for p in DEPLOY.rglob("*") if p.is_file()]
    found = {
        (path.relative_to(DEPLOY).as_posix(), name)
        for path in files
        for name in re.findall(r"\bYIHAO_([A-Z0-9_]+)", path.read_text(errors="replace"))
    }
    assert found, "no settings found in deploy/"
    unknown = sorted((where, name) for where, name in found if name.lower() not in known)
    assert unknown == []


def test_compose_runs_nginx_two_restarting_nodes_postgres_redis_coturn_and_migrates_first() -> None:
    (compose,) = yaml_documents(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert {"nginx", "node1", "node2", "postgres", "redis", "coturn", "migrate"} <= set(services)
    for node in ("node1", "node2"):
        assert services[node]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert services[node]["environment"]["YIHAO_AUTO_MIGRATE"] == "false"
    assert services["migrate"]["command"] == ["migrate"]
    # Healing: every node restarts by itself under a fixed id of its own.
    ids = [services[node]["environment"]["YIHAO_NODE_ID"] for node in ("node1", "node2")]
    assert len(set(ids)) == 2 and all(ids)
    for node in ("node1", "node2"):
        assert services[node]["restart"] in ("always", "unless-stopped")
    assert services["migrate"]["restart"] == "no"  # a one-off: done when it succeeded
    assert services["node1"]["build"]["dockerfile"] == "deploy/Dockerfile"
    for mount in services["nginx"]["volumes"]:
        assert (DEPLOY / mount.split(":")[0]).exists() or mount.startswith("./tls")
    assert any("--static-auth-secret" in part for part in services["coturn"]["command"])


def test_kubernetes_manifests_have_probes_affinity_and_a_migration_job() -> None:
    objects = k8s_objects()
    assert {
        "Namespace", "ConfigMap", "Secret", "Deployment", "Service", "Ingress",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job", "Kustomization",
    } <= set(objects)  # fmt: skip
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Healing: a dead container is restarted in its pod, under the pod's name as node id.
    assert pod["restartPolicy"] == "Always"
    (node_id,) = [v for v in container["env"] if v["name"] == "YIHAO_NODE_ID"]
    assert node_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert objects["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    annotations = objects["Ingress"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    (job,) = objects["Job"]["spec"]["template"]["spec"]["containers"]
    assert job["args"] == ["migrate"]
    assert objects["ConfigMap"]["data"]["YIHAO_AUTO_MIGRATE"] == "false"
    kustomize = objects["Kustomization"]
    assert all((DEPLOY / "k8s" / name).exists() for name in kustomize["resources"])
    # The Secret is created out of band, never from the example in the repository.
    assert "secret.example.yaml" not in kustomize["resources"]


def test_dockerfile_is_multi_stage_non_root_with_a_health_check() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) >= 3
    assert stages[0].startswith("node:")
    assert "npm run build" in text
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.MULTILINE)


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_systemd_units_run_as_the_yihao_user_after_migrations_and_restart() -> None:
    node = unit(DEPLOY / "systemd" / "yihao@.service")
    assert node["Service"]["User"] == "yihao"
    assert node["Service"]["ExecStart"].endswith("serve --host 127.0.0.1 --port %i")
    assert "yihao-migrate.service" in node["Unit"]["Requires"]
    # Healing: restarted after a kill -9 or any exit but bad settings (2), within a second,
    # under the stable id host:port; `systemctl stop` (SIGTERM) is not undone.
    assert node["Service"]["Restart"] == "always"
    assert float(node["Service"]["RestartSec"]) <= 1
    assert "2" in node["Service"]["RestartPreventExitStatus"].split()
    assert node["Service"]["KillSignal"] == "SIGTERM"
    assert "Environment=YIHAO_NODE_ID=%H:%i" in (DEPLOY / "systemd" / "yihao@.service").read_text()
    migrate = unit(DEPLOY / "systemd" / "yihao-migrate.service")
    assert migrate["Service"]["Type"] == "oneshot"
    assert migrate["Service"]["ExecStart"].endswith("yihao migrate")
    timer = unit(DEPLOY / "systemd" / "yihao-backup.timer")
    assert timer["Timer"]["OnCalendar"]


def test_coturn_uses_the_rest_secret_scheme_without_a_secret_in_the_file() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "coturn" / "turnserver.conf").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "use-auth-secret" in lines
    assert not any(line.startswith("static-auth-secret") for line in lines)
    assert any(line.startswith("realm=") for line in lines)


def test_backup_script_is_valid_shell() -> None:
    script = DEPLOY / "backup" / "yihao-pg-backup.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    usage = subprocess.run([str(script)], capture_output=True, text=True)
    assert usage.returncode == 2
    assert "backup" in usage.stderr


def self_signed(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "yihao.example.org")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def nginx_test(prefix: Path, site: str) -> None:
    """``nginx -t`` on a main configuration that includes ``site`` as a distribution would."""
    (prefix / "snippets").mkdir(parents=True, exist_ok=True)
    (prefix / "tls").mkdir(exist_ok=True)
    self_signed(prefix / "tls")
    for include in DEPLOY.glob("nginx/*.inc"):
        shutil.copy(include, prefix / "snippets" / include.name)
    (prefix / "site.conf").write_text(site.replace("/etc/nginx/tls/", f"{prefix}/tls/"))
    (prefix / "nginx.conf").write_text(
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
        "events {}\nhttp {\n    include site.conf;\n}\n"
    )
    nginx_check(prefix, prefix / "nginx.conf")


def nginx_check(prefix: Path, conf: Path) -> None:
    result = subprocess.run(
        [nginx_binary(), "-t", "-p", str(prefix), "-c", str(conf), "-e", "/dev/stderr"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


# nginx comes with the integration tier's machine (installed by .ci/run).
@pytest.mark.integration
def test_nginx_accepts_the_plain_server_site(tmp_path: Path) -> None:
    nginx_test(tmp_path, (DEPLOY / "nginx" / "yihao.conf").read_text())


@pytest.mark.integration
def test_nginx_accepts_the_compose_site(tmp_path: Path) -> None:
    site = (DEPLOY / "nginx" / "compose.conf").read_text()
    # The compose service names resolve only inside the compose network.
    nginx_test(tmp_path, re.sub(r"node\d:8080", "127.0.0.1:8080", site))


@pytest.mark.integration
def test_nginx_accepts_the_generated_loopback_configuration(tmp_path: Path) -> None:
    (tmp_path / "web" / "assets").mkdir(parents=True)
    cluster = LocalCluster(env={}, workdir=tmp_path / "cluster", nodes=2, web_dir=tmp_path / "web")
    conf = tmp_path / "cluster" / "nginx" / "nginx.conf"
    assert "location /assets/" in conf.read_text()
    assert cluster.proxy is not None and not cluster.proxy.running
    nginx_check(conf.parent, conf)
