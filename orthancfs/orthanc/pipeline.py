"""The one way every request goes: tries with a bound, failures judged once, outages noted.

Every request has a budget: connecting may take `connect_timeout` seconds and Orthanc
may stay silent for at most `timeout` seconds, so a dead or frozen Orthanc turns into
OrthancUnavailable instead of a hang.  Only failures that cannot have had an effect on
the server (refused or reset connections, 502/503) are tried again, with exponential
backoff, and never past the budget.  After a failure, calls fail at once for a moment
(Health) instead of each waiting out the timeout.

The ways of sending (transports) only send and read; they report a failure as a
TransportFailure saying what kind it was.  `Retrying` decides the rest, for a blocking
caller and an event loop alike (each drives it with its own sleep).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import OrthancUnavailable
from .answers import RETRYABLE_STATUS, Answer, meaning

log = logging.getLogger("orthancfs.orthanc")

# After Orthanc was found unreachable, calls fail at once for this long instead
# of each waiting out the timeout (the kernel resends a failed lookup, and a
# `find` would otherwise wait timeout x entries).
FAIL_FAST_SECONDS = 5.0


@dataclass(frozen=True)
class Attempt:
    """One try of a request: whether it is the last, the pause before the next, its connect timeout."""

    last: bool
    delay: float
    connect_timeout: float


def attempts(timeout: float, connect_timeout: float, retries: int) -> Iterator[Attempt]:
    """The tries of one request: up to `retries` more, with backoff, while `timeout` lasts (each
    computed when it starts, so a slow try leaves less for the others)."""
    deadline = time.monotonic() + timeout
    for number in range(retries + 1):
        delay = 0.1 * 2**number
        now = time.monotonic()
        yield Attempt(number == retries or now + delay >= deadline, delay,
                      max(0.1, min(connect_timeout, deadline - now)))


class TransportFailure(Exception):  # noqa: N818 - what a transport reports, judged by Retrying
    """A request that got no answer.  `kind`: "refused" (never reached Orthanc: may be tried
    again), "lost" (the connection broke: may be tried again), "timeout" or "tls" (not tried
    again: a timeout may have had an effect; a TLS failure will fail again), "closed" (the
    client was closed: an unmount or a stop, not an outage).  `sent`: whether the
    request may have reached Orthanc."""

    def __init__(self, kind: str, message: str, sent: bool):
        super().__init__(message)
        self.kind, self.sent = kind, sent


RETRIED_KINDS = ("refused", "lost")


class Retrying:
    """The judging of one request's tries: a driver sends, hands over what came, and sleeps
    `attempt.delay` when told to try again."""

    def __init__(self, method: str, path: str, base_url: str):
        self.method, self.path, self.base_url = method, path, base_url

    def judge(self, attempt: Attempt, outcome: Answer | TransportFailure) -> Answer | None:
        """The answer (a success), None to try again, or the model error the outcome means."""
        if isinstance(outcome, TransportFailure):
            if outcome.kind in RETRIED_KINDS and not attempt.last:
                log.debug("%s %s failed transiently, retrying in %.1fs", self.method, self.path, attempt.delay)
                return None
            raise self.unavailable(outcome) from None
        if outcome.status in RETRYABLE_STATUS and not attempt.last:
            log.debug("%s %s: HTTP %d, retrying in %.1fs", self.method, self.path, outcome.status, attempt.delay)
            return None
        return meaning(self.method, self.path, outcome)

    def unavailable(self, failure: TransportFailure) -> OrthancUnavailable:
        if failure.kind == "timeout":
            return OrthancUnavailable(f"{self.method} {self.path}: no answer within the timeout ({failure})",
                                      failure.sent)
        if failure.kind == "closed":
            return OrthancUnavailable(f"{self.method} {self.path}: not sent, orthancfs is stopping", failure.sent)
        if failure.kind == "tls":
            return OrthancUnavailable(f"TLS failure talking to {self.base_url}: {failure}", failure.sent)
        return OrthancUnavailable(f"cannot reach Orthanc at {self.base_url}: {failure}", failure.sent)


class Health:
    """Whether Orthanc answered lately; logs each change once, not each failure."""

    def __init__(self, url: str, fail_fast_seconds: float):
        self.url = url
        self.fail_fast_seconds = fail_fast_seconds
        self._failure: OrthancUnavailable | None = None
        self._answered = False  # before Orthanc ever answered, the caller reports failures itself
        self._retry_at = 0.0
        self._closed = False
        self._lock = threading.Lock()

    def close(self) -> None:
        """From now on requests fail at once, and their failures are no news (work that was
        under way at an unmount or a stop ends without a false outage warning)."""
        with self._lock:
            self._closed = True

    def check(self, method: str, path: str) -> None:
        if self._closed:
            raise OrthancUnavailable(f"{method} {path}: not sent, orthancfs is stopping", may_have_arrived=False)
        with self._lock:
            failure, waiting = self._failure, self._retry_at - time.monotonic()
        if failure is not None and waiting > 0:
            raise OrthancUnavailable(f"{method} {path}: not tried, Orthanc failed {self.fail_fast_seconds:.0f}s ago "
                                     f"({failure})", may_have_arrived=False)

    def failed(self, exc: OrthancUnavailable) -> None:
        with self._lock:
            news = self._failure is None and self._answered and not self._closed
            self._failure, self._retry_at = exc, time.monotonic() + self.fail_fast_seconds
        if news:
            log.warning("Orthanc at %s is unavailable: %s", self.url, exc)

    @contextmanager
    def watching(self, method: str, path: str) -> Iterator[None]:
        """Around one request: refused at once during an outage; a failure or a recovery noted."""
        self.check(method, path)
        try:
            yield
        except OrthancUnavailable as exc:
            self.failed(exc)
            raise
        self.succeeded()

    def succeeded(self) -> None:
        with self._lock:
            recovered, self._failure, self._answered = self._failure is not None, None, True
        if recovered:
            log.info("Orthanc at %s answers again", self.url)


def reason(exc: BaseException) -> str:
    """The innermost, most specific cause of an error (urllib3, http.client, trio), in one line."""
    cause: BaseException = exc
    while True:
        if isinstance(cause, BaseExceptionGroup) and cause.exceptions:  # trio's connection attempts
            cause = cause.exceptions[0]
        elif getattr(cause, "reason", None) is not None and isinstance(cause.reason, BaseException):
            cause = cause.reason  # urllib3's MaxRetryError and friends hold the real error there
        elif cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
        else:
            break
    text = str(cause) or type(cause).__name__
    return text.splitlines()[0] if text else type(cause).__name__
