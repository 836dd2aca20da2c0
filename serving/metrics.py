"""Prometheus metrics of the gRPC server, correct with one process or with several workers.

Operators need to see latency per method, error rates by status code, load, which model each worker is
serving, how often customers are unknown (cold start) and what the decision policies choose. Names
follow the Prometheus conventions: prefix ``persona_engine_``, base units (seconds), counters ending in
``_total``. Every known label value is created up front, so a series reads 0 rather than being absent
before its first event (rate() and absent() alerts need that).

With several worker processes each one writes its values to memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, chosen by that variable being set
before prometheus_client is imported), and the parent process exports the merged view with
``MultiProcessCollector``. That decides the gauge modes below: the in-flight gauge is summed over live
workers (``livesum``), the model gauges are kept per live worker (``liveall``, which adds a ``pid``
label) so a rollout can be watched worker by worker. Counters and histograms are summed, including
the counts of workers that have exited.

Series:

- ``persona_engine_requests_total{service,method,code}``: finished unary calls by gRPC status code.
- ``persona_engine_request_duration_seconds{service,method}``: latency histogram, 0.25 ms to 1 s.
- ``persona_engine_requests_in_flight{service,method}``: calls being handled now.
- ``persona_engine_undecodable_requests_total{service,method}``: requests (or messages of a request
  stream) whose bytes were not a valid message, answered INVALID_ARGUMENT
  (``serving.undecodable_requests``); unary ones are in ``requests_total`` with that code too. Only
  methods the server has get a series, so garbage method names cannot add series.
- ``persona_engine_customers_total{cold_start}``: customers served; ``cold_start="true"`` over the
  sum is the cold-start share.
- ``persona_engine_decisions_total{kind,arm}``: offers (``kind="offer"``) and layout variants
  (``kind="layout"``) the personalization service chose, per arm.
- ``persona_engine_live_records_total{record,result}``: RecordEvents records by ``record`` (``event``,
  ``outcome``) and ``result``: ``accepted`` (newly stored), ``duplicate`` (id already stored: a retry)
  or ``rejected`` (invalid, answered with a per-record error).
- ``persona_engine_decisions_logged_total{result}``: served offer and layout arms written to the event
  log (``written``) or lost to a storage error (``failed``).
- ``persona_engine_model_info{version,model}``: 1 for the serving artifact version and model, 0 for
  ones served earlier by the same process.
- ``persona_engine_model_load_seconds`` and ``persona_engine_model_loaded_timestamp_seconds``: how long
  the serving artifact took to verify and load, and when that finished (Unix time).
- ``persona_engine_model_reloads_total{trigger,outcome}``: reload attempts; ``trigger`` is ``admin``
  (a ReloadModel call) or ``peer`` (a worker following another worker's reload).
- ``persona_engine_live_events_total``: behaviour events folded into live customer state.
- ``persona_engine_drift_started_total``: customers whose live state started drifting (the change
  test's evidence reached the threshold); a rise is a shift in what customers are after, worth a
  retrain.
- ``persona_engine_drift_ended_total``: customers whose drift ended (the new behaviour became their
  baseline, or they went back); started minus ended is the customers this process saw start drifting
  who still drift.
- ``persona_engine_drift_profiles_total{drifting}``: persona profiles served with a drift status, by
  whether the customer was drifting.
- ``persona_engine_state_store_available``: 1 while the live-state store answers, 0 while it cannot
  be reached (Redis down; the lowest over live workers). Calls are then answered without live state.
- ``persona_engine_calls_without_live_state_total{method}``: calls answered without live state because
  the store could not be reached; for RecordEvents, calls whose events were stored in the event log
  but missed their live-state update (Redis went away during the call).
- ``persona_engine_worker_restarts_total``: worker processes that died on their own and were replaced
  (``--workers N``; exported by the supervising process, ``worker_restarts_counter``).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.context_managers import InprogressTracker
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from engine.data.contract import DECISION_TYPES

PREFIX: Final = "persona_engine"
MULTIPROC_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# Responses take fractions of a millisecond to tens of milliseconds; batches and reloads go higher.
REQUEST_LATENCY_BUCKETS: Final = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
DECISION_KINDS: Final = DECISION_TYPES
RELOAD_TRIGGERS: Final = ("admin", "peer")
# The calls that read or write live state (and so can be answered without it).
LIVE_STATE_METHODS: Final = (
    "Personalize",
    "RecommendProducts",
    "RankOffers",
    "SelectLayout",
    "GetPersonaProfile",
    "RecordEvents",
)
LIVE_RECORDS: Final = ("event", "outcome")
LIVE_RECORD_RESULTS: Final = ("accepted", "duplicate", "rejected")
DECISION_LOG_RESULTS: Final = ("written", "failed")
# "reloaded" and "unchanged" are the proto's ReloadOutcome values; the others name the refusal.
RELOAD_OUTCOMES: Final = ("reloaded", "unchanged", "invalid_argument", "not_found", "failed_precondition")


def split_method(full_method: str) -> tuple[str, str]:
    """``/persona.v1.AdminService/ReloadModel`` -> ``("persona.v1.AdminService", "ReloadModel")``."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    if not service or not method:
        raise ValueError(f"not a gRPC method path: {full_method!r} (expected /package.Service/Method)")
    return service, method


