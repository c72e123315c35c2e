"""A WebSocket server and client on Python's `websockets` (not hyper, not tungstenite), for
hyphae's conformance tests (installed by `cargo xtask test`).

  ws.py server       serve on 127.0.0.1:0; prints the port on stdout, then serves
  ws.py client URL   run the checks against URL; prints one JSON object

The server echoes every message, text as text and binary as binary, answers pings (the library
does), offers the subprotocol `chat`, and echoes the close code and reason it gets.
The client offers `chat`, sends a text, a binary message, a 1 MiB binary frame and a ping, and
reports what came back; the report is the same directly and through agents.
"""

import asyncio
import hashlib
import json
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

# Room for the 1 MiB frame and its echo (the library's default limit is exactly 1 MiB).
MAX_SIZE = 4 * 1024 * 1024
BIG = bytes(i * 7 % 251 for i in range(1024 * 1024))
# Longest the client waits for any one answer.
PATIENCE = 20


async def echo(socket):
    try:
        async for message in socket:
            await socket.send(message)
    except ConnectionClosed:
        pass


async def server():
    async with serve(
        echo, "127.0.0.1", 0, subprotocols=["chat"], max_size=MAX_SIZE, ping_interval=None
    ) as running:
        print(running.sockets[0].getsockname()[1], flush=True)
        await running.serve_forever()


async def client(url):
    result = {}
    async with connect(
        url, subprotocols=["chat"], max_size=MAX_SIZE, ping_interval=None, open_timeout=PATIENCE
    ) as socket:
        result["subprotocol"] = socket.subprotocol
        await socket.send("hello, text")
        reply = await asyncio.wait_for(socket.recv(), PATIENCE)
        result["text"] = [type(reply).__name__, reply]
        await socket.send(b"\x00\x01binary\xff")
        reply = await asyncio.wait_for(socket.recv(), PATIENCE)
        result["binary"] = [type(reply).__name__, reply.hex()]
        await socket.send(BIG)
        reply = await asyncio.wait_for(socket.recv(), PATIENCE)
        result["big"] = [type(reply).__name__, len(reply), hashlib.sha256(reply).hexdigest()]
        result["big_sent"] = hashlib.sha256(BIG).hexdigest()
        pong = await socket.ping(b"are you there")
        await asyncio.wait_for(pong, PATIENCE)
        result["pong"] = True
        await socket.close(1000, "done here")
        result["close"] = [socket.close_code, socket.close_reason]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(server())
    else:
        asyncio.run(client(sys.argv[2]))
