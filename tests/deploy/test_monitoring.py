"""Monitoring: the Prometheus config, alert rules and their unit tests, and the Grafana dashboard.

promtool checks the config and the rules and runs alerts.test.yml; every alert must have a case that fires
and one that does not. Every PromQL expression of the dashboard and the rules must parse (promtool, one call)
and read only metrics that a live /metrics scrape of the real server has, so renaming a metric breaks this
file. Last, a real Prometheus with the compose config (targets rewritten to a test server) counts exactly
the requests sent and fires ModelServerModelNotReady for a model that is missing.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.serving.support import ServerProcess, free_port, wait_for_states

from .conftest import REPO_ROOT, find_tool, run_tool

PROMETHEUS_DIR = REPO_ROOT / "monitoring" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"
DASHBOARD = REPO_ROOT / "monitoring" / "grafana" / "dashboards" / "modelserver.json"
MODELS_DIR = REPO_ROOT / "models"
DIGIT = REPO_ROOT / "examples" / "digit-7.png"

SERVICE_JOB = "onnx-classifier-serving"
SEVERITIES = {"critical", "warning", "info"}
# Series Prometheus makes itself, not the service.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
# The dashboard's GPU row reads the DCGM exporter, which is not part of the service.
DCGM_PREFIX = "DCGM_FI_"
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}

# Concrete values for Grafana's variables, as Grafana substitutes them (a multi-value regex for $model).
GRAFANA_VARIABLES = {
    "__rate_interval": "20s",
    "__interval": "5s",
    "__range": "1h",
    "instance": "(modelserver:8000|modelserver-gpu:8000)",
    "model": "(mnist-cnn|sst2-textcnn)",
}

NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
               "offset", "inf", "nan"}


# Expressions ---------------------------------------------------------------------------------------------


def load_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in load_rules() if "record" in rule}


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows included."""
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def substitute_variables(expr: str) -> str:
    """The expression with Grafana's $name / ${name} / ${name:format} replaced by concrete values."""

    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        assert name in GRAFANA_VARIABLES, f"unknown Grafana variable ${name} in {expr!r}"
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$(?:\{(?P<braced>\w+)(?::\w+)?\}|(?P<plain>\w+))", value, expr)


