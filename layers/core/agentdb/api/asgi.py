"""One buffered HTTP exchange through an ASGI application: a request in, the whole response out.

API Gateway hands a Lambda function one complete request and takes back one complete response, so the
ASGI app runs on an in-memory exchange: ``receive`` yields the body once (then, once the response is
complete, a disconnect), ``send`` collects the status, headers and body. Streaming responses are joined;
the callers here use JSON response mode, so there is one body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class HttpExchange:
    """The request half, as API Gateway delivered it (headers already joined, names in any case)."""

    method: str
    path: str
    query_string: str
    headers: Mapping[str, str]
    body: bytes
    host: str = "localhost"
    scheme: str = "https"
    client_ip: str = "127.0.0.1"


@dataclass
class HttpReply:
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def asgi_scope(request: HttpExchange, extra: Mapping[str, Any] | None = None) -> Scope:
    """An ASGI 3 HTTP scope for the request; ``extra`` keys are added for the app to read."""
    port = 443 if request.scheme == "https" else 80
    host = request.host
    if ":" in host:
        host, _, raw_port = host.rpartition(":")
        port = int(raw_port) if raw_port.isdigit() else port
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in request.headers.items()]
    if not any(name == b"host" for name, _ in headers):
        headers.append((b"host", request.host.encode("latin-1")))
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method.upper(),
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.path.encode("utf-8"),
        "query_string": request.query_string.encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "server": (host, port),
        "client": (request.client_ip, 0),
        "state": {},
    }
    scope.update(extra or {})
    return scope


async def exchange(app: AsgiApp, request: HttpExchange, extra: Mapping[str, Any] | None = None) -> HttpReply:
    """Run ``app`` on one request; return its response (500 and no body if it sent none)."""
    import anyio

    reply = HttpReply()
    chunks: list[bytes] = []
    body_sent = False
    finished = anyio.Event()

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await finished.wait()  # the client "disconnects" only once the response is complete
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            reply.status = int(message["status"])
            for name, value in message.get("headers", ()):
                key = bytes(name).decode("latin-1").lower()
                text = bytes(value).decode("latin-1")
                reply.headers[key] = f"{reply.headers[key]}, {text}" if key in reply.headers else text
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                finished.set()

    await app(asgi_scope(request, extra), receive, send)
    finished.set()
    reply.body = b"".join(chunks)
    return reply
