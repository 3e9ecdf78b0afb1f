"""The local stack for end-to-end tests: the real template, the gateway, real Postgres."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from local.gateway import LocalGateway
from local.token import mint_token
from tests.lambda_harness import REPO


@dataclass
class Stack:
    url: str
    client: httpx.Client
    token: Callable[..., str]

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token('platform', scope='agentdb/admin')}"}

    def user(self, user_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id)}"}


@pytest.fixture
def stack(function_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    jwt_secret = secrets.token_urlsafe(32)
    monkeypatch.setenv("LOCAL_JWT_SECRET", jwt_secret)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    gateway = LocalGateway(REPO / "template.yaml", jwt_secret=jwt_secret, repo_root=REPO)
    url = gateway.start()

    def token(sub: str, scope: str | None = None) -> str:
        return mint_token(sub, secret=jwt_secret, scope=scope)

    with httpx.Client(base_url=url, timeout=60) as client:
        yield Stack(url, client, token)
    gateway.stop()
