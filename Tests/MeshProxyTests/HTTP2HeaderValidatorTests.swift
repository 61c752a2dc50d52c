import MeshCore
import MeshDiscovery
@testable import MeshProxy
import NIOHPACK
import Testing
import _MeshTestSupport

/// The proxy's HTTP/2 connections validate the header blocks they receive with ``HTTP2HeaderValidator``
/// (swift-nio-http2's own validation is off, since it also validated every block the proxy sends).
@Suite("HTTP/2 header blocks received")
struct HTTP2HeaderValidatorTests {
  static func block(_ fields: [(String, String)]) -> HPACKHeaders { HPACKHeaders(fields) }
  static let request = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "backend")]

  @Test("valid requests, responses and trailers pass")
  func valid() {
    #expect(HTTP2HeaderValidator.check(Self.block(Self.request + [("te", "trailers"), ("x-a", "b c\t")]), as: .request) == .valid(finalResponse: false))
    #expect(HTTP2HeaderValidator.check(Self.block([(":method", "CONNECT"), (":authority", "backend:443")]), as: .request) == .valid(finalResponse: false))
    #expect(HTTP2HeaderValidator.check(Self.block([(":status", "200"), ("grpc-status", "0")]), as: .response) == .valid(finalResponse: true))
    #expect(HTTP2HeaderValidator.check(Self.block([(":status", "103"), ("link", "</a>")]), as: .response) == .valid(finalResponse: false))
    #expect(HTTP2HeaderValidator.check(Self.block([("grpc-status", "0"), ("grpc-message", "")]), as: .trailers) == .valid(finalResponse: false))
    #expect(HTTP2HeaderValidator.check(Self.block([(":status", "200"), ("x-utf8", "caf\u{e9}")]), as: .response) == .valid(finalResponse: true))
  }

  @Test("byte by byte: a name is a lowercase tchar, a value has no NUL, CR or LF, a pseudo-header's value no space, control byte or DEL")
  func bytes() {
    let lowercaseTchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz".utf8)
    for byte in UInt8.min...UInt8.max {
      // Each byte alone, and in the middle of valid ones (every position of a vector the compiler may use).
      for (prefix, suffix) in [("", ""), ("content-", "-type-of-a-longer-name-than-sixteen")] {
        let name = String(decoding: Array(prefix.utf8) + [byte] + Array(suffix.utf8), as: UTF8.self)
        // Bytes of 128 and more decode as U+FFFD, which is not a token either.
        #expect(HTTP2HeaderValidator.isToken(name) == lowercaseTchar.contains(byte), "name byte \(byte)")
        let value = String(decoding: Array("a b".utf8) + [byte] + Array(" c d e f g h i j k l m n o p q".utf8), as: UTF8.self)
        #expect(HTTP2HeaderValidator.isValidValue(value) == ![0, 0x0A, 0x0D].contains(byte), "value byte \(byte)")
        let pseudo = String(decoding: Array("/a".utf8) + [byte] + Array("/b/c/d/e/f/g/h/i/j/k/l/m/n/o".utf8), as: UTF8.self)
        #expect(HTTP2HeaderValidator.isValidPseudoValue(pseudo) == (byte > 0x20 && byte != 0x7F), "pseudo byte \(byte)")
      }
    }
    // Values are read eight bytes at a time: every byte near those refused, at every position of values of
    // every length up to three words and a tail.
    for length in 1...27 {
      for position in 0..<length {
        for byte: UInt8 in [0, 0x01, 0x09, 0x0A, 0x0B, 0x0D, 0x0E, 0x1F, 0x20, 0x21, 0x7E, 0x7F, 0x80, 0xFF] {
          var bytes = Array(repeating: UInt8(ascii: "v"), count: length)
          bytes[position] = byte
          let value = String(decoding: bytes, as: UTF8.self)
          #expect(
            HTTP2HeaderValidator.isValidValue(value) == ![0, 0x0A, 0x0D].contains(byte), "byte \(byte) at \(position) of \(length)")
          #expect(
            HTTP2HeaderValidator.isValidPseudoValue(value) == (byte > 0x20 && byte != 0x7F), "pseudo byte \(byte) at \(position) of \(length)")
        }
      }
    }
    #expect(HTTP2HeaderValidator.isValidValue(""))
    #expect(HTTP2HeaderValidator.isToken("x-forwarded-for"))
    #expect(!HTTP2HeaderValidator.isToken("X-Forwarded-For"))
    #expect(!HTTP2HeaderValidator.isToken("caf\u{e9}"))
  }

  /// The names the rules single out are told apart by their bytes; names one byte away, or of another length,
  /// are ordinary fields, and pass.
  @Test("the singled-out names by their bytes, and names one byte away from them")
  func regularFields() {
    let expected: [(String, HTTP2HeaderValidator.RegularField)] = [
      ("te", .te), ("host", .host), ("content-length", .contentLength), ("connection", .connectionSpecific),
      ("keep-alive", .connectionSpecific), ("proxy-connection", .connectionSpecific),
      ("transfer-encoding", .connectionSpecific), ("upgrade", .connectionSpecific), ("Host", .notToken),
      ("ta", .other), ("hosts", .other), ("hose", .other), ("content-lengtg", .other), ("connectioN", .notToken),
      ("keep-alivf", .other), ("proxy-connectiom", .other), ("transfer-encodinf", .other), ("upgradf", .other),
      ("x-te", .other), ("", .other), (LoopGuard.headerName, .meshVia),
      (MeshHeaders.origProto.lowercased(), .meshOrigProto), ("swiftmesh-vib", .other), ("swiftmesh-orig-protp", .other),
    ]
    for (name, field) in expected {
      #expect(HTTP2HeaderValidator.regularField(name) == field, "\(name)")
    }
    let near = ["ta", "hose", "content-lengtg", "keep-alivf", "proxy-connectiom", "transfer-encodinf", "upgradf"]
    for name in near {
      #expect(HTTP2HeaderValidator.check(Self.block(Self.request + [(name, "x")]), as: .request) == .valid(finalResponse: false), "\(name)")
    }
    // Pseudo-header names one byte away from the five are unknown, and refused.
    for name in [":pat", ":paths", ":methox", ":statuz", ":schema", ":authoritx", ":Path"] {
      guard case .invalid = HTTP2HeaderValidator.check(Self.block([(name, "/")] + [(":method", "GET")]), as: .request) else {
        Issue.record("accepted: \(name)")
        continue
      }
    }
  }

  /// RFC 9110 8.6: digits; a list of one value repeated may be taken as that value (swift-nio-http2 did).
  @Test("content-length values: digits, or a list of one value; anything else refused")
  func contentLengthValues() {
    let values: [(String, Int?)] = [
      ("0", 0), ("1024", 1024), ("5, 5", 5), ("5,5", 5), ("7 ,\t7", 7), ("9223372036854775807", Int.max),
      ("", nil), ("+5", nil), ("-1", nil), ("5 5", nil), ("5, 6", nil), ("5,", nil), (",5", nil), ("0x10", nil),
      ("9223372036854775808", nil), ("\u{0665}", nil),
    ]
    for (value, length) in values {
      #expect(HTTP2HeaderValidator.contentLength(value) == length, "'\(value)'")
    }
    guard case .valid(let block) = HTTP2HeaderValidator.read(Self.block(Self.request + [("content-length", "12, 12")]), as: .request)
    else {
      Issue.record("a list of one value refused")
      return
    }
    #expect(block.contentLength == 12)
  }

  @Test("every rule of RFC 9113 8.2 and 8.3 refuses what breaks it")
  func invalid() {
    let cases: [(HTTP2HeaderValidator.Kind, [(String, String)], String)] = [
      (.request, Self.request + [("x-split", "a\rb")], "CR in a value"),
      (.request, Self.request + [("x-split", "a\nb")], "LF in a value"),
      (.request, Self.request + [("x-nul", "a\u{0}b")], "NUL in a value"),
      (.request, Self.request + [("X-Upper", "a")], "uppercase name"),
      (.request, Self.request + [("x bad", "a")], "space in a name"),
      (.request, Self.request + [("", "a")], "empty name"),
      (.request, Self.request + [("x-caf\u{e9}", "a")], "non-ASCII name"),
      (.request, Self.request + [("connection", "close")], "connection"),
      (.request, Self.request + [("keep-alive", "5")], "keep-alive"),
      (.request, Self.request + [("proxy-connection", "x")], "proxy-connection"),
      (.request, Self.request + [("transfer-encoding", "chunked")], "transfer-encoding"),
      (.request, Self.request + [("upgrade", "h2c")], "upgrade"),
      (.request, Self.request + [("te", "gzip")], "te other than trailers"),
      (.request, [(":method", "GET"), ("x-a", "b"), (":scheme", "http"), (":path", "/")], "pseudo after regular"),
      (.request, [(":method", "GET"), (":scheme", "http")], "no :path"),
      (.request, [(":method", "GET"), (":scheme", "http"), (":path", "")], "empty :path"),
      (.request, Self.request + [(":method", "POST")], "duplicate :method"),
      (.request, Self.request + [(":status", "200")], ":status in a request"),
      (.request, Self.request + [(":protocol", "websocket")], "extended CONNECT"),
      (.request, Self.request + [(":foo", "x")], "unknown pseudo-header"),
      (.request, [(":method", "GET"), (":scheme", "http"), (":path", "/a b")], "space in :path"),
      (.request, [(":method", "CONNECT"), (":authority", "backend:443"), (":path", "/")], "CONNECT with :path"),
      (.request, [(":method", "CONNECT")], "CONNECT without :authority"),
      (.response, [("x-a", "b")], "no :status"),
      (.response, [(":status", "200"), (":path", "/")], ":path in a response"),
      (.response, [(":status", "200"), ("x-split", "a\r\nx-injected: 1")], "CRLF in a response value"),
      (.trailers, [(":status", "200")], "pseudo-header in trailers"),
      (.trailers, [("grpc-status", "0\r\n")], "CRLF in trailers"),
    ]
    for (kind, fields, what) in cases {
      guard case .invalid = HTTP2HeaderValidator.check(Self.block(fields), as: kind) else {
        Issue.record("accepted: \(what)")
        continue
      }
    }
  }

  /// A client (python-h2, which sends what it is told when its own validation is off) and an h2c application
  /// that answers each path with a chosen header, on either side of one proxy.
  @Test("end to end: a malformed request is reset (PROTOCOL_ERROR) and never reaches the app; a malformed response gets 502")
  func endToEnd() async throws {
    let app = """
      loose = dict(validate_outbound_headers=False, normalize_outbound_headers=False, validate_inbound_headers=False)
      seen = []
      def serve(conn):
          c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, **loose))
          c.initiate_connection(); conn.sendall(c.data_to_send())
          while True:
              data = conn.recv(65535)
              if not data: return
              for ev in c.receive_data(data):
                  if isinstance(ev, h2.events.RequestReceived):
                      path = dict(ev.headers)[b":path"].decode()
                      seen.append(path)
                      extra = {"/cr": (b"x-split", b"a\\rb"), "/upper": (b"X-Upper", b"a"),
                               "/conn": (b"connection", b"close")}.get(path, (b"x-fine", b"ok"))
                      c.send_headers(ev.stream_id, [(b":status", b"200"), extra])
                      c.send_data(ev.stream_id, b"ok", end_stream=True)
              conn.sendall(c.data_to_send())
      """
    let client = """
      def request(path, extra, fields=None):
          s = socket.create_connection(("127.0.0.1", proxy), timeout=10)
          c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, **loose))
          c.initiate_connection()
          base = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", path.encode()),
                  (b":authority", b"backend.default.svc.cluster.local")]
          c.send_headers(1, fields if fields is not None else base + extra, end_stream=True)
          s.sendall(c.data_to_send())
          result = None
          while result is None:
              data = s.recv(65535)
              if not data: result = "closed"; break
              for ev in c.receive_data(data):
                  if isinstance(ev, h2.events.ResponseReceived): result = "status " + dict(ev.headers)[b":status"].decode()
                  elif isinstance(ev, h2.events.StreamReset): result = "reset %d" % ev.error_code
                  elif isinstance(ev, h2.events.ConnectionTerminated): result = "goaway %d" % ev.error_code
              s.sendall(c.data_to_send())
          s.close()
          print(path, result, flush=True)
      request("/good", [])
      request("/req-cr", [(b"x-split", b"a\\rb")])
      request("/req-upper", [(b"X-Upper", b"a")])
      request("/req-conn", [(b"connection", b"close")])
      request("/req-te", [(b"te", b"gzip")])
      request("/req-order", None, [(b":method", b"GET"), (b"x-a", b"b"), (b":scheme", b"http"), (b":path", b"/req-order"),
                                  (b":authority", b"backend.default.svc.cluster.local")])
      request("/cr", [])
      request("/upper", [])
      request("/conn", [])
      print("app saw", " ".join(seen), flush=True)
      """
    let lines = try await Self.runThroughOneProxy(app: app, client: client, label: "test.h2headers")
    func result(_ path: String) -> String? { Self.result(path, in: lines) }
    #expect(result("/good") == "status 200", "\(lines)")
    for path in ["/req-cr", "/req-upper", "/req-conn", "/req-te", "/req-order"] {
      #expect(result(path) == "reset 1", "\(path): PROTOCOL_ERROR expected; \(lines)")
    }
    for path in ["/cr", "/upper", "/conn"] {
      #expect(result(path) == "status 502", "\(path): \(lines)")
    }
    let saw = lines.first { $0.hasPrefix("app saw") } ?? ""
    #expect(!saw.contains("/req-"), "a malformed request reached the application: \(saw)")
    #expect(saw.contains("/good") && saw.contains("/cr"), "\(saw)")
  }

  /// A client (python-h2, its own checks off) sends bodies that do not add up to their `content-length`
  /// through one proxy to an h2c application that records what each stream brought: each such stream is
  /// reset with PROTOCOL_ERROR and never reaches the application as a whole request; the bytes past a declared
  /// length never reach it at all.
  @Test("end to end: a request whose DATA does not add up to its content-length is reset, and never reaches the app whole")
  func bodyLengthEndToEnd() async throws {
    let app = """
      seen = []
      def serve(conn):
          c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, validate_inbound_headers=False))
          c.initiate_connection(); conn.sendall(c.data_to_send())
          paths, bodies = {}, {}
          while True:
              data = conn.recv(65535)
              if not data: return
              for ev in c.receive_data(data):
                  if isinstance(ev, h2.events.RequestReceived):
                      paths[ev.stream_id] = dict(ev.headers)[b":path"].decode(); bodies[ev.stream_id] = b""
                  elif isinstance(ev, h2.events.DataReceived):
                      bodies[ev.stream_id] += ev.data
                      c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                  elif isinstance(ev, h2.events.StreamEnded):
                      seen.append(paths[ev.stream_id] + ":" + bodies[ev.stream_id].decode())
                      c.send_headers(ev.stream_id, [(b":status", b"200")])
                      c.send_data(ev.stream_id, b"ok", end_stream=True)
                  elif isinstance(ev, h2.events.StreamReset):
                      seen.append(paths.get(ev.stream_id, "?") + ":reset:" + bodies.get(ev.stream_id, b"").decode())
              conn.sendall(c.data_to_send())
      """
    let client = """
      s = socket.create_connection(("127.0.0.1", proxy), timeout=10)
      loose = dict(validate_outbound_headers=False, normalize_outbound_headers=False, validate_inbound_headers=False)
      c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, **loose))
      c.initiate_connection(); s.sendall(c.data_to_send())
      def request(stream, path, length, chunks):
          fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
                    (b":authority", b"backend.default.svc.cluster.local")]
          if length is not None: fields.append((b"content-length", length.encode()))
          c.send_headers(stream, fields)
          for i, chunk in enumerate(chunks):
              c.send_data(stream, chunk, end_stream=(i == len(chunks) - 1))
          s.sendall(c.data_to_send())
          result, body = None, b""
          while result is None:
              data = s.recv(65535)
              if not data: result = "closed"; break
              for ev in c.receive_data(data):
                  if getattr(ev, "stream_id", stream) != stream: continue
                  if isinstance(ev, h2.events.DataReceived):
                      body += ev.data
                      c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                  elif isinstance(ev, h2.events.StreamEnded): result = "body " + body.decode()
                  elif isinstance(ev, h2.events.StreamReset): result = "reset %d" % ev.error_code
                  elif isinstance(ev, h2.events.ConnectionTerminated): result = "goaway %d" % ev.error_code
              s.sendall(c.data_to_send())
          print(path, result, flush=True)
      request(1, "/over", "3", [b"abc", b"POST /smuggled HTTP/1.1\\r\\ncontent-length: 0\\r\\n\\r\\n"])
      request(3, "/under", "20", [b"abc"])
      request(5, "/good", "3", [b"a", b"bc"])
      request(7, "/chunked", None, [b"x", b"yz"])
      print("app saw", " | ".join(seen), flush=True)
      """
    let lines = try await Self.runThroughOneProxy(app: app, client: client, label: "test.h2length")
    func result(_ path: String) -> String? { Self.result(path, in: lines) }
    #expect(result("/over") == "reset 1", "\(lines)")
    #expect(result("/under") == "reset 1", "\(lines)")
    #expect(result("/good") == "body ok", "\(lines)")
    #expect(result("/chunked") == "body ok", "\(lines)")
    let saw = lines.first { $0.hasPrefix("app saw") } ?? ""
    #expect(!saw.contains("smuggled"), "bytes past a content-length reached the application: \(saw)")
    // The bytes within a length may have gone on (a proxy streams a body), but neither stream ended whole.
    #expect(!saw.contains("/over:abc") && !saw.contains("/under:abc"), "a body that broke its length ended whole: \(saw)")
    #expect(saw.contains("/good:abc") && saw.contains("/chunked:xyz"), "\(saw)")
  }

  /// Runs a python-h2 application (`app`: a `serve(conn)` for each connection, and what it saw in `seen`) and a
  /// `client` of one proxy whose `backend.default.svc.cluster.local:80` is that application. The client finds
  /// the proxy's outbound port in `proxy`, prints `PATH RESULT` lines, and ends with `app saw ...`; returns
  /// what the script printed.
  static func runThroughOneProxy(app: String, client: String, label: String) async throws -> [String] {
    let script = """
      import socket, sys, threading
      import h2.config, h2.connection, h2.events
      \(app)
      listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(8)
      def accept():
          while True:
              conn, _ = listener.accept()
              threading.Thread(target=serve, args=(conn,), daemon=True).start()
      threading.Thread(target=accept, daemon=True).start()
      print("port", listener.getsockname()[1], flush=True)
      proxy = int(sys.stdin.readline())
      \(client)
      """
    let python = try BackgroundProcess("/usr/bin/python3", ["-c", script])
    defer { python.terminate() }
    try await python.waitForOutput(containing: "port ")
    let appPort = try #require(
      python.printed.split(separator: "\n").first { $0.hasPrefix("port ") }.flatMap { Int($0.dropFirst(5)) })
    let backend = try Authority("backend.default.svc.cluster.local:80")
    let discovery = InMemoryDiscovery([
      backend: EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: appPort))])
    ])
    try await withSingleProxy(discovery: discovery, label: label) { proxy in
      try python.write("\(try await proxy.boundPorts().outbound)\n")
      try await python.waitForOutput(containing: "app saw", timeout: .seconds(60))
    }
    return python.printed.split(separator: "\n").map(String.init)
  }

  /// The result a `PATH RESULT` line gave `path`.
  static func result(_ path: String, in lines: [String]) -> String? {
    lines.first { $0.hasPrefix(path + " ") }.map { String($0.dropFirst(path.count + 1)) }
  }
}
