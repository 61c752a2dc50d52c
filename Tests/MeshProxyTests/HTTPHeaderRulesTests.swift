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
}
