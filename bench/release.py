"""Release performance: a day of pseudonymised data for N meters pulled over mutual TLS,
keep-alive requests/s through the pipeline against a hello-world route on the same server, and
the pipeline's own overhead per release.

Targets: p50 and p99 of the pull of one day of pseudonymised data for 10 k meters;
keep-alive requests/s through the full pipeline >= 50 % of a hello-world FastAPI route over the
same mutual-TLS setup, measured in the same run; the pipeline's overhead per release (decision,
transform, audit).

What one release can cover: the pipeline releases household rows (the raw and pseudonymised
tiers) of ONE customer per request (``ReleaseRequest.subject``); a request without a subject is
an aggregate, which the policy puts in the aggregated tier or above and which
``ReadingsRepository.aggregate`` serves for the aggregated and dp tiers only. There is no single
release of pseudonymised data for 10 k meters. What is measured is the realistic path: a
demand-response aggregator (a third party; purpose ``demand_response``, whose default tier is
``pseudonymised``; 15-minute data, so the consents are explicit; identified, as the policy
addresses no customer by id on a consent to pseudonymous data) holds the consent of each of N
customers (one meter each) and one subject feed per customer for one day, and pulls that day
from every feed: N ``GET /v1/feeds/{id}/data`` requests, each a pipeline run (decision
recorded, readings opened, meter and customer pseudonymised under the recipient's key, release
row, ``release.made`` audit entry) answered as JSON.

Set-up (not timed): a fresh data directory and database, the shipped policy, N simulated meters
provisioned and one day of their 15-minute profiles ingested as DLMS frames (the real MDMS
path), N consents, the recipient onboarded by CSR with a certificate from the broker's CA, N
feeds, a certificate-bound token from ``POST /oauth/token`` (client credentials,
``tls_client_auth``). The server is ``broker.api.server.build`` + ``running`` (uvicorn, TLS 1.3,
client certificates required) in a process of its own, so the clients (httpx, keep-alive, in
this process) do not share its interpreter lock; two routes are added to its app: the
hello-world route and the same route behind the feeds' dependencies (bound token + rate limit).
The per-client rate limits are raised so they never answer 429 (``settings_changed``).

Prints one JSON object:
- ``pull_day_pseudonymised``: the N-page pull, ``--repeats`` times; latency p50/p99 of a page
  (one customer's day) over every page of every repeat, and the wall time of the whole pull.
- ``keepalive_rps``: requests/s of the hello-world route, of the same behind token and rate
  limit, and of a feed page (one customer's day, a pipeline run), in blocks of ``--block-s``
  seconds alternated over ``--rounds`` rounds, for each number of concurrent clients in
  ``--clients``; ``ratio`` = pipeline / hello-world (target >= 0.5), medians and ``_all``.
- ``pipeline_overhead``: ``ReleasePipeline.run`` in this process on the same releases, each
  phase timed by wrapping the pipeline's collaborators (no change to ``broker``): medians per
  release; also ``FeedService.page`` in process (pipeline + feed bookkeeping + JSON).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlmodel import Session

from bench.common import database
from bench.ingest import _rows as key_row
from broker.api.access import Caller, access
from broker.api.server import build, running
from broker.api.tls import client_context
from broker.audit.events import AuditEvent, AuditSink
from broker.ca.authority import CertificateAuthority
from broker.kit.clock import SystemClock
from broker.oauth.settings import OAuthSettings
from broker.policy.decision import ReleaseRequest
from broker.policy.service import activate_shipped_if_none
from broker.recipients.models import Kind
from broker.recipients.service import Recipients, Registration
from broker.release.feeds import FeedSpec
from broker.release.service import ReleasePipeline
from broker.runtime.core import Runtime, init_keys, prepare_data_dir
from broker.runtime.wiring import open_consents, open_feeds, open_pipeline
from broker.settings import Mode, Settings
from connectors.meters.simulator import Fleet
from consent_ledger import ConsentRequest, Give, notice_hash
from demo.service import _party as onboard_party

RECIPIENT = "bench-flex"
PURPOSE = "demand_response"
GRANULARITY = "15min"
CATEGORIES = ("consumption",)
UNLIMITED = 1e9
CHUNK = 2_000
HELLO, HELLO_TOKEN, PIPELINE = "hello", "hello_token", "pipeline"
PATHS = {HELLO: "/v1/bench/hello", HELLO_TOKEN: "/v1/bench/hello-token"}


# ---- the server, in a process of its own ---------------------------------------------------

PAGE_ACCESS = access("GET", "/v1/feeds/{feed_id}/data")


def add_routes(app: FastAPI) -> None:
    """The hello-world route, and the same behind a feed page's access check (``access``: the
    client certificate checked against the CRL, the bound token verified, the recipient's
    status read, the route's scope from the one table)."""

    @app.get(PATHS[HELLO])
    async def hello() -> dict[str, str]:
        return {"message": "Hello World"}

    @app.get(PATHS[HELLO_TOKEN])
    async def hello_token(who: Annotated[Caller, Depends(PAGE_ACCESS)]) -> dict[str, str]:
        return {"message": f"Hello {who.recipient_id}"}


