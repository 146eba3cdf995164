"""What the supervisor's `/metrics` serves: its children's metrics added up, and the pod's process figures.

The children write their metric values to files (prometheus-client's multiprocess mode,
`PROMETHEUS_MULTIPROC_DIR`); `MultiProcessCollector` adds them up. prometheus-client's process metrics
(`process_resident_memory_bytes`, `process_cpu_seconds_total`, ...) are per process and not kept in those
files, so they are read here for the supervisor and every live child and summed: the alert on memory
and the dashboard's CPU panel then see the pod as a whole, as with one process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

if TYPE_CHECKING:
    from .supervisor import Supervisor

# how a process figure of several processes adds up (the rest are summed)
LOWEST = {"process_start_time_seconds"}
HIGHEST = {"process_max_fds"}


class PodProcessCollector(Collector):
    """prometheus-client's process metrics of the supervisor and its live children, combined."""

    def __init__(self, supervisor: "Supervisor") -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        pids: list[int | str] = ["self", *self.supervisor.child_pids()]
        combined: dict[str, Metric] = {}
        for pid in pids:
            collector = ProcessCollector(pid=lambda pid=pid: pid, registry=None)
            for metric in collector.collect():
                if metric.name not in combined:
                    combined[metric.name] = metric
                    continue
                into = combined[metric.name]
                for i, sample in enumerate(metric.samples):
                    if i >= len(into.samples):
                        break
                    old = into.samples[i]
                    if metric.name in LOWEST:
                        value = min(old.value, sample.value)
                    elif metric.name in HIGHEST:
                        value = max(old.value, sample.value)
                    else:
                        value = old.value + sample.value
                    into.samples[i] = Sample(old.name, old.labels, value, old.timestamp, old.exemplar)
        yield from combined.values()


class SupervisorCollector(Collector):
    """The supervisor's own figures: processes running and restarts."""

    def __init__(self, supervisor: "Supervisor") -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        children = self.supervisor.children
        yield GaugeMetricFamily("stream_app_engine_processes", "Engine processes running under this supervisor (--processes)",
                                value=sum(1 for c in children if c.running))
        yield CounterMetricFamily("stream_app_engine_process_restarts", "Engine processes started again after a crash",
                                  value=sum(c.restarts for c in children))


def pod_registry(supervisor: "Supervisor") -> CollectorRegistry:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(supervisor.metrics_dir))
    registry.register(PodProcessCollector(supervisor))
    registry.register(SupervisorCollector(supervisor))
    return registry
