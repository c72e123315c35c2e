"""An HTTP/1.1 server on 127.0.0.1:PORT that answers every GET with its NAME (and /healthz with
200), for the namespace test's hosts. Prints "ready" once it listens."""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Named(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = NAME.encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


NAME = sys.argv[1]
host, port = (sys.argv[3], int(sys.argv[2])) if len(sys.argv) > 3 else ("127.0.0.1", int(sys.argv[2]))
server = ThreadingHTTPServer((host, port), Named)
server.daemon_threads = True
print("ready", flush=True)
server.serve_forever()
