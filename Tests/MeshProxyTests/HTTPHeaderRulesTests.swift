@testable import MeshProxy
import NIOHTTP1
import Testing

@Suite("Hop-by-hop headers")
struct HTTPHeaderRulesTests {
  @Test("every hop-by-hop header goes, in any case; te: trailers stays; the rest is untouched")
  func strips() {
    var headers = HTTPHeaders([
      ("Host", "backend"), ("Connection", "keep-alive"), ("KEEP-ALIVE", "timeout=5"), ("proxy-connection", "x"),
      ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("TE", "trailers, deflate"), ("x-connectio", "kept"),
      ("x-keep-alive", "kept"), ("content-type", "application/grpc"),
    ])
    HTTPHeaderRules.stripHopByHop(&headers)
    #expect(headers.map(\.name) == ["Host", "x-connectio", "x-keep-alive", "content-type", "te"])
    #expect(headers["te"] == ["trailers"])
  }

  @Test("te without trailers goes; an upgrade is asked of the next hop again")
  func upgrade() {
    var headers = HTTPHeaders([("te", "gzip"), ("connection", "Upgrade"), ("upgrade", "websocket"), ("a", "b")])
    HTTPHeaderRules.stripHopByHop(&headers, upgrade: "websocket")
    #expect(headers.map(\.name) == ["a", "connection", "upgrade"])
    #expect(headers["connection"] == ["upgrade"] && headers["upgrade"] == ["websocket"])
  }

  @Test("headers without any hop-by-hop header are left as they are")
  func nothingToStrip() {
    let original = HTTPHeaders([("host", "backend"), ("content-length", "2"), ("x-te", "1"), ("tE-x", "2")])
    var headers = original
    HTTPHeaderRules.stripHopByHop(&headers)
    #expect(headers == original)
    #expect(HTTPHeaderRules.HopByHop("CoNnEcTiOn") == .connection)
    #expect(HTTPHeaderRules.HopByHop("connectiom").isEmpty)
    #expect(HTTPHeaderRules.HopByHop("Te") == .te)
  }

  @Test("each hop-by-hop name is found in any case, and no name one byte off is")
  func hopByHopNames() {
    let members: [(String, HTTPHeaderRules.HopByHop)] = [
      ("te", .te), ("upgrade", .upgrade), ("connection", .connection), ("keep-alive", .keepAlive),
      ("proxy-connection", .proxyConnection), ("transfer-encoding", .transferEncoding),
    ]
    for (name, member) in members {
      #expect(HTTPHeaderRules.HopByHop(name) == member)
      #expect(HTTPHeaderRules.HopByHop(name.uppercased()) == member)
      #expect(HTTPHeaderRules.HopByHop(String(name.enumerated().map { $0 % 2 == 0 ? Character($1.uppercased()) : $1 })) == member)
      #expect(HTTPHeaderRules.isName(name.uppercased(), name) && !HTTPHeaderRules.isName(name, name + "x"))
      for offset in 0..<name.utf8.count {
        var bytes = Array(name.utf8)
        bytes[offset] ^= 0x01
        let near = String(decoding: bytes, as: UTF8.self)
        #expect(HTTPHeaderRules.HopByHop(near).isEmpty, "\(near)")
        #expect(!HTTPHeaderRules.isName(near, name), "\(near)")
      }
    }
    // Not A-Z folded: CR is not "-" (0x0D | 0x20 == 0x2D).
    #expect(HTTPHeaderRules.HopByHop("keep\ralive").isEmpty && !HTTPHeaderRules.isName("keep\ralive", "keep-alive"))
    #expect(HTTPHeaderRules.HopByHop("").isEmpty && HTTPHeaderRules.HopByHop("user-agent").isEmpty)
  }