def serve(settings: Settings, oauth: OAuthSettings, conn: Connection) -> None:
    """The broker's HTTPS server with the two extra routes; sends its port, stops when told."""
    rt = Runtime.open(settings)
    served = build(rt, "bench", poll_s=3600, oauth=oauth)
    add_routes(served.app)
    with running(served) as port:
        conn.send(port)
        conn.recv()
    rt.close()


@contextmanager
def server_process(settings: Settings, oauth: OAuthSettings) -> Iterator[str]:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=serve, args=(settings, oauth, theirs), daemon=True)
    process.start()
    try:
        waited = 0.0
        while not ours.poll(0.5):
            waited += 0.5
            if not process.is_alive() or waited > 120:
                raise RuntimeError("the broker's server did not start (see above)")
        yield f"https://127.0.0.1:{ours.recv()}"
    finally:
        if process.is_alive():
            ours.send("stop")
            process.join(30)
        if process.is_alive():
            process.terminate()
            process.join(10)


# ---- set-up ---------------------------------------------------------------------------------


@dataclass
class Setup:
    rt: Runtime
    settings: Settings
    oauth: OAuthSettings
    customers: list[str]
    feeds: dict[str, list[str]]
    """Feeds by use: a page is released once, so every page asked for needs a feed of its own:
    ``pull<n>`` one per customer for each whole-day pull, ``check``, ``in_process`` and
    ``rate`` (the keep-alive rate's pool)."""
    day: datetime
    cert: Path
    key: Path
    seconds: dict[str, float]


def _settings(data_dir: Path, url: str) -> tuple[Settings, OAuthSettings, dict[str, Any]]:
    changed: dict[str, Any] = {
        "BROKER_MODE": "development",
        "BROKER_API_RATE_PER_S": UNLIMITED,
        "BROKER_API_BURST": UNLIMITED,
        "BROKER_OAUTH_RATE_PER_S": 1000.0,
        "BROKER_OAUTH_BURST": 1000.0,
        "BROKER_OAUTH_TOKEN_TTL_S": 3600,
    }
    settings = Settings(
        mode=Mode.development,
        data_dir=data_dir,
        database_url=url,  # type: ignore[arg-type]  # pydantic makes the SecretStr
        api_rate_per_s=UNLIMITED,
        api_burst=UNLIMITED,
    )
    oauth = OAuthSettings(rate_per_s=1000.0, burst=1000.0, token_ttl_s=3600)
    return settings, oauth, changed


def _fill(rt: Runtime, meters: int, seed: int, day: datetime, progress: Progress) -> None:
    """Provision the meters and ingest one day of their profiles through the MDMS."""
    task = progress.add_task("meters provisioned and a day ingested", total=meters)
    for number, fleet in enumerate(Fleet.chunks(meters, seed, chunk=CHUNK)):
        with rt.db.transaction() as session:
            rt.meters.provision(session, [key_row(m) for m in fleet.meters], "bench", "bench")
        frames = [frame for _meter, frame in fleet.frames(day, 1, 96)]
        with rt.db.transaction() as session:
            result = rt.ingest.ingest(session, frames, "dc-bench", f"b{number}", "bench")
        if result.count("accepted") != len(frames):
            raise RuntimeError(f"ingest did not accept every frame: {result.outcomes()}")
        progress.advance(task, len(fleet))


