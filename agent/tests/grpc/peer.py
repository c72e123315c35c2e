"""A real gRPC server and client for hyphae's gRPC tests (grpcio, raw bytes, no protobuf).

  peer.py server            serve on 127.0.0.1:0; prints the port on stdout, then serves
  peer.py client HOST:PORT  run the checks against HOST:PORT; prints one JSON object

Methods (all under /hyphae.test.Echo/):
  Unary   returns the request with b"echo:" in front
  Stream  server streaming: the request is a count N, returns N messages b"0", b"1", ...
          and sets trailing metadata x-served-by: peer
  Flaky   fails with UNAVAILABLE on every other call (1st, 3rd, ...) and succeeds otherwise
  Broken  always fails with INVALID_ARGUMENT and a message
"""

import json
import sys
import threading
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

    handlers = {
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


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    else:
        client(sys.argv[2])
