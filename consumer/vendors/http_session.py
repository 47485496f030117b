"""The `requests.Session` every `VendorHttp` sends through: deadline-aware transport, and
the environment read once per vendor host instead of once per call.

`requests` honours the environment on every request: proxies (`HTTPS_PROXY`, `NO_PROXY`,
...) and CA bundles (`REQUESTS_CA_BUNDLE`). Finding them walks the whole of `os.environ`
twice per call, which was a fifth of the CPU of a vendor call against a local server
(docs/benchmarks.md, "Vendor throughput"), and a pod's environment (one set of variables
per Kubernetes service) is larger still. The environment of a running worker does not
change, so `VendorSession` keeps what it found for each scheme and host (a vendor has one
or two) and the same proxies and CA bundle apply to every call, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests

from consumer.vendors.http_deadline import DeadlineAdapter

if TYPE_CHECKING:
    from requests.sessions import _Cert, _Settings, _TextMapping, _Verify


class VendorSession(requests.Session):
    """A session whose connections honour `call_deadline`, sending `user_agent`."""

    def __init__(self, user_agent: str) -> None:
        super().__init__()
        self.headers["User-Agent"] = user_agent
        for prefix in ("http://", "https://"):
            self.mount(prefix, DeadlineAdapter())
        self._environment: dict[tuple[object, ...], _Settings] = {}

    def merge_environment_settings(
        self,
        url: str | bytes | None,
        proxies: _TextMapping | None,
        stream: bool | None,
        verify: _Verify | None,
        cert: _Cert | None,
    ) -> _Settings:
        """requests' own merge, done once per scheme, host and request settings."""
        parts = urlsplit(url or "")
        given = tuple(sorted(proxies.items())) if proxies else ()
        key = (parts.scheme, parts.netloc, stream, verify, cert, given)
        settings = self._environment.get(key)
        if settings is None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._environment[key] = settings
        return {**settings, "proxies": dict(settings["proxies"])}  # the caller's to change