def _consents(rt: Runtime, customers: Sequence[str], progress: Progress) -> None:
    task = progress.add_task("consents given", total=len(customers))
    service = open_consents(rt)
    expires = rt.clock.now() + timedelta(days=90)
    for start in range(0, len(customers), 1000):
        chunk = customers[start : start + 1000]
        gives = [
            Give(
                ConsentRequest(
                    customer=c, recipient=RECIPIENT, purposes=(PURPOSE,), categories=CATEGORIES,
                    granularity=GRANULARITY, expires_at=expires,
                    notice_hash=notice_hash(b"bench notice"),
                    collection_method="oauth_consent_page", controller="utility.example",
                    history_days=30, identified=True, explicit=True,
                )
            )
            for c in chunk
        ]  # fmt: skip
        with rt.db.transaction() as session:
            service.append_many(session, gives, "bench")
        progress.advance(task, len(chunk))


def _onboard(rt: Runtime, tmp: Path) -> tuple[Path, Path]:
    """The recipient registered, then its CSR certified by the broker's CA as the demo does."""
    with rt.db.transaction() as session:
        reg = Registration(RECIPIENT, "Bench Flex", Kind.third_party, (PURPOSE,))
        Recipients(rt.audit, rt.clock).register(session, reg, "bench")
    return onboard_party(rt, tmp, RECIPIENT)


def _feeds(rt: Runtime, customers: Sequence[str], day: datetime, fmt: str, count: int,
           progress: Progress) -> list[str]:  # fmt: skip
    """``count`` feeds of one day, the customers in turn."""
    task = progress.add_task("feeds subscribed", total=count)
    service = open_feeds(rt)
    out = []
    for n in range(count):
        customer = customers[n % len(customers)]
        spec = FeedSpec(
            PURPOSE, CATEGORIES, GRANULARITY, "subject", fmt, subject=customer,
            period_from=day, period_to=day + timedelta(days=1),
        )  # fmt: skip
        out.append(service.subscribe(RECIPIENT, spec)["feed_id"])
        progress.advance(task)
    return out


@contextmanager
def set_up(args: argparse.Namespace, progress: Progress) -> Iterator[tuple[Setup, dict[str, Any]]]:
    backend = "postgres" if args.backend == "postgresql" else args.backend
    with database(backend) as db, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url = db.engine.url.render_as_string(hide_password=False)
        settings, oauth, changed = _settings(tmp / "var", url)
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        prepare_data_dir(settings)
        init_keys(settings)
        clock = SystemClock()
        CertificateAuthority.create(settings, clock)
        rt = Runtime.open(settings, clock)
        activate_shipped_if_none(settings, rt.db.transaction, rt.audit, clock, "bench")
        today = clock.now().date()
        day = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=1)
        seconds["init"] = time.perf_counter() - start
        start = time.perf_counter()
        _fill(rt, args.meters, args.seed, day, progress)
        seconds["fill"] = time.perf_counter() - start
        customers = [f"CUST-{i + 1:07d}" for i in range(args.meters)]  # the simulator's refs
        cert, key = _onboard(rt, tmp)  # registered first: a consent names a known recipient
        start = time.perf_counter()
        _consents(rt, customers, progress)
        seconds["consents"] = time.perf_counter() - start
        start = time.perf_counter()
        sizes = {f"pull{n}": len(customers) for n in range(args.repeats)}
        sizes |= {"check": 1, "in_process": args.releases + 20, "rate": args.rate_feeds}
        subscribed = iter(_feeds(rt, customers, day, args.format, sum(sizes.values()), progress))
        feeds = {use: list(itertools.islice(subscribed, size)) for use, size in sizes.items()}
        seconds["feeds"] = time.perf_counter() - start
        try:
            yield Setup(rt, settings, oauth, customers, feeds, day, cert, key, seconds), changed
        finally:
            rt.close()


