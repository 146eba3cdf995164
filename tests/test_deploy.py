"""The deployment files (issue 18): the image, the compose file, the Kubernetes manifests, the alert
rules and the dashboard. No Docker engine or cluster runs here, so what cannot run is validated, and what
can run does: promtool checks and unit-tests the rules, Kustomize (the pinned release deploy/ensure-kustomize.sh builds) renders the manifests and
kubernetes-validate checks them against the Kubernetes JSON schemas, and a real Prometheus loads the
rules and scrapes a real worker under the compose file's demo traffic, answering every PromQL expression
of every alert and dashboard panel. docs/operations.md describes all of it."""

from __future__ import annotations

import copy
import fnmatch
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from stream_app.broker.local_kafka import free_port

from .helpers import REPO, Names, WorkerProcess, encode, produce, track, wait_for

DEPLOY = REPO / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "stream-app.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER = DEPLOY / "grafana" / "provisioning" / "dashboards" / "stream-app.yml"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
OPERATIONS = REPO / "docs" / "operations.md"
TRAFFIC = DEPLOY / "demo-traffic.py"
MIB = 1 << 20

# series Prometheus makes itself, not the worker: every target's `up`, and the alerts' state
PROMETHEUS_SERIES = {"up", "ALERTS"}
# Grafana's variables, replaced by what Grafana would send for "all workers"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}


# -- helpers ---------------------------------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is required for this test: run deploy/ensure-prometheus.sh (make test does)", pytrace=False)
    return found


def _run(cmd: list[str], timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs)


def _alert_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(ALERTS.read_text())["groups"]


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _alert_groups() for rule in group["rules"] if "alert" in rule]


def _recorded() -> set[str]:
    return {rule["record"] for group in _alert_groups() for rule in group["rules"] if "record" in rule}


def _panels() -> list[dict[str, Any]]:
    """Every panel that shows data (rows are only headings)."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def _panel_exprs() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in _panels() for target in panel["targets"]]


def _grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr!r}"
    return expr


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
             "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: identifiers that are neither functions, keywords, label
    names (in braces or in by/on/... clauses), strings nor durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def promql_selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched) for every `metric{...}` selector of an expression."""
    return [(m.group(1), set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2))))
            for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr)]


def exposition_names(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """From Prometheus text format: every name that can be queried (families declared by # TYPE, with
    the suffixes their samples carry, and every sample name) and the label names seen per sample name."""
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "histogram":
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            elif kind == "summary":
                names.update({f"{name}_sum", f"{name}_count"})
            elif kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
            assert match, f"not a sample line: {line!r}"
            names.add(match.group(1))
            labels.setdefault(match.group(1), set()).update(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', match.group(3) or ""))
    return names, labels


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


KUSTOMIZE_VERSION = "v5.7.1"  # deploy/ensure-kustomize.sh builds it (make test runs it)


def _kustomize() -> list[dict[str, Any]]:
    cache = Path(os.environ.get("STREAM_APP_CACHE", Path.home() / ".cache" / "stream-app"))
    kustomize = cache / f"kustomize-{KUSTOMIZE_VERSION}" / "kustomize"
    if not kustomize.exists():
        pytest.fail(f"Kustomize {KUSTOMIZE_VERSION} is required to render deploy/k8s: run deploy/ensure-kustomize.sh "
                    "(make test does)", pytrace=False)
    rendered = _run([str(kustomize), "build", str(K8S)])
    assert rendered.returncode == 0, f"kustomize build deploy/k8s failed:\n{rendered.stderr}"
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _dotenv(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            joined.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in joined]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _dockerfile_instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _healthcheck_command() -> list[str]:
    healthchecks = [args for name, args in _dockerfile_instructions() if name == "HEALTHCHECK"]
    assert len(healthchecks) == 1, "the image needs one HEALTHCHECK"
    command = healthchecks[0].split(" CMD ", 1)[1].strip()
    return json.loads(command)


def _stream_app_sources() -> str:
    return "\n".join(path.read_text() for path in sorted((REPO / "stream_app").rglob("*.py")))


def _image_env_names(compose: dict[str, Any]) -> dict[str, set[str]]:
    """The environment variable names set for each compose service that runs the project's image."""
    names = {}
    for name, service in compose["services"].items():
        if service.get("image") == "stream-app:local" or "build" in service:
            names[name] = set((service.get("environment") or {}).keys())
    return names


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


# -- alert rules -------------------------------------------------------------------------------------------


def test_promtool_checks_the_configuration_and_the_rules() -> None:
    promtool = _tool("promtool")
    config = _run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    assert config.returncode == 0, config.stdout + config.stderr
    assert "alerts.yml" in config.stdout + config.stderr  # the configuration loads the rules file
    rules = _run([promtool, "check", "rules", str(ALERTS)])
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in _alert_groups())} rules found" in rules.stdout


