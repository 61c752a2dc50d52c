"""Peers for the transparent-proxying tests: an application pod's servers and an unmodified client.

serve HTTP_PORT GREET_PORT[,GREET_PORT...] ECHO_PORT
    HTTP_PORT: answers every GET with "backend <path> host=<Host header>".
    GREET_PORT: a server-speaks-first protocol: sends "HELLO\n", echoes every byte, and after the client's
        FIN sends "BYE <sha256 of what it received> <bytes>\n" and closes.
    ECHO_PORT: the same without the greeting (the client speaks first).
    Prints "ready" when listening.

client HOST PORT BYTES [greet]
    Connects (as an unmodified client would), reads the greeting when asked, sends BYTES pseudo-random bytes
    while reading the echo, half-closes, reads to the end, and prints one JSON line: whether the echo matched
    what was sent, the server's BYE line, and the checksum sent.
"""
import hashlib
import json
import random
import socket
import socketserver
import sys
import threading
import http.server


class Threaded(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def stream_handler(greet):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            if greet:
                self.request.sendall(b"HELLO\n")
            digest, total = hashlib.sha256(), 0
            while True:
                data = self.request.recv(65536)
                if not data:
                    break
                digest.update(data)
                total += len(data)
                self.request.sendall(data)
            self.request.sendall(f"BYE {digest.hexdigest()} {total}\n".encode())
            self.request.close()
    return Handler


class HTTP(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"backend {self.path} host={self.headers.get('host')}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(http_port, greet_ports, echo_port):
    class HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
    servers = [HTTPServer(("0.0.0.0", http_port), HTTP)]
    servers += [Threaded(("0.0.0.0", port), stream_handler(True)) for port in greet_ports]
    servers.append(Threaded(("0.0.0.0", echo_port), stream_handler(False)))
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def client(host, port, size, greet):
    sock = socket.create_connection((host, port), timeout=30)
    result = {}
    reader = sock.makefile("rb")
    if greet:
        result["greeting"] = reader.readline().decode().strip()
    payload = random.Random(size).randbytes(size)
    echoed = hashlib.sha256()
    received = [0]

    def read_echo():
        left = size
        while left > 0:
            chunk = reader.read(min(65536, left))
            if not chunk:
                break
            echoed.update(chunk)
            left -= len(chunk)
            received[0] += len(chunk)

    thread = threading.Thread(target=read_echo)
    thread.start()
    view = memoryview(payload)
    for start in range(0, size, 65536):
        sock.sendall(view[start:start + 65536])
    sock.shutdown(socket.SHUT_WR)
    thread.join(60)
    sent = hashlib.sha256(payload).hexdigest()
    result.update({
        "sent": sent,
        "echo_ok": received[0] == size and echoed.hexdigest() == sent,
        "echoed_bytes": received[0],
        "bye": reader.readline().decode().strip(),
        "eof": reader.read() == b"",
    })
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")], int(sys.argv[4]))
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), len(sys.argv) > 5 and sys.argv[5] == "greet")