  @Test("more names go in the same pass, in any case, every copy; which were present is told by bit")
  func removing() {
    var headers = HTTPHeaders([
      ("Host", "a"), ("SwiftMesh-Orig-Proto", "HTTP/1.1"), ("x", "1"), ("swiftmesh-via", "p1"), ("Connection", "close"),
      ("SWIFTMESH-VIA", "p2"), ("y", "2"),
    ])
    let found = HTTPHeaderRules.stripHopByHop(&headers, removing: ["swiftmesh-orig-proto", "swiftmesh-via", "absent"])
    #expect(found == 0b011)
    #expect(headers.map(\.name) == ["Host", "x", "y"])
    var none = HTTPHeaders([("host", "a"), ("swiftmesh-vi", "x")])
    #expect(HTTPHeaderRules.stripHopByHop(&none, removing: ["swiftmesh-via"]) == 0)
    #expect(none.map(\.name) == ["host", "swiftmesh-vi"])
    // Only an extra name present (no hop-by-hop header): removed too; an upgrade is asked again after it.
    var upgrade = HTTPHeaders([("swiftmesh-via", "p1"), ("b", "c")])
    HTTPHeaderRules.stripHopByHop(&upgrade, upgrade: "websocket", removing: ["swiftmesh-via"])
    #expect(upgrade.map(\.name) == ["b", "connection", "upgrade"])
  }

  @Test("isHEAD and isCONNECT agree with == for every method, RAW spellings included")
  func methodCases() {
    let methods: [HTTPMethod] = [
      .GET, .PUT, .ACL, .HEAD, .POST, .COPY, .LOCK, .MOVE, .BIND, .LINK, .PATCH, .TRACE, .MKCOL, .MERGE, .PURGE,
      .NOTIFY, .SEARCH, .UNLOCK, .REBIND, .UNBIND, .REPORT, .DELETE, .UNLINK, .CONNECT, .MSEARCH, .OPTIONS,
      .PROPFIND, .CHECKOUT, .PROPPATCH, .SUBSCRIBE, .MKCALENDAR, .MKACTIVITY, .UNSUBSCRIBE, .SOURCE,
      .RAW(value: "HEAD"), .RAW(value: "CONNECT"), .RAW(value: "head"), .RAW(value: "CONNECTX"), .RAW(value: ""),
    ]
    for method in methods {
      #expect(method.isHEAD == (method == .HEAD), "\(method)")
      #expect(method.isCONNECT == (method == .CONNECT), "\(method)")
    }
    #expect(methods.filter(\.isHEAD).count == 2 && methods.filter(\.isCONNECT).count == 2)
  }

  @Test("one pass finds host, content-type, upgrade and the mesh's fields in any case; names one byte off are not them")
  func requestHeadScan() {
    let scan = RequestHeadScan(HTTPHeaders([
      ("x-host", "a"), ("HOST", "backend:8080"), ("host", "second"), ("Content-Type", "application/grpc"),
      ("content-type", "text/plain"), ("SwiftMesh-Via", "p1"), ("swiftmesh-orig-proto", "HTTP/1.1"), ("Upgrade", "websocket"),
    ]))
    #expect(scan.host == "backend:8080")
    #expect(scan.contentType == "application/grpc")
    #expect(scan.hasUpgrade)
    #expect(scan.meshFields == [.hopHeader, .origProto])
    #expect(LoopGuard.headerName == "swiftmesh-via" && MeshHeaders.origProto == "swiftmesh-orig-proto")

    let near = RequestHeadScan(HTTPHeaders([
      ("hosts", "a"), ("hose", "b"), ("upgradf", "c"), ("content-typf", "d"), ("swiftmesh-vib", "e"),
      ("swiftmesh-orig-protp", "f"), ("x", "g"),
    ]))
    #expect(near.host == nil && near.contentType == nil && !near.hasUpgrade && near.meshFields.isEmpty)
    // A request made without a scan finds the same fields itself.
    let request = RoutedRequest(
      head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["SWIFTMESH-VIA": "p2"]),
      authority: nil, arrivedOverHTTP2: false, peerIdentity: nil)
    #expect(request.meshFields == [.hopHeader])
  }
}
