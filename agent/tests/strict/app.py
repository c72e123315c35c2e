"""A tiny ASGI app served by hypercorn, a strict HTTP/1.1 and h2c server that is not hyper, for
hyphae's fidelity tests (installed by `cargo xtask test`).

  app.py [MAX_REQUESTS]   serve on 127.0.0.1:0; prints the port on stdout, then serves.
                          Each connection is closed after MAX_REQUESTS requests (hypercorn's
                          keep_alive_max_requests, default 1000): GOAWAY on HTTP/2,
                          `connection: close` on HTTP/1.1.

Every request is answered 200 with the body `METHOD PATH BODY_LENGTH` and these headers:
  x-seen-host     the host the app saw (hypercorn turns `:authority` into `host`)
  x-http-version  the HTTP version the request arrived in
  x-big           on GET /big-header?N only: N bytes of `b`, to pass a large response header
"""

import asyncio
import socket
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    length = 0
    more = True
    while more:
        message = await receive()
        length += len(message.get("body", b""))
        more = message.get("more_body", False)
    hosts = [value for name, value in scope["headers"] if name == b"host"]
    headers = [
        (b"x-seen-host", b",".join(hosts)),
        (b"x-http-version", scope["http_version"].encode()),
    ]
    if scope["path"] == "/big-header":
        headers.append((b"x-big", b"b" * int(scope["query_string"] or b"16384")))
    body = f"{scope['method']} {scope['path']} {length}".encode()
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    # Listening before the port is printed, so a client may connect at once.
    listener.listen(1024)
    config = Config()
    config.bind = [f"fd://{listener.fileno()}"]
    if len(sys.argv) > 1:
        config.keep_alive_max_requests = int(sys.argv[1])
    print(listener.getsockname()[1], flush=True)
    asyncio.run(serve(app, config))


if __name__ == "__main__":
    main()
