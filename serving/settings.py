"""What ``persona-engine serve`` is told: its flags, their environment variables, and the resolved settings.

Every flag with an environment variable resolves the same way (flag, then variable, then default), and
every mistake is found here, before a port is bound or a worker started, with a ``ServeConfigError``
that names the flag or variable (never the admin token's value). The supervisor passes the resolved
settings on to its workers as flags, so one resolution serves the whole process tree.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import grpc

from engine.artifact import ENV_ARTIFACT_KEY_FILE, ArtifactVerifier
from engine.decisions.experiment import ExperimentError, load_experiment
from engine.decisions.online_bandit import BanditConfig, OnlineBanditError, load_bandit_config
from engine.errors import PersonaEngineError
from engine.live.event_log import EventLog, EventLogError
from engine.live.event_store import is_shared_log_location
from engine.live.redis_event_log import RedisEventLog, redacted
from serving.batched_calls import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_WAIT_MS,
    DEFAULT_PREFERRED_BATCH_SIZE,
    BatchSettings,
)
from serving.helper_threads import DEFAULT_HELPER_THREADS, HELPER_THREAD_POLICIES
from serving.redis_state_store import MEMORY

LOGGER = logging.getLogger("persona_engine.server")

ENV_ADDRESS: Final = "PERSONA_ENGINE_ADDRESS"
ENV_METRICS_PORT: Final = "PERSONA_ENGINE_METRICS_PORT"
ENV_WORKERS: Final = "PERSONA_ENGINE_WORKERS"
ENV_ADMIN_TOKEN: Final = "PERSONA_ENGINE_ADMIN_TOKEN"
ENV_STATE: Final = "PERSONA_ENGINE_STATE"
ENV_EVENT_LOG: Final = "PERSONA_ENGINE_EVENT_LOG"
ENV_READY_FILE: Final = "PERSONA_ENGINE_READY_FILE"
ENV_EVENT_LOOP: Final = "PERSONA_ENGINE_EVENT_LOOP"
ENV_BENCHMARK_FLOOR: Final = "PERSONA_ENGINE_BENCHMARK_FLOOR"
ENV_PIN_WORKERS: Final = "PERSONA_ENGINE_PIN_WORKERS"
ENV_HELPER_THREADS: Final = "PERSONA_ENGINE_HELPER_THREADS"
# Every variable the server reads: a harness that configures a server by flags clears them all.
SERVE_ENVIRONMENT: Final = (
    ENV_ADDRESS,
    ENV_METRICS_PORT,
    ENV_WORKERS,
    ENV_ADMIN_TOKEN,
    ENV_STATE,
    ENV_EVENT_LOG,
    ENV_READY_FILE,
    ENV_EVENT_LOOP,
    ENV_BENCHMARK_FLOOR,
    ENV_PIN_WORKERS,
    ENV_HELPER_THREADS,
    ENV_ARTIFACT_KEY_FILE,
)
DEFAULT_ADDRESS: Final = "0.0.0.0:50051"
DEFAULT_METRICS_PORT: Final = 9464
DEFAULT_WORKERS: Final = 1
# Threads per process for blocking work (event log commits, Redis round trips, big batches, reloads).
DEFAULT_THREADS: Final = 16
# The event loops a worker can run: the standard library's, or uvloop's (libuv) when it is installed.
EVENT_LOOPS: Final = ("asyncio", "uvloop")
DEFAULT_EVENT_LOOP: Final = "asyncio"
# Successful calls logged: one in this many (failed and slow calls always); see serving.interceptors.
DEFAULT_ACCESS_LOG_EVERY: Final = 100
DEFAULT_GRACE_SECONDS: Final = 10.0
# A client keeps its connections for as long as they work, and the kernel spreads only new connections
# over the workers of a port: after a worker is replaced, the clients its death moved to the others
# would stay there for good (the soak benchmark's survivor served nine calls in ten at 90% of a core,
# the replacement one). Closing each connection after this age (gRPC's MAX_CONNECTION_AGE: a GOAWAY,
# calls in flight finish, clients reconnect without failing a call) re-spreads them within a minute.
DEFAULT_MAX_CONNECTION_AGE_S: Final = 60.0
# Largest request message accepted (grpc's max receive length; a larger one gets RESOURCE_EXHAUSTED
# before it is decoded). The largest request the per-field limits allow in practice (RecordEvents with
# 1,000 events, RecommendProducts with 1,000 targets) is well under 1 MiB; 4 MiB is grpc's own default.
DEFAULT_MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024
MIN_MAX_REQUEST_BYTES: Final = 1024
MAX_MAX_REQUEST_BYTES: Final = 256 * 1024 * 1024
# Largest RecommendProducts response sent; a larger one is refused with RESOURCE_EXHAUSTED naming the
# request fields that made it large. 4 MiB is what a gRPC client receives by default: above it the
# client would drop the response with a message that says neither why nor what to ask instead (1,000
# targets of 200 explained items encode to about 41 MB). Raise it with the clients' receive limit.
DEFAULT_MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024
MAX_WORKERS: Final = 64

SERVE_EXAMPLES: Final = f"""
    examples:
      persona-engine serve --artifact artifacts/latest
      persona-engine serve --artifact artifacts/latest --address 127.0.0.1:50051 --metrics-port 0
      persona-engine serve --artifact artifacts/latest --workers 4 --admin-token-file /run/secrets/admin
      persona-engine serve --artifact artifacts/latest --tls-cert server.pem --tls-key server.key \\
          --tls-client-ca clients-ca.pem
      {ENV_WORKERS}=2 {ENV_ADMIN_TOKEN}=s3cret persona-engine serve --artifact artifacts/latest
      persona-engine serve --artifact artifacts/latest --workers 4 --state redis://127.0.0.1:6379/0
      persona-engine serve --artifact artifacts/latest --workers 4 --event-log /var/lib/persona/events.db
      persona-engine serve --artifact artifacts/latest --state redis://redis:6379/0 \\
          --event-log 'redis://redis:6379/0?stream=shop-events'
      persona-engine serve --artifact artifacts/latest --address 127.0.0.1:0 --workers 2 \\
          --ready-file /run/persona/ready.json
      persona-engine serve --artifact artifacts/latest --artifact-key /etc/persona/artifact-signing.pub.pem

    environment (a flag given on the command line wins):
      {ENV_ADDRESS}       like --address
      {ENV_METRICS_PORT}  like --metrics-port
      {ENV_WORKERS}       like --workers
      {ENV_ADMIN_TOKEN}   the admin token itself (--admin-token-file wins)
      {ENV_STATE}         like --state
      {ENV_EVENT_LOG}     like --event-log
      {ENV_READY_FILE}    like --ready-file
      {ENV_EVENT_LOOP}    like --event-loop
      {ENV_PIN_WORKERS}=1  like --pin-workers
      {ENV_HELPER_THREADS}  like --helper-threads
      {ENV_BENCHMARK_FLOOR}=1  like --benchmark-floor (for benchmarks only)
      {ENV_ARTIFACT_KEY_FILE}  like --artifact-key

    ready file: once every worker serves, the server writes (to a temporary file renamed into place,
    so a reader never sees half of it) a JSON document such as
      {{"address": "127.0.0.1:41234", "port": 41234, "metrics_port": 9464, "pid": 4711,
       "worker_pids": [4712, 4713]}}
    with the port actually bound (the one to use after --address host:0) and metrics_port null when
    metrics are off. A ready file left from an earlier run is removed at start, and the file is removed
    again when the server starts to stop.

    admin calls carry the metadata 'authorization: Bearer <token>'. A server started without a token
    refuses every admin call with PERMISSION_DENIED; a call without the metadata gets UNAUTHENTICATED, a wrong
    token PERMISSION_DENIED. ReloadModel switches to exactly the artifact it names; an older version
    than the one serving (a rollback) is refused unless the request sets allow_rollback, and an artifact
    with another persona catalog unless it sets allow_catalog_change. With several workers it returns
    once all of them serve it.

    artifact signing: with --artifact-key the server serves only artifacts whose manifest is signed
    with that Ed25519 key (train --artifact-key), at start and on every reload; anything unsigned or
    altered is refused, naming the artifact and what failed, and the old model keeps serving. Without
    it the manifest's digest is still checked and the log says the artifact is unsigned.

    SIGTERM or SIGINT: health turns NOT_SERVING, calls in flight get --grace-seconds, exit status 0.
    With --workers N a worker that dies is restarted (persona_engine_worker_restarts_total); more than
    5 deaths within 60 s stop the server with exit status 1.
    """


class ServeConfigError(PersonaEngineError, ValueError):
    """An invalid serve flag or environment variable; the message names it."""


@dataclass(frozen=True)
class TlsConfig:
    """The server's certificate and key (PEM); with ``client_ca``, clients must present a certificate
    signed by it (mutual TLS)."""

    certificate_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None

    @classmethod
    def from_files(cls, certificate: Path, key: Path, client_ca: Path | None = None) -> TlsConfig:
        def read(path: Path, flag: str) -> bytes:
            try:
                data = Path(path).read_bytes()
            except OSError as error:
                raise ServeConfigError(f"{flag} {path}: cannot read ({error.strerror})") from None
            if b"-----BEGIN" not in data:
                raise ServeConfigError(f"{flag} {path}: not a PEM file")
            return data

        return cls(
            read(certificate, "--tls-cert"),
            read(key, "--tls-key"),
            None if client_ca is None else read(client_ca, "--tls-client-ca"),
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``serve`` and the worker supervisor need, resolved from flags and environment."""

    artifact: Path
    model_name: str | None = None
    address: str = DEFAULT_ADDRESS
    metrics_port: int = DEFAULT_METRICS_PORT
    # where address and metrics_port came from (flag or variable), for errors about the ports
    address_source: str = "--address"
    metrics_port_source: str = "--metrics-port"
    workers: int = DEFAULT_WORKERS
    threads: int = DEFAULT_THREADS
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    tls: TlsConfig | None = None
    admin_token: str | None = field(default=None, repr=False)
    run_dir: Path | None = None
    worker_index: int | None = None  # set only in a worker process started by the supervisor
    upkeep_process: bool = False  # the supervisor's event log upkeep process (serving.upkeep_process)
    tls_files: tuple[str, ...] = ()  # the TLS flags as given, passed on to workers
    log_level: str = "info"
    state: str = MEMORY  # where live customer state is kept: "memory" or a redis:// URL
    event_log: Path | None = None  # this machine's SQLite log
    event_log_url: str | None = field(default=None, repr=False)  # the fleet's shared log (Redis URL)
    # a SQLite log's ids of archived records are dropped this many days after archiving (None: kept)
    forget_archived_ids_after_days: float | None = None
    experiment: Path | None = None  # TOML file with an [experiment] section, validated at start
    bandit: BanditConfig | None = None  # the online bandit's exploration and offer budgets ([bandit])
    bandit_file: Path | None = None  # where ``bandit`` came from, passed on to worker processes
    access_log_every: int = DEFAULT_ACCESS_LOG_EVERY
    max_connection_age_s: float = DEFAULT_MAX_CONNECTION_AGE_S  # 0: connections live as long as clients want
    ready_file: Path | None = None  # written once every worker serves (serving.ready_file)
    event_loop: str = DEFAULT_EVENT_LOOP  # "asyncio" or "uvloop"
    benchmark_floor: bool = False  # Personalize answers one prepared response (serving.benchmark_floor)
    pin_workers: bool = False  # each worker on one CPU of its own (serving.cpu_affinity)
    helper_threads: str = DEFAULT_HELPER_THREADS  # "batch": helpers never preempt the loop (helper_threads)
    # dynamic batching of page renders (serving.batched_calls)
    batching: BatchSettings = field(default_factory=BatchSettings)
    # the key every served artifact's manifest must be signed with (engine.artifact.signing), and its file
    artifact_verifier: ArtifactVerifier | None = field(default=None, repr=False)
    artifact_key: Path | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # larger requests: RESOURCE_EXHAUSTED
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES  # larger RecommendProducts responses: the same

    @property
    def host(self) -> str:
        return split_address(self.address)[0]


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::]:50051`` for IPv6) -> host and port; the error names the flag."""
    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ServeConfigError(f"--address {address!r}: expected host:port, e.g. 0.0.0.0:50051")
    return host, int(port_text)


def bare_host(host: str) -> str:
    """The host of an address without the brackets of an IPv6 literal, as sockets want it."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``persona-engine serve``; environment variables fill in flags not given."""
    if parser.epilog is None:
        parser.epilog = textwrap.dedent(SERVE_EXAMPLES)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--artifact",
        type=Path,
        required=True,
        help="artifact to serve: ROOT (its latest), ROOT/latest or ROOT/<version>; every checksum is "
        "verified before the port opens",
    )
    parser.add_argument("--model", help="model of the artifact to serve (default: the artifact's best)")
    parser.add_argument(
        "--address",
        help=f"host:port to listen on (env {ENV_ADDRESS}; default {DEFAULT_ADDRESS}); "
        "port 0 picks a free one",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help=f"port of the Prometheus /metrics endpoint, on the --address host (env {ENV_METRICS_PORT}; "
        f"default {DEFAULT_METRICS_PORT}; 0 disables it)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help=f"worker processes sharing the port via SO_REUSEPORT (env {ENV_WORKERS}; default "
        f"{DEFAULT_WORKERS}; at most {MAX_WORKERS}); use about one per CPU core",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help="threads per process for blocking work, which never runs on the event loop: event log "
        "commits, Redis round trips, batches of many targets, model reloads "
        f"(default {DEFAULT_THREADS}); page renders run on the event loop itself",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        help=f"event loop of each worker (env {ENV_EVENT_LOOP}; default {DEFAULT_EVENT_LOOP}); uvloop "
        "needs the uvloop package",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        help="on SIGTERM/SIGINT, how long calls in flight may take to finish "
        f"(default {DEFAULT_GRACE_SECONDS:g})",
    )
    parser.add_argument(
        "--tls-cert", type=Path, help="server certificate chain (PEM); enables TLS with --tls-key"
    )
    parser.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        help="CA certificates (PEM) that client certificates must chain to; clients without one are refused",
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        help=f"file holding the AdminService token (env {ENV_ADMIN_TOKEN} holds the token itself); "
        "without a token every admin call is refused",
    )
    parser.add_argument(
        "--artifact-key",
        type=Path,
        metavar="FILE",
        help=f"Ed25519 key (PEM; the public key, or the private one train signs with) that every "
        f"artifact's manifest must be signed with, at start and on every reload (env "
        f"{ENV_ARTIFACT_KEY_FILE}); without it unsigned artifacts are served and said to be",
    )
    parser.add_argument(
        "--state",
        help=f"where live customer state (session mixes, drift) is kept (env {ENV_STATE}): 'memory' "
        "(default; per process) or redis://host:port/db, shared by all workers and replicas",
    )
    parser.add_argument(
        "--event-log",
        metavar="PATH|URL",
        help=f"event log for RecordEvents and served decisions (env {ENV_EVENT_LOG}): a SQLite file "
        "(created if missing) for one machine, or redis://host:port/db[?stream=NAME] for one log shared by "
        "a fleet of servers (Redis with appendonly yes, appendfsync always); without it RecordEvents is "
        "refused. Training reads it with [data] event_log",
    )
    parser.add_argument(
        "--forget-archived-ids-after-days",
        type=float,
        metavar="DAYS",
        help="a SQLite event log keeps the id of every event and outcome its hourly retention archives "
        "(about 59 bytes each), so that a retry of one is still a duplicate; drop those archived more "
        "than DAYS ago (default: keep them for good; a retry within DAYS of the record's arrival is "
        "always a duplicate)",
    )
    parser.add_argument(
        "--experiment",
        type=Path,
        help="TOML file with an [experiment] section (named arms, shares, control; see "
        "engine/decisions/experiment.py) to run from the start; the admin service's SetExperiment "
        "changes it live",
    )
    parser.add_argument(
        "--bandit",
        type=Path,
        help="TOML file with a [bandit] section: exploration_floor, thompson_draws, seed_strength, "
        "decision_ttl_hours, budget_period_hours and [bandit.budgets] offer_id = cost cap per period",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        metavar="PATH",
        help=f"once every worker serves, write PATH (atomically) with the bound port, the metrics port, "
        f"the pid and the worker pids as JSON (env {ENV_READY_FILE}); removed again on stopping. For "
        "supervisors and tests that start the server on port 0",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="with --workers > 1: directory the workers share (metrics files, reload state); "
        "default: a new temporary directory, removed at exit",
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info", help="default: info"
    )
    parser.add_argument(
        "--access-log-every",
        type=int,
        default=DEFAULT_ACCESS_LOG_EVERY,
        metavar="N",
        help="log one in N successful calls; failed calls and calls slower than 100 ms are always "
        f"logged, and Prometheus counts every call (default {DEFAULT_ACCESS_LOG_EVERY}; 1 logs every call)",
    )
    parser.add_argument(
        "--max-connection-age",
        type=float,
        default=DEFAULT_MAX_CONNECTION_AGE_S,
        metavar="SECONDS",
        help="close each client connection after this age (a GOAWAY: calls in flight finish, the client "
        "reconnects without failing a call), so that connections spread again over the workers after one "
        f"was replaced, or over replicas behind a TCP balancer (default {DEFAULT_MAX_CONNECTION_AGE_S:.0f}; "
        "0 keeps connections open)",
    )
    parser.add_argument(
        "--batch-max-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        metavar="N",
        help="score up to N concurrent Personalize (or RecommendProducts) calls of a worker together; "
        f"an idle worker scores a call at once (default {DEFAULT_MAX_BATCH_SIZE}; 1 turns batching off)",
    )
    parser.add_argument(
        "--batch-preferred-size",
        type=int,
        default=DEFAULT_PREFERRED_BATCH_SIZE,
        metavar="N",
        help="the wait after a batch ends as soon as N calls are queued (at most --batch-max-size; "
        "those queued beyond N still join, up to it). Closed-loop callers are back before the wait "
        "runs out, so this sets how many are worth waiting for: the calls a worker usually has in "
        "flight, e.g. 4 for 8 concurrent callers over --workers 2 (with fewer, every wait runs its "
        f"whole --batch-wait-ms) (default {DEFAULT_PREFERRED_BATCH_SIZE})",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=DEFAULT_MAX_WAIT_MS,
        metavar="MS",
        help="after a batch, wait at most MS for the next one to fill, so that calls gRPC is still "
        "handing over join it; only while calls have lately come closer together than MS and "
        "such waits have lately formed batches of more than one "
        f"(default {DEFAULT_MAX_WAIT_MS}; 0 never waits)",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        metavar="BYTES",
        help="largest request message accepted; a larger one is answered RESOURCE_EXHAUSTED before it is "
        f"decoded (default {DEFAULT_MAX_REQUEST_BYTES} = 4 MiB; {MIN_MAX_REQUEST_BYTES} to "
        f"{MAX_MAX_REQUEST_BYTES})",
    )
    parser.add_argument(
        "--max-response-bytes",
        type=int,
        default=DEFAULT_MAX_RESPONSE_BYTES,
        metavar="BYTES",
        help="largest RecommendProducts response sent; a larger one is answered RESOURCE_EXHAUSTED "
        "naming the request fields that made it large (default "
        f"{DEFAULT_MAX_RESPONSE_BYTES} = 4 MiB, a gRPC client's default receive limit; raise both "
        f"together; {MIN_MAX_REQUEST_BYTES} to {MAX_MAX_REQUEST_BYTES})",
    )
    parser.add_argument(
        "--pin-workers",
        action="store_true",
        default=None,
        help=f"with --workers > 1, run worker i on the i-th CPU this server may use (env "
        f"{ENV_PIN_WORKERS}=1), so that workers do not move between cores; for hosts whose cores serve "
        "this server alone",
    )
    parser.add_argument(
        "--helper-threads",
        choices=HELPER_THREAD_POLICIES,
        help=f"scheduling of every thread of a worker but its event loop's (env {ENV_HELPER_THREADS}; "
        f"default {DEFAULT_HELPER_THREADS}): batch lets them wait for a free core instead of preempting "
        "the loop when they wake (Linux SCHED_BATCH; 7-10%% more Personalize calls/s on the 2-core "
        "benchmark machine), normal leaves them as started",
    )
    parser.add_argument(
        "--benchmark-floor",
        action="store_true",
        default=None,
        help=f"for benchmarks only (env {ENV_BENCHMARK_FLOOR}=1): the whole server stack as usual, but "
        "Personalize returns one response prepared at start instead of calling the engine, so a load "
        "test measures the ceiling of the transport, interceptor and metrics alone",
    )
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upkeep-process", action="store_true", help=argparse.SUPPRESS)


