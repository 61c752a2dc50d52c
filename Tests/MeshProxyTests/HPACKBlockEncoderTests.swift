import Foundation
@testable import MeshProxy
import NIOCore
import NIOHPACK
import Testing
import _MeshTestSupport

/// The proxy's HPACK encoder, judged byte for byte by RFC 7541's own examples without Huffman coding
/// (appendices C.1, C.3 and C.5), and decoded by swift-nio-hpack's decoder and by python's `hpack` (python-h2's)
/// over blocks that fill, evict and resize the dynamic table.
@Suite("HPACK block encoder")
struct HPACKBlockEncoderTests {
  private static func bytes(_ hex: String) -> [UInt8] { hexBytes(hex) }

  private static func block(_ encoder: inout HPACKBlockEncoder, _ fields: [(String, String)]) -> [UInt8] {
    var buffer = ByteBuffer()
    encoder.startBlock(into: &buffer)
    for (name, value) in fields { encoder.append(name: name, value: value, into: &buffer) }
    return Array(buffer.readableBytesView)
  }

  @Test("integers with a prefix: RFC 7541 C.1")
  func integers() {
    var buffer = ByteBuffer()
    HPACKBlockEncoder.writeInteger(10, prefix: 5, flags: 0, into: &buffer)
    HPACKBlockEncoder.writeInteger(1337, prefix: 5, flags: 0, into: &buffer)
    HPACKBlockEncoder.writeInteger(42, prefix: 8, flags: 0, into: &buffer)
    HPACKBlockEncoder.writeInteger(31, prefix: 5, flags: 0xE0, into: &buffer)
    #expect(Array(buffer.readableBytesView) == [0x0A, 0x1F, 0x9A, 0x0A, 0x2A, 0xFF, 0x00])
  }

  @Test("three requests on one connection: RFC 7541 C.3, byte for byte, and the table after each")
  func requests() {
    var encoder = HPACKBlockEncoder()
    let first = Self.block(
      &encoder, [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")])
    #expect(first == Self.bytes("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"))
    #expect(encoder.tableLength == 57)

    let second = Self.block(
      &encoder,
      [
        (":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
      ])
    #expect(second == Self.bytes("8286 84be 5808 6e6f 2d63 6163 6865"))
    #expect(encoder.tableLength == 110)

    let third = Self.block(
      &encoder,
      [
        (":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
      ])
    #expect(third == Self.bytes("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"))
    #expect(encoder.tableLength == 164)
    #expect(
      encoder.dynamicEntries.map { "\($0.name): \($0.value)" } == [
        "custom-key: custom-value", "cache-control: no-cache", ":authority: www.example.com",
      ])
  }

  @Test("three responses through a 256-byte table that evicts: RFC 7541 C.5, byte for byte")
  func responsesWithEviction() {
    var encoder = HPACKBlockEncoder()
    encoder.peerAllows(tableSize: 256)
    let first = Self.block(
      &encoder,
      [
        (":status", "302"), ("cache-control", "private"), ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
      ])
    // The new size is told first (001 + 256 with a 5-bit prefix), then C.5.1.
    #expect(
      first
        == Self.bytes(
          """
          3fe1 01
          4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32
          3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d
          """))
    #expect(encoder.tableLength == 222)

    let second = Self.block(
      &encoder,
      [
        (":status", "307"), ("cache-control", "private"), ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
      ])
    #expect(second == Self.bytes("4803 3330 37c1 c0bf"))
    #expect(encoder.tableLength == 222)

    let third = Self.block(
      &encoder,
      [
        (":status", "200"), ("cache-control", "private"), ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", "https://www.example.com"), ("content-encoding", "gzip"),
        ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
      ])
    #expect(
      third
        == Self.bytes(
          """
          88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970
          7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61
          6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31
          """))
    #expect(encoder.tableLength == 215)
    #expect(
      encoder.dynamicEntries.map(\.name) == ["set-cookie", "content-encoding", "date"])
  }

