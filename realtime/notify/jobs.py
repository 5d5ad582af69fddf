"""Where delivery attempts run: the `JobRunner` port, in-process tasks, or RQ workers.

A job is **one** attempt to deliver one message. Its outcome comes back as an `AttemptResult`
through the `report` callable given with it; the notifier decides what follows (sent, retry
later, failed), so the retry policy lives in one place whichever runner is used.

- `InProcessJobs` (embedded default): one owned asyncio task per attempt. A task never dies
  silently: a channel that raises something other than `DeliveryFailed` is logged with its
  traceback and reported as a (temporary) failure; if reporting itself fails, that is logged.
  `close()` lets in-flight attempts finish for a moment, then cancels and awaits them.
- `RqJobs` (scale-out): enqueues `deliver_job(payload)` on an RQ queue. The payload is JSON-able:
  the message, the attempt number, and the channel *spec* (`channels.build_channel`) the server
  built from its settings — a live channel cannot cross a process. Because the payload holds the
  channel's secrets, the Redis serving the queue must be as private as the settings are. The
  worker writes the result into a small Redis hash; `poll()` (called by `Notifier.tick`) reads
  and removes the results of outstanding jobs and reports them, and reports a job RQ itself
  marked failed (timeout, worker crash) as a temporary failure.

Run workers with ``rq worker <queue_name>`` against the same Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import redis
import rq
from rq.job import Job, JobStatus

from realtime.notify.channels import build_channel
from realtime.notify.model import AttemptResult, Channel, DeliveryFailed, DeliveryJob, OutgoingMessage

__all__ = ["InProcessJobs", "JobRunner", "Report", "RqJobs", "deliver_job", "job_id", "run_attempt"]

log = logging.getLogger(__name__)

Report = Callable[[AttemptResult], Awaitable[None]]
_DEAD: Final = frozenset({JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED})


async def run_attempt(job: DeliveryJob, channel: Channel) -> AttemptResult:
    """Run one delivery attempt; every outcome, even a crash of the channel, becomes a result."""
    try:
        await channel.send(job.message)
    except DeliveryFailed as exc:
        return AttemptResult(job.key, job.attempt, ok=False, permanent=exc.permanent,
                             reason=exc.reason)
    except Exception as exc:  # a bug or an unmapped error: retried, since a lost alarm costs more
        log.exception("notification %s: channel %r crashed", job.key, job.message.channel)
        return AttemptResult(job.key, job.attempt, ok=False, permanent=False,
                             reason=f"unexpected error: {exc!r}")
    return AttemptResult(job.key, job.attempt, ok=True)


class JobRunner(ABC):
    """Runs delivery attempts somewhere and reports each outcome."""

    @abstractmethod
    async def submit(self, job: DeliveryJob, channel: Channel, report: Report) -> None:
        """Start one attempt of `job` through `channel` (in-process) or its spec (remote);
        `report` its result when known. Returns without waiting for the delivery."""

    @abstractmethod
    async def poll(self) -> None:
        """Report the results of attempts that finished elsewhere (no-op in-process)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop: nothing is submitted afterwards."""


class InProcessJobs(JobRunner):
    """Attempts as owned asyncio tasks in this process."""

    def __init__(self, close_grace_s: float = 5.0) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._close_grace_s = close_grace_s
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Attempts running now."""
        return len(self._tasks)

    async def submit(self, job: DeliveryJob, channel: Channel, report: Report) -> None:
        """Start the attempt as a task."""
        if self._closed:
            raise RuntimeError("InProcessJobs is closed")
        task = asyncio.create_task(self._run(job, channel, report),
                                   name=f"notify {job.key} #{job.attempt}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _run(self, job: DeliveryJob, channel: Channel, report: Report) -> None:
        await report(await run_attempt(job, channel))

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s: could not record the result", task.get_name(), exc_info=exc)

    async def join(self) -> None:
        """Wait until no attempt is running (including attempts started meanwhile)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def poll(self) -> None:
        """Nothing to collect: tasks report by themselves."""

    async def close(self) -> None:
        """Give running attempts `close_grace_s` to finish, then cancel and await them."""
        self._closed = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._close_grace_s)
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def job_id(job: DeliveryJob) -> str:
    """The RQ job id of an attempt (stable: the same attempt enqueued twice is one job)."""
    return f"gasops-notify-{hashlib.sha256(job.key.encode()).hexdigest()[:32]}-{job.attempt}"


class RqJobs(JobRunner):
    """Attempts as RQ jobs (`deliver_job`) on `queue_name`, results read back by `poll()`.

    `channel_specs` maps channel names ("email", "sms", ...) to the JSON-able specs the
    workers build channels from.
    """

    def __init__(self, redis_url: str, queue_name: str = "gasops-notify",
                 channel_specs: Mapping[str, Mapping[str, Any]] | None = None, *,
                 job_timeout_s: int = 120, status_ttl_s: int = 86_400,
                 socket_timeout_s: float = 5.0) -> None:
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=socket_timeout_s,
                                           socket_connect_timeout=socket_timeout_s)
        self._queue = rq.Queue(queue_name, connection=self._redis)
        self._specs = dict(channel_specs or {})
        self.status_hash = f"gasops:notify:status:{queue_name}"
        self._job_timeout_s = job_timeout_s
        self._status_ttl_s = status_ttl_s
        self._outstanding: dict[str, tuple[DeliveryJob, Report]] = {}

    @property
    def outstanding(self) -> int:
        """Enqueued attempts whose result has not been reported yet."""
        return len(self._outstanding)

    def payload(self, job: DeliveryJob) -> dict[str, Any]:
        """The JSON-able argument of `deliver_job` for `job`."""
        spec = self._specs.get(job.message.channel)
        if spec is None:
            raise KeyError(f"no channel spec for {job.message.channel!r}")
        return {"job_id": job_id(job), "attempt": job.attempt, "message": job.message.to_json(),
                "channel": dict(spec), "status_hash": self.status_hash,
                "status_ttl_s": self._status_ttl_s}

    async def submit(self, job: DeliveryJob, channel: Channel, report: Report) -> None:
        """Enqueue the attempt; a missing spec or an unreachable Redis is reported at once."""
        try:
            payload = self.payload(job)
        except KeyError as exc:
            await report(AttemptResult(job.key, job.attempt, ok=False, permanent=True,
                                       reason=str(exc)))
            return
        try:
            await asyncio.to_thread(
                self._queue.enqueue, "realtime.notify.jobs.deliver_job", payload,
                job_id=payload["job_id"], job_timeout=self._job_timeout_s,
                result_ttl=self._status_ttl_s, failure_ttl=self._status_ttl_s)
        except redis.RedisError as exc:
            await report(AttemptResult(job.key, job.attempt, ok=False, permanent=False,
                                       reason=f"could not enqueue: {exc!r}"))
            return
        self._outstanding[payload["job_id"]] = (job, report)

    async def poll(self) -> None:
        """Report every outstanding attempt that has a result (Redis errors are logged)."""
        if not self._outstanding:
            return
        try:
            results = await asyncio.to_thread(
                self._collect, {jid: job for jid, (job, _) in self._outstanding.items()})
        except redis.RedisError as exc:
            log.warning("notification results unavailable (will ask again): %r", exc)
            return
        for jid, result in results.items():
            entry = self._outstanding.pop(jid, None)
            if entry is not None:
                await entry[1](result)

    def _collect(self, outstanding: dict[str, DeliveryJob]) -> dict[str, AttemptResult]:
        """(In a worker thread.) The results of `outstanding` attempts that have one."""
        ids = list(outstanding)
        raw = self._redis.hmget(self.status_hash, ids)
        found = {jid: AttemptResult.from_json(json.loads(v)) for jid, v in zip(ids, raw, strict=True)
                 if v is not None}
        if found:
            self._redis.hdel(self.status_hash, *found)
        missing = [jid for jid in ids if jid not in found]
        if missing:
            for jid, rq_job in zip(missing, Job.fetch_many(missing, connection=self._redis),
                                   strict=True):
                job = outstanding[jid]
                if rq_job is None:
                    found[jid] = AttemptResult(job.key, job.attempt, ok=False,
                                               reason="RQ job vanished (expired or deleted)")
                elif rq_job.get_status(refresh=False) in _DEAD:
                    latest = rq_job.latest_result()
                    detail = (latest.exc_string or "").strip().splitlines()[-1:] if latest else []
                    found[jid] = AttemptResult(
                        job.key, job.attempt, ok=False,
                        reason=f"RQ job {rq_job.get_status(refresh=False)}: {' '.join(detail)}")
        return found

    async def close(self) -> None:
        """Close the Redis connection pool."""
        await asyncio.to_thread(self._redis.close)


def deliver_job(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entry point: one delivery attempt described by `payload` (see `RqJobs.payload`).

    Builds the channel from the payload's spec, sends, and writes the `AttemptResult` into the
    status hash of the RQ connection (outside a worker it only returns the result). Never
    raises for a failed delivery: a failure is a result, not a crashed job.
    """
    message = OutgoingMessage.from_json(payload["message"])
    job = DeliveryJob(message, int(payload["attempt"]))
    try:
        channel = build_channel(payload["channel"])
    except ValueError as exc:
        result = AttemptResult(job.key, job.attempt, ok=False, permanent=True, reason=str(exc))
    else:
        result = asyncio.run(run_attempt(job, channel))
    current = rq.get_current_job()
    if current is not None:
        pipe = current.connection.pipeline()
        pipe.hset(payload["status_hash"], payload["job_id"], json.dumps(result.to_json()))
        pipe.expire(payload["status_hash"], int(payload.get("status_ttl_s", 86_400)))
        pipe.execute()
    return result.to_json()