def dashboard_expressions() -> dict[str, str]:
    """Every PromQL expression of the dashboard (panels, annotations, variable queries), by where it is."""
    dashboard = json.loads(DASHBOARD.read_text())
    found: dict[str, str] = {}
    for panel in dashboard_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            found[f"panel {panel['id']} ({panel['title']}) target {target['refId']}"] = target["expr"]
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            found[f"annotation {annotation['name']}"] = annotation["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            # label_values(<series selector>, <label>): the selector is PromQL.
            match = re.fullmatch(r"\s*label_values\((?P<selector>.+),\s*\w+\s*\)\s*", query)
            assert match, f"variable {variable['name']}: not label_values(selector, label): {query!r}"
            found[f"variable {variable['name']}"] = match["selector"]
    return {where: substitute_variables(expr) for where, expr in found.items()}


def rule_expressions() -> dict[str, str]:
    return {f"rule {rule.get('alert') or rule.get('record')}": str(rule["expr"]) for rule in load_rules()}


def all_expressions() -> dict[str, str]:
    return {**dashboard_expressions(), **rule_expressions()}


def without_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers that are not functions, aggregations, keywords, label
    names (inside {} or a by/on/... clause), durations or numbers."""
    text = without_strings(expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*", text):
        followed_by = text[match.end():].lstrip()
        if followed_by.startswith("(") or match[0].lower() in NOT_METRICS:
            continue
        names.add(match[0])
    return names


def selector_labels(expr: str) -> dict[str, set[str]]:
    """Label names each `metric{...}` selector of the expression matches on."""
    found: dict[str, set[str]] = {}
    for match in re.finditer(r"(?<![\w.:])(?P<name>[A-Za-z_:][\w:]*)\s*\{(?P<matchers>[^}]*)\}", expr):
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*[\"'`]", match["matchers"]))
        found.setdefault(match["name"], set()).update(labels)
    return found


# promtool -----------------------------------------------------------------------------------------------


def test_prometheus_config_is_valid() -> None:
    """Rule files are relative to the config, so the repository layout is the container's
    (monitoring/prometheus is mounted at /etc/prometheus)."""
    result = run_tool([find_tool("promtool"), "check", "config", PROMETHEUS_CONFIG.name], cwd=PROMETHEUS_DIR)
    assert "1 rule files found" in result.stdout + result.stderr, result.stdout + result.stderr


def test_alert_rules_are_valid() -> None:
    run_tool([find_tool("promtool"), "check", "rules", ALERTS.name], cwd=PROMETHEUS_DIR)


def test_alert_rule_unit_tests_pass() -> None:
    run_tool([find_tool("promtool"), "test", "rules", ALERT_TESTS.name], cwd=PROMETHEUS_DIR)


def test_every_alert_has_a_firing_and_a_quiet_test_case() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == [ALERTS.name], tests["rule_files"]
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]
    for rule in alert_rules():
        name = rule["alert"]
        assert any(case["alertname"] == name and case.get("exp_alerts") for case in cases), (
            f"{name}: no test case where it fires")
        assert any(case["alertname"] == name and not case.get("exp_alerts") for case in cases), (
            f"{name}: no test case where it does not fire")


def test_alerts_say_how_bad_what_and_what_to_do() -> None:
    assert len(alert_rules()) >= 6
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no `for:` duration"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity not in {SEVERITIES}"
        for key in ("summary", "description", "runbook"):
            assert str(rule.get("annotations", {}).get(key, "")).strip(), f"{name}: no {key} annotation"


def test_every_alert_is_in_the_docs() -> None:
    """The alert tables of the README and docs/monitoring.md list every alert with its severity, and
    docs/monitoring.md has the runbook section that its runbook annotation points at."""
    readme = (REPO_ROOT / "README.md").read_text()
    monitoring = (REPO_ROOT / "docs" / "monitoring.md").read_text()
    for rule in alert_rules():
        name, row = rule["alert"], f"| `{rule['alert']}` | {rule['labels']['severity']} |"
        assert row in readme, f"{name}: no row in the README's alert table"
        assert row in monitoring, f"{name}: no row in docs/monitoring.md's alert table"
        assert f"\n### {name}\n" in monitoring, f"{name}: no runbook section in docs/monitoring.md"
        assert f"docs/monitoring.md#{name.lower()}" in rule["annotations"]["runbook"], name


def test_the_latency_objective_is_set_in_one_place() -> None:
    objective = "modelserver:request_duration_seconds:p99_objective"
    [definition] = [rule for rule in load_rules() if rule.get("record") == objective]
    assert re.fullmatch(r"vector\([\d.]+\)", definition["expr"].strip()), definition
    [latency] = [rule for rule in alert_rules() if rule["alert"] == "ModelServerHighLatency"]
    assert objective in latency["expr"], latency["expr"]
    assert objective in DASHBOARD.read_text(), "the dashboard draws the objective"


QUALITY_CONSTANTS = {
    "modelserver:prediction_drift:watch": [],
    "modelserver:prediction_drift:act": ["ModelServerPredictionDrift"],
    "modelserver:low_confidence_ratio:act": ["ModelServerLowConfidence"],
    "modelserver:quality:min_predictions": ["ModelServerPredictionDrift", "ModelServerLowConfidence"],
}
# What the Model quality row draws, per model version: label mix against the reference, drift, confidence,
# low-confidence ratio and the reference's provenance.
QUALITY_ROW_READS = {
    "job_model_version_label:modelserver_predictions:share30m",
    "job_model_version_label:modelserver_reference_label:share",
    "job_model_version:modelserver_prediction_drift:js_distance30m",
    "modelserver:prediction_drift:watch",
    "modelserver:prediction_drift:act",
    "modelserver_prediction_confidence_bucket",
    "job_model_version:modelserver_low_confidence:ratio30m",
    "modelserver_reference_info",
}


def test_quality_thresholds_are_set_in_one_place_and_drawn() -> None:
    """The drift and low-confidence thresholds and the traffic guard are recording rules holding a number,
    which the alerts read; the dashboard's Model quality row draws the thresholds and every quality signal."""
    rules = {rule.get("record"): rule for rule in load_rules()}
    alerts = {rule["alert"]: rule for rule in alert_rules()}
    for constant, readers in QUALITY_CONSTANTS.items():
        assert re.fullmatch(r"vector\([\d.]+\)", str(rules[constant]["expr"]).strip()), rules[constant]
        for alert in readers:
            assert constant in alerts[alert]["expr"], f"{alert} does not read {constant}"
    dashboard = json.loads(DASHBOARD.read_text())
    [row] = [panel for panel in dashboard["panels"] if panel["type"] == "row"
             and panel["title"].startswith("Model quality")]
    below = sorted((panel for panel in dashboard["panels"] if panel["type"] != "row"),
                   key=lambda panel: (panel["gridPos"]["y"], panel["gridPos"]["x"]))
    next_row = min((panel["gridPos"]["y"] for panel in dashboard["panels"]
                    if panel["type"] == "row" and panel["gridPos"]["y"] > row["gridPos"]["y"]), default=10**6)
    in_row = [panel for panel in below if row["gridPos"]["y"] < panel["gridPos"]["y"] < next_row]
    read = {name for panel in in_row for target in panel["targets"] for name in metric_names(target["expr"])}
    assert QUALITY_ROW_READS <= read, f"the Model quality row does not draw {sorted(QUALITY_ROW_READS - read)}"


# The dashboard -------------------------------------------------------------------------------------------


def test_dashboard_is_a_provisionable_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "onnx-classifier-serving" and dashboard["schemaVersion"] >= 39
    variables = {item["name"]: item for item in dashboard["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus", datasource
    for name in ("instance", "model"):
        assert variables[name]["multi"] and variables[name]["includeAll"], f"${name} is multi-value with All"
    panels = list(dashboard_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    rows = [panel for panel in panels if panel["type"] == "row"]
    assert len(rows) >= 7, [row["title"] for row in rows]
    templated = {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels:
        if panel["type"] == "row":
            continue
        where = f"panel {panel['id']} ({panel['title']})"
        assert panel.get("datasource") == templated, f"{where}: datasource {panel.get('datasource')}"
        assert panel.get("targets"), f"{where}: no targets"
        for target in panel["targets"]:
            assert target.get("datasource") == templated and target.get("expr"), f"{where}: {target}"
        position = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(position) and position["x"] + position["w"] <= 24, where


def test_quantiles_come_from_histogram_buckets() -> None:
    """histogram_quantile over sum by (le, ...) of rate(..._bucket): never a Summary, never unaggregated."""
    for where, expr in all_expressions().items():
        for match in re.finditer(r"histogram_quantile\(", expr):
            rest = expr[match.end():]
            assert re.match(r"[\d.]+,\s*sum by \([^)]*\ble\b[^)]*\)\s*\(rate\(\w+_bucket\b", rest), (
                f"{where}: {expr}")


def test_every_expression_parses(tmp_path: Path) -> None:
    """Each expression becomes a recording rule of one generated rule file, checked by one promtool call."""
    expressions = all_expressions()
    records = {f"check:expression_{index}": item for index, item in enumerate(expressions.items())}
    for where, expr in expressions.items():
        assert "$" not in expr, f"{where}: a Grafana variable is left in {expr!r}"
    rule_file = tmp_path / "expressions.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "expressions", "rules": [
        {"record": record, "expr": expr} for record, (_, expr) in records.items()]}]}))
    result = run_tool([find_tool("promtool"), "check", "rules", str(rule_file)], check=False)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        failing = [f"{where}: {expr}" for record, (where, expr) in records.items()
                   if re.search(rf"\b{re.escape(record)}\b", output)]
        pytest.fail(f"promtool does not parse every expression:\n{output}\n" + "\n".join(failing))
    assert f"SUCCESS: {len(records)} rules found" in result.stdout, result.stdout