def _int_setting(
    given: int | None, environ: Mapping[str, str], variable: str, flag: str, default: int, low: int, high: int
) -> int:
    if given is not None:
        value, source = given, flag
    elif variable in environ:
        source = variable
        try:
            value = int(environ[variable])
        except ValueError:
            raise ServeConfigError(f"{variable}={environ[variable]!r}: not a whole number") from None
    else:
        return default
    if not low <= value <= high:
        raise ServeConfigError(f"{source} {value}: must be between {low} and {high}")
    return value


def _admin_token(path: Path | None, environ: Mapping[str, str]) -> str | None:
    """The admin token from the file (flag) or the environment; errors name the source, never the token."""
    if path is not None:
        source = f"--admin-token-file {path}"
        try:
            text = path.read_text(encoding="utf-8")
            shared_with_others = path.stat().st_mode & 0o077
        except (OSError, UnicodeDecodeError) as error:
            raise ServeConfigError(f"{source}: cannot read ({error})") from None
        if shared_with_others:
            LOGGER.warning("%s: other users may read this file; restrict it with chmod 600", source)
    elif ENV_ADMIN_TOKEN in environ:
        source, text = ENV_ADMIN_TOKEN, environ[ENV_ADMIN_TOKEN]
    else:
        return None
    token = text.strip()
    if not token:
        raise ServeConfigError(f"{source}: the admin token is empty")
    if not all(33 <= ord(character) < 127 for character in token):
        raise ServeConfigError(f"{source}: the admin token must be printable ASCII without spaces")
    if len(token) < 16:
        LOGGER.warning("%s: the admin token has fewer than 16 characters; use a long random one", source)
    return token