class ServingMetrics:
    """The server's metrics, registered on ``registry``; one instance per process.

    In multiprocess mode the values live in the worker's files, whatever registry is given; a fresh
    ``CollectorRegistry`` per instance keeps tests and several servers in one process apart.
    """

    def __init__(self, registry: CollectorRegistry, *, methods: Iterable[str] = ()) -> None:
        self.registry = registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Finished gRPC calls by method and status code.",
            ["service", "method", "code"],
            registry=registry,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size",
            "Calls scored together in one dynamic batch (serving.batched_calls), by method.",
            ["method"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=registry,
        )
        # Why a counter of CPU and not of time: in a busy server the loop's thread shares its core with
        # gRPC's threads and the other processes, so wall time says little about the scoring itself.
        # CPU per call inside the server, against the same engine call in process, shows what the
        # server's surroundings cost the engine (on this project's 2-core benchmark machine, in a slow
        # phase, twice the in-process figure: benchmarks/README.md).
        self.batch_cpu = Counter(
            f"{PREFIX}_batch_cpu_seconds",
            "CPU time the event loop's thread spent scoring dynamic batches (engine, live loop and "
            "their counting), by method; over persona_engine_batch_size_sum it is the CPU per call.",
            ["method"],
            registry=registry,
        )
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from the start of a gRPC call's handler to its end, by method.",
            ["service", "method"],
            buckets=REQUEST_LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_requests_in_flight",
            "gRPC calls being handled now, by method.",
            ["service", "method"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.undecodable_requests = Counter(
            f"{PREFIX}_undecodable_requests",
            "Requests whose bytes were not a valid message (answered INVALID_ARGUMENT), by method.",
            ["service", "method"],
            registry=registry,
        )
        self.customers = Counter(
            f"{PREFIX}_customers",
            "Customers served, by whether the serving artifact knew them (cold_start=false) or not.",
            ["cold_start"],
            registry=registry,
        )
        self.decisions = Counter(
            f"{PREFIX}_decisions",
            "Offers (kind=offer) and layout variants (kind=layout) chosen, per arm.",
            ["kind", "arm"],
            registry=registry,
        )
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "1 for the artifact version and model this process serves, 0 for ones it served before.",
            ["version", "model"],
            multiprocess_mode="liveall",
            registry=registry,
        )
        self.model_load_seconds = Gauge(
            f"{PREFIX}_model_load_seconds",
            "Seconds it took to verify and load the serving artifact.",
            multiprocess_mode="liveall",
            registry=registry,
        )
        self.model_loaded_timestamp = Gauge(
            f"{PREFIX}_model_loaded_timestamp_seconds",
            "Unix time at which the serving artifact finished loading.",
            multiprocess_mode="liveall",
            registry=registry,
        )
        self.reloads = Counter(
            f"{PREFIX}_model_reloads",
            "Artifact reload attempts by trigger (admin call or peer worker) and outcome.",
            ["trigger", "outcome"],
            registry=registry,
        )
        self.live_events = Counter(
            f"{PREFIX}_live_events",
            "Behaviour events folded into live customer state.",
            registry=registry,
        )
        self.drift_started = Counter(
            f"{PREFIX}_drift_started",
            "Customers whose live state started drifting away from their long-term persona mix.",
            registry=registry,
        )
        self.drift_ended = Counter(
            f"{PREFIX}_drift_ended",
            "Customers whose live state stopped drifting.",
            registry=registry,
        )
        self.drift_profiles = Counter(
            f"{PREFIX}_drift_profiles",
            "Persona profiles served with a drift status, by whether the customer was drifting.",
            ["drifting"],
            registry=registry,
        )
        self.live_records = Counter(
            f"{PREFIX}_live_records",
            "RecordEvents records by kind (event, outcome) and result (accepted, duplicate, rejected).",
            ["record", "result"],
            registry=registry,
        )
        self.decisions_logged = Counter(
            f"{PREFIX}_decisions_logged",
            "Served offer and layout arms written to the event log, or lost to a storage error.",
            ["result"],
            registry=registry,
        )
        self.state_store_available = Gauge(
            f"{PREFIX}_state_store_available",
            "1 while the live-state store answers, 0 while it cannot be reached (no live state is used).",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.without_live_state = Counter(
            f"{PREFIX}_calls_without_live_state",
            "Calls answered without live state because the state store could not be reached, by method.",
            ["method"],
            registry=registry,
        )
        self.state_store_available.set(1)
        for method in LIVE_STATE_METHODS:
            self.without_live_state.labels(method=method)
        self._serving: tuple[str, str] | None = None
        # Labelled children by metric and label values: ``labels()`` takes a lock and validates its
        # arguments on every call, several times per request; a dict lookup does not.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        for record in LIVE_RECORDS:
            for result in LIVE_RECORD_RESULTS:
                self.live_records.labels(record=record, result=result)
        for result in DECISION_LOG_RESULTS:
            self.decisions_logged.labels(result=result)
        for flag in (True, False):
            self.customers.labels(cold_start=_flag(flag))
            self.drift_profiles.labels(drifting=_flag(flag))
        for trigger in RELOAD_TRIGGERS:
            for outcome in RELOAD_OUTCOMES:
                self.reloads.labels(trigger=trigger, outcome=outcome)
        self.declare_methods(methods)

    def declare_methods(self, full_methods: Iterable[str]) -> None:
        """Create the per-method series (code OK) before the first call, so they read 0, not absent."""
        for full_method in full_methods:
            service, method = split_method(full_method)
            self.requests.labels(service=service, method=method, code=grpc.StatusCode.OK.name)
            self.request_duration.labels(service=service, method=method)
            self.in_flight.labels(service=service, method=method)
            self.undecodable_requests.labels(service=service, method=method)

    def declare_arms(self, arms: Mapping[str, Sequence[str]]) -> None:
        """Create the decision series of an artifact's arms, e.g. ``{"offer": ["free_ship", ...]}``."""
        for kind, arm_ids in arms.items():
            _check_kind(kind)
            for arm_id in arm_ids:
                self.decisions.labels(kind=kind, arm=arm_id)

    def _child(self, metric: Counter | Gauge | Histogram, *values: str) -> Any:
        """``metric.labels(*values)`` (values in the metric's label order), looked up once."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def method_children(self, service: str, method: str) -> tuple[Callable[[grpc.StatusCode], Any], Any, Any]:
        """One method's series, for a caller that records every call of it (the interceptor): the
        request counter by status code, the latency histogram and the in-flight gauge, each resolved
        once here so that a call costs the metric updates alone."""
        by_code: dict[grpc.StatusCode, Any] = {}

        def requests(code: grpc.StatusCode) -> Any:
            child = by_code.get(code)
            if child is None:
                child = by_code[code] = self._child(self.requests, service, method, code.name)
            return child

        return (
            requests,
            self._child(self.request_duration, service, method),
            self._child(self.in_flight, service, method),
        )

    def undecodable_child(self, service: str, method: str) -> Any:
        """The undecodable-request counter of one method, resolved once for its guard."""
        return self._child(self.undecodable_requests, service, method)

    def track_in_flight(self, service: str, method: str) -> InprogressTracker:
        tracker: InprogressTracker = self._child(self.in_flight, service, method).track_inprogress()
        return tracker

    def observe_request(self, service: str, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self._child(self.requests, service, method, code.name).inc()
        self._child(self.request_duration, service, method).observe(seconds)

    def record_customers(self, cold_starts: Iterable[bool]) -> None:
        """Many customers served, one update per flag: in multiprocess mode every update is a write
        to the worker's file, and per call they were a twentieth of a Personalize call's CPU."""
        for cold_start, count in collections.Counter(cold_starts).items():
            self._child(self.customers, _flag(cold_start)).inc(count)

    def record_live_events(self, count: int) -> None:
        self.live_events.inc(count)

    def record_batch(self, method: str, size: int, cpu_seconds: float) -> None:
        self._child(self.batch_size, method).observe(size)
        self._child(self.batch_cpu, method).inc(cpu_seconds)

    def record_drift_started(self) -> None:
        self.drift_started.inc()

    def record_drift_ended(self) -> None:
        self.drift_ended.inc()

    def record_drift_profile(self, drifting: bool) -> None:
        self.drift_profiles.labels(drifting=_flag(drifting)).inc()

    def record_decisions(self, kind: str, arm_ids: Iterable[str]) -> None:
        """Many decisions of one kind, one update per arm (see ``record_customers``)."""
        _check_kind(kind)
        for arm_id, count in collections.Counter(arm_ids).items():
            self._child(self.decisions, kind, arm_id).inc(count)

    def record_live_records(self, record: str, accepted: int, duplicate: int, rejected: int) -> None:
        """Count one RecordEvents call's records of one kind."""
        if record not in LIVE_RECORDS:
            raise ValueError(f"record {record!r} is not one of {', '.join(LIVE_RECORDS)}")
        for result, count in zip(LIVE_RECORD_RESULTS, (accepted, duplicate, rejected), strict=True):
            if count:
                self.live_records.labels(record=record, result=result).inc(count)

    def record_state_store_available(self, available: bool) -> None:
        self.state_store_available.set(1 if available else 0)

    def record_without_live_state(self, method: str) -> None:
        self._child(self.without_live_state, method).inc()

    def record_decisions_logged(self, written: int, failed: int) -> None:
        if written:
            self.decisions_logged.labels(result="written").inc(written)
        if failed:
            self.decisions_logged.labels(result="failed").inc(failed)

    def set_model(
        self,
        version: str,
        model_name: str,
        load_seconds: float,
        loaded_at_unix: float,
        arms: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Publish the artifact this process now serves (after startup and after every swap)."""
        if self._serving is not None and self._serving != (version, model_name):
            previous_version, previous_model = self._serving
            self.model_info.labels(version=previous_version, model=previous_model).set(0)
        self.model_info.labels(version=version, model=model_name).set(1)
        self._serving = (version, model_name)
        self.model_load_seconds.set(load_seconds)
        self.model_loaded_timestamp.set(loaded_at_unix)
        if arms:
            self.declare_arms(arms)

    def record_reload(self, trigger: str, outcome: str) -> None:
        if trigger not in RELOAD_TRIGGERS:
            raise ValueError(f"reload trigger {trigger!r} is not one of {', '.join(RELOAD_TRIGGERS)}")
        if outcome not in RELOAD_OUTCOMES:
            raise ValueError(f"reload outcome {outcome!r} is not one of {', '.join(RELOAD_OUTCOMES)}")
        self.reloads.labels(trigger=trigger, outcome=outcome).inc()


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _check_kind(kind: str) -> None:
    if kind not in DECISION_KINDS:
        raise ValueError(f"decision kind {kind!r} is not one of {', '.join(DECISION_KINDS)}")


def worker_restarts_counter(registry: CollectorRegistry) -> Counter:
    """The supervisor's count of workers it replaced, on the registry its endpoint exports.

    The supervisor is not a worker: its own counter lives in its memory (it does not write the
    multiprocess files) and is exported beside the merged workers' series.
    """
    return Counter(
        f"{PREFIX}_worker_restarts",
        "Worker processes that died on their own and were replaced by the supervisor.",
        registry=registry,
    )


def multiprocess_mode_enabled() -> bool:
    """Whether prometheus_client writes values to per-process files (decided by the environment)."""
    return MULTIPROC_DIR_ENV in os.environ


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """A registry that merges the files every worker wrote in ``directory``; for the exporting parent."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


def mark_worker_dead(pid: int, directory: Path) -> None:
    """Drop an exited worker's live gauges (in flight, model) so they stop counting in the merge."""
    mark_process_dead(pid, str(directory))


class MetricsEndpoint:
    """The ``/metrics`` HTTP endpoint, served from a daemon thread until ``close()``."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        server, thread = start_http_server(port, addr=host, registry=registry)
        self._server: WSGIServer = server
        self._thread = thread
        self.port: int = server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
