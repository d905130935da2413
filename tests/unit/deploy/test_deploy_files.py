"""The production deployment files in deploy/: Dockerfile, docker-compose, Kubernetes,
systemd and Prometheus rules parse, name real `igw` commands, reference files that
exist and carry configs that validate."""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.cli.main import build_parser
from services.runtime.config import load_settings
from services.runtime.settings import Settings
from services.workers import registry

REPO = Path(__file__).parents[3]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
SECRETS = {
    "IGW_MASTER_KEY": "sk-master-test",
    "OPENAI_API_KEY": "sk-openai-test",
    "CLICKHOUSE_PASSWORD": "pw-test",
}
SERVICE_COMMANDS = {"ingress", "router", "worker", "accounting", "batcher"}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("igw has no subcommands")


def assert_igw_command(argv: list[str]) -> None:
    """argv (without `igw`) is a valid `igw` invocation of a service command."""
    assert argv, "empty command"
    assert argv[0] in subcommands(), f"{argv[0]!r} is not an igw subcommand"
    assert argv[0] in SERVICE_COMMANDS, f"{argv[0]!r} is not a long-running service"
    args = build_parser().parse_args(argv)  # exits (SystemExit) on bad arguments
    if args.command == "worker":
        assert args.provider in registry.names() or args.provider == "%i"


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


# --- Dockerfile -------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_runs_igw_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    stages = [rest for kw, rest in instructions if kw == "FROM"]
    assert stages
    assert all(s.startswith("python:3.12-slim") for s in stages)
    final = instructions[max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM") :]
    users = [rest for kw, rest in final if kw == "USER"]
    assert users, "the final stage sets no USER"
    assert users[-1] not in {"root", "0"} and not users[-1].startswith("0:")
    assert ("ENTRYPOINT", '["igw"]') in final
    assert ("EXPOSE", "8080") in final
    assert any(kw == "RUN" and "pip install ." in rest for kw, rest in instructions)
    assert not any("[local" in rest for _, rest in instructions)


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    for kw, rest in dockerfile_instructions():
        if kw != "COPY" or rest.startswith("--from"):
            continue
        for source in rest.split()[:-1]:
            assert (REPO / source).exists(), source
            assert source not in ignored, f"{source} is copied but in the ignore list"


# --- docker compose ---------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def igw_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("image", "").startswith("igw") or "build" in svc
    }


def test_compose_runs_every_igw_service(compose: dict[str, Any]) -> None:
    services = igw_services(compose)
    commands = [svc["command"] for svc in services.values()]
    for argv in commands:
        assert_igw_command(argv)
    counts = {c: sum(argv[0] == c for argv in commands) for c in SERVICE_COMMANDS}
    assert counts == {"ingress": 2, "router": 2, "worker": 2, "accounting": 1, "batcher": 1}
    assert all(
        argv == ["worker", "--provider", "openai"] for argv in commands if argv[0] == "worker"
    )
    build = next(svc["build"] for svc in services.values())
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
        DEPLOY / "Dockerfile"
    )


def test_compose_igw_environment_and_ports(compose: dict[str, Any]) -> None:
    services = igw_services(compose)
    for name, svc in services.items():
        env = svc["environment"]
        assert env["IGW_CONFIG"] == "/etc/igw/igw.yaml", name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://otel-collector:"), name
        otel_port = int(env["OTEL_EXPORTER_OTLP_ENDPOINT"].rsplit(":", 1)[1])
        collector = yaml.safe_load((DEPLOY / "otel" / "collector.yaml").read_text())
        endpoints = [p["endpoint"] for p in collector["receivers"]["otlp"]["protocols"].values()]
        assert f"0.0.0.0:{otel_port}" in endpoints
        for var in SECRETS:
            assert var in env, f"{name} does not get {var}"
        assert "./compose/igw.yaml:/etc/igw/igw.yaml:ro" in svc["volumes"], name
        for dep in svc["depends_on"]:
            assert dep in compose["services"], dep
    settings = compose_settings()
    host_ports = []
    for name, svc in services.items():
        for mapping in svc.get("ports", []):
            assert svc["command"] == ["ingress"], f"{name} publishes a port but serves no HTTP"
            host, container = mapping.split(":")
            assert int(container) == settings.server.port
            host_ports.append(host)
    assert len(host_ports) == 2 and len(set(host_ports)) == 2, "ingress host ports must differ"


