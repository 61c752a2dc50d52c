"""WebSocket peer for the proxy's upgrade tests, on Debian's python3-websockets (an independent implementation).

  ws_peer.py server                echo server on 127.0.0.1 (prints its port); paths:
                                   /close  the server closes at once with 4001 "bye"
                                   /reject the upgrade is refused with 400
                                   /last-close  sends the close code and reason of the last client close
  ws_peer.py raw                   not WebSocket: answers any request with a 101 and then the bytes
                                   "\\x00garbage\\xff" and echoes whatever comes (a relay must not parse);
                                   /silent is never answered
  ws_peer.py client URI HOST PORT  runs the checks through HOST:PORT (the proxy) with URI's Host; prints
                                   one JSON object of results
"""
import asyncio, http, json, socket, sys, threading

import websockets

last_close = {"code": None, "reason": ""}


async def handler(ws, path):
    if path == "/close":
        await ws.close(code=4001, reason="bye")
        return
    if path == "/last-close":
        await ws.send(json.dumps(last_close))
        return
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass
    finally:
        if ws.close_code is not None and path != "/last-close":
            last_close["code"] = ws.close_code
            last_close["reason"] = ws.close_reason


async def process_request(path, headers):
    if path == "/reject":
        return (http.HTTPStatus.BAD_REQUEST, [("content-type", "text/plain")], b"no upgrade here\n")
    return None


async def serve():
    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None, process_request=process_request) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()


def raw():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(listener.getsockname()[1], flush=True)

    def serve_one(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        if data.startswith(b"GET /silent "):
            # Never answers the upgrade: the proxy's route timeout must.
            conn.recv(1)
            conn.close()
            return
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: raw\r\n\r\n\x00garbage\xff")
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                break
            conn.sendall(chunk)
        conn.close()

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()


async def client(uri, host, port, idle):
    results = {}
    kw = dict(host=host, port=port, max_size=None, open_timeout=10, close_timeout=5)

    async with websockets.connect(uri + "/echo", **kw) as ws:
        ok = 0
        for i in range(1000):
            await ws.send(f"message {i}")
            if await ws.recv() == f"message {i}":
                ok += 1
        results["echo1000"] = ok
        big = bytes(range(256)) * 4096
        await ws.send(big)
        results["big1MB"] = (await ws.recv()) == big

    try:
        async with websockets.connect(uri + "/close", **kw) as ws:
            await ws.recv()
        results["serverClose"] = "no close"
    except websockets.ConnectionClosed as e:
        results["serverClose"] = [e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else None]

    async with websockets.connect(uri + "/echo", **kw) as ws:
        await ws.send("hello")
        await ws.recv()
        await ws.close(code=4003, reason="client-bye")
    await asyncio.sleep(0.3)
    async with websockets.connect(uri + "/last-close", **kw) as ws:
        results["clientClose"] = json.loads(await ws.recv())

    async def one(n):
        async with websockets.connect(uri + "/echo", **kw) as ws:
            for i in range(10):
                await ws.send(f"{n}-{i}")
                if await ws.recv() != f"{n}-{i}":
                    return False
            return True
    results["concurrent100"] = sum(await asyncio.gather(*[one(n) for n in range(100)]))

    if idle > 0:
        async with websockets.connect(uri + "/echo", **kw) as ws:
            await asyncio.sleep(idle)
            await ws.send("after idle")
            results["afterIdle"] = await ws.recv()
    print(json.dumps(results))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "server":
        asyncio.run(serve())
    elif mode == "raw":
        raw()
    else:
        idle = float(sys.argv[5]) if len(sys.argv) > 5 else 0
        asyncio.run(client(sys.argv[2], sys.argv[3], int(sys.argv[4]), idle))
