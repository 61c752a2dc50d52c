"""An independent gRPC peer for SwiftMesh's tests: Debian's python3-grpcio (gRPC C core) as server and client.

  grpc_peer.py serve            prints the port it listens on (127.0.0.1), then serves until stdin closes
  grpc_peer.py client TARGET [AUTHORITY]
                                runs every case against TARGET and prints one JSON object: case -> outcome
  grpc_peer.py flaky TARGET AUTHORITY N
                                calls Flaky (UNAVAILABLE every other call) N times, prints how many succeeded

Both ends use raw bytes (no generated code). The service is `test.Peer`. Comparing the client's JSON directly
and through the proxy shows whether the proxy changed anything a gRPC application can see.
"""
import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "test.Peer"
CANCELLED = threading.Event()
NON_ASCII = "caf\u00e9 \u2713 100% done\nnext line"


def _metadata(context):
    return {k: v for k, v in context.invocation_metadata()}


def echo(request, context):
    """Unary. `status:N:message` aborts with code N; `meta` answers with custom metadata; else echoes."""
    text = request.decode("utf-8", "replace")
    if text.startswith("status:"):
        _, code, message = text.split(":", 2)
        status = next(c for c in grpc.StatusCode if c.value[0] == int(code))
        context.set_trailing_metadata((("x-trailer", "t1"), ("x-bin-trailer-bin", b"\x00\x01\xff")))
        context.abort(status, message)
    if text == "meta":
        context.send_initial_metadata((("x-initial", "i1"), ("x-initial-bin", b"\xfe\x00")))
        context.set_trailing_metadata((("x-trailer", "t2"), ("x-bin-trailer-bin", b"\x02\x03")))
        got = _metadata(context)
        return ("seen:" + str(got.get("x-request", ""))).encode()
    if text == "empty":
        return b""
    if text.startswith("sleep:"):
        time.sleep(float(text.split(":")[1]))
        return b"woke"
    if text == "big":
        return b"x" * (4 * 1024 * 1024)
    return request


def count(request, context):
    """Server streaming: N messages."""
    for i in range(int(request.decode())):
        yield ("m%d" % i).encode()


def total(request_iterator, context):
    """Client streaming: the byte count of everything sent."""
    return str(sum(len(m) for m in request_iterator)).encode()


def chat(request_iterator, context):
    """Bidi: answers the first message before reading the rest, then echoes each."""
    yield b"hello"
    for message in request_iterator:
        yield b"echo:" + message


def stall(request, context):
    """Server streaming that sends one message, then waits to be cancelled (records that it was)."""
    context.add_callback(CANCELLED.set)
    yield b"first"
    deadline = time.time() + 20
    while context.is_active() and time.time() < deadline:
        time.sleep(0.02)


FLAKY = {"calls": 0}
FLAKY_LOCK = threading.Lock()


def flaky(request, context):
    """Unary: every other call fails with UNAVAILABLE (a trailers-only response)."""
    with FLAKY_LOCK:
        FLAKY["calls"] += 1
        fail = FLAKY["calls"] % 2 == 1
    if fail:
        context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
    return request


def was_cancelled(request, context):
    seen = CANCELLED.wait(timeout=5)
    CANCELLED.clear()
    return b"yes" if seen else b"no"


def serve():
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Total": grpc.stream_unary_rpc_method_handler(total),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Stall": grpc.unary_stream_rpc_method_handler(stall),
        "WasCancelled": grpc.unary_unary_rpc_method_handler(was_cancelled),
        "Flaky": grpc.unary_unary_rpc_method_handler(flaky),
    }
    options = [("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


def outcome(call):
    """What an application sees of a finished call."""
    try:
        value = call()
        return {"ok": True, "value": value}
    except grpc.RpcError as error:
        return {
            "ok": False,
            "code": error.code().name,
            "details": error.details(),
            "trailing": sorted([k, repr(v)] for k, v in (error.trailing_metadata() or ())
                               if k.startswith("x-")),
        }


def client(target, authority):
    options = [("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)]
    if authority:
        options.append(("grpc.default_authority", authority))
    channel = grpc.insecure_channel(target, options=options)
    method = lambda name: "/%s/%s" % (SERVICE, name)
    unary = channel.unary_unary(method("Echo"))
    results = {}
    results["unary"] = outcome(lambda: unary(b"hello mesh", timeout=10).decode())
    for code in grpc.StatusCode:
        if code == grpc.StatusCode.OK:
            continue
        message = "%s: %s" % (code.name, NON_ASCII)
        results["status_%s" % code.name] = outcome(
            lambda: unary(("status:%d:%s" % (code.value[0], message)).encode(), timeout=10))

    def metadata_call():
        response, call = unary.with_call(b"meta", metadata=(("x-request", "r1"),), timeout=10)
        initial = sorted([k, repr(v)] for k, v in call.initial_metadata() if k.startswith("x-"))
        trailing = sorted([k, repr(v)] for k, v in call.trailing_metadata() if k.startswith("x-"))
        return {"response": response.decode(), "initial": initial, "trailing": trailing}

    results["metadata"] = outcome(metadata_call)
    results["empty"] = outcome(lambda: len(unary(b"empty", timeout=10)))
    results["big_response"] = outcome(lambda: len(unary(b"big", timeout=30)))
    results["big_request"] = outcome(lambda: len(unary(b"y" * (4 * 1024 * 1024), timeout=30)))
    results["deadline"] = outcome(lambda: unary(b"sleep:3", timeout=0.5).decode())
    results["unimplemented"] = outcome(lambda: channel.unary_unary(method("Nope"))(b"x", timeout=10).decode())
    results["server_stream"] = outcome(
        lambda: [len(ms), ms[0].decode(), ms[-1].decode()] if (ms := list(
            channel.unary_stream(method("Count"))(b"1000", timeout=30))) else [])
    results["client_stream"] = outcome(
        lambda: channel.stream_unary(method("Total"))(iter([b"a" * 10] * 100), timeout=10).decode())
    results["bidi"] = outcome(
        lambda: [m.decode() for m in channel.stream_stream(method("Chat"))(iter([b"1", b"2", b"3"]), timeout=10)])

    def cancel_after_first():
        call = channel.unary_stream(method("Stall"))(b"", timeout=20)
        first = next(call).decode()
        call.cancel()
        return [first, unary_cancel_check()]

    def unary_cancel_check():
        return channel.unary_unary(method("WasCancelled"))(b"", timeout=10).decode()

    results["cancel"] = outcome(cancel_after_first)
    print(json.dumps(results, sort_keys=True), flush=True)


def flaky_client(target, authority, count):
    """Calls Flaky `count` times; prints how many succeeded."""
    channel = grpc.insecure_channel(target, options=[("grpc.default_authority", authority)])
    call = channel.unary_unary("/%s/Flaky" % SERVICE)
    ok = 0
    for _ in range(count):
        try:
            call(b"x", timeout=10)
            ok += 1
        except grpc.RpcError:
            pass
    print(ok, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    elif sys.argv[1] == "flaky":
        flaky_client(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        client(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
