import Foundation
@testable import MeshProxy
import NIOCore
import NIOHPACK
import Testing
import _MeshTestSupport

/// The proxy's HPACK decoder, judged by RFC 7541's own examples (appendix C.2 to C.6, with and without Huffman
/// coding), by the blocks python's `hpack` (python-h2's) and the proxy's encoder write over a sequence that
/// fills, evicts and resizes the table, and by broken blocks, each refused with its reason.
@Suite("HPACK block decoder")
struct HPACKBlockDecoderTests {
  private static func block(_ hex: String) -> ByteBuffer { ByteBuffer(bytes: hexBytes(hex)) }

  private static func fields(_ headers: HPACKHeaders) -> [String] {
    headers.map { "\($0.name): \($0.value)" }
  }

  private static func table(_ decoder: HPACKBlockDecoder) -> [String] {
    decoder.dynamicEntries.map { "\($0.name): \($0.value)" }
  }

  @Test("one field of each representation, with its indexing: RFC 7541 C.2")
  func representations() throws {
    var decoder = HPACKBlockDecoder()
    let literal = try decoder.decode(Self.block("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"))
    #expect(Self.fields(literal) == ["custom-key: custom-header"])
    #expect(literal.map(\.indexable) == [.indexable])
    #expect(decoder.tableLength == 55)

    var other = HPACKBlockDecoder()
    let notIndexed = try other.decode(Self.block("040c 2f73 616d 706c 652f 7061 7468"))
    #expect(Self.fields(notIndexed) == [":path: /sample/path"])
    #expect(notIndexed.map(\.indexable) == [.nonIndexable])
    let never = try other.decode(Self.block("1008 7061 7373 776f 7264 0673 6563 7265 74"))
    #expect(Self.fields(never) == ["password: secret"])
    #expect(never.map(\.indexable) == [.neverIndexed])
    #expect(other.tableLength == 0)
    #expect(Self.fields(try other.decode(Self.block("82"))) == [":method: GET"])
  }

