"""A real gRPC server and client for hyphae's gRPC tests (grpcio, raw bytes, no protobuf).

  peer.py server            serve on 127.0.0.1:0; prints the port on stdout, then serves
  peer.py client HOST:PORT  run the checks against HOST:PORT; prints one JSON object
  peer.py conformance HOST:PORT
                            the conformance checks: streaming each way, an error with
                            trailing metadata, the deadline; prints one JSON object that is
                            the same directly and through agents

Methods (all under /hyphae.test.Echo/):
  Unary   returns the request with b"echo:" in front
  Stream  server streaming: the request is a count N, returns N messages b"0", b"1", ...
          and sets trailing metadata x-served-by: peer
  Flaky   fails with UNAVAILABLE on every other call (1st, 3rd, ...) and succeeds otherwise
  Broken  always fails with INVALID_ARGUMENT and a message
  Gather  client streaming: returns the count and the messages joined with "+"
  Chat    both ways: answers each message with b"re:" in front, as it arrives
  Refuse  fails with NOT_FOUND, a message and trailing metadata (text and binary)
  Deadline  returns the time the call has left, as the server sees it, or b"none"
  Hang    waits until the call is cancelled (its deadline passes), then counts it
  Hung    returns how many Hang calls have been cancelled so far
"""

import json
import queue
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "hyphae.test.Echo"


def serve():
    flaky_calls = {"n": 0}
    lock = threading.Lock()

    def unary(request, context):
        return b"echo:" + request

    def stream(request, context):
        context.set_trailing_metadata((("x-served-by", "peer"),))
        for i in range(int(request.decode())):
            yield str(i).encode()

    def flaky(request, context):
        with lock:
            flaky_calls["n"] += 1
            n = flaky_calls["n"]
        if n % 2 == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return b"ok after %d calls" % n

    def broken(request, context):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad argument")

    def gather(requests, context):
        messages = [m.decode() for m in requests]
        return f"{len(messages)}:{'+'.join(messages)}".encode()

    def chat(requests, context):
        for message in requests:
            yield b"re:" + message

    def refuse(request, context):
        context.set_trailing_metadata((("x-reason", "gone"), ("x-detail-bin", b"\x00\x01\xff")))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def deadline(request, context):
        remaining = context.time_remaining()
        return b"none" if remaining is None else b"%f" % remaining

    hung = {"n": 0}

    def hang(request, context):
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        cancelled.wait()
        with lock:
            hung["n"] += 1
        return b""

    def hung_count(request, context):
        with lock:
            return str(hung["n"]).encode()

    handlers = {
        "Gather": grpc.stream_unary_rpc_method_handler(gather),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Refuse": grpc.unary_unary_rpc_method_handler(refuse),
        "Deadline": grpc.unary_unary_rpc_method_handler(deadline),
        "Hang": grpc.unary_unary_rpc_method_handler(hang),
        "Hung": grpc.unary_unary_rpc_method_handler(hung_count),
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Flaky": grpc.unary_unary_rpc_method_handler(flaky),
        "Broken": grpc.unary_unary_rpc_method_handler(broken),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def client(target):
    result = {}
    with grpc.insecure_channel(target) as channel:
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        result["unary"] = unary(b"hello", timeout=10).decode()
        stream = channel.unary_stream(f"/{SERVICE}/Stream")
        call = stream(b"5", timeout=10)
        result["stream"] = [m.decode() for m in call]
        result["stream_code"] = call.code().name
        result["stream_trailers"] = dict(call.trailing_metadata() or ())
        flaky = channel.unary_unary(f"/{SERVICE}/Flaky")
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append(flaky(b"", timeout=10).decode())
            except grpc.RpcError as error:
                outcomes.append(error.code().name)
        result["flaky"] = outcomes
        broken = channel.unary_unary(f"/{SERVICE}/Broken")
        try:
            broken(b"", timeout=10)
            result["broken"] = "OK"
        except grpc.RpcError as error:
            result["broken"] = error.code().name
            result["broken_details"] = error.details()
    print(json.dumps(result), flush=True)


# How long the conformance client gives a call, and the Hang call (which never ends by itself).
TIMEOUT = 10
HANG_TIMEOUT = 1


def conformance(target):
    result = {}
    with grpc.insecure_channel(target) as channel:
        method = lambda kind, name: getattr(channel, kind)(f"/{SERVICE}/{name}")
        # A message near gRPC's default 4 MiB limit, both ways: flow control across the hops.
        big = bytes(i * 13 % 256 for i in range(3 * 1024 * 1024))
        echoed = method("unary_unary", "Unary")(big, timeout=TIMEOUT)
        result["big_unary"] = [len(echoed), echoed == b"echo:" + big]
        stream = method("unary_stream", "Stream")(b"100", timeout=TIMEOUT)
        result["server_stream"] = [m.decode() for m in stream]
        result["server_stream_trailers"] = dict(stream.trailing_metadata() or ())
        gather = method("stream_unary", "Gather")
        result["client_stream"] = gather(
            iter([str(i).encode() for i in range(100)]), timeout=TIMEOUT
        ).decode()
        # Each message goes out only once the answer to the previous one is back, so the
        # stream must carry both ways at once, message by message.
        outgoing = queue.Queue()
        replies = method("stream_stream", "Chat")(iter(outgoing.get, None), timeout=TIMEOUT)
        chat = []
        for word in ["one", "two", "three"]:
            outgoing.put(word.encode())
            chat.append(next(replies).decode())
        outgoing.put(None)
        chat.extend(m.decode() for m in replies)
        result["bidi"] = chat
        result["bidi_code"] = replies.code().name
        try:
            method("unary_unary", "Refuse").with_call(b"", timeout=TIMEOUT)
            result["error"] = "OK"
        except grpc.RpcError as error:
            # `date` is left out: a proxy forwarding an answer without one adds it (RFC 9110
            # §6.6.1; the agent's hyper does), and an error's answer is trailers only.
            trailers = {
                k: (v.hex() if isinstance(v, bytes) else v)
                for k, v in (error.trailing_metadata() or ())
                if k != "date"
            }
            result["error"] = {
                "code": error.code().name,
                "details": error.details(),
                "trailers": trailers,
            }
        # The deadline the server sees: the client's 10 s (grpc-timeout is rounded on the way,
        # and time passes), not none and not an agent's own request timeout (15 s by default).
        remaining = method("unary_unary", "Deadline")(b"", timeout=TIMEOUT).decode()
        result["deadline_at_the_server"] = (
            remaining if remaining == "none" else "about %d s" % (round(float(remaining) / 5) * 5)
        )
        hung = method("unary_unary", "Hung")
        before = int(hung(b"", timeout=TIMEOUT))
        try:
            method("unary_unary", "Hang")(b"", timeout=HANG_TIMEOUT)
            result["deadline"] = "OK"
        except grpc.RpcError as error:
            result["deadline"] = error.code().name
        # The server learns of the end of the call too (its deadline or the reset): polled.
        give_up = time.monotonic() + TIMEOUT
        while int(hung(b"", timeout=TIMEOUT)) <= before and time.monotonic() < give_up:
            time.sleep(0.05)
        result["server_saw_the_deadline"] = int(hung(b"", timeout=TIMEOUT)) > before
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    elif sys.argv[1] == "conformance":
        conformance(sys.argv[2])
    else:
        client(sys.argv[2])