def test_metric_names_are_extracted() -> None:
    """What the next test relies on: functions, label names, durations and keywords are no metrics."""
    expr = ('histogram_quantile(0.99, sum by (le, model) '
            '(rate(a_bucket{model=~"x|y", le!="1"}[5m] offset 1h)))'
            ' / on (model) group_left (job) b:c:d * 1e3'
            ' > bool ignoring (x) (sum without (pod) (c_total)) or vector(1)')
    assert metric_names(expr) == {"a_bucket", "b:c:d", "c_total"}
    assert selector_labels(expr) == {"a_bucket": {"model", "le"}}


def test_every_metric_the_dashboard_and_rules_read_is_exported(live_metrics: dict[str, set[str]]) -> None:
    allowed = recorded_names() | PROMETHEUS_SERIES
    used: set[str] = set()
    for where, expr in all_expressions().items():
        for name in metric_names(expr):
            used.add(name)
            if name in allowed or name.startswith(DCGM_PREFIX):
                continue
            assert name in live_metrics, (f"{where} reads {name}, which the server does not export; "
                                          f"it exports {sorted(live_metrics)}")
        for name, labels in selector_labels(expr).items():
            if name in live_metrics:
                unknown = labels - live_metrics[name] - TARGET_LABELS
                assert not unknown, f"{where}: {name} has no {sorted(unknown)}: {sorted(live_metrics[name])}"
    exported = {name for name in used if name in live_metrics}
    assert len(exported) >= 15, f"suspiciously few service metrics in the expressions: {sorted(exported)}"


