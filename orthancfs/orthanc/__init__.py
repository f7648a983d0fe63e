"""Orthanc's REST API for orthancfs: the only package that speaks HTTP or builds a URL.

`OrthancClient` (client.py) is the typed API; every call goes through one pipeline
(pipeline.py: tries with a bound, failures judged once, outages noted); transports send
from threads (blocking.py), from the FUSE loop (loop.py), and splice downloads (downloads.py).
"""

from __future__ import annotations

from .answers import Answer
from .client import CONFIRM_TIMEOUT, DIRECT_BODY_LIMIT, Capabilities, OrthancClient
from .connection import ClientSettings, validate_url
from .downloads import CHUNK_SIZE, FIRST_CHUNK_SIZE, SPLICE_FROM
from .levels import Level
from .loop import LoopUploader
from .pipeline import FAIL_FAST_SECONDS, Health, reason

__all__ = ["CHUNK_SIZE", "CONFIRM_TIMEOUT", "DIRECT_BODY_LIMIT", "FAIL_FAST_SECONDS", "FIRST_CHUNK_SIZE", "SPLICE_FROM",
           "Answer", "Capabilities", "ClientSettings", "Health", "Level", "LoopUploader", "OrthancClient", "reason",
           "validate_url"]