def test_every_alert_tells_the_operator_what_to_do() -> None:
    rules = _alert_rules()
    assert len(rules) >= 15
    anchors = github_anchors(OPERATIONS.read_text())
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no `for:` duration"
        assert rule.get("labels", {}).get("severity") in ("critical", "warning", "info"), f"{name}: no severity"
        annotations = rule.get("annotations", {})
        assert len(annotations.get("summary", "")) > 10 and len(annotations.get("description", "")) > 60, f"{name}: summary, description"
        runbook = annotations.get("runbook_url", "")
        assert runbook.startswith("docs/operations.md#"), f"{name}: runbook_url must point into docs/operations.md"
        assert runbook.split("#", 1)[1] in anchors, f"{name}: docs/operations.md has no heading for {runbook}"
        assert "$value" not in json.dumps(annotations), f"{name}: keep $value out (alerts_test.yml matches annotations exactly)"


def test_promtool_unit_tests_fire_and_stay_silent_for_every_alert(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    result = _run([promtool, "test", "rules", str(ALERTS_TEST)])
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    cases = [case for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for case in test.get("alert_rule_test", [])]
    for rule in _alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']}: no unit test in which it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']}: no unit test in which it stays silent"
    # the unit tests bite: with an alert that never fires, or always fires, its own cases fail
    from concurrent.futures import ThreadPoolExecutor

    unit_tests = yaml.safe_load(ALERTS_TEST.read_text())
    runs = []
    for rule in _alert_rules():
        tests = [dict(test, alert_rule_test=[case for case in test["alert_rule_test"] if case["alertname"] == rule["alert"]])
                 for test in unit_tests["tests"] if any(case["alertname"] == rule["alert"] for case in test.get("alert_rule_test", []))]
        for test in tests:
            test.pop("promql_expr_test", None)
        for broken, meaning in (("vector(1) == 2", "never fires"), ("vector(1)", "always fires")):
            folder = tmp_path / f"{rule['alert']}-{len(runs)}"
            folder.mkdir()
            groups = _alert_groups()
            for group in groups:
                for candidate in group["rules"]:
                    if candidate.get("alert") == rule["alert"]:
                        candidate["expr"] = broken
            (folder / "alerts.yml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
            (folder / "alerts_test.yml").write_text(yaml.safe_dump(dict(unit_tests, tests=tests), sort_keys=False))
            runs.append((f"{rule['alert']} {meaning}", folder / "alerts_test.yml"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda run: _run([promtool, "test", "rules", str(run[1])]).returncode, runs))
    still_passing = [what for (what, _), code in zip(runs, results) if code == 0]
    assert not still_passing, f"alerts_test.yml still passes when: {still_passing}"


def test_the_prometheus_rule_carries_the_same_groups_as_alerts_yml() -> None:
    rule = yaml.safe_load((K8S / "prometheusrule.yaml").read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == _alert_groups(), "deploy/k8s/prometheusrule.yaml is out of date: run python deploy/sync-prometheusrule.py"
    check = _run([sys.executable, str(DEPLOY / "sync-prometheusrule.py"), "--check"])
    assert check.returncode == 0, check.stderr


# -- dashboard -------------------------------------------------------------------------------------------


def test_every_dashboard_panel_has_a_unit_a_description_and_a_query() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = _panels()
    assert len(panels) >= 20
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    datasource_uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    for panel in panels:
        title = panel["title"]
        assert len(panel.get("description", "")) > 30, f"{title}: no description"
        assert panel.get("fieldConfig", {}).get("defaults", {}).get("unit"), f"{title}: no unit"
        assert panel["datasource"]["uid"] == datasource_uid, f"{title}: not the provisioned data source"
        assert panel["targets"] and all(target["expr"].strip() for target in panel["targets"]), f"{title}: no query"
        for target in panel["targets"]:
            _grafana_to_promql(target["expr"])  # only variables Grafana defines
    covered = " ".join(expr for _, expr in _panel_exprs())
    for metric in ("stream_app_events_consumed_total", "stream_app_consumer_lag", "stream_app_dead_letters_total",
                   "stream_app_transitions_total", "stream_app_segment_population", "stream_app_event_time_to_emit_seconds_bucket",
                   "stream_app_timer_lateness_seconds_bucket", "stream_app_commit_duration_seconds_bucket", "stream_app_commits_total",
                   "stream_app_restore_remaining_records", "stream_app_restored_records_total", "process_resident_memory_bytes",
                   "stream_app:memory_limit_bytes", "stream_app_rocksdb_cache_bytes", "stream_app_rocksdb_budget_bytes",
                   "stream_app_late_events_total", "stream_app_partition_backfill_clock_seconds", "stream_app_state_evictions_total"):
        assert metric in covered, f"no panel shows {metric}"
    # Grafana finds the dashboard where compose mounts it, and the data source it names
    provider = yaml.safe_load(DASHBOARD_PROVIDER.read_text())["providers"][0]["options"]["path"]
    grafana = _compose()["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_the_metric_name_extractor() -> None:
    expr = ('histogram_quantile(0.99, sum by (le) (rate(stream_app_commit_duration_seconds_bucket{job="stream-app", '
            'instance=~".*"}[5m]))) > 1 and on (instance) up offset 5m unless stream_app:memory_limit_bytes or vector(0)')
    assert promql_metric_names(expr) == {"stream_app_commit_duration_seconds_bucket", "up", "stream_app:memory_limit_bytes"}
    assert promql_selectors('a{job="x", partition!~"1"} / b') == [("a", {"job", "partition"})]


# -- Kubernetes ------------------------------------------------------------------------------------------


def test_the_manifests_render_and_validate_against_the_kubernetes_schemas() -> None:
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import all_versions
    except ImportError:
        pytest.fail("kubernetes-validate (the test extra) is required: pip install -e '.[test]'", pytrace=False)

    docs = _kustomize()
    assert sorted(doc["kind"] for doc in docs) == sorted(
        ["ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"])
    shipped = sorted(all_versions(), key=lambda v: tuple(int(part) for part in v.split(".")))
    for version in (shipped[0], shipped[-1]):  # the oldest and the newest Kubernetes it ships schemas of
        for doc in docs:
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # the operator's CRDs: checked by structure below
            kubernetes_validate.validate(doc, version, strict=True)
    # the validator bites: a misspelt field is refused
    broken = copy.deepcopy(_one(docs, "StatefulSet"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, shipped[-1], strict=True)

    service, statefulset = _one(docs, "Service"), _one(docs, "StatefulSet")
    monitor, rule = _one(docs, "ServiceMonitor"), _one(docs, "PrometheusRule")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and set(monitor["spec"]) <= {"jobLabel", "selector", "endpoints", "namespaceSelector"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "stream-app"  # the rules' job="stream-app"
    port_names = {port["name"] for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings", "metricRelabelings"}
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and set(rule["spec"]) == {"groups"}
    assert rule["spec"]["groups"] == _alert_groups()
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"


def test_the_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    rule = _one(_kustomize(), "PrometheusRule")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    checked = _run([promtool, "check", "rules", str(tmp_path / "rules.yml")])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_statefulset_fits_the_worker(tmp_path: Path) -> None:
    from stream_app.settings import Settings

    docs = _kustomize()
    statefulset, service, pdb = _one(docs, "StatefulSet"), _one(docs, "Service"), _one(docs, "PodDisruptionBudget")
    config = _one(docs, "ConfigMap")["data"]
    pod = statefulset["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items() and pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"].get("publishNotReadyAddresses") is True  # restoring pods are scraped too
    assert pdb["spec"]["maxUnavailable"] == 1
    (container,) = pod["spec"]["containers"]
    env = {item["name"]: item for item in container.get("env", [])}
    assert env["STREAM_APP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["envFrom"][0]["configMapRef"]["name"] == _one(docs, "ConfigMap")["metadata"]["name"]

    # one port: the one the worker serves, probed on the paths the worker serves
    (port,) = container["ports"]
    assert port["containerPort"] == int(config["STREAM_APP_WEB_PORT"]) and config["STREAM_APP_WEB_HOST"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}

    # RocksDB on a volume per pod, at the data folder
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == config["STREAM_APP_DATA_DIR"] == "/data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]

    # non-root, read-only root filesystem, /tmp writable
    security, pod_security = container["securityContext"], pod["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] == _dockerfile_uid() == pod_security["fsGroup"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert "emptyDir" in volumes[next(name for name, path in mounts.items() if path == "/tmp")]

    # memory fits the RocksDB budget, and the alert rules know the limit
    resources = container["resources"]
    request, limit = _quantity(resources["requests"]["memory"]), _quantity(resources["limits"]["memory"])
    budget = int(config["STREAM_APP_ROCKSDB_MEMORY_MB"]) * MIB
    assert request >= budget + 256 * MIB, "the memory request must hold the RocksDB budget and the process around it"
    assert limit >= request and limit == _memory_limit_rule()
    assert statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > int(config["STREAM_APP_STOP_GRACE_S"])

    # the secrets: SASL user from a secretKeyRef, password and CA as files of a secret volume
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert "secretKeyRef" in env["KAFKA_SASL_USERNAME"]["valueFrom"]
    secret_volume = next(volume for volume in volumes.values() if "secret" in volume)
    secret_dir = next(mount["mountPath"] for mount in container["volumeMounts"] if mount["name"] == secret_volume["name"])
    files = {f"{secret_dir}/{item['path']}": item["key"] for item in secret_volume["secret"]["items"]}
    assert env["KAFKA_SASL_PASSWORD_FILE"]["value"] in files and env["KAFKA_SSL_CAFILE"]["value"] in files
    assert env["KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] == secret_volume["secret"]["secretName"]

    # and the worker accepts this environment: the pod's settings, with the Secret's files in place
    from .helpers_tls import make_pki

    pki = make_pki(tmp_path / "pki")
    secret_files = {"password": "s3cret\n", "ca.crt": pki.ca.read_text()}
    environment = {key: value for key, value in config.items()}
    for name, item in env.items():
        if "value" in item:
            value = item["value"]
            environment[name] = str(tmp_path / files[value]) if value in files else value
            if value in files:
                (tmp_path / files[value]).write_text(secret_files[files[value]])
        elif "secretKeyRef" in item["valueFrom"]:
            environment[name] = "stream-app"
        else:
            environment[name] = "stream-app-0"
    kept = dict(os.environ)
    try:
        for name in [n for n in os.environ if n.startswith(("KAFKA_", "STREAM_APP_"))]:
            del os.environ[name]
        os.environ.update(environment)
        settings = Settings()
    finally:
        os.environ.clear()
        os.environ.update(kept)
    assert settings.slot_id == "stream-app-0" and settings.data_dir == Path("/data") and settings.web_port == port["containerPort"]
    assert settings.kafka_security.protocol == "SASL_SSL" and settings.kafka_security.password is not None
    assert settings.rocksdb_memory_mb * MIB == budget


def _quantity(text: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", text)
    assert match, text
    return int(match.group(1)) * units.get(match.group(2), 1)


def _memory_limit_rule() -> int:
    (rule,) = [r for g in _alert_groups() for r in g["rules"] if r.get("record") == "stream_app:memory_limit_bytes"]
    return int(re.fullmatch(r"vector\((\d+)\)", rule["expr"]).group(1))


def _dockerfile_uid() -> int:
    users = [args for name, args in _stages()[-1] if name == "USER"]
    assert users, "the runtime stage sets no USER"
    return int(users[-1].split(":")[0])


# -- the image and the compose file ----------------------------------------------------------------------


def test_the_dockerfile_builds_a_pinned_non_root_image_from_a_wheel() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    for stage in stages:
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-[a-z]+)?", image), f"FROM {image}: pin the exact version (python:3.11.X-slim-...)"
    build = " ".join(args for name, args in stages[0] if name == "RUN")
    runtime = stages[-1]
    runtime_runs = " ".join(args for name, args in runtime if name == "RUN")
    assert "pip wheel" in build, "the build stage builds wheels"
    assert "pip install" in runtime_runs and "--no-index" in runtime_runs and "/wheels" in runtime_runs, "the runtime installs the wheels"
    everything = " ".join(args for stage in stages for _, args in stage)
    assert not re.search(r"pip install[^&;]*\s(-e|--editable)\b", everything), "no editable install"
    assert not [args for name, args in runtime if name == "COPY" and "--from" not in args], "the runtime stage copies no source"
    uid = _dockerfile_uid()
    assert uid >= 1000, "the image runs as an unprivileged user"
    assert f"chown {uid}:{uid} /data" in runtime_runs and ("VOLUME", '["/data"]') in runtime
    env = " ".join(args for name, args in runtime if name == "ENV")
    assert "STREAM_APP_WEB_HOST=0.0.0.0" in env and "STREAM_APP_DATA_DIR=/data" in env
    assert ("ENTRYPOINT", '["stream-app"]') in runtime and ("CMD", '["worker"]') in runtime
    command = _healthcheck_command()
    assert command[0] == "python" and "/healthz" in command[-1] and "urllib" in command[-1]
    # what the build stage copies is in the build context
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    for name, args in stages[0]:
        if name == "COPY":
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: no such file"
                assert _in_build_context(source, patterns), f"COPY {source}: excluded by .dockerignore"


def _in_build_context(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern decides (a `!` pattern includes again)."""
    included = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        clean = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, clean) or fnmatch.fnmatch(path.rstrip("/"), clean):
            included = negate
    return included


def test_the_compose_file() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"kafka", "worker-1", "worker-2", "demo-traffic", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        image = service.get("image", "")
        assert image, f"{name}: no image"
        if "build" in service:
            assert service["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
            continue
        assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name}: pin {image} to a version"
    workers = {name: service for name, service in services.items() if service.get("command") == ["worker"]}
    assert len(workers) == 2
    ids = {service["environment"]["STREAM_APP_INSTANCE_ID"] for service in workers.values()}
    volumes = {service["volumes"][0].split(":")[0] for service in workers.values()}
    assert len(ids) == 2 and len(volumes) == 2, "each worker: its own slot identity and its own data volume"
    assert all(service["volumes"][0].endswith(":/data") for service in workers.values())
    apps = {service["environment"].get("STREAM_APP_ID", "stream-app") for service in workers.values()}
    assert len(apps) == 1, "both workers in one consumer group"
    partitions = {int(service["environment"]["STREAM_APP_PARTITIONS"]) for service in workers.values()}
    assert len(partitions) == 1 and partitions.pop() >= 2 * len(workers), "the input topic needs several partitions per worker"
    assert services["demo-traffic"]["environment"]["STREAM_APP_PARTITIONS"] == workers["worker-1"]["environment"]["STREAM_APP_PARTITIONS"]
    for service in workers.values():
        assert _quantity(service["mem_limit"].replace("g", "Gi").replace("m", "Mi")) == _memory_limit_rule()
    # bind mounts exist in the repository
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{volume}: no such path"
    # Prometheus scrapes both workers and loads the rules from the folder compose mounts
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "stream-app"]
    targets = {target for static in job["static_configs"] for target in static["targets"]}
    assert targets == {f"{name}:6066" for name in workers}
    # the demo traffic runs the script with arguments it accepts
    traffic = services["demo-traffic"]
    assert traffic["entrypoint"][-1] == "/opt/demo/demo-traffic.py"
    assert any(volume.startswith("./deploy/demo-traffic.py:/opt/demo/demo-traffic.py") for volume in traffic["volumes"])
    parsed = _run([sys.executable, str(TRAFFIC), *traffic["command"], "--help"])
    assert parsed.returncode == 0, parsed.stderr


def test_every_environment_variable_set_is_read_by_stream_app() -> None:
    sources = _stream_app_sources()
    docs = _kustomize()
    pod = _one(docs, "StatefulSet")["spec"]["template"]["spec"]
    names: dict[str, set[str]] = {
        "deploy/k8s ConfigMap": set(_one(docs, "ConfigMap")["data"]),
        "deploy/k8s StatefulSet": {item["name"] for c in pod["containers"] for item in c.get("env", [])},
        "deploy/Dockerfile": {pair.split("=")[0] for name, args in _stages()[-1] if name == "ENV" for pair in args.split()},
    }
    for service, service_names in _image_env_names(_compose()).items():
        names[f"docker-compose.yml {service}"] = service_names
    assert sum(len(found) for found in names.values()) > 20
    for where, found in names.items():
        for name in found:
            if where == "deploy/Dockerfile" and name.startswith("PYTHON"):
                continue  # the interpreter's own
            assert f'"{name}"' in sources, f"{where} sets {name}, which nothing in stream_app reads"


# -- a real worker, a real Prometheus --------------------------------------------------------------------


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening (yet)
        return 0, str(exc)


def _api(port: int, path: str, **params: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    status, body = _get(url)
    return json.loads(body) if body.startswith("{") else {"status": "error", "error": f"HTTP {status}: {body[:200]}"}


def _query(port: int, promql: str) -> dict[str, Any]:
    return _api(port, "query", query=promql)


def _metric(worker: WorkerProcess, name: str, labels: str = "") -> float:
    """A worker's metric, or -1 while its endpoint does not answer yet."""
    try:
        return worker.metric_value(name, labels)
    except OSError:
        return -1.0


@dataclass
class Live:
    names: Names
    worker: WorkerProcess
    prom_port: int
    segments: Path
    traffic: subprocess.Popen
    traffic_log: Path


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A worker under the compose file's demo traffic (compressed time, so that timers fire within the
    test), scraped every second by a real Prometheus that evaluates alerts.yml."""
    prometheus = _tool("prometheus")
    root = tmp_path_factory.mktemp("deploy")
    names = Names(kafka_bootstrap, partitions=3)
    names.create_topics()
    segments = root / "segments.yaml"
    from stream_app.resources import package_file

    segments.write_text(package_file("segments", "defaults.yaml").read_text())
    # one heavy user: 300 product views in 5 minutes of event time pass the bound of 256 intent entries
    start = int(time.time() * 1000) - 3 * 3600_000 - 600_000
    heavy = [track("heavy-viewer", "Product Viewed", start + n * 1000, product_id=f"p{n}") for n in range(300)]
    produce(kafka_bootstrap, names.input, [(b"heavy-viewer", encode(e)) for e in heavy] + [(None, b"\x00 not an event")])
    worker = WorkerProcess(names, root / "worker")
    worker.start_env = {
        "STREAM_APP_SEGMENTS_FILE": str(segments),
        # the traffic's event time runs 60x, from 3 hours behind the wall clock: live, not historical
        "STREAM_APP_HISTORICAL_AFTER_MS": str(5 * 3600_000), "STREAM_APP_BACKFILL_AGE_MS": str(5 * 3600_000),
        # keep the backfill of the traffic's history visible for the whole test
        "STREAM_APP_BACKFILL_DRAINED_AFTER_MS": str(30 * 60_000),
    }
    worker.start()
    traffic_log = root / "traffic.log"
    traffic_env = {**names.env(root / "unused", 0), "PYTHONPATH": str(REPO)}
    traffic = subprocess.Popen(
        [sys.executable, str(TRAFFIC), "--speed", "60", "--behind-hours", "3", "--history-users", "60", "--history-days", "3",
         "--sessions-per-minute", "20", "--malformed-every", "40", "--duration", "600"],
        env=traffic_env, stdout=open(traffic_log, "wb"), stderr=subprocess.STDOUT, cwd=root)
    prom_port = free_port()
    config = root / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "stream-app", "static_configs": [{"targets": [f"127.0.0.1:{worker.web_port}"]}]}],
    }))
    prom = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=open(root / "prometheus.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _metric(worker, "stream_app_clock_ticks_total") > 0, 120, "the worker to run")
        segments.write_text("segments: [this is not\n")  # a rejected reload: the old definitions keep running
        wait_for(lambda: _metric(worker, "stream_app_definition_reloads_total", 'result="rejected"') >= 1, 60, "a rejected reload")
        yield Live(names, worker, prom_port, segments, traffic, traffic_log)
    finally:
        if traffic.poll() is None:
            traffic.send_signal(signal.SIGTERM)
            traffic.wait(30)
        prom.terminate()
        prom.wait(10)
        assert worker.stop() == 0, worker.log()[-3000:]


@pytest.mark.kafka
def test_probes_and_the_image_healthcheck_answer_on_a_running_worker(live: Live) -> None:
    port = live.worker.web_port
    wait_for(lambda: _get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 120, "the worker to be ready")
    container = _one(_kustomize(), "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert _get(f"http://127.0.0.1:{port}{path}")[0] == 200, f"{probe} {path}"
    assert _get(f"http://127.0.0.1:{port}/nothing-here")[0] == 404
    # the image's HEALTHCHECK command, run as Docker would (python on PATH is this interpreter)
    command = [sys.executable if part == "python" else part for part in _healthcheck_command()]
    healthy = _run(command, env={**os.environ, "STREAM_APP_WEB_PORT": str(port)}, timeout=30)
    assert healthy.returncode == 0, healthy.stderr
    unhealthy = _run(command, env={**os.environ, "STREAM_APP_WEB_PORT": str(free_port())}, timeout=30)
    assert unhealthy.returncode != 0, "the healthcheck must fail when nothing answers"


@pytest.mark.kafka
def test_every_metric_in_the_alerts_and_the_dashboard_exists_on_a_worker(live: Live) -> None:
    worker = live.worker
    wait_for(lambda: _metric(worker, "stream_app_events_consumed_total") >= 300, 120, "the worker to consume the first events")
    wait_for(lambda: _metric(worker, "stream_app_dead_letters_total") >= 1, 60, "a dead letter")
    wait_for(lambda: _metric(worker, "stream_app_state_evictions_total") >= 1, 60, "an eviction")
    names, labels = exposition_names(worker.metrics())
    known = names | PROMETHEUS_SERIES | _recorded()
    expressions = [(f"alert {rule['alert']}", rule["expr"]) for rule in _alert_rules()]
    expressions += [(f"record {rule['record']}", rule["expr"]) for g in _alert_groups() for rule in g["rules"] if "record" in rule]
    expressions += [(f"panel {title}", expr) for title, expr in _panel_exprs()]
    used: set[str] = set()
    for where, expr in expressions:
        found = promql_metric_names(_grafana_to_promql(expr))
        used |= found
        assert found or where.startswith("record"), f"{where}: no metric found in {expr!r}"
        missing = found - known
        assert not missing, f"{where} uses {sorted(missing)}, which the worker does not serve"
        for metric, matched in promql_selectors(_grafana_to_promql(expr)):
            if metric in labels:
                unknown = matched - labels[metric] - {"job", "instance", "alertstate", "alertname"}
                assert not unknown, f"{where}: {metric} has no label {sorted(unknown)}"
    assert len(used & names) >= 25  # the rules and panels between them use most of what the worker serves


def _ready_rules(port: int) -> list[dict[str, Any]] | None:
    answer = _api(port, "rules")
    if answer.get("status") != "success":
        return None
    rules = [rule for group in answer["data"]["groups"] for rule in group["rules"]]
    if len(rules) < sum(len(g["rules"]) for g in _alert_groups()):
        return None
    if any(rule.get("lastEvaluation", "0001").startswith("0001") for rule in rules):  # not evaluated yet
        return None
    return rules


@pytest.mark.kafka
def test_a_real_prometheus_loads_the_rules_and_answers_every_query(live: Live) -> None:
    port = live.prom_port
    wait_for(lambda: [r for r in _query(port, 'up{job="stream-app"} == 1').get("data", {}).get("result", [])], 120,
             "Prometheus to scrape the worker")
    rules = wait_for(lambda: _ready_rules(port), 60, "every rule to be evaluated")
    by_name = {rule.get("name"): rule for rule in rules}
    expected = {rule.get("alert") or rule.get("record") for g in _alert_groups() for rule in g["rules"]}
    assert set(by_name) == expected
    for name, rule in by_name.items():
        assert rule["health"] == "ok" and not rule.get("lastError"), f"{name}: {rule.get('health')} {rule.get('lastError')}"

    # every expression of every alert rule runs through the HTTP API
    for rule in _alert_rules():
        answer = _query(port, rule["expr"])
        assert answer["status"] == "success", f"{rule['alert']}: {answer.get('error')}"

    # every panel's expression answers with data once the traffic has made some of everything: timers
    # fired (compressed time: a cart abandoned 30 minutes of event time later is 30 s later), a backfill,
    # an eviction, a rejected reload
    empty: list[str] = []

    def every_panel_has_data() -> bool:
        empty.clear()
        for title, expr in _panel_exprs():
            answer = _query(port, _grafana_to_promql(expr))
            assert answer["status"] == "success", f"panel {title}: {expr}: {answer.get('error')}"
            if not answer["data"]["result"]:
                empty.append(f"{title}: {expr}")
        return not empty

    try:
        wait_for(every_panel_has_data, 240, "every panel to return data", interval=3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; panels without data: {empty}\ntraffic: {live.traffic_log.read_text()[-1500:]}") from None

    # the main panels show real numbers: the traffic's timers fire (compressed time: a cart abandoned 30
    # minutes of event time later is 30 s later), quantiles become finite
    def values(promql: str) -> list[float]:
        return [float(row["value"][1]) for row in _query(port, _grafana_to_promql(promql))["data"]["result"]]

    S = 'job="stream-app", instance=~"$instance"'
    limit = _memory_limit_rule()
    checks = [
        (f"sum(increase(stream_app_events_consumed_total{{{S}}}[5m]))", lambda v: v > 300),
        (f"sum(increase(stream_app_transitions_total{{{S}}}[5m]))", lambda v: v > 20),
        (f'sum(increase(stream_app_commits_total{{{S}, outcome="committed"}}[5m]))', lambda v: v > 20),
        (f"sum(stream_app_dead_letters_total{{{S}}})", lambda v: v >= 2),
        (f"sum(stream_app_segment_population{{{S}}})", lambda v: v > 10),
        (f"sum(stream_app_state_evictions_total{{{S}}})", lambda v: v >= 1),
        ("max(stream_app:memory_limit_bytes)", lambda v: v == limit),
        (f"max(process_resident_memory_bytes{{{S}}})", lambda v: 0 < v < limit),
        (f"time() - max(stream_app_partition_backfill_clock_seconds{{{S}}} > 0)", lambda v: v > 3 * 3600),
    ] + [(f"histogram_quantile(0.99, sum by (le) (rate({metric}_bucket{{{S}}}[5m])))", lambda v: math.isfinite(v) and v >= 0)
         for metric in ("stream_app_event_time_to_emit_seconds", "stream_app_timer_lateness_seconds",
                        "stream_app_commit_duration_seconds", "stream_app_batch_size")]
    failing: list[str] = []

    def all_hold() -> bool:
        failing[:] = [f"{promql} = {found}" for promql, holds in checks
                      if not ((found := values(promql)) and all(holds(v) for v in found))]
        return not failing

    try:
        wait_for(all_hold, 240, "the main panels to show real numbers", interval=3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {failing}\ntraffic: {live.traffic_log.read_text()[-1500:]}") from None


@pytest.mark.kafka
def test_the_compose_demo_traffic_command_sends_events(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The compose file's demo-traffic command, run for a few seconds against the test broker."""
    from kafka import KafkaConsumer, TopicPartition

    names = Names(kafka_bootstrap, partitions=2)
    command = _compose()["services"]["demo-traffic"]["command"]
    env = {**names.env(tmp_path / "unused", 0), "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    done = _run([sys.executable, str(TRAFFIC), *command, "--history-users", "20", "--duration", "5"], env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "now live" in done.stderr and time.monotonic() - started < 100
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    partitions = [TopicPartition(names.input, p) for p in range(2)]
    ends = consumer.end_offsets(partitions)
    consumer.close()
    assert len(ends) == 2 and sum(ends.values()) > 100, f"the input topic holds {ends}"
