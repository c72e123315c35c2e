"""A small ASGI app served by hypercorn, a strict HTTP/1.1 and h2c server that is not hyper, for
hyphae's fidelity and conformance tests (installed by `cargo xtask test`).

  app.py [--max-requests N] [--port P]
      serve on 127.0.0.1:P (default 0: any free port); prints the port on stdout, then serves.
      Each connection is closed after N requests (hypercorn's keep_alive_max_requests, default
      1000): GOAWAY on HTTP/2, `connection: close` on HTTP/1.1.

Every answer carries these headers:
  x-seen-host      the host the app saw (hypercorn turns `:authority` into `host`)
  x-http-version   the HTTP version the request arrived in
  x-client-port    the port the request's connection came from (a reused connection keeps it)
  x-body-length    how many body bytes the request carried
  x-body-sha256    their SHA-256, in hex
  x-expect         the request's `expect` header, when it had one
  x-big-request    the length of the request's `x-big` header, when it had one
  x-raw-target     the path and query as they arrived, not decoded
  x-repeated       the values of the request's `x-repeated` fields, in order, joined by `|`

Paths:
  /status/N           answers status N (with a body `status N` where a body is allowed)
  /bytes?n=N          N bytes (`0123456789` repeated) with a content-length; with `&chunked=1`
                      without one, in pieces of 64 KiB (chunked on HTTP/1.1)
  /big-header?N       a response header `x-big` of N bytes of `b` (default 16384)
  /trailers           a body in three pieces, then trailers `x-checksum` and `x-count` (HTTP/2
                      only, and only when the request says `te: trailers`: hypercorn's rule)
  /sse?id=I&n=N       server-sent events `data: K` for K in 0..N, without a length; each event
                      after the first waits until /sse-next?id=I is called, so a client sees
                      that each arrives before the next one is even sent
  /sse-next?id=I      lets stream I send its next event
  /slow?ms=M&steps=S  waits M ms before the head, then sends S pieces M ms apart
  /count              how many requests this process has answered before this one
  /cookies            two `set-cookie` fields and a field with an empty value
  /early?status=N     answers N at once, before reading any of the request's body
  /early-hints        a 103 (Early Hints) with a `link` first (HTTP/2 only: hypercorn's rule)
  anything else       `METHOD PATH BODY_LENGTH`, with a content-length
"""

import argparse
import asyncio
import hashlib
import socket
from urllib.parse import parse_qs

from hypercorn.asyncio import serve
from hypercorn.config import Config

PIECE = 64 * 1024
# Room for a 16 KiB request header and more (hypercorn's default head limit is 16 KiB).
MAX_HEAD = 64 * 1024

answered = 0
# Stream id -> the event its next server-sent event waits for.
sse_steps = {}


def sse_step(stream):
    return sse_steps.setdefault(stream, asyncio.Event())