# A real Prometheus ----------------------------------------------------------------------------------------

REQUESTS_SENT = 7
MISSING_MODEL = "no-such-model"
READY_ALERT = "ModelServerModelNotReady"


class PrometheusProcess:
    """The `prometheus` binary in the foreground on a free loopback port, with a throw-away TSDB."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.port = free_port()
        self.log_path = config_dir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> PrometheusProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [find_tool("prometheus"), f"--config.file={self.config_dir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.config_dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                cwd=self.config_dir, stdout=log, stderr=subprocess.STDOUT)
        self.wait_for(lambda client: client.get("/-/ready").status_code == 200, timeout, "Prometheus")
        return self

    def wait_for(self, condition: Callable[[httpx.Client], Any], timeout: float, what: str) -> Any:
        """Poll until `condition` returns something truthy, and return it; fail with the log otherwise."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while time.monotonic() < deadline:
                running = self.process is not None and self.process.poll() is None
                assert running, f"Prometheus exited\n--- Prometheus log ---\n{self.log()}"
                try:
                    if found := condition(client):
                        return found
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n"
                    f"--- Prometheus log ---\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-10_000:] if self.log_path.exists() else "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def write_test_config(config_dir: Path, server_port: int, prometheus_port: int) -> None:
    """Write the compose Prometheus config, adapted to a local test, and its rules into `config_dir`."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert SERVICE_JOB in jobs and config["rule_files"] == [ALERTS.name], config
    # Docker's DNS names are not here: the service job scrapes the test server, Prometheus itself, and the
    # DCGM job goes (no GPU). The relabelling is kept: without DNS metadata it changes nothing.
    service_job = jobs[SERVICE_JOB]
    for key in [key for key in service_job if key.endswith("_sd_configs")]:
        del service_job[key]
    service_job["static_configs"] = [{"targets": [f"127.0.0.1:{server_port}"]}]
    jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{prometheus_port}"]}]
    config["scrape_configs"] = [jobs[SERVICE_JOB], jobs["prometheus"]]
    (config_dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    # The rules unchanged but for one `for:`: the test cannot wait the real 5 minutes for a model to be
    # missing, so ModelServerModelNotReady fires at its first evaluation in this copy.
    rules = yaml.safe_load(ALERTS.read_text())
    [ready_alert] = [rule for group in rules["groups"] for rule in group["rules"]
                     if rule.get("alert") == READY_ALERT]
    ready_alert["for"] = "0s"
    (config_dir / ALERTS.name).write_text(yaml.safe_dump(rules, sort_keys=False))


Stack = tuple[ServerProcess, PrometheusProcess]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A server with mnist-cnn and a model that does not exist, scraped by a real Prometheus every second."""
    server = ServerProcess(MODELS_DIR, tmp_path_factory.mktemp("scraped-server"),
                           {"SERVE_MODELS": f"mnist-cnn,{MISSING_MODEL}", "SERVE_WARMUP_RUNS": "0"})
    config_dir = tmp_path_factory.mktemp("prometheus")
    prometheus = PrometheusProcess(config_dir)
    try:
        server.start()
        wait_for_states(server, {"mnist-cnn": "ready", MISSING_MODEL: "failed"}, timeout=60)
        write_test_config(config_dir, server.port, prometheus.port)
        prometheus.start()
        yield server, prometheus
    finally:
        prometheus.stop()
        server.stop()