# ---- clients --------------------------------------------------------------------------------


def _client(url: str, setup: Setup, token: str | None = None) -> httpx.Client:
    ca = setup.settings.ca_dir / "ca.pem"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    verify = client_context(ca, setup.cert, setup.key)
    return httpx.Client(base_url=url, verify=verify, timeout=60, headers=headers)


def _token(url: str, setup: Setup) -> str:
    form = {"grant_type": "client_credentials", "client_id": RECIPIENT, "scope": "feeds:read"}
    with _client(url, setup) as client:
        answer = client.post("/oauth/token", data=form)
    if answer.status_code != 200:
        raise RuntimeError(f"no token: HTTP {answer.status_code} {answer.text}")
    return str(answer.json()["access_token"])


def _get(client: httpx.Client, path: str) -> httpx.Response:
    answer = client.get(path)
    if answer.status_code != 200:
        raise RuntimeError(f"GET {path}: HTTP {answer.status_code} {answer.text[:500]}")
    return answer


def _page(feed_id: str) -> str:
    return f"/v1/feeds/{feed_id}/data"


def _check_page(client: httpx.Client, feed_id: str, customer: str) -> int:
    """One page is what it should be: pseudonymised, one day of 15-minute rows, no customer."""
    answer = _get(client, _page(feed_id) + "?format=json")
    doc = answer.json()
    rows = doc["rows"]
    if doc["release"]["tier"] != "pseudonymised" or customer in answer.text:
        raise RuntimeError(f"the page is not pseudonymised: {answer.text[:500]}")
    if len(rows) != 96 or not str(rows[0].get("meter_id", "")).startswith("ps1:"):
        raise RuntimeError(f"expected 96 rows with ps1: meter ids, got {answer.text[:500]}")
    return len(rows)


def _threads(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # report it in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def pull(clients: Sequence[httpx.Client], feeds: Sequence[str], progress: Progress, label: str
         ) -> tuple[float, list[int]]:  # fmt: skip
    """Every feed's day once, the feeds shared out over the clients; (wall s, latencies ns)."""
    task = progress.add_task(label, total=len(feeds))
    latencies: list[list[int]] = [[] for _ in clients]
    clock = time.perf_counter_ns

    def work(i: int) -> None:
        mine, client = latencies[i], clients[i]
        for feed_id in feeds[i :: len(clients)]:
            start = clock()
            _get(client, _page(feed_id))
            mine.append(clock() - start)
            progress.advance(task)

    start = time.perf_counter()
    _threads(len(clients), work)
    wall = time.perf_counter() - start
    progress.remove_task(task)
    return wall, [x for part in latencies for x in part]


def rate(clients: Sequence[httpx.Client], path: Callable[[int, int], str], seconds: float) -> float:
    """Requests/s of the clients together, each sending ``path(client, n)`` back to back for
    ``seconds`` on its keep-alive connection."""
    counts = [0] * len(clients)
    ends = [0.0] * len(clients)
    barrier = threading.Barrier(len(clients) + 1)
    start = 0.0

    def work(i: int) -> None:
        client, n = clients[i], 0
        barrier.wait()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            _get(client, path(i, n))
            n += 1
        counts[i], ends[i] = n, time.perf_counter()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    if any(c == 0 for c in counts):
        raise RuntimeError("a client finished no request (an error above?)")
    return sum(counts) / (max(ends) - start)


