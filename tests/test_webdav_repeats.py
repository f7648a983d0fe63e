"""PROPFINDs answered again from their bytes (webdav/repeats.py): the same answers as the whole
stack gives, to the same users only, and never from a tree that has changed since.

The server runs in process (cheroot's threads, a real Orthanc, real sockets) so that the tests can
count what the lane answered: the answers must be the same either way, so only the count tells.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import bcrypt
import pytest

from orthancfs.demo.server import OrthancServer, free_port
from orthancfs.tree import Tree
from orthancfs.webdav.access_log import ACCESS_LOGGER
from orthancfs.webdav.connections import GuardedServer
from orthancfs.webdav.repeats import Repeats, parse_head
from orthancfs.webdav.server import webdav_parts
from orthancfs.webdav.users import load_users

from . import test_webdav_security
from . import uploads_data as data
from .helpers import http_answers, wait_for
from .trees import tree_of

PASSWORD = "v-pass"
NAMED = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:displayname/><D:getetag/></D:prop>'
         b"</D:propfind>")


orthanc = test_webdav_security.orthanc  # the same fixture: an Orthanc with two instances, per module


class Served(NamedTuple):
    port: int
    repeats: Repeats
    orthanc: OrthancServer
    tree: Tree
    asked: list[int]  # how many requests each settled() sent


@pytest.fixture
def served(orthanc: OrthancServer, tmp_path: Path) -> Iterator[Served]:
    users_file = tmp_path / "users"
    users_file.write_text(f"viewer:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}:read\n")
    users_file.chmod(0o600)
    with tree_of(orthanc, tmp_path, metadata_ttl=60) as tree:
        app, repeats = webdav_parts(tree, load_users(str(users_file)), windows_names=False, debug=False)
        server = GuardedServer(("127.0.0.1", free_port()), app)
        server.repeats = repeats
        server.prepare()
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        try:
            yield Served(server.bind_addr[1], repeats, orthanc, tree, [])
        finally:
            server.stop()
            thread.join(10)


def request(path: str, depth: str = "1", body: bytes = b"", password: str | None = PASSWORD,
            extra: str = "") -> bytes:
    auth = "" if password is None else \
        "Authorization: Basic " + base64.b64encode(f"viewer:{password}".encode()).decode() + "\r\n"
    return (f"PROPFIND {path} HTTP/1.1\r\nHost: x\r\nDepth: {depth}\r\n{auth}Content-Length: {len(body)}\r\n"
            f"{extra}\r\n").encode() + body


def ask(client: socket.socket, sent: bytes) -> tuple[int, bytes, bytes]:
    client.sendall(sent)
    return http_answers(client, 1)[0]


def settled(served: Served, client: socket.socket, sent: bytes) -> tuple[int, bytes, bytes]:
    """The answer to `sent` once the lane gives it: the first answers fill the tree's caches as they
    are written (and the index goes on loading in the background), so they are written anew."""
    found: list[tuple[int, bytes, bytes]] = []

    def lane_answered() -> bool:
        before = served.repeats.answered
        found.append(ask(client, sent))
        return served.repeats.answered == before + 1

    wait_for(lane_answered, 10, "the lane to answer")
    assert found[-1][0] == 207 and all(answer == found[-1] for answer in found[1:]), found
    served.asked.append(len(found))
    return found[-1]


def connect(served: Served) -> socket.socket:
    return socket.create_connection(("127.0.0.1", served.port), timeout=30)


def test_a_repeated_propfind_gets_the_whole_stacks_answer_byte_for_byte(served: Served,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    asked = [("/by-patients/", "1", b""), ("/by-studies/", "0", NAMED), ("/by-patients/", "1", NAMED)]
    with connect(served) as client:
        for path, depth, body in asked:
            first = settled(served, client, request(path, depth, body))
            before = served.repeats.answered
            assert [ask(client, request(path, depth, body)) for _ in range(3)] == [first] * 3
            assert served.repeats.answered == before + 3, path
            client.sendall(request(path, depth, body) * 3)  # pipelined: one send, three answers in order
            assert http_answers(client, 3) == [first] * 3, path
    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]

    # One line for every answer, however answered (written once the answer is out).
    wait_for(lambda: len(lines()) >= sum(served.asked) + 6 * len(asked), 10, "the access log")
    assert len(lines()) == sum(served.asked) + 6 * len(asked)
    assert all(" 207 " in line and " - viewer [" in line for line in lines()), lines()
    assert sum('"PROPFIND /by-studies/ HTTP/1.1" 207' in line for line in lines()) == served.asked[1] + 6


@pytest.mark.allow_warnings  # the failed login is logged
def test_other_credentials_are_judged_by_the_whole_stack(served: Served) -> None:
    with connect(served) as client:
        settled(served, client, request("/by-patients/"))
        before = served.repeats.answered
        client.sendall(request("/by-patients/", password="wrong") + request("/by-patients/", password=None))
        assert [status for status, _, _ in http_answers(client, 2)] == [401, 401]
        assert served.repeats.answered == before


@pytest.mark.parametrize("extra", ["Depth: 1\r\n",  # a header twice
                                   "User-Agent: a\r\n b\r\n",  # a folded line
                                   "If: (<urn:x>)\r\n", "Expect: 100-continue\r\n",
                                   "Destination: /uploads/a%00b\r\n",  # 400 from the path checks
                                   "Content_Length: 99999\r\n",  # CONTENT_LENGTH to cheroot: 413
                                   "User-Agent: a\nb\r\n",  # a bare line feed: 400
                                   "X-Anything: 1\r\n"])
def test_heads_that_are_not_plain_go_the_whole_way(served: Served, extra: str) -> None:
    with connect(served) as client:
        first = settled(served, client, request("/by-patients/"))
        before = served.repeats.answered
        with connect(served) as other:
            other.sendall(request("/by-patients/", extra=extra))
            odd = other.recv(1 << 16)  # whatever the whole stack says (or its closing the connection)
        assert served.repeats.answered == before, odd[:200]
        assert ask(client, request("/by-patients/")) == first and served.repeats.answered == before + 1


def test_what_cheroot_refuses_stays_refused(served: Served) -> None:
    with connect(served) as client:
        first = settled(served, client, request("/by-patients/"))
        before = served.repeats.answered
        assert ask(client, b"\r\n\r\n" + request("/by-patients/"))[0] == 400  # one blank line only
    for odd in (request("/by-patients/").replace(b"Content-Length: 0", b"Content-Length: " + b"9" * 5000),
                request("/by-patients/", extra="X-Long: " + "x" * (64 << 10) + "\r\n")):
        with connect(served) as client:
            assert ask(client, odd)[0] in (400, 413)
    with connect(served) as client:
        assert ask(client, b"\r\n" + request("/by-patients/")) == first
    assert served.repeats.answered == before + 1


def test_targets_with_a_query_are_not_remembered(served: Served) -> None:
    with connect(served) as client:
        for _ in range(3):
            assert ask(client, request("/by-patients/?x=1"))[0] == 207
        assert served.repeats.answered == 0


def test_a_connection_to_close_is_answered_and_closed(served: Served) -> None:
    with connect(served) as client:
        first = settled(served, client, request("/by-patients/"))
        before = served.repeats.answered
        closing = ask(client, request("/by-patients/", extra="Connection: close\r\n"))
        assert closing[0] == 207 and closing[2] == first[2] and served.repeats.answered == before
        assert client.recv(1) == b""


def test_a_changed_tree_is_never_answered_from_before(served: Served) -> None:
    with connect(served) as client:
        client.sendall(request("/by-patients/"))
        [before] = http_answers(client, 1)
        with served.orthanc.client() as orthanc:
            orthanc.upload(data.instances(1, "NEWCOMER")[0])
        served.tree.index.cache.invalidate()  # what the follower or the TTL does: the tree's stamp moves on

        def listed_newcomer() -> bool:
            client.sendall(request("/by-patients/"))
            return b"NEWCOMER" in http_answers(client, 1)[0][2]

        wait_for(listed_newcomer, 10, "the new patient to be listed")
        assert b"NEWCOMER" not in before[2]


@pytest.mark.parametrize("head", [
    b"PROPFIND / HTTP/1.1\nDepth: 1\n\n",  # bare line feeds
    b"PROPFIND / HTTP/1.1\r\nDepth: 1\r\n",  # not all here
    b"PROPFIND  / HTTP/1.1\r\n\r\n",  # two spaces
    b"PROPFIND / HTTP/1.1\r\nDepth : 1\r\n\r\n",  # a space before the colon
    b"PROPFIND / HTTP/1.1\r\nDepth: 1\r\ndepth: 0\r\n\r\n",
    b"PROPFIND / HTTP/1.1\r\nContent_Length: 1\r\n\r\n",  # cheroot reads `_` as `-`
    b"PROPFIND / HTTP/1.1\r\nDepth: 1\x00\r\n\r\n",
])
def test_heads_the_lane_leaves_to_cheroot(head: bytes) -> None:
    assert parse_head(bytearray(head), 0, 1 << 16) is None


def test_a_plain_head_is_read_as_sent() -> None:
    head = b"PROPFIND /a%20b/?x HTTP/1.1\r\nDepth:  1 \r\nUser-Agent: gvfs\r\n\r\n"
    parsed = parse_head(bytearray(b"\r\n" + head + b"BODY"), 2, len(head))
    assert parsed is not None
    assert (parsed.method, parsed.target, parsed.version) == (b"PROPFIND", b"/a%20b/?x", b"HTTP/1.1")
    assert parsed.headers == {b"depth": b"1", b"user-agent": b"gvfs"} and parsed.length == len(head)
    assert parse_head(bytearray(b"\r\n" + head), 2, len(head) - 1) is None  # longer than cheroot takes