  @Test("a field never to be indexed stays a literal of that kind and out of the table; one too large for it too")
  func neverIndexedAndTooLarge() throws {
    var encoder = HPACKBlockEncoder(preferredTableSize: 128)
    var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
    var headers = HPACKHeaders()
    headers.add(name: "authorization", value: "Bearer secret", indexing: .neverIndexed)
    headers.add(name: ":method", value: "GET", indexing: .neverIndexed)
    headers.add(name: "x-large", value: String(repeating: "v", count: 200))
    headers.add(name: "x-kept", value: "1", indexing: .nonIndexable)
    for _ in 0..<2 {
      var buffer = ByteBuffer()
      encoder.encode(headers, into: &buffer)
      let decoded = try decoder.decodeHeaders(from: &buffer)
      #expect(decoded.map(\.name) == headers.map(\.name))
      #expect(decoded.map(\.value) == headers.map(\.value))
      #expect(decoded.map(\.indexable) == [.neverIndexed, .neverIndexed, .nonIndexable, .nonIndexable])
      #expect(encoder.tableLength == 0)
    }
  }

  /// Blocks that repeat, change and outgrow the table, while the peer's allowance shrinks and grows between
  /// them: swift-nio-hpack's decoder, which keeps a table of its own from what it is told, reads every field.
  @Test("swift-nio-hpack decodes every block while the table fills, evicts and is resized")
  func roundTrip() throws {
    var encoder = HPACKBlockEncoder()
    var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
    let allowances = [4096, 200, 0, 64, 1024, 300, 100]
    for round in 0..<140 {
      if round % 20 == 19 { encoder.peerAllows(tableSize: allowances[(round / 20) % allowances.count]) }
      if round % 20 == 5 {
        encoder.peerAllows(tableSize: 50)
        encoder.peerAllows(tableSize: 2000)
      }
      var headers: HPACKHeaders = [
        ":method": round % 3 == 0 ? "POST" : "GET", ":scheme": "https", ":path": "/items/\(round % 7)",
        ":authority": "backend.default.svc.cluster.local:80", "user-agent": "hey/0.0.1",
        "accept-encoding": "gzip, deflate", "x-request-id": "id-\(round)",
      ]
      if round % 4 == 0 { headers.add(name: "cookie", value: String(repeating: "c", count: round % 90)) }
      if round % 11 == 0 { headers.add(name: "te", value: "trailers") }
      var buffer = ByteBuffer()
      encoder.encode(headers, into: &buffer)
      #expect(encoder.tableLength <= encoder.tableSize)
      let decoded = try decoder.decodeHeaders(from: &buffer)
      #expect(buffer.readableBytes == 0)
      #expect(decoded.map(\.name) == headers.map(\.name), "round \(round)")
      #expect(decoded.map(\.value) == headers.map(\.value), "round \(round)")
      #expect(decoder.allowedDynamicTableLength == encoder.tableSize, "round \(round)")
    }
  }

  /// Every field with a name never seen before (what a client could send on purpose): the names the encoder
  /// holds stay bounded while the decoder, which keeps its own table, still reads every field.
  @Test("names that come once are forgotten; every block still decodes")
  func newNamesBounded() throws {
    var encoder = HPACKBlockEncoder()
    var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
    var most = 0
    for round in 0..<3000 {
      let headers: HPACKHeaders = [
        ":method": "GET", ":authority": "backend", "x-name-\(round)": "v", "x-kept": "same",
      ]
      var buffer = ByteBuffer()
      encoder.encode(headers, into: &buffer)
      most = max(most, encoder.namesHeld)
      let decoded = try decoder.decodeHeaders(from: &buffer)
      #expect(decoded.map(\.name) == headers.map(\.name), "round \(round)")
      #expect(decoded.map(\.value) == headers.map(\.value), "round \(round)")
      #expect(buffer.readableBytes == 0)
    }
    // 52 static names, at most one a dynamic entry (4,096 / 33 bytes), and 64 that left.
    #expect(most <= 52 + 124 + 64)
    #expect(most > 52 + 64)
  }