def keepalive(url: str, setup: Setup, token: str, args: argparse.Namespace, progress: Progress
              ) -> dict[str, Any]:  # fmt: skip
    """Hello-world, hello-world behind token + rate limit, and a feed page, alternated."""
    pool = setup.feeds["rate"]
    fresh = itertools.count()  # next() is atomic: every request gets a page never released

    def page(_i: int, _n: int) -> str:
        n = next(fresh)
        if n >= len(pool):
            raise RuntimeError(f"the rate used all {len(pool)} feeds: raise --rate-feeds")
        return _page(pool[n])

    paths: dict[str, Callable[[int, int], str]] = {
        HELLO: lambda _i, _n: PATHS[HELLO],
        HELLO_TOKEN: lambda _i, _n: PATHS[HELLO_TOKEN],
        PIPELINE: page,
    }
    out: dict[str, Any] = {}
    for count in args.clients:
        task = progress.add_task(f"keep-alive rounds, {count} client(s)", total=args.rounds)
        clients = [_client(url, setup, token) for _ in range(count)]
        try:
            for kind in paths:  # warm: connections open, caches and engines filled
                rate(clients, paths[kind], min(1.0, args.block_s))
            found: dict[str, list[float]] = {kind: [] for kind in paths}
            for round_no in range(args.rounds):
                order = list(paths) if round_no % 2 == 0 else list(reversed(paths))
                for kind in order:
                    found[kind].append(rate(clients, paths[kind], args.block_s))
                progress.advance(task)
        finally:
            for client in clients:
                client.close()
        progress.remove_task(task)
        ratios = [p / h for p, h in zip(found[PIPELINE], found[HELLO], strict=True)]
        ratio = statistics.median(found[PIPELINE]) / statistics.median(found[HELLO])
        out[str(count)] = {
            "hello_rps": round(statistics.median(found[HELLO]), 1),
            "hello_token_rps": round(statistics.median(found[HELLO_TOKEN]), 1),
            "pipeline_rps": round(statistics.median(found[PIPELINE]), 1),
            "ratio": round(ratio, 3),
            "ratio_target": 0.5,
            "ratio_met": ratio >= 0.5,
            "hello_rps_all": [round(x, 1) for x in found[HELLO]],
            "hello_token_rps_all": [round(x, 1) for x in found[HELLO_TOKEN]],
            "pipeline_rps_all": [round(x, 1) for x in found[PIPELINE]],
            "ratio_all": [round(x, 3) for x in ratios],
        }
    return out


# ---- the pipeline in process, phase by phase ------------------------------------------------


class Marks:
    """(start, end) ns of the last call of each wrapped method."""

    def __init__(self) -> None:
        self.at: dict[str, tuple[int, int]] = {}

    def wrap(self, owner: object, method: str, label: str) -> None:
        inner = getattr(owner, method)
        at, clock = self.at, time.perf_counter_ns

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return inner(*args, **kwargs)
            finally:
                at[label] = (start, clock())

        setattr(owner, method, timed)  # on this instance only; broker's code is unchanged

    def span(self, label: str) -> int:
        start, end = self.at[label]
        return end - start


class TimedAudit:
    """The pipeline's audit sink, timed (the runtime's log is shared, so it is not wrapped)."""

    def __init__(self, inner: AuditSink, marks: Marks) -> None:
        self.inner, self.marks = inner, marks

    def record(self, session: Session, events: Sequence[AuditEvent]) -> list[int]:
        start = time.perf_counter_ns()
        try:
            return self.inner.record(session, events)
        finally:
            self.marks.at["audit"] = (start, time.perf_counter_ns())


def timed_pipeline(rt: Runtime) -> tuple[ReleasePipeline, Marks]:
    pipeline, marks = open_pipeline(rt), Marks()
    marks.wrap(pipeline, "release", "release")
    marks.wrap(pipeline, "_record", "record")
    marks.wrap(pipeline.consents, "refresh", "refresh")
    marks.wrap(pipeline.decisions, "decide", "decide")
    marks.wrap(pipeline.decisions, "flush", "flush")
    marks.wrap(pipeline.repository, "household", "read")
    marks.wrap(pipeline.pseudonyms, "key_for", "pseudonym_key")
    pipeline.audit = TimedAudit(pipeline.audit, marks)
    return pipeline, marks


