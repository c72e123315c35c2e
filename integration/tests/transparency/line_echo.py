"""A line echo on 127.0.0.1:PORT: each line comes back as it was sent. Not HTTP, so the mesh
carries it as opaque TCP. Prints "ready" once it listens."""

import socketserver
import sys


class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
            self.wfile.flush()


socketserver.ThreadingTCPServer.allow_reuse_address = True
server = socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Echo)
server.daemon_threads = True
print("ready", flush=True)
server.serve_forever()
