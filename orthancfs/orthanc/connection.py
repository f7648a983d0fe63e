"""How to reach one Orthanc: its URL, credentials and TLS settings, checked once."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import UsageError
from ..settings import is_loopback

log = logging.getLogger("orthancfs.orthanc")


@dataclass(frozen=True)
class ClientSettings:
    """How to reach one Orthanc server."""

    url: str
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    token: str | None = None  # bearer token, for Orthanc behind an authenticating proxy
    client_cert: str | None = None
    client_key: str | None = None
    timeout: float = 30.0
    connect_timeout: float = 5.0
    pool_size: int = 16
    retries: int = 3

    def __repr__(self) -> str:  # never show the password, not even in a traceback
        return f"ClientSettings(url={self.url!r}, username={self.username!r})"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def netloc(self) -> str:
        """host[:port] as the URL gives it: what a Host header says."""
        return urlsplit(self.url).netloc

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "https"

    @property
    def prefix(self) -> str:
        """The path Orthanc's API lives under (Orthanc behind a proxy's `location /pacs/`)."""
        return urlsplit(self.url).path.rstrip("/")


def validate_url(url: str) -> str:
    """Return the URL without a trailing slash, or raise UsageError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"not an http(s) URL: {url!r}")
    if parts.username or parts.password:
        raise UsageError("credentials in the URL would be visible to every user; use --user and --password-file")
    if parts.query or parts.fragment:
        raise UsageError(f"the Orthanc URL must not have a query or fragment: {url!r}")
    try:
        _ = parts.port  # raises for a port that is not a number in range
    except ValueError:
        raise UsageError(f"bad port in URL: {url!r}") from None
    return url.rstrip("/")


def request_headers(settings: ClientSettings) -> dict[str, str]:
    """What every request says: who we are, our credentials, and which encodings we take."""
    headers = {"User-Agent": "orthancfs"}
    if settings.username is not None:
        pair = f"{settings.username}:{settings.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    if settings.token:
        headers["Authorization"] = f"Bearer {settings.token}"
    # Compressing costs Orthanc more time than it saves on a loopback link (measured: 10-30%
    # slower listings); across a network gzip pays.
    headers["Accept-Encoding"] = "identity" if is_loopback(settings.host) else "gzip, deflate"
    return headers
