"""An h2c server on Python's `h2` (not hyper) that answers each request before reading its body
and then ends the connection, for hyphae's conformance tests (`h2` comes with hypercorn,
installed by `cargo xtask test`).

  early.py   serve on 127.0.0.1:0; prints the port on stdout, then serves

As soon as a request's head arrives the server answers it whole: 413 with a content-length and
the body `status 413 before the body`. Then it stops sending (a FIN, so nothing it sent is lost
to a TCP reset) and reads and drops whatever the client still sends until the client closes.
A client is still sending its body when the connection ends under it: RFC 9113 §8.1 lets a
server answer early, and the answer is whole.
"""

import asyncio
import socket

import h2.config
import h2.connection
import h2.events
import h2.exceptions

BODY = b"status 413 before the body"
# Longest the server reads what a client still sends after the answer.
DRAIN_PATIENCE = 10


async def serve_connection(reader, writer):
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    connection.initiate_connection()
    writer.write(connection.data_to_send())
    answered = False
    while not answered:
        data = await reader.read(65536)
        if not data:
            break
        try:
            events = connection.receive_data(data)
        except h2.exceptions.ProtocolError:
            break
        for event in events:
            if isinstance(event, h2.events.RequestReceived) and not answered:
                connection.send_headers(
                    event.stream_id, [(":status", "413"), ("content-length", str(len(BODY)))]
                )
                connection.send_data(event.stream_id, BODY, end_stream=True)
                answered = True
        writer.write(connection.data_to_send())
        await writer.drain()
    try:
        if writer.can_write_eof():
            writer.write_eof()
        while await asyncio.wait_for(reader.read(65536), DRAIN_PATIENCE):
            pass
    except (asyncio.TimeoutError, OSError):
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
