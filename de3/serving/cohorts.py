"""Layer-by-layer continuous batching for early exit: each request is answered as soon as its
sample exits, and new requests start without waiting for the slowest sample of an earlier batch.

A batched layer step needs its samples at the same layer (each layer has its own weights) and
of the same padded length, so requests that arrive together form a cohort (one
`EarlyExitPredictor.start` batch). Each step of the loop admits a new cohort while fewer than
`max_batch_size` samples are running, then advances every running cohort by one layer and
answers the samples that leave there.

LitServe's own `ContinuousBatchingLoop` does not fit: it requires `stream=True`, so every
response becomes a chunked stream sent with status 200 before the answer exists (a refused
request could not get its 400, nor a timed-out one its 504, and clients would read a stream
instead of one JSON body). `CohortLoop` is a `LitLoop` answering regular responses instead,
with LitServe's queue, transport, response statuses and request timeout.
"""

import logging
import time
from dataclasses import dataclass, field
from queue import Empty, Queue
from typing import Any

from fastapi import HTTPException
from litserve.loops.base import _SENTINEL_VALUE, LitLoop
from litserve.utils import LitAPIStatus, LoopResponseType, PickleableHTTPException

from de3.errors import De3Error

log = logging.getLogger(__name__)

IDLE_POLL_S = 1.0  # an idle worker waits this long for a request before it looks again


@dataclass
class QueuedRequest:
    """Where a request's answer goes (`response_queue_id`, `uid`) and when the HTTP process
    queued it (`queued_at`, `time.monotonic`: one clock for every process of the machine)."""

    response_queue_id: int
    uid: str
    queued_at: float


@dataclass
class Cohort:
    """Requests that arrived together, running as one batch (`requests[i]` is at position i),
    and the positions not answered yet."""

    batch: Any
    requests: list[QueuedRequest]
    unanswered: set[int] = field(init=False)

    def __post_init__(self) -> None:
        self.unanswered = set(range(len(self.requests)))


class CohortLoop(LitLoop):
    """Runs an API with `features(texts)`, `start(features) -> batch` and `advance(batch) ->
    [(position, answer)]` (`de3.serving.api.EarlyExitAPI`). Answers carry `latency_ms`: from when
    the HTTP process queued the request to when this process answered it."""

    def __call__(
        self,
        lit_api: Any,
        device: str,
        worker_id: int,
        request_queue: Queue,
        transport: Any,
        workers_setup_status: dict,
        callback_runner: Any,
    ) -> None:
        cohorts: list[Cohort] = []
        stopping = False  # LitServe's sentinel came: answer the running samples, take no more
        try:
            while not (stopping and not cohorts):
                running = sum(len(cohort.unanswered) for cohort in cohorts)
                if not stopping and running < lit_api.max_batch_size:
                    capacity = lit_api.max_batch_size - running
                    arrived, stopping = self._take(lit_api, request_queue, transport, capacity, bool(cohorts))
                    cohort = self._start(lit_api, arrived, transport)
                    if cohort is not None:
                        cohorts.append(cohort)
                for cohort in cohorts:
                    self._advance(lit_api, cohort, transport)
                cohorts = [cohort for cohort in cohorts if cohort.unanswered]
        except KeyboardInterrupt:  # Ctrl+C reaches every process of the server
            return

    def _take(
        self, lit_api: Any, request_queue: Queue, transport: Any, capacity: int, running: bool
    ) -> tuple[list[tuple[QueuedRequest, Any]], bool]:
        """Up to `capacity` requests, and whether LitServe's sentinel came: with samples
        `running`, the requests already waiting (running samples do not wait for newcomers);
        when idle, the first to come and those that follow it within `batch_timeout`. A request
        that waited past the server's timeout gets 504."""
        taken: list[tuple[QueuedRequest, Any]] = []
        deadline = None
        while len(taken) < capacity:
            try:
                if running:
                    item = request_queue.get_nowait()
                elif deadline is None:
                    item = request_queue.get(timeout=IDLE_POLL_S)
                else:
                    item = request_queue.get(timeout=max(deadline - time.monotonic(), 0))
            except Empty:
                break
            if item == _SENTINEL_VALUE:
                return taken, True
            response_queue_id, uid, queued_at, payload = item
            request = QueuedRequest(response_queue_id, uid, queued_at)
            self.put_response(transport, response_queue_id, uid, (), LitAPIStatus.START, LoopResponseType.REGULAR)
            if lit_api.request_timeout not in (-1, False, None) and (
                time.monotonic() - queued_at > lit_api.request_timeout
            ):
                self._refuse(transport, request, HTTPException(504, "Request timed out"))
                continue
            taken.append((request, payload))
            if deadline is None:
                deadline = time.monotonic() + lit_api.batch_timeout
        return taken, False

    def _start(self, lit_api: Any, arrived: list[tuple[QueuedRequest, Any]], transport: Any) -> Cohort | None:
        """A cohort of the requests that can be read; each one that cannot gets its own 400."""
        requests, features = [], []
        for request, payload in arrived:
            try:
                features.append(lit_api.features(lit_api.decode_request(payload)))
            except (ValueError, De3Error) as err:
                self._refuse(transport, request, HTTPException(400, str(err)))
                continue
            except Exception:
                log.exception("request %s could not be read", request.uid)
                self._refuse(transport, request, HTTPException(500, "Internal server error"))
                continue
            requests.append(request)
        if not requests:
            return None
        try:
            return Cohort(lit_api.start(features), requests)
        except Exception:
            log.exception("a cohort of %d requests could not start", len(requests))
            for request in requests:
                self._refuse(transport, request, HTTPException(500, "Internal server error"))
            return None

    def _advance(self, lit_api: Any, cohort: Cohort, transport: Any) -> None:
        """One layer for `cohort`; its samples that exit are answered at once."""
        try:
            exited = lit_api.advance(cohort.batch)
        except Exception:
            log.exception("a cohort of %d requests failed", len(cohort.unanswered))
            for position in cohort.unanswered:
                self._refuse(transport, cohort.requests[position], HTTPException(500, "Internal server error"))
            cohort.unanswered.clear()
            return
        now = time.monotonic()
        for position, answer in exited:
            request = cohort.requests[position]
            answer = lit_api.encode_response({**answer, "latency_ms": 1000 * (now - request.queued_at)})
            self.put_response(
                transport, request.response_queue_id, request.uid, answer, LitAPIStatus.OK, LoopResponseType.REGULAR
            )
            cohort.unanswered.discard(position)

    def _refuse(self, transport: Any, request: QueuedRequest, error: HTTPException) -> None:
        self.put_response(
            transport,
            request.response_queue_id,
            request.uid,
            PickleableHTTPException.from_exception(error),
            LitAPIStatus.ERROR,
            LoopResponseType.REGULAR,
        )
