"""An HTTP/2 peer on python-h2 (Debian's python3-h2), the independent judge of the proxy's own HTTP/2
connection code (HTTP2ConnectionHandler), over plaintext TCP on loopback.

  h2_peer.py client PORT STREAMS BODY   connects to 127.0.0.1:PORT, sends STREAMS POST requests at once,
                                        each with BODY bytes, and a PING; prints one JSON line: each
                                        stream's status, x-received header and response body length, the
                                        PING's answer, and the peer's settings
  h2_peer.py serve                      serves on a port it prints first: one connection, small windows
                                        (1,000 bytes), at most 2 concurrent streams; each request gets 200,
                                        x-received (the body's length) and a body of that length
"""
import json
import socket
import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


def connection(client_side, settings):
    """A connection that starts with `settings` as its SETTINGS."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8"))
    conn.local_settings = h2.settings.Settings(client=client_side, initial_values=settings)
    conn.initiate_connection()
    return conn


def drive(sock, conn, on_event, done):
    """Reads events until done() is true or the peer closes."""
    sock.sendall(conn.data_to_send())
    while not done():
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            on_event(event)
        sock.sendall(conn.data_to_send())


def send_body(conn, stream, body, end):
    """Sends as much of body as flow control allows; returns the rest."""
    while body:
        room = min(conn.local_flow_control_window(stream), conn.max_outbound_frame_size)
        if room <= 0:
            return body
        conn.send_data(stream, body[:room])
        body = body[room:]
    if end:
        conn.end_stream(stream)
    return body


def client(port, streams, size):
    sock = socket.create_connection(("127.0.0.1", port))
    conn = connection(True, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16384,
                             h2.settings.SettingCodes.ENABLE_PUSH: 0})
    pending = {}
    results = {}
    for _ in range(streams):
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", "POST"), (":path", "/echo"), (":scheme", "http"),
                                   (":authority", "backend"), ("content-length", str(size))])
        pending[stream] = b"x" * size
        results[stream] = {"status": None, "received": None, "body": 0, "ended": False}
    conn.ping(b"12345678")
    state = {"ping": None, "settings": {}}

    def pump():
        for stream in list(pending):
            pending[stream] = send_body(conn, stream, pending[stream], True)
            if not pending[stream]:
                del pending[stream]

    pump()

    def on_event(event):
        if isinstance(event, h2.events.ResponseReceived):
            headers = dict(event.headers)
            results[event.stream_id]["status"] = headers.get(":status")
            results[event.stream_id]["received"] = headers.get("x-received")
        elif isinstance(event, h2.events.DataReceived):
            results[event.stream_id]["body"] += len(event.data)
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            results[event.stream_id]["ended"] = True
        elif isinstance(event, h2.events.StreamReset):
            results[event.stream_id]["reset"] = int(event.error_code)
        elif isinstance(event, h2.events.PingAckReceived):
            state["ping"] = event.ping_data.decode()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                state["settings"][int(code)] = change.new_value
        elif isinstance(event, h2.events.WindowUpdated):
            pass
        pump()

    def done():
        return all(r["ended"] or "reset" in r for r in results.values()) and state["ping"] is not None

    drive(sock, conn, on_event, done)
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    sock.close()
    print(json.dumps({"streams": {str(k): v for k, v in sorted(results.items())}, "ping": state["ping"],
                      "settings": {str(k): v for k, v in sorted(state["settings"].items())}}, sort_keys=True))


def serve():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print(listener.getsockname()[1], flush=True)
    sock, _ = listener.accept()
    conn = connection(False, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000,
                              h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2})
    received = {}
    pending = {}
    state = {"closed": False, "most_open": 0}

    def pump():
        for stream in list(pending):
            try:
                pending[stream] = send_body(conn, stream, pending[stream], True)
            except h2.exceptions.StreamClosedError:
                pending[stream] = b""
            if not pending[stream]:
                del pending[stream]

    def on_event(event):
        if isinstance(event, h2.events.RequestReceived):
            received[event.stream_id] = 0
            state["most_open"] = max(state["most_open"], conn.open_inbound_streams)
        elif isinstance(event, h2.events.DataReceived):
            received[event.stream_id] += len(event.data)
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            size = received[event.stream_id]
            conn.send_headers(event.stream_id, [(":status", "200"), ("x-received", str(size)),
                                                ("x-most-open", str(state["most_open"]))])
            pending[event.stream_id] = b"y" * size
        elif isinstance(event, h2.events.ConnectionTerminated):
            state["closed"] = True
        pump()

    drive(sock, conn, on_event, lambda: state["closed"])
    sock.close()


if __name__ == "__main__":
    if sys.argv[1] == "client":
        client(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "serve":
        serve()
    else:
        sys.exit("usage: h2_peer.py client PORT STREAMS BODY | serve")