def test_compose_nats_cluster(compose: dict[str, Any]) -> None:
    nodes = {n: s for n, s in compose["services"].items() if s.get("image", "").startswith("nats:")}
    assert len(nodes) == 3
    conf = (DEPLOY / "nats" / "nats-cluster.conf").read_text(encoding="utf-8")
    assert "jetstream" in conf and "store_dir: /data" in conf
    routes = set(re.findall(r"nats://([\w-]+):6222", conf))
    assert routes == set(nodes)
    url_host = compose_settings().nats.url.removeprefix("nats://").split(":")[0]
    volumes = compose["volumes"]
    for name, svc in nodes.items():
        assert svc["environment"]["NATS_SERVER_NAME"] == name
        assert url_host in svc["networks"]["default"]["aliases"]
        data = [v for v in svc["volumes"] if v.endswith(":/data")]
        assert len(data) == 1 and data[0].split(":")[0] in volumes


def test_compose_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    mounted = 0
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"
                mounted += 1
            else:
                assert source in named, f"{name}: volume {source} is not declared"
    assert mounted >= 8


def test_compose_images(compose: dict[str, Any]) -> None:
    images = {svc.get("image", "").split(":")[0] for svc in compose["services"].values()}
    for image in (
        "nats",
        "clickhouse/clickhouse-server",
        "prom/prometheus",
        "grafana/grafana",
        "otel/opentelemetry-collector-contrib",
        "jaegertracing/all-in-one",
    ):
        assert image in images


def test_compose_grafana_gets_every_variable_its_datasource_reads(compose: dict[str, Any]) -> None:
    datasource = DEPLOY / "grafana" / "provisioning" / "datasources" / "clickhouse.yaml"
    lines = datasource.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    needed = set(re.findall(r"\$\{?([A-Z_]+)\}?", text))
    assert needed
    env = compose["services"]["grafana"]["environment"]
    assert needed <= set(env)


def compose_settings() -> Settings:
    return load_settings(DEPLOY / "compose" / "igw.yaml", env=SECRETS)


def test_compose_igw_yaml_validates() -> None:
    settings = compose_settings()
    assert settings.nats.embedded is False
    assert settings.nats.stream_replicas == 3
    assert settings.server.host == "0.0.0.0"
    assert settings.clickhouse.dsn == "http://igw:pw-test@clickhouse:8123"
    assert settings.auth.master_key is not None
    assert settings.auth.master_key.get_secret_value() == SECRETS["IGW_MASTER_KEY"]
    [model] = settings.models
    assert model.api_key is not None
    assert model.api_key.get_secret_value() == SECRETS["OPENAI_API_KEY"]
    assert not settings.simulator_enabled


def test_nats_urls_are_accepted_by_the_client() -> None:
    """services/runtime/bus.py passes nats.url to nats-py as one string; a comma list
    would be rejected ("invalid connect url option")."""
    from nats.aio.client import Client

    for settings in (compose_settings(), k8s_settings()):
        Client()._setup_server_pool(settings.nats.url)


# --- Prometheus -------------------------------------------------------------


