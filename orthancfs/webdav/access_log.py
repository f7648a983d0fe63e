"""One line per request, in the combined format web servers write, plus its duration.

`ADDRESS - USER [TIME] "METHOD URI PROTOCOL" STATUS BYTES "REFERER" "USER-AGENT" SECONDS`:
the user is the one who logged in ("-" before or without), nothing of the
Authorization header is ever written, and everything the client sent is escaped
(quotes, backslashes, control and non-ASCII bytes as \\xNN) so a line cannot be forged.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator

ACCESS_LOGGER = "orthancfs.webdav.access"
SAFE = {byte: chr(byte) for byte in range(0x20, 0x7F)} | {ord('"'): '\\"', ord("\\"): "\\\\"}


PLAIN = re.compile(r'[ !#-\[\]-~]*')  # printable ASCII but `"` and `\`: written as it is


def escaped(text: str, encoding: str = "latin-1") -> str:
    """Client text as log-safe ASCII (WSGI strings carry the bytes sent as latin-1; names are UTF-8)."""
    if PLAIN.fullmatch(text):
        return text  # most of it (a generator over every byte was a tenth of a small request's cost)
    return "".join(SAFE.get(byte) or f"\\x{byte:02x}" for byte in text.encode(encoding, "backslashreplace"))


class AccessLog:
    """WSGI middleware around the whole application."""

    def __init__(self, app: Callable, logger: logging.Logger | None = None):
        self.app = app
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        record = _Record(environ, self.logger)

        def recording(status: str, headers: list, exc_info: object = None) -> Callable:
            record.status = status.split(" ", 1)[0]
            return start_response(status, headers, exc_info)

        try:
            answer = self.app(environ, recording)
        except BaseException:
            record.write()
            raise
        return _Logged(answer, record)


class _Record:
    def __init__(self, environ: dict, logger: logging.Logger):
        self.environ, self.logger = environ, logger
        self.started = time.monotonic()
        self.status, self.sent, self.written = "-", 0, False

    def write(self) -> None:
        if self.written:
            return
        self.written = True
        env = self.environ
        request = f"{env.get('REQUEST_METHOD', '-')} {env.get('REQUEST_URI') or env.get('PATH_INFO', '')} " \
                  f"{env.get('SERVER_PROTOCOL', '-')}"
        write_line(self.logger, env.get("REMOTE_ADDR", "-"), env.get("wsgidav.auth.user_name") or "-", request,
                   self.status, self.sent, env.get("HTTP_REFERER", "-"), env.get("HTTP_USER_AGENT", "-"),
                   time.monotonic() - self.started)


def write_line(logger: logging.Logger, address: str, user: str, request: str, status: str, sent: int,
               referer: str, agent: str, seconds: float) -> None:
    """One request's line (`user` as UTF-8 text, the rest as the bytes sent, latin-1), escaped."""
    logger.info('%s - %s [%s] "%s" %s %s "%s" "%s" %.3f', address, escaped(user, "utf-8"),
                time.strftime("%d/%b/%Y:%H:%M:%S %z"), escaped(request), status, sent or "-", escaped(referer),
                escaped(agent), seconds)


class _Logged:
    """The answer, counted as it is sent; the line is written when the server closes it."""

    def __init__(self, answer: Iterable[bytes], record: _Record):
        self.answer, self.record = answer, record

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.answer:
            self.record.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            if hasattr(self.answer, "close"):
                self.answer.close()
        finally:
            self.record.write()