  /// The same kind of blocks, decoded by another implementation: python's `hpack`, one decoder for the whole
  /// sequence, reads each block (hex, a line each) and prints its fields as JSON.
  @Test("python's hpack decodes every block of a sequence that fills, evicts and resizes the table")
  func pythonDecodes() async throws {
    var encoder = HPACKBlockEncoder(preferredTableSize: 512)
    var sent: [[[String]]] = []
    var lines: [String] = []
    for round in 0..<60 {
      if round == 20 { encoder.peerAllows(tableSize: 100) }
      if round == 30 { encoder.peerAllows(tableSize: 4096) }
      var headers: HPACKHeaders = [
        ":method": round % 2 == 0 ? "GET" : "POST", ":scheme": "http", ":path": "/p/\(round % 5)",
        ":authority": "backend.default.svc.cluster.local", "user-agent": "grpc-python/1.51",
        "x-trace": String(repeating: "t", count: round % 40), "content-type": "application/grpc",
      ]
      headers.add(name: "authorization", value: "Bearer \(round % 3)", indexing: .neverIndexed)
      var buffer = ByteBuffer()
      encoder.encode(headers, into: &buffer)
      lines.append(buffer.readableBytesView.map { String(format: "%02x", $0) }.joined())
      sent.append(headers.map { [$0.name, $0.value] })
    }
    let script = """
      import sys, json, hpack
      decoder = hpack.Decoder()
      for line in sys.stdin:
          fields = decoder.decode(bytes.fromhex(line.strip()), raw=True)
          print(json.dumps([[f[0].decode(), f[1].decode(), type(f).__name__] for f in fields]))
      """
    let out = try await Subprocess.run("/usr/bin/python3", ["-c", script], input: Data(lines.joined(separator: "\n").utf8))
    try #require(out.status == 0, "\(out)")
    let decoded = out.stdout.split(separator: "\n").map { line in
      (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [[String]] ?? []
    }
    #expect(decoded.count == sent.count)
    for (round, (got, want)) in zip(decoded, sent).enumerated() {
      #expect(got.map { Array($0.prefix(2)) } == want, "round \(round)")
      // The never-indexed field reaches python marked so (hpack's NeverIndexedHeaderTuple).
      #expect(got.last?.last == "NeverIndexedHeaderTuple", "round \(round)")
    }
  }

  @Test("a table that shrinks and grows again between blocks is told both sizes, the smallest first")
  func resizeTold() {
    var encoder = HPACKBlockEncoder()
    _ = Self.block(&encoder, [("x-a", "1")])
    #expect(encoder.tableLength == 36)
    encoder.peerAllows(tableSize: 40)
    #expect(encoder.tableLength == 36)
    encoder.peerAllows(tableSize: 30)
    #expect(encoder.tableLength == 0)
    encoder.peerAllows(tableSize: 1000)
    encoder.peerAllows(tableSize: 4096)
    // 30 (001 11110), then 4,096 (001 11111, then 4,065 as 0xE1 0x1F); the field, evicted, is a literal again.
    #expect(
      Self.block(&encoder, [("x-a", "1")]) == [0x3E, 0x3F, 0xE1, 0x1F, 0x40, 0x03, 0x78, 0x2D, 0x61, 0x01, 0x31])
    // Told once: the next block starts with its field, now indexed (62).
    #expect(Self.block(&encoder, [("x-a", "1")]) == [0xBE])
    // An allowance above what this side uses changes nothing, and nothing is told.
    var small = HPACKBlockEncoder(preferredTableSize: 100)
    #expect(Self.block(&small, []) == [0x3F, 0x45])
    small.peerAllows(tableSize: 8192)
    #expect(Self.block(&small, []) == [])
  }
}
