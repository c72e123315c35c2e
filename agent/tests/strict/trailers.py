"""An HTTP/1.1 server on Python's `h11` (not hyper) that answers every request with a chunked
body and trailers, which hypercorn sends only over HTTP/2; for hyphae's conformance tests (`h11`
comes with hypercorn, installed by `cargo xtask test`).

  trailers.py   serve on 127.0.0.1:0; prints the port on stdout, then serves

Each answer is 200 with `transfer-encoding: chunked`, `trailer: x-checksum, x-count`, the body
`one two three` in three chunks and the trailers `x-checksum` (SHA-256 of the body, in hex) and
`x-count: 3`, whether or not the request said `te: trailers` (RFC 9110 §6.5.1 lets a server
send them; a recipient may drop them). Connections are kept alive.
"""

import asyncio
import hashlib
import socket

import h11

PIECES = [b"one ", b"two ", b"three"]


async def serve_connection(reader, writer):
    connection = h11.Connection(h11.SERVER)
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                connection.receive_data(data)
                if not data and connection.their_state is not h11.DONE:
                    break
                continue
            if isinstance(event, (h11.ConnectionClosed,)):
                break
            if isinstance(event, h11.EndOfMessage):
                checksum = hashlib.sha256(b"".join(PIECES)).hexdigest().encode()
                writer.write(
                    connection.send(
                        h11.Response(
                            status_code=200,
                            headers=[
                                (b"transfer-encoding", b"chunked"),
                                (b"trailer", b"x-checksum, x-count"),
                            ],
                        )
                    )
                )
                for piece in PIECES:
                    writer.write(connection.send(h11.Data(data=piece)))
                writer.write(
                    connection.send(
                        h11.EndOfMessage(headers=[(b"x-checksum", checksum), (b"x-count", b"3")])
                    )
                )
                await writer.drain()
                if connection.our_state is h11.MUST_CLOSE:
                    break
                connection.start_next_cycle()
    except (h11.ProtocolError, ConnectionError):
        pass
    writer.close()


async def main():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    server = await asyncio.start_server(serve_connection, sock=listener)
    print(listener.getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