def query(client: httpx.Client, promql: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/query", params={"query": promql})
    assert response.status_code == 200, response.text
    return response.json()["data"]["result"]


def test_prometheus_counts_exactly_the_requests_sent(stack: Stack) -> None:
    server, prometheus = stack
    with server.client() as client:
        for _ in range(REQUESTS_SENT):
            answer = client.post("/predict", files={"file": ("digit-7.png", DIGIT.read_bytes(), "image/png")})
            assert answer.status_code == 200, answer.text
    promql = f'sum(modelserver_requests_total{{job="{SERVICE_JOB}", route="/predict", model="mnist-cnn"}})'

    def counted(client: httpx.Client) -> float | None:
        result = query(client, promql)
        value = float(result[0]["value"][1]) if result else None
        assert value is None or value <= REQUESTS_SENT, f"{promql} = {value}, over the {REQUESTS_SENT} sent"
        return value if value == REQUESTS_SENT else None

    assert prometheus.wait_for(counted, 30, f"{promql} to be {REQUESTS_SENT}") == REQUESTS_SENT


def test_model_not_ready_alert_fires_for_a_missing_model(stack: Stack) -> None:
    _, prometheus = stack

    def firing(client: httpx.Client) -> list[dict[str, Any]]:
        response = client.get("/api/v1/alerts")
        assert response.status_code == 200, response.text
        return [alert for alert in response.json()["data"]["alerts"]
                if alert["labels"]["alertname"] == READY_ALERT and alert["state"] == "firing"]

    alerts = prometheus.wait_for(firing, 30, f"{READY_ALERT} to fire")
    assert [alert["labels"]["model"] for alert in alerts] == [MISSING_MODEL], alerts
    [alert] = alerts
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["job"] == SERVICE_JOB, alert
    assert MISSING_MODEL in alert["annotations"]["summary"], alert["annotations"]


def evaluated_at(timestamp: str) -> float:
    """A Prometheus API timestamp (RFC 3339, nanoseconds) as Unix seconds."""
    match = re.fullmatch(r"(?P<seconds>.+T[\d:]{8})(?P<fraction>\.\d+)?(?P<zone>Z|[+-]\d\d:\d\d)", timestamp)
    assert match, timestamp
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    return datetime.fromisoformat(match["seconds"] + (match["fraction"] or ".0")[:7] + zone).timestamp()


def test_every_rule_evaluates_without_error(stack: Stack) -> None:
    """On real series (what promtool's checks cannot see: matching errors, bad templates) and in the copy
    Prometheus loaded, every rule of alerts.yml."""
    _, prometheus = stack
    prometheus.wait_for(lambda client: query(client, f'modelserver_model_ready{{job="{SERVICE_JOB}"}}'), 30,
                        "the first scrape of the server")
    scraped = time.time()

    def evaluated(client: httpx.Client) -> list[dict[str, Any]] | None:
        """The rules, once each has been evaluated on the scraped series."""
        response = client.get("/api/v1/rules")
        assert response.status_code == 200, response.text
        rules = [rule for group in response.json()["data"]["groups"] for rule in group["rules"]]
        done = rules and all(evaluated_at(rule["lastEvaluation"]) > scraped for rule in rules)
        return rules if done else None

    rules = prometheus.wait_for(evaluated, 30, "every rule to be evaluated")
    assert {rule["name"] for rule in rules} == {rule.get("alert") or rule["record"] for rule in load_rules()}
    broken = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert not broken, broken