def phases(marks: Marks, run: tuple[int, int]) -> dict[str, int]:
    """One release split along the pipeline's steps (ns); see ``ReleasePipeline.release``."""
    at = marks.at
    release, decide, flush = at["release"], at["decide"], at["flush"]
    read, record = at["read"], at["record"]
    out = {
        "facts": decide[0] - release[0],  # consents refreshed, covering consents, Facts
        "of_which_consent_refresh": marks.span("refresh"),
        "decision": flush[1] - decide[0],  # input built, policy evaluated, record inserted
        "of_which_decision_record": marks.span("flush"),
        "read": read[1] - flush[1],  # readings of the customer's meters opened (not overhead)
        "transform": record[0] - read[1],  # tier parameters + pseudonymise + drop fields
        "of_which_pseudonym_key": marks.span("pseudonym_key"),
        "record_and_audit": marks.span("record"),  # release row + release.made entry
        "of_which_audit": marks.span("audit"),
        "transaction": (release[0] - run[0]) + (run[1] - release[1]),  # begin + commit
        "total": run[1] - run[0],
    }
    out["overhead"] = out["total"] - out["read"]
    out["decision_transform_audit"] = out["decision"] + out["transform"] + out["record_and_audit"]
    return out


def overhead(setup: Setup, releases: int, progress: Progress) -> dict[str, Any]:
    rt = setup.rt
    pipeline, marks = timed_pipeline(rt)
    customers = setup.customers
    picks = [customers[(i * 7919) % len(customers)] for i in range(min(releases, len(customers)))]
    end = setup.day + timedelta(days=1)
    with rt.db.transaction() as session:
        requests = [
            pipeline.request_for(session, RECIPIENT, PURPOSE, CATEGORIES, GRANULARITY,
                                 setup.day, end, c)
            for c in picks
        ]  # fmt: skip
    task = progress.add_task("releases in process", total=releases * 2)
    clock = time.perf_counter_ns

    def one(request: ReleaseRequest) -> dict[str, int]:
        start = clock()
        result = pipeline.run(rt.db, request)
        done = clock()
        if result.tier != "pseudonymised" or result.rows != 96:
            raise RuntimeError(f"unexpected release: {result.tier}, {result.rows} rows")
        return phases(marks, (start, done))

    for request in requests[:20]:  # warm: consents loaded, engine compiled, caches filled
        one(request)
    samples = []
    for i in range(releases):
        samples.append(one(requests[i % len(requests)]))
        progress.advance(task)
    feeds = open_feeds(rt)
    order = setup.feeds["in_process"]
    for feed_id in order[:20]:
        feeds.page(RECIPIENT, feed_id)
    pages = []
    for feed_id in order[20:]:
        start = clock()
        feeds.page(RECIPIENT, feed_id)
        pages.append(clock() - start)
        progress.advance(task)
    progress.remove_task(task)
    median = {k: round(statistics.median(s[k] for s in samples) / 1e6, 3) for k in samples[0]}
    totals = sorted(s["total"] for s in samples)
    return {
        "what": "ReleasePipeline.run in this process (own transaction, committed), one "
        "customer's day each, phases from wrapped collaborators: facts = consents refreshed + "
        "covering consents; decision = input built, policy evaluated (compiled), decision "
        "record inserted; read = the customer's sealed day opened (data access, not overhead); "
        "transform = tier parameters (pseudonym key) + pseudonymise + fields dropped; "
        "record_and_audit = release row + release.made audit entry; transaction = begin + "
        "commit; overhead = total - read; feed_page_in_process = FeedService.page (feed "
        "looked up, request built, the pipeline, the page serialised as JSON)",
        "releases": releases,
        "rows_per_release": 96,
        "median_ms": median,
        "total_p99_ms": round(totals[len(totals) * 99 // 100] / 1e6, 3),
        "feed_page_in_process_p50_ms": round(statistics.median(pages) / 1e6, 3),
        "feed_page_in_process_p99_ms": round(sorted(pages)[len(pages) * 99 // 100] / 1e6, 3),
    }


# ---- the run --------------------------------------------------------------------------------


def _ms(ns: float) -> float:
    return round(ns / 1e6, 2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    wall = time.perf_counter()
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with (
        Progress(*columns, console=console, disable=args.quiet) as progress,
        set_up(args, progress) as (setup, changed),
    ):
        result: dict[str, Any] = {
            "benchmark": "release",
            "backend": args.backend,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "meters": args.meters,
            "day": setup.day.date().isoformat(),
            "release": {
                "recipient_kind": "third_party",
                "purpose": PURPOSE,
                "granularity": GRANULARITY,
                "tier": "pseudonymised",
                "scope": "subject (one customer, one meter, per release)",
                "rows_per_release": 96,
                "format": args.format,
            },
            "settings_changed": changed,
            "server": "broker.api.server build + running (uvicorn, TLS 1.3, client "
            "certificates), its own process; clients: httpx keep-alive in this process",
            "setup_s": {},
        }
        start = time.perf_counter()
        result["pipeline_overhead"] = overhead(setup, args.releases, progress)
        result["pipeline_overhead"]["seconds"] = round(time.perf_counter() - start, 1)
        with server_process(setup.settings, setup.oauth) as url:
            token = _token(url, setup)
            with _client(url, setup, token) as check:
                _check_page(check, setup.feeds["check"][0], setup.customers[0])
            start = time.perf_counter()
            result["keepalive_rps"] = {
                "what": "requests/s over keep-alive connections: hello = a hello-world async "
                "route on the broker's app (mutual TLS only); hello_token = the same behind the "
                "feed routes' recipient dependency (certificate vs CRL, bound token verified, "
                "recipient status read, scope; not the rate-limit bucket); "
                "pipeline = GET /v1/feeds/{id}/data, one customer's day, one pipeline run each",
                "block_s": args.block_s,
                "rounds": args.rounds,
                "by_clients": keepalive(url, setup, token, args, progress),
                "seconds": round(time.perf_counter() - start, 1),
            }
            result["pull_day_pseudonymised"] = _pull_all(url, setup, token, args, progress)
        result["setup_s"] = {k: round(v, 1) for k, v in setup.seconds.items()}
    result["wall_s"] = round(time.perf_counter() - wall, 1)
    return result


def _pull_all(url: str, setup: Setup, token: str, args: argparse.Namespace, progress: Progress
              ) -> dict[str, Any]:  # fmt: skip
    clients = [_client(url, setup, token) for _ in range(args.pull_clients)]
    try:
        walls, latencies = [], []
        for repeat in range(args.repeats):
            feeds = setup.feeds[f"pull{repeat}"]
            label = f"pull {repeat + 1}/{args.repeats}: one day, {len(feeds)} feeds"
            wall, found = pull(clients, feeds, progress, label)
            walls.append(wall)
            latencies.extend(found)
    finally:
        for client in clients:
            client.close()
    latencies.sort()
    n = len(latencies)
    return {
        "what": f"one day of pseudonymised 15-minute data of {len(setup.customers)} meters: no "
        "single release can hold it (one customer per pseudonymised release), so one "
        "GET /v1/feeds/{id}/data per customer's feed (one pipeline run each), over keep-alive "
        "mTLS; page_* = latency of one such request, over every request of every repeat; "
        "pull_s = the whole day for all meters",
        "single_release_possible": False,
        "requests_per_pull": len(setup.customers),
        "clients": args.pull_clients,
        "repeats": args.repeats,
        "page_p50_ms": _ms(latencies[n // 2]),
        "page_p99_ms": _ms(latencies[n * 99 // 100]),
        "page_max_ms": _ms(latencies[-1]),
        "pull_s": round(statistics.median(walls), 2),
        "pull_s_all": [round(w, 2) for w in walls],
        "meters_per_s": round(len(setup.customers) / statistics.median(walls), 1),
    }


def _counts(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",") if x.strip()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=10_000, help="meters (= customers, feeds)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--repeats", type=int, default=2, help="pulls of the whole day")
    parser.add_argument(
        "--rate-feeds", type=int, default=6000,
        help="feeds for the keep-alive rate (a page is released once: one feed per request)",
    )  # fmt: skip
    parser.add_argument("--pull-clients", type=int, default=1, help="concurrent pulling clients")
    parser.add_argument(
        "--clients", type=_counts, default=[1, 4], help="concurrent clients for the rates: 1,4"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds of the rates")
    parser.add_argument("--block-s", type=float, default=3.0, help="seconds a rate is measured")
    parser.add_argument("--releases", type=int, default=500, help="in-process releases timed")
    parser.add_argument("--format", choices=["json", "csv", "parquet", "espi"], default="json")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