def test_prometheus_scrapes_every_service(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    targets = {
        t.split(":")[0]
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for t in group["targets"]
    }
    assert set(igw_services(compose)) <= targets
    assert targets - {"localhost"} <= set(compose["services"])
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def test_prometheus_scrapes_the_ports_the_services_serve_metrics_on(
    compose: dict[str, Any],
) -> None:
    """The ingress on server.port, every other IGW service on metrics.port."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    settings = compose_settings()
    assert settings.metrics.port and settings.metrics.host == "0.0.0.0"
    services = igw_services(compose)
    scraped = 0
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, port = target.split(":")
                if host not in services:
                    continue
                assert job["metrics_path"] == "/metrics"
                ingress = services[host]["command"] == ["ingress"]
                assert int(port) == (settings.server.port if ingress else settings.metrics.port)
                scraped += 1
    assert scraped == len(services)


def defined_series() -> set[str]:
    """Every sample name the services' registries can expose."""
    from services.runtime import metrics

    registries = [
        metrics.IngressMetrics().registry,
        metrics.RouterMetrics(list).registry,
        metrics.WorkerMetrics().registry,
        metrics.AccountingMetrics().registry,
        metrics.BatchMetrics().registry,
    ]
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count"),
    }
    return {
        family.name + suffix
        for registry in registries
        for family in registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
PROMETHEUS_SERIES = frozenset({"up"})
"""Series Prometheus itself makes for every target."""


def promql_series(expr: str) -> set[str]:
    """The series an expression selects: its bare identifiers that are not a function,
    an aggregation, a keyword or a label (matchers, grouping lists and ranges are cut)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", text)
    found = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in PROMQL_KEYWORDS:
            continue
        found.add(match.group())
    return found


def test_promql_series_finds_only_series() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (provider, le) (rate(a_bucket{x="y"}[5m]))) > 1e-9 '
        "and on (job) max_over_time((max by (c) (b_total))[10m:1m]) or up == 0"
    )
    assert promql_series(expr) == {"a_bucket", "b_total", "up"}


def test_alert_rules_are_complete() -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert rules
    for rule in rules:
        assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule), rule.get("alert")
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description"} <= set(rule["annotations"])
    exprs = " ".join(r["expr"] for r in rules)
    for metric in (
        "llm_gateway_breaker_state",
        'llm_gateway_requests_total{status="error"}',
        "llm_gateway_consumer_ack_pending",
        "llm_gateway_queue_age_seconds",
    ):
        assert metric in exprs


def test_alert_rules_only_use_series_the_code_defines() -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    known = defined_series() | PROMETHEUS_SERIES
    for rule in rules:
        used = promql_series(rule["expr"])
        assert used, rule["alert"]
        assert used <= known, f"{rule['alert']} uses undefined series {used - known}"


def test_k8s_pods_are_scraped_where_they_serve_metrics() -> None:
    settings = k8s_settings()
    for name, dep in deployments().items():
        template = dep["spec"]["template"]
        [container] = template["spec"]["containers"]
        annotations = template["metadata"]["annotations"]
        ingress = container["args"] == ["ingress"]
        port = settings.server.port if ingress else settings.metrics.port
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/path"] == "/metrics", name
        assert int(annotations["prometheus.io/port"]) == port, name
        assert port in {p["containerPort"] for p in container["ports"]}, name
    assert settings.metrics.host == "0.0.0.0"


def test_systemd_metrics_ports_differ() -> None:
    """Every unit on one host: each service's metrics.port is its own (0: not served)."""
    ports = []
    for unit in SYSTEMD.iterdir():
        for value in unit_values(unit).get("Environment", []):
            if value.startswith("IGW_METRICS__PORT="):
                ports.append(int(value.partition("=")[2]))
    served = [p for p in ports if p]
    assert len(served) == 3 and len(set(served)) == 3


# --- Kubernetes -------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def k8s_docs() -> list[dict[str, Any]]:
    return [doc for res in kustomization()["resources"] for doc in load_all(K8S / res)]


def k8s_settings() -> Settings:
    [config] = [d for d in k8s_docs() if d["kind"] == "ConfigMap"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "igw.yaml"
        path.write_text(config["data"]["igw.yaml"], encoding="utf-8")
        return load_settings(path, env=SECRETS)


def test_every_k8s_file_parses_and_is_listed() -> None:
    resources = kustomization()["resources"]
    for res in resources:
        assert (K8S / res).is_file(), res
    listed = {K8S / r for r in resources}
    for path in K8S.glob("*.yaml"):
        docs = load_all(path)
        assert docs, path
        if path.name != "kustomization.yaml":
            assert path in listed, f"{path.name} is not in kustomization.yaml"
            assert all({"apiVersion", "kind", "metadata"} <= set(d) for d in docs)
    for path in (K8S / "values").glob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict)


def deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "Deployment"}


