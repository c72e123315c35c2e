"""An h2c server on Python's `h2` (not hyper) that closes each connection after N requests as
RFC 9113 §6.8 describes, for hyphae's fidelity tests (`h2` comes with hypercorn, installed by
`cargo xtask test`).

  goaway.py N   serve on 127.0.0.1:0; prints the port on stdout, then serves

On each connection the first N requests are answered 200 with the body
`METHOD PATH BODY_LENGTH`. With the N-th the server sends GOAWAY naming it the last stream,
answers the N, refuses every later stream with RST_STREAM(REFUSED_STREAM), and closes the
connection once the N are answered. Streams above the last one were never processed: a client
(or a proxy) may send them again on a new connection, whatever their method.
"""

import asyncio
import socket
import struct
import sys

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

GOAWAY = 0x7
# Longest a closing connection waits for the client to close its side.
CLOSE_PATIENCE = 5


def goaway_frame(last_stream_id):
    """A GOAWAY frame with NO_ERROR, written beside `h2`'s own frames: `h2` closes its state
    machine on GOAWAY and would then refuse to answer the streams below the last one."""
    payload = struct.pack(">II", last_stream_id, h2.errors.ErrorCodes.NO_ERROR)
    return struct.pack(">I", len(payload))[1:] + bytes([GOAWAY, 0]) + struct.pack(">I", 0) + payload


async def serve_connection(reader, writer, limit):
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    connection.initiate_connection()
    writer.write(connection.data_to_send())
    requests = {}  # stream id -> [method, path, body length]
    accepted = answered = 0
    last = None
    while last is None or answered < accepted:
        data = await reader.read(65536)
        if not data:
            break
        try:
            events = connection.receive_data(data)
        except h2.exceptions.ProtocolError:
            break
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                if last is not None:
                    connection.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                    continue
                headers = dict(event.headers)
                requests[event.stream_id] = [headers[b":method"], headers[b":path"], 0]
                accepted += 1
                if accepted == limit:
                    last = event.stream_id
                    writer.write(connection.data_to_send() + goaway_frame(last))
            elif isinstance(event, h2.events.DataReceived):
                if event.stream_id in requests:
                    requests[event.stream_id][2] += len(event.data)
                try:
                    connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                except h2.exceptions.StreamClosedError:
                    pass
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id in requests:
                method, path, length = requests.pop(event.stream_id)
                body = b"%s %s %d" % (method, path, length)
                connection.send_headers(
                    event.stream_id,
                    [(":status", "200"), ("content-length", str(len(body)))],
                )
                connection.send_data(event.stream_id, body, end_stream=True)
                answered += 1
        writer.write(connection.data_to_send())
        await writer.drain()
    # A graceful close: stop sending, then read until the client closes, so requests it sent
    # before it saw the GOAWAY do not turn the close into a TCP reset that loses the answers.
    if writer.can_write_eof():
        writer.write_eof()
    try:
        while await asyncio.wait_for(reader.read(65536), CLOSE_PATIENCE):
            pass
    except (asyncio.TimeoutError, ConnectionError):
        pass
    writer.close()


async def main(limit):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    server = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, limit), sock=listener
    )
    print(listener.getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