  @Test("three requests, as they are (C.3) and Huffman-coded (C.4): the same fields and table after each")
  func requests() throws {
    let plain = ["8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d", "8286 84be 5808 6e6f 2d63 6163 6865",
                 "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"]
    let huffman = ["8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", "8286 84be 5886 a8eb 1064 9cbf",
                   "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"]
    let want = [
      [":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com"],
      [":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com", "cache-control: no-cache"],
      [":method: GET", ":scheme: https", ":path: /index.html", ":authority: www.example.com", "custom-key: custom-value"],
    ]
    for blocks in [plain, huffman] {
      var decoder = HPACKBlockDecoder()
      for (index, hex) in blocks.enumerated() {
        #expect(Self.fields(try decoder.decode(Self.block(hex))) == want[index])
        #expect(decoder.tableLength == [57, 110, 164][index])
      }
      #expect(
        Self.table(decoder) == ["custom-key: custom-value", "cache-control: no-cache", ":authority: www.example.com"])
    }
  }

  @Test("three Huffman-coded responses through a 256-byte table that evicts: RFC 7541 C.6")
  func responsesWithEviction() throws {
    var decoder = HPACKBlockDecoder()
    decoder.allow(tableSize: 256)
    let first = try decoder.decode(
      Self.block(
        """
        4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718
        63c7 8f0b 97c8 e9ae 82ae 43d3
        """))
    #expect(
      Self.fields(first) == [
        ":status: 302", "cache-control: private", "date: Mon, 21 Oct 2013 20:13:21 GMT",
        "location: https://www.example.com",
      ])
    #expect(decoder.tableLength == 222)
    let second = try decoder.decode(Self.block("4883 640e ffc1 c0bf"))
    #expect(Self.fields(second).first == ":status: 307")
    #expect(Self.fields(second).dropFirst() == Self.fields(first).dropFirst())
    #expect(decoder.tableLength == 222)
    let third = try decoder.decode(
      Self.block(
        """
        88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7
        b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07
        """))
    #expect(
      Self.fields(third) == [
        ":status: 200", "cache-control: private", "date: Mon, 21 Oct 2013 20:13:22 GMT",
        "location: https://www.example.com", "content-encoding: gzip",
        "set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
      ])
    #expect(decoder.tableLength == 215)
    #expect(
      Self.table(decoder) == [
        "set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1", "content-encoding: gzip",
        "date: Mon, 21 Oct 2013 20:13:22 GMT",
      ])
  }

  /// Another implementation's encoder: python's `hpack` Huffman-codes what it saves bytes on, tells table
  /// size changes, and keeps never-indexed fields so. One encoder for the whole sequence writes each block as
  /// a line of hex, after a line of JSON with the fields it was given.
  @Test("every block python's hpack encodes, over a sequence that fills, evicts and resizes the table")
  func pythonEncodes() async throws {
    let script = """
      import json, hpack
      encoder = hpack.Encoder()
      for round in range(80):
          if round == 20: encoder.header_table_size = 100
          if round == 30: encoder.header_table_size = 0
          if round == 35: encoder.header_table_size = 4096
          fields = [(":method", "GET" if round % 2 == 0 else "POST"), (":scheme", "https"), (":path", "/p/%d" % (round % 7)),
                    (":authority", "backend.default.svc.cluster.local"), ("user-agent", "grpc-python/1.51"),
                    ("x-trace", "t" * (round % 40) + "\\u00e9"), ("x-big", "b" * (round * 61 % 5000)),
                    hpack.NeverIndexedHeaderTuple("authorization", "Bearer %d" % (round % 3))]
          print(json.dumps([[f[0], f[1], "never" if isinstance(f, hpack.NeverIndexedHeaderTuple) else ""] for f in fields]))
          print(encoder.encode(fields, huffman=round % 3 != 0).hex())
      """
    let out = try await Subprocess.run("/usr/bin/python3", ["-c", script])
    try #require(out.status == 0, "\(out)")
    let lines = out.stdout.split(separator: "\n").map(String.init)
    try #require(lines.count == 160)
    var decoder = HPACKBlockDecoder(maxHeaderListSize: 1 << 16)
    for round in 0..<80 {
      let sent = try #require(try JSONSerialization.jsonObject(with: Data(lines[2 * round].utf8)) as? [[String]])
      let block = Self.block(lines[2 * round + 1])
      let headers = try decoder.decode(block)
      #expect(headers.map { [$0.name, $0.value] } == sent.map { Array($0.prefix(2)) }, "round \(round)")
      #expect(headers.map { $0.indexable == .neverIndexed ? "never" : "" } == sent.map { $0[2] }, "round \(round)")
      if round >= 30 && round < 35 { #expect(decoder.tableLength == 0, "round \(round)") }
      #expect(decoder.tableLength <= decoder.tableSize, "round \(round)")
    }
  }

  @Test("every block the proxy's own encoder writes while its table fills, evicts and is resized")
  func ownEncoderRoundTrip() throws {
    var encoder = HPACKBlockEncoder(preferredTableSize: 512)
    var decoder = HPACKBlockDecoder()
    for round in 0..<60 {
      if round == 20 { encoder.peerAllows(tableSize: 100) }
      if round == 30 { encoder.peerAllows(tableSize: 4096) }
      var headers: HPACKHeaders = [
        ":method": round % 2 == 0 ? "GET" : "POST", ":scheme": "http", ":path": "/p/\(round % 5)",
        ":authority": "backend.default.svc.cluster.local", "x-trace": String(repeating: "t", count: round % 40),
      ]
      headers.add(name: "authorization", value: "Bearer \(round % 3)", indexing: .neverIndexed)
      var buffer = ByteBuffer()
      encoder.encode(headers, into: &buffer)
      let decoded = try decoder.decode(buffer)
      #expect(decoded.map { [$0.name, $0.value] } == headers.map { [$0.name, $0.value] }, "round \(round)")
      #expect(decoded.last?.indexable == .neverIndexed)
      #expect(decoder.tableLength == encoder.tableLength, "round \(round)")
    }
  }

  @Test("a block of hundreds of fields, then small blocks again: each decodes whole")
  func largeThenSmall() throws {
    var encoder = HPACKBlockEncoder()
    var decoder = HPACKBlockDecoder(maxHeaderListSize: 1 << 16)
    for count in [300, 3, 300, 9] {
      let headers = HPACKHeaders((0..<count).map { ("x-field-\($0 % 50)", "value \($0)") })
      var buffer = ByteBuffer()
      encoder.encode(headers, into: &buffer)
      let decoded = try decoder.decode(buffer)
      #expect(decoded.map { [$0.name, $0.value] } == headers.map { [$0.name, $0.value] }, "\(count) fields")
    }
  }

  @Test("a smaller table allowed shrinks the table at once; the entries it lost can no longer be named")
  func allowedShrinks() throws {
    var decoder = HPACKBlockDecoder()
    _ = try decoder.decode(Self.block("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"))
    #expect(Self.fields(try decoder.decode(Self.block("be"))) == [":authority: www.example.com"])
    decoder.allow(tableSize: 0)
    #expect(decoder.tableLength == 0)
    #expect(throws: HPACKBlockDecoder.DecodingError.self) { try decoder.decode(Self.block("be")) }
    // An update above what is allowed now is refused; one within it is taken.
    #expect(throws: HPACKBlockDecoder.DecodingError("a dynamic table size of 4096, above the 0 allowed")) {
      try decoder.decode(Self.block("3fe11f"))
    }
    decoder.allow(tableSize: 4096)
    _ = try decoder.decode(Self.block("3fe11f 8286"))
    #expect(decoder.tableSize == 4096)
  }

  @Test(
    "a broken block is refused with its reason",
    arguments: [
      ("80", "index 0, which names no field"),
      ("be", "index 62, beyond the 61 entries of the tables"),
      ("3fe926", "a dynamic table size of 5000, above the 4096 allowed"),
      ("8220", "a dynamic table size update after a field"),
      ("202020", "more than two dynamic table size updates"),
      ("ffffffffffff01", "an integer of more than 5 bytes after its prefix"),
      ("ff80", "an integer cut short"),
      ("0405 2f", "a string of 5 bytes, beyond the 1 left in its block"),
      ("04", "a header block cut short"),
      ("0000 0161", "an empty field name"),
      ("0002 c3a9 0161", "a field name that is not ASCII"),
      ("0001 6184 ffff ffff", "EOS in a Huffman-coded string"),
      ("0001 6181 18", "Huffman padding that is not the code of EOS"),
      ("0001 6182 1fff", "Huffman padding longer than 7 bits"),
    ])
  func broken(hex: String, reason: String) {
    var decoder = HPACKBlockDecoder()
    #expect(throws: HPACKBlockDecoder.DecodingError(reason)) { try decoder.decode(Self.block(hex)) }
  }

  @Test("a header list over the size this side allows is refused")
  func listTooLarge() throws {
    var decoder = HPACKBlockDecoder(maxHeaderListSize: 100)
    // 55 bytes as SETTINGS_MAX_HEADER_LIST_SIZE counts them: one such field fits, two do not.
    let field = "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"
    #expect(try decoder.decode(Self.block(field)).count == 1)
    #expect(throws: HPACKBlockDecoder.DecodingError("a header list over 100 bytes")) {
      try decoder.decode(Self.block("be be"))
    }
  }
}
