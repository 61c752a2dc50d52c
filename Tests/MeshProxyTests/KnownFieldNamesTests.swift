@testable import MeshProxy
import Testing

/// The field names a parsed head takes as literals, and their lowercase forms: found exactly as spelled, and
/// nothing else is (a name that differs in any byte, or in case anywhere but where a spelling has it, is made
/// as before).
@Suite("Known field names")
struct KnownFieldNamesTests {
  private static func name(_ text: String) -> String? {
    Array(text.utf8).withUnsafeBytes { KnownFieldNames.name($0) }
  }

  private static func lowercase(_ text: String) -> String? {
    Array(text.utf8).withUnsafeBytes { KnownFieldNames.lowercase($0) }
  }

  @Test(
    "usual and lowercase spellings are found as themselves and give their lowercase",
    arguments: [
      "TE", "Via", "Host", "Date", "ETag", "Server", "Connection", "User-Agent", "Content-Type", "Last-Modified",
      "Accept-Ranges", "Content-Length", "Accept-Encoding", "Content-Encoding", "X-Request-Id",
    ])
  func found(_ usual: String) {
    let lower = usual.lowercased()
    #expect(Self.name(usual) == usual)
    #expect(Self.name(lower) == lower)
    #expect(Self.lowercase(usual) == lower)
    #expect(Self.lowercase(lower) == lower)
  }

  @Test(
    "any other byte, case or length is not found",
    arguments: [
      "", "T", "Hosts", "Hos", "HOST", "host ", "content-Type", "Content-type", "CONTENT-LENGTH", "Content-Lengtg",
      "Content-Lfngth", "Dontent-Length", "Content-Length2", "Accept-Encodinh", "X-Forwarded-Proto", "x-custom",
      "Transfer-Encoding",
    ])
  func notFound(_ text: String) {
    #expect(Self.name(text) == nil)
    #expect(Self.lowercase(text) == nil)
  }

  /// The HTTP/2 block's names are the same with and without the table: every spelling, and the near misses.
  @Test("lowercased names are the same whether or not the table knows them")
  func lowercasedAgrees() {
    for text in ["Server", "server", "Content-Type", "content-type", "CONTENT-TYPE", "X-Custom", "x-custom", "ETag"] {
      #expect(HTTP2Translation.lowercased(text) == text.lowercased(), "\(text)")
    }
  }

  /// A head's names keep the case they arrived in, known or not; values are never taken from the table.
  @Test("a parsed head keeps each name as it arrived")
  func parsedHead() throws {
    let head = "Server: nginx\r\ncontent-type: text/plain\r\nX-Custom: Date\r\nDate: Date\r\nHOST: h\r\n\r\n"
    var fields = HTTP1Grammar.Fields()
    try Array(head.utf8).withUnsafeBytes { try HTTP1Grammar.parseFields($0, from: 0, into: &fields) }
    let parsed = fields.headers.map { "\($0.0)=\($0.1)" }
    #expect(parsed == ["Server=nginx", "content-type=text/plain", "X-Custom=Date", "Date=Date", "HOST=h"])
  }
}