def pattern(n):
    return (b"0123456789" * (n // 10 + 1))[:n]


async def app(scope, receive, send):
    global answered
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/early":
        status = int(parse_qs(scope["query_string"].decode()).get("status", ["413"])[-1])
        data = f"status {status} before the body".encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})
        return
    digest = hashlib.sha256()
    length = 0
    more = True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        digest.update(chunk)
        length += len(chunk)
        more = message.get("more_body", False)
    request_headers = scope["headers"]
    hosts = [value for name, value in request_headers if name == b"host"]
    headers = [
        (b"x-seen-host", b",".join(hosts)),
        (b"x-http-version", scope["http_version"].encode()),
        (b"x-client-port", str(scope["client"][1]).encode()),
        (b"x-body-length", str(length).encode()),
        (b"x-body-sha256", digest.hexdigest().encode()),
    ]
    target = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
    headers.append((b"x-raw-target", target))
    repeated = [value for name, value in request_headers if name == b"x-repeated"]
    if repeated:
        headers.append((b"x-repeated", b"|".join(repeated)))
    for name, value in request_headers:
        if name == b"expect":
            headers.append((b"x-expect", value))
        elif name == b"x-big":
            headers.append((b"x-big-request", str(len(value)).encode()))
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    count = answered
    answered += 1

    async def start(status=200, extra=(), trailers=False):
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers + list(extra),
                "trailers": trailers,
            }
        )

    async def body(data, more=False):
        await send({"type": "http.response.body", "body": data, "more_body": more})

    def length_of(data):
        return [(b"content-length", str(len(data)).encode())]

    if path.startswith("/status/"):
        status = int(path[len("/status/") :])
        data = b"" if status in (204, 304) else f"status {status}".encode()
        await start(status, length_of(data) if data else [])
        await body(data)
    elif path == "/bytes":
        data = pattern(int(query.get("n", "0")))
        if query.get("chunked"):
            await start()
            for at in range(0, len(data), PIECE):
                await body(data[at : at + PIECE], more=True)
            await body(b"")
        else:
            await start(200, length_of(data))
            await body(data)
    elif path == "/big-header":
        size = int(scope["query_string"] or b"16384")
        data = b"ok"
        await start(200, [(b"x-big", b"b" * size)] + length_of(data))
        await body(data)
    elif path == "/trailers":
        pieces = [b"one ", b"two ", b"three"]
        await start(200, [(b"trailer", b"x-checksum, x-count")], trailers=True)
        for piece in pieces:
            await body(piece, more=True)
        await body(b"")
        checksum = hashlib.sha256(b"".join(pieces)).hexdigest().encode()
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"x-checksum", checksum), (b"x-count", b"3")],
            }
        )
    elif path == "/sse":
        stream, events = query["id"], int(query.get("n", "3"))
        await start(200, [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")])
        for k in range(events):
            if k > 0:
                step = sse_step(stream)
                await step.wait()
                step.clear()
            await body(f"id: {k}\ndata: {k}\n\n".encode(), more=True)
        sse_steps.pop(stream, None)
        await body(b"")
    elif path == "/sse-next":
        sse_step(query["id"]).set()
        await start(200, length_of(b"ok"))
        await body(b"ok")
    elif path == "/slow":
        pause = int(query.get("ms", "300")) / 1000
        steps = int(query.get("steps", "3"))
        await asyncio.sleep(pause)
        await start()
        for k in range(steps):
            await body(f"piece {k}\n".encode(), more=True)
            await asyncio.sleep(pause)
        await body(b"")
    elif path == "/cookies":
        data = b"two cookies"
        cookies = [(b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; HttpOnly"), (b"x-empty", b"")]
        await start(200, cookies + length_of(data))
        await body(data)
    elif path == "/early-hints":
        if "http.response.early_hint" in scope["extensions"]:
            links = [b"</style.css>; rel=preload; as=style"]
            await send({"type": "http.response.early_hint", "links": links})
        data = b"hinted"
        await start(200, length_of(data))
        await body(data)
    elif path == "/names":
        # The request's header names in the order they arrived, one per line.
        data = b"\n".join(name for name, _ in request_headers)
        await start(200, length_of(data))
        await body(data)
    elif path == "/count":
        data = str(count).encode()
        await start(200, length_of(data))
        await body(data)
    else:
        data = f"{scope['method']} {path} {length}".encode()
        await start(200, length_of(data))
        await body(data)


def main():
    arguments = argparse.ArgumentParser()
    arguments.add_argument("--max-requests", type=int)
    arguments.add_argument("--port", type=int, default=0)
    options = arguments.parse_args()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", options.port))
    # Listening before the port is printed, so a client may connect at once.
    listener.listen(1024)
    config = Config()
    config.bind = [f"fd://{listener.fileno()}"]
    config.h11_max_incomplete_size = MAX_HEAD
    config.accesslog = None
    config.errorlog = None
    if options.max_requests is not None:
        config.keep_alive_max_requests = options.max_requests
    print(listener.getsockname()[1], flush=True)
    asyncio.run(serve(app, config))


if __name__ == "__main__":
    main()