def test_k8s_deployments_run_every_service_with_config_and_secret() -> None:
    deps = deployments()
    assert set(deps) == {f"igw-{n}" for n in ("ingress", "router", "worker-openai")} | {
        "igw-accounting",
        "igw-batcher",
    }
    for name, dep in deps.items():
        spec = dep["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), name
        [container] = spec["template"]["spec"]["containers"]
        assert_igw_command(container["args"])
        assert {"secretRef": {"name": "igw-secrets"}} in container["envFrom"]
        assert {"name": "IGW_CONFIG", "value": "/etc/igw/igw.yaml"} in container["env"]
        volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/igw")
        assert volumes[mount["name"]]["configMap"]["name"] == "igw-config"
        assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        if container["args"][0] != "ingress":
            assert "readinessProbe" not in container and "livenessProbe" not in container


def test_k8s_ingress_probes_and_service_use_the_configured_port() -> None:
    port = k8s_settings().server.port
    [container] = deployments()["igw-ingress"]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["args"] == ["ingress"]
    probes = {kind: container[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/ready"
    assert probes["livenessProbe"]["path"] == "/health"
    for probe in probes.values():
        assert ports.get(probe["port"], probe["port"]) == port
    [service] = [d for d in k8s_docs() if d["kind"] == "Service"]
    labels = deployments()["igw-ingress"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    [svc_port] = service["spec"]["ports"]
    assert ports.get(svc_port["targetPort"], svc_port["targetPort"]) == port


def test_k8s_hpa_and_pdb_target_existing_deployments() -> None:
    deps = deployments()
    docs = k8s_docs()
    hpas = {
        d["spec"]["scaleTargetRef"]["name"]: d
        for d in docs
        if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert set(hpas) == {"igw-ingress", "igw-worker-openai"}
    for hpa in hpas.values():
        [metric] = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    selected = set()
    for pdb in pdbs:
        match = pdb["spec"]["selector"]["matchLabels"]
        names = [
            n
            for n, d in deps.items()
            if match.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(names) == 1, pdb["metadata"]["name"]
        selected.update(names)
    assert selected == set(deps)


def test_k8s_igw_yaml_validates_and_matches_the_helm_values() -> None:
    settings = k8s_settings()
    assert settings.nats.embedded is False and settings.nats.stream_replicas == 3
    nats = yaml.safe_load((K8S / "values" / "nats.yaml").read_text())
    assert nats["config"]["cluster"]["replicas"] == settings.nats.stream_replicas
    assert nats["config"]["jetstream"]["fileStore"]["enabled"] is True
    clickhouse = yaml.safe_load((K8S / "values" / "clickhouse.yaml").read_text())
    assert clickhouse["auth"]["username"] == "igw"
    assert settings.clickhouse.dsn is not None
    assert settings.clickhouse.dsn.startswith("http://igw:")
    assert clickhouse["auth"]["existingSecretKey"] in SECRETS
    if clickhouse["shards"] > 1 or clickhouse["replicaCount"] > 1:
        assert settings.clickhouse.manage_schema is False


# --- systemd ----------------------------------------------------------------


def unit_values(path: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.parametrize(
    ("unit", "command"),
    [
        ("igw-ingress.service", "ingress"),
        ("igw-router.service", "router"),
        ("igw-worker@.service", "worker"),
        ("igw-accounting.service", "accounting"),
        ("igw-batcher.service", "batcher"),
    ],
)
def test_systemd_units(unit: str, command: str) -> None:
    values = unit_values(SYSTEMD / unit)
    [exec_start] = values["ExecStart"]
    binary, *argv = shlex.split(exec_start)
    assert binary.endswith("/igw")
    assert argv[0] == command
    assert_igw_command(argv)
    if command == "worker":
        assert argv == ["worker", "--provider", "%i"]
    assert values["Restart"] == ["on-failure"]
    assert values["User"] == ["igw"]
    assert values["EnvironmentFile"] == ["/etc/igw/env"]
    assert "IGW_CONFIG=/etc/igw/igw.yaml" in values["Environment"]
    assert values["WantedBy"] == ["multi-user.target"]


def test_no_unexpected_systemd_units() -> None:
    assert {p.name for p in SYSTEMD.iterdir()} == {
        "igw-ingress.service",
        "igw-router.service",
        "igw-worker@.service",
        "igw-accounting.service",
        "igw-batcher.service",
    }


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `make promtool` installs it (Debian's prometheus package)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_alert_rules() -> None:
    checked = promtool("check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    # the config names the rules where compose mounts them; point it at the repo's copy
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    checked = promtool("check", "config", str(local))
    assert checked.returncode == 0, checked.stdout + checked.stderr
