import Foundation
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshProxy
import NIOCore
import NIOEmbedded
import Testing
import _MeshTestSupport

@testable import MeshProxy

@Suite("Opaque TCP and protocol detection, in process")
struct OpaqueTests {
  @Test("the opaque header: written and parsed back; a prefix waits; bad ones are refused with a reason")
  func header() throws {
    let header = OpaqueHeader(targetPort: 6379, authority: try Authority("db.default.svc.cluster.local:6379"))
    var bytes = header.encoded()
    bytes.writeString("PING\r\n")
    #expect(OpaqueHeader.parse(bytes) == .header(header, length: header.description.utf8.count + 2))
    #expect(OpaqueHeader.parse(ByteBuffer(string: "swiftmesh-opa")) == .incomplete)
    #expect(OpaqueHeader.parse(ByteBuffer(string: "swiftmesh-opaque/1 80")) == .incomplete)
    #expect(OpaqueHeader.parse(ByteBuffer(string: "GET / HTTP/1.1\r\n")) == .notHeader)
    for bad in ["swiftmesh-opaque/1 0\r\n", "swiftmesh-opaque/1 80 not-an-authority\r\n", "swiftmesh-opaque/1 80\n"] {
      guard case .invalid = OpaqueHeader.parse(ByteBuffer(string: bad)) else {
        Issue.record("accepted \(bad.debugDescription)")
        continue
      }
    }
    let long = "swiftmesh-opaque/1 80 " + String(repeating: "a", count: 400)
    guard case .invalid = OpaqueHeader.parse(ByteBuffer(string: long)) else {
      Issue.record("accepted a header without an end of line")
      return
    }
  }

  @Test("an HTTP/1 request line is told from other bytes, a prefix of one waits")
  func requestLine() {
    let cases: [(String, ProtocolDetector.Verdict)] = [
      ("GET / HTTP/1.1\r\n", .yes), ("POST /a?b=c HTTP/1.0\r\nhost: x\r\n", .yes), ("GET / HTTP/1.1\n", .yes),
      ("", .maybe), ("GE", .maybe), ("GET /index", .maybe), ("GET / HTTP/1.", .maybe), ("OPTIONS * HTTP/1.1\r", .maybe),
      ("*1\r\n$4\r\nPING\r\n", .no), ("\u{16}\u{03}\u{01}", .no), ("GET  / HTTP/1.1\r\n", .no), ("GET / HTTP/2.0\r\n", .no),
      ("SSH-2.0-OpenSSH_9.2\r\n", .no), ("GET / HTTP/1.1 \r\n", .no),
    ]
    for (text, verdict) in cases {
      #expect(ProtocolDetector.http1RequestLine(ByteBuffer(string: text), limit: 16 * 1024) == verdict, "\(text.debugDescription)")
    }
    let longTarget = "GET /" + String(repeating: "x", count: 20_000)
    #expect(ProtocolDetector.http1RequestLine(ByteBuffer(string: longTarget), limit: 16 * 1024) == .yes)
  }

  @Test("a channel that is not a TCP socket has no original destination to read")
  func originalDestinationUnreadable() throws {
    let channel = EmbeddedChannel()
    let lookup = try OriginalDestination.lookup(channel).wait()
    guard case .unreadable(let reason) = lookup else {
      Issue.record("got \(lookup)")
      return
    }
    #expect(reason.contains("not"), "\(reason)")
  }

  @Test("PortSet parses lists and ranges and refuses what is not a port")
  func portSet() throws {
    let ports = try PortSet(parsing: " 25, 587 ,4000-4100")
    #expect(ports.contains(25) && ports.contains(587) && ports.contains(4050) && !ports.contains(4101))
    #expect(ports.description == "25,587,4000-4100")
    #expect(try PortSet(parsing: "").isEmpty)
    for bad in ["80,http", "0", "70000", "100-50", "1-2-3"] {
      #expect(throws: MeshError.self, "\(bad)") { try PortSet(parsing: bad) }
    }
    #expect(PortSet.defaultOpaquePorts.contains(6379) && !PortSet.defaultOpaquePorts.contains(80))
  }

  @Test("transparent mode: a connection that came straight to the outbound port is served by its authority")
  func directConnectionInTransparentMode() async throws {
    let app = try await TestHTTPServer(name: "app")
    let discovery = InMemoryDiscovery()
    try await withSingleProxy(discovery: discovery, configure: { $0.transparent = true }) { proxy in
      let port = try await proxy.boundPorts().outbound
      let out = try await Subprocess.run(
        "curl", ["-sS", "-m", "10", "-H", "host: 127.0.0.1:\(app.port)", "http://127.0.0.1:\(port)/"])
      #expect(out.stdout == "app\n", "\(out)")
    }
    await app.stop()
  }
}