def _artifact_key(
    given: Path | None, environ: Mapping[str, str]
) -> tuple[Path | None, ArtifactVerifier | None]:
    """``--artifact-key`` or its variable, read once here so a bad key fails before any worker starts."""
    if given is not None:
        path, source = given, "--artifact-key"
    elif environ.get(ENV_ARTIFACT_KEY_FILE):
        path, source = Path(environ[ENV_ARTIFACT_KEY_FILE]), ENV_ARTIFACT_KEY_FILE
    else:
        return None, None
    try:
        verifier = ArtifactVerifier.from_file(path)
    except PersonaEngineError as error:
        raise ServeConfigError(f"{source}: {error}") from None
    return path.resolve(), verifier


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServeSettings:
    """Resolve flags, then environment variables, then defaults; raises ServeConfigError naming the flag."""
    environ = os.environ if environ is None else environ
    artifact: Path = args.artifact
    if not artifact.exists():
        raise ServeConfigError(f"--artifact {artifact}: no such folder")
    address = args.address or environ.get(ENV_ADDRESS) or DEFAULT_ADDRESS
    address_source = ENV_ADDRESS if not args.address and environ.get(ENV_ADDRESS) else "--address"
    split_address(address)
    metrics_port = _int_setting(
        args.metrics_port, environ, ENV_METRICS_PORT, "--metrics-port", DEFAULT_METRICS_PORT, 0, 65535
    )
    metrics_port_source = (
        ENV_METRICS_PORT if args.metrics_port is None and ENV_METRICS_PORT in environ else "--metrics-port"
    )
    if metrics_port and metrics_port == split_address(address)[1]:
        raise ServeConfigError(
            f"{metrics_port_source} {metrics_port}: the port {address_source} {address} serves gRPC on; "
            "give the metrics endpoint another (or 0 to disable it)"
        )
    if args.worker_index is not None and args.run_dir is None:
        raise ServeConfigError("--worker-index is set by the supervising process, together with --run-dir")
    upkeep_process = bool(getattr(args, "upkeep_process", False))
    if upkeep_process and args.run_dir is None:
        raise ServeConfigError("--upkeep-process is set by the supervising process, together with --run-dir")
    if args.access_log_every < 1:
        raise ServeConfigError(f"--access-log-every {args.access_log_every}: must be at least 1")
    max_connection_age_s = getattr(args, "max_connection_age", DEFAULT_MAX_CONNECTION_AGE_S)
    if not max_connection_age_s >= 0:
        raise ServeConfigError(f"--max-connection-age {max_connection_age_s}: must be 0 or more seconds")
    batch_max_size = getattr(args, "batch_max_size", DEFAULT_MAX_BATCH_SIZE)
    batch_wait_ms = getattr(args, "batch_wait_ms", DEFAULT_MAX_WAIT_MS)
    if batch_max_size < 1:
        raise ServeConfigError(f"--batch-max-size {batch_max_size}: must be at least 1")
    batch_preferred_size = getattr(args, "batch_preferred_size", DEFAULT_PREFERRED_BATCH_SIZE)
    if batch_preferred_size < 1:
        raise ServeConfigError(f"--batch-preferred-size {batch_preferred_size}: must be at least 1")
    if not 0 <= batch_wait_ms < 1000:
        raise ServeConfigError(f"--batch-wait-ms {batch_wait_ms}: must be at least 0 and under 1000")
    max_request_bytes = getattr(args, "max_request_bytes", DEFAULT_MAX_REQUEST_BYTES)
    if not MIN_MAX_REQUEST_BYTES <= max_request_bytes <= MAX_MAX_REQUEST_BYTES:
        raise ServeConfigError(
            f"--max-request-bytes {max_request_bytes}: must be between {MIN_MAX_REQUEST_BYTES} and "
            f"{MAX_MAX_REQUEST_BYTES}"
        )
    max_response_bytes = getattr(args, "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)
    if not MIN_MAX_REQUEST_BYTES <= max_response_bytes <= MAX_MAX_REQUEST_BYTES:
        raise ServeConfigError(
            f"--max-response-bytes {max_response_bytes}: must be between {MIN_MAX_REQUEST_BYTES} and "
            f"{MAX_MAX_REQUEST_BYTES}"
        )
    if args.threads < 1:
        raise ServeConfigError(f"--threads {args.threads}: must be at least 1")
    if not args.grace_seconds >= 0:
        raise ServeConfigError(f"--grace-seconds {args.grace_seconds}: must be 0 or more")
    tls: TlsConfig | None = None
    tls_files: tuple[str, ...] = ()
    if args.tls_cert is not None or args.tls_key is not None or args.tls_client_ca is not None:
        if args.tls_cert is None or args.tls_key is None:
            raise ServeConfigError("--tls-cert and --tls-key go together (and --tls-client-ca needs both)")
        tls = TlsConfig.from_files(args.tls_cert, args.tls_key, args.tls_client_ca)
        tls_files = ("--tls-cert", str(args.tls_cert.resolve()), "--tls-key", str(args.tls_key.resolve()))
        if args.tls_client_ca is not None:
            tls_files += ("--tls-client-ca", str(args.tls_client_ca.resolve()))
    state = _state_setting(getattr(args, "state", None), environ)
    event_log, event_log_url = _event_log_setting(args.event_log, environ, state)
    forget_days = getattr(args, "forget_archived_ids_after_days", None)
    if forget_days is not None:
        if not (math.isfinite(forget_days) and forget_days > 0):
            raise ServeConfigError(
                f"--forget-archived-ids-after-days {forget_days:g}: must be a number of days above 0"
            )
        if event_log is None:
            raise ServeConfigError(
                f"--forget-archived-ids-after-days {forget_days:g}: applies to a SQLite --event-log, and "
                + ("a Redis event log never archives" if event_log_url is not None else "none is given")
            )
    experiment = None
    if args.experiment is not None:
        experiment = args.experiment.resolve()
        try:  # validated once here, so a bad file fails before any worker starts
            load_experiment(experiment)
        except ExperimentError as error:
            raise ServeConfigError(f"--experiment: {error}") from None
    bandit_file = args.bandit.resolve() if args.bandit is not None else None
    try:  # read once here, so a bad file fails before any worker starts
        bandit = load_bandit_config(bandit_file) if bandit_file is not None else None
    except OnlineBanditError as error:
        raise ServeConfigError(f"--bandit: {error}") from None
    artifact_key, artifact_verifier = _artifact_key(getattr(args, "artifact_key", None), environ)
    return ServeSettings(
        artifact=artifact,
        artifact_key=artifact_key,
        artifact_verifier=artifact_verifier,
        model_name=args.model or None,
        address=address,
        address_source=address_source,
        metrics_port=metrics_port,
        metrics_port_source=metrics_port_source,
        workers=_int_setting(
            args.workers, environ, ENV_WORKERS, "--workers", DEFAULT_WORKERS, 1, MAX_WORKERS
        ),
        threads=args.threads,
        grace_seconds=args.grace_seconds,
        tls=tls,
        admin_token=_admin_token(args.admin_token_file, environ),
        run_dir=args.run_dir,
        worker_index=args.worker_index,
        upkeep_process=upkeep_process,
        tls_files=tls_files,
        log_level=args.log_level,
        state=state,
        event_log=event_log,
        event_log_url=event_log_url,
        forget_archived_ids_after_days=forget_days,
        experiment=experiment,
        bandit=bandit,
        bandit_file=bandit_file,
        access_log_every=args.access_log_every,
        max_connection_age_s=max_connection_age_s,
        ready_file=_ready_file_setting(getattr(args, "ready_file", None), environ),
        event_loop=_event_loop_setting(getattr(args, "event_loop", None), environ),
        batching=BatchSettings(batch_max_size, batch_wait_ms / 1000, batch_preferred_size),
        max_request_bytes=max_request_bytes,
        max_response_bytes=max_response_bytes,
        benchmark_floor=_flag_setting(
            getattr(args, "benchmark_floor", None), environ, ENV_BENCHMARK_FLOOR, "--benchmark-floor"
        ),
        pin_workers=_flag_setting(
            getattr(args, "pin_workers", None), environ, ENV_PIN_WORKERS, "--pin-workers"
        ),
        helper_threads=_choice_setting(
            getattr(args, "helper_threads", None),
            environ,
            ENV_HELPER_THREADS,
            "--helper-threads",
            HELPER_THREAD_POLICIES,
            DEFAULT_HELPER_THREADS,
        ),
    )


def _event_log_setting(
    given: str | None, environ: Mapping[str, str], state: str
) -> tuple[Path | None, str | None]:
    """``--event-log`` or its variable: (a SQLite file, a shared log's URL), at most one of them set.

    Either is opened once here, so a bad path, an unreachable Redis or one that does not fsync every
    write fails before any worker starts (and a new SQLite file has its schema before they open it).
    """
    text, source = (given, "--event-log") if given else (environ.get(ENV_EVENT_LOG), ENV_EVENT_LOG)
    if not text:
        return None, None
    if is_shared_log_location(text) and state == MEMORY:
        raise ServeConfigError(
            f"{source} {redacted(text)}: a log shared by a fleet needs live state shared too (--state "
            "redis://host:port/db); with --state memory each process would have to replay the whole "
            "fleet's log at every start"
        )
    try:
        if is_shared_log_location(text):
            RedisEventLog.open(text).close()
            return None, text
        path = Path(text).resolve()
        EventLog.open(path).close()
    except EventLogError as error:
        raise ServeConfigError(f"{source}: {error}") from None
    return path, None


def _event_loop_setting(given: str | None, environ: Mapping[str, str]) -> str:
    """``--event-loop`` or its variable; uvloop must be importable, so a missing package fails at start."""
    value, source = (given, "--event-loop") if given else (environ.get(ENV_EVENT_LOOP), ENV_EVENT_LOOP)
    if not value:
        return DEFAULT_EVENT_LOOP
    if value not in EVENT_LOOPS:
        raise ServeConfigError(f"{source} {value!r}: expected one of {', '.join(EVENT_LOOPS)}")
    if value == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ServeConfigError(f"{source} uvloop: the uvloop package is not installed (pip install uvloop)")
    return value


def _choice_setting(
    given: str | None,
    environ: Mapping[str, str],
    variable: str,
    flag: str,
    choices: tuple[str, ...],
    default: str,
) -> str:
    """One of ``choices``: the flag's (argparse checked it), else its variable's, else ``default``."""
    if given:
        return given
    value = environ.get(variable, "").strip()
    if not value:
        return default
    if value not in choices:
        raise ServeConfigError(f"{variable}={value!r}: expected one of {', '.join(choices)} (like {flag})")
    return value


def _flag_setting(given: bool | None, environ: Mapping[str, str], variable: str, flag: str) -> bool:
    """A switch: the flag, else its variable (``1``/``true``/``yes`` or ``0``/``false``/``no``/empty)."""
    if given:
        return True
    text = environ.get(variable, "").strip().lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise ServeConfigError(f"{variable}={environ[variable]!r}: expected 1 or 0 (like {flag})")


def _state_setting(given: str | None, environ: Mapping[str, str]) -> str:
    """``--state`` or its variable; only the form is checked here, the server is reached at startup."""
    value, source = (given, "--state") if given else (environ.get(ENV_STATE), ENV_STATE)
    if not value:
        return MEMORY
    if value != MEMORY and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ServeConfigError(f"{source} {value!r}: expected 'memory' or a redis://host:port/db URL")
    return value


def _ready_file_setting(given: Path | None, environ: Mapping[str, str]) -> Path | None:
    """``--ready-file`` or its variable, made absolute; its folder must exist, so a typo fails at once
    instead of after the model loaded, when the file could not be written."""
    source, value = ("--ready-file", given) if given else (ENV_READY_FILE, environ.get(ENV_READY_FILE))
    if not value:
        return None
    path = Path(value).resolve()
    if path.is_dir():
        raise ServeConfigError(f"{source} {value}: is a folder; name the file to write")
    if not path.parent.is_dir():
        raise ServeConfigError(f"{source} {value}: no such folder {path.parent}")
    return path
