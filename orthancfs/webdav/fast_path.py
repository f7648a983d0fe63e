"""The request file managers send most, answered before wsgidav: PROPFIND of a views folder.

Browsing is a Depth-1 PROPFIND per folder, again and again, by users whose credentials passed a
moment ago.  Through wsgidav's stack (its environ set-up, then errors, authentication, the role
gate, bodies, the directory browser, our PROPFIND) such a request cost about 0.5 ms of CPU, most of
it before the answer was written (profile in bench/RESULTS.md).  Here the same answer is written
from the same code (propfind.py) for the requests where every step of that stack is known to
let it through:

- PROPFIND, Depth 0 or 1, below by-patients/, by-studies/, by-dates/ or by-uids/, no `If` header,
  a body of known length within the limit bodies.py gives PROPFIND;
- no users file (anonymous access, which server.py allows only where it is safe), or Basic
  credentials Logins verified a moment ago; PROPFIND needs the read role, which every user has.

Anything else goes the whole way through wsgidav with the request as it came: it authenticates
and counts failed logins.  An answer that fails here (Orthanc away, a folder gone) goes there too,
with its failure, which our PROPFIND raises again for the error pages instead of asking Orthanc
a second time.

An answer written from the views alone is kept and sent again while the tree's stamp stays the
same (nothing in its caches stored, expired or invalidated since: the follower's invalidations
change it too), so browsing a folder again costs neither its resolution nor its writing.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from wsgidav import util

from ..tree.views import ALL_VIEWS
from .access_log import ACCESS_LOGGER
from .auth import known_user
from .bodies import DEFAULT_LIMIT
from .logins import Logins
from .propfind import FAST_PATH_FAILED, Answer, body_length, for_views, send_multistatus, views_answer
from .repeats import Repeats
from .users import REALM

log = logging.getLogger(__name__)

# Answers kept for browsing again: a walk of the bench's by-patients/ (1,604 folders) writes 9.7 MB.
ANSWERS_KEPT_BYTES = 32 << 20
ENTRY_OVERHEAD = 512  # bytes: the entry's tuples, list and dictionary slot
AUTHENTICATED = ("wsgidav.auth.realm", "wsgidav.auth.user_name")  # what wsgidav's authenticator sets


class ViewsFastPath:
    """WSGI application in front of wsgidav (`dav`): browsing the views without its stack."""

    def __init__(self, dav: Any, logins: Logins):
        self.dav = dav
        self.logins = logins
        self.provider = dav.provider_map["/"]
        self.answers = KeptAnswers(ANSWERS_KEPT_BYTES)
        # The same requests again, answered from their bytes before cheroot parses them.
        self.repeats = Repeats(self.answers, logins, self.provider.tree.stamp, logging.getLogger(ACCESS_LOGGER))

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        user = self._user(environ) if _browsing(environ) else None
        if user is None:
            return self.dav(environ, start_response)
        body = environ["wsgi.input"].read(body_length(environ))
        environ["wsgi.input"] = io.BytesIO(body)  # for whoever answers
        key = (environ.get("SCRIPT_NAME", ""), environ["PATH_INFO"], environ["HTTP_DEPTH"],
               hashlib.sha256(body).digest() if body else b"")
        stamp = self.provider.tree.stamp()
        chunks = self.answers.get(key, stamp)
        if chunks is None:
            arrived = environ["PATH_INFO"]
            answer = self._answer(environ)
            if answer is None:  # the same environ (the access log reads the user from it), as it came
                environ["PATH_INFO"] = arrived  # wsgidav re-encodes it: twice would garble non-ASCII names
                return self.dav(environ, start_response)
            if isinstance(answer, BaseException):  # wsgidav's error page says it, without asking again
                environ["PATH_INFO"], environ[FAST_PATH_FAILED] = arrived, answer
                return self.dav(environ, start_response)
            chunks = answer.chunks
            if answer.lasting:
                chunks = [b"".join(chunks)]  # joined once: repeats.py sends a kept answer whole, again and again
                self.answers.keep(key, stamp, chunks)
                self.repeats.remember(environ, body, key)
        else:
            self.repeats.remember(environ, body, key)
        if user:
            environ.update(zip(AUTHENTICATED, (REALM, user), strict=True))
        return send_multistatus(start_response, chunks)

    def _user(self, environ: dict) -> str | None:
        """Who asks ("" for anonymous access), if their credentials are known good; else None."""
        return known_user(self.logins, environ.get("HTTP_AUTHORIZATION", ""))

    def _answer(self, environ: dict) -> Answer | Exception | None:
        """The answer, with environ made as wsgidav makes it; None if this is not ours to answer;
        what it failed with (Orthanc away, a folder gone) for wsgidav's error pages to say."""
        try:
            path = util.normalize_path(util.re_encode_wsgi(environ["PATH_INFO"]))
        except Exception:  # noqa: BLE001 - wsgidav says what is wrong with the path
            return None
        if path.split("/", 2)[1] not in ALL_VIEWS:
            return None
        environ.update({"PATH_INFO": path, "wsgidav.app": self.dav, "wsgidav.config": self.dav.config,
                        "wsgidav.provider": self.provider, "wsgidav.verbose": self.dav.verbose})
        try:
            return views_answer(self.provider, environ)
        except Exception as exc:  # noqa: BLE001 - Orthanc away, a folder gone: wsgidav writes the error page
            log.debug("PROPFIND %s failed: %s", path, exc)
            return exc


class KeptAnswers:
    """Answers written a moment ago, by request, served again while the tree's stamp stays the same
    (the tree's caches unchanged: nothing expired, stored or invalidated since); the least recently
    used go first beyond `budget` bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self._kept: OrderedDict[Hashable, tuple[int, list[bytes], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, stamp: int | None) -> list[bytes] | None:
        if stamp is None:
            return None
        with self._lock:
            kept = self._kept.get(key)
            if kept is None or kept[0] != stamp:
                return None
            self._kept.move_to_end(key)
            return kept[1]

    def keep(self, key: tuple[str, ...], stamp: int | None, chunks: list[bytes]) -> None:
        # What an entry holds: the answer, its key (paths may be long), the bookkeeping.
        size = sum(map(len, chunks)) + sum(map(len, key)) + ENTRY_OVERHEAD
        if stamp is None or size > self.budget // 8:  # a huge folder would push out every other
            return
        with self._lock:
            old = self._kept.pop(key, None)
            self._bytes += size - (old[2] if old else 0)
            self._kept[key] = (stamp, chunks, size)
            while self._bytes > self.budget:
                _, (_, _, dropped) = self._kept.popitem(last=False)
                self._bytes -= dropped


def _browsing(environ: dict) -> bool:
    """A PROPFIND our views answer (propfind.py) that every step of wsgidav's stack before it would
    let through unchanged, judged from its headers alone."""
    if not for_views(environ) or "HTTP_TRANSFER_ENCODING" in environ:
        return False
    if "logout" in environ.get("QUERY_STRING", ""):  # wsgidav's authenticator answers 401 to that
        return False
    return (body_length(environ) or 0) <= DEFAULT_LIMIT  # bodies.py's limit for PROPFIND
