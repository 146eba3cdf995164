"""Write deploy/k8s/prometheusrule.yaml from deploy/prometheus/alerts.yml.

    python deploy/sync-prometheusrule.py          # rewrite it
    python deploy/sync-prometheusrule.py --check  # exit 1 if it is out of date

The alert rules are written once, in deploy/prometheus/alerts.yml (what compose's Prometheus loads and
promtool tests); the Prometheus Operator's PrometheusRule carries the same groups. tests/test_deploy.py
fails when the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
RULE = DEPLOY / "k8s" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by deploy/sync-prometheusrule.py: edit alerts.yml, then run
#   python deploy/sync-prometheusrule.py
# For the Prometheus Operator; your Prometheus resource's ruleSelector must match this object's labels.
"""


def render() -> str:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "stream-app", "labels": {"app.kubernetes.io/name": "stream-app"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(rule, sort_keys=False, width=120, allow_unicode=True)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not RULE.exists() or RULE.read_text() != text:
            print(f"{RULE} is out of date: run python deploy/sync-prometheusrule.py", file=sys.stderr)
            return 1
        return 0
    RULE.write_text(text)
    print(f"wrote {RULE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
