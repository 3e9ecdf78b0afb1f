"""Serve a directory of static files (the browser console) as API Gateway HTTP API proxy responses.

Only the files present under the root when the site is built can be served: a request path is looked up
in that fixed table, never joined onto the file system, so ``..``, encoded slashes or symlinks cannot
reach anything else. Every answer carries a strict Content-Security-Policy (the page may run only its
own scripts and styles and talk only to its own origin, plus one configured API origin), ``nosniff``,
no referrer and no framing. Files are revalidated on each load (``no-cache`` with an ETag, 304 when
unchanged): their names carry no content hash, so a longer cache could mix two releases.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTENT_TYPES: Mapping[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
_TEXT_TYPES = ("text/", "application/json", "image/svg+xml")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")

API_ORIGIN_ENV = "CONSOLE_API_ORIGIN"
CONFIG_FILE = "config.json"


class SiteConfigError(ValueError):
    """The console's configuration is invalid (names the environment variable)."""


def api_origin_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``CONSOLE_API_ORIGIN``: the API's origin when it is not the console's own (empty = same origin)."""
    value = (environ if environ is not None else os.environ).get(API_ORIGIN_ENV, "").strip().rstrip("/")
    if not value:
        return None
    if not _ORIGIN.match(value):
        raise SiteConfigError(
            f"invalid configuration: {API_ORIGIN_ENV}: expected an origin like https://api.example.com, got {value!r}"
        )
    return value


def content_security_policy(api_origin: str | None) -> str:
    connect = "'self'" + (f" {api_origin}" if api_origin else "")
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@dataclass(frozen=True)
class _File:
    body: bytes
    content_type: str
    etag: str


class StaticSite:
    """The files under ``root`` (hidden files excluded), served under a route like ``/console``."""

    def __init__(self, root: Path, *, api_origin: str | None = None, index: str = "index.html") -> None:
        self.root = root
        self.index = index
        self.api_origin = api_origin
        self._files = self._load(root)
        config = json.dumps({"apiOrigin": api_origin}).encode()
        self._files[CONFIG_FILE] = _File(config, CONTENT_TYPES[".json"], _etag(config))
        if index not in self._files:
            raise SiteConfigError(f"{root}: no {index}")
        self._headers = {
            "content-security-policy": content_security_policy(api_origin),
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "x-frame-options": "DENY",
            "cross-origin-opener-policy": "same-origin",
        }

    @staticmethod
    def _load(root: Path) -> dict[str, _File]:
        files: dict[str, _File] = {}
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if not path.is_file() or any(part.startswith(".") for part in relative.parts):
                continue
            content_type = CONTENT_TYPES.get(path.suffix.lower())
            if content_type is None:
                continue  # unknown kinds (editor backups, caches) are never served
            body = path.read_bytes()
            files[relative.as_posix()] = _File(body, content_type, _etag(body))
        return files

    @property
    def paths(self) -> list[str]:
        return sorted(self._files)

    def respond(self, asset: str | None, *, trailing_slash: bool, if_none_match: str | None) -> dict[str, Any]:
        """The proxy response for ``/console`` (asset None) or ``/console/<asset>``.

        ``/console`` without a slash redirects to ``console/`` (relative, so it also works under a custom
        domain's base path): the page's relative links then resolve below it.
        """
        if asset is None or asset == "":
            if not trailing_slash and asset is None:
                return self._plain(308, "Moved", {"location": "console/"})
            asset = self.index
        found = self._files.get(asset)
        if found is None:
            return self._plain(404, "Not Found")
        headers = {**self._headers, "content-type": found.content_type, "etag": found.etag, "cache-control": "no-cache"}
        if if_none_match and found.etag in (tag.strip() for tag in if_none_match.split(",")):
            return {"statusCode": 304, "headers": headers, "body": ""}
        if found.content_type.startswith(_TEXT_TYPES):
            return {"statusCode": 200, "headers": headers, "body": found.body.decode("utf-8"), "isBase64Encoded": False}
        body = base64.b64encode(found.body).decode("ascii")
        return {"statusCode": 200, "headers": headers, "body": body, "isBase64Encoded": True}

    def _plain(self, status: int, text: str, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
        headers = {**self._headers, "content-type": CONTENT_TYPES[".txt"], "cache-control": "no-store", **(extra or {})}
        return {"statusCode": status, "headers": headers, "body": text, "isBase64Encoded": False}


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
