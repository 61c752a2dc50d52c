import NIOCore
import NIOHPACK

/// An HPACK decoder (RFC 7541) for the header blocks a mesh hop receives: the decoding half of the proxy's own
/// HTTP/2 connection code (``HTTP2FrameReader`` decodes every HEADERS block with it; ``HPACKBlockEncoder`` is
/// the other half). swift-nio-hpack's `HPACKDecoder`, used here before, cost about 460 instructions for each
/// field even when the field was one byte, an index into a table (through the mTLS pair nearly every field
/// is): a generic integer reader over `ByteBuffer`, and a dynamic table kept as bytes, from which every use
/// makes new strings (`Benchmarks/load/instructions.sh`).
///
/// Here the dynamic table holds each entry's strings, so a field found by index costs a table read and two
/// reference counts, and a block is read in one pass over its bytes:
/// - an indexed field (section 6.1); a literal with incremental indexing, without indexing, or never indexed
///   (6.2), its name by index or as a string, marked `.indexable`, `.nonIndexable` and `.neverIndexed` as
///   swift-nio-hpack marks them;
/// - strings as they are or Huffman-coded (5.2, appendix B): the proxy's encoder never Huffman-codes, but
///   other encoders (swift-nio-hpack's, python-h2's, nghttp2's) do; padding longer than 7 bits, padding that
///   is not the code of EOS, and EOS itself are errors (5.2);
/// - dynamic table size updates (6.3) only before a block's first field, at most two, each at most the size
///   this side allows (its SETTINGS_HEADER_TABLE_SIZE once acknowledged); an entry larger than the table
///   empties it (4.4);
/// - the decoded list may take at most `maxHeaderListSize` bytes, as SETTINGS_MAX_HEADER_LIST_SIZE counts
///   them (a field's name, value and 32);
/// - a literal field name must be ASCII and not empty: swift-nio-hpack's `HPACKHeaders` takes no other names,
///   and RFC 9113 (8.2.1) allows none (a malformed block, which section 5.4 lets a receiver treat as a
///   connection error, as this one does).
///
/// Any error leaves the dynamic table out of step with the peer's encoder, so the connection ends with
/// COMPRESSION_ERROR. Used on one event loop.
struct HPACKBlockDecoder {
  /// Why a header block cannot be decoded.
  struct DecodingError: Error, Equatable, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
  }

  /// The most bytes a decoded block's fields may take (name, value and 32 for each).
  let maxHeaderListSize: Int
  /// The largest table the peer's encoder may choose: this side's SETTINGS_HEADER_TABLE_SIZE.
  private(set) var allowedTableSize = HPACKBlockEncoder.defaultTableSize
  /// The size the table is held to: the last size update's, at most ``allowedTableSize``.
  private(set) var tableSize = HPACKBlockEncoder.defaultTableSize
  /// The bytes the table's entries count (name, value and 32 each: section 4.1).
  private(set) var tableLength = 0

  /// The static table (section 2.3.1, appendix A), held here: a global's every use checks it is initialised.
  private let statics = HPACKBlockEncoder.staticTable
  /// The fields of the block being decoded: the array's room is kept between blocks, not its fields.
  private var fields: [(String, String)] = []

  /// The dynamic table: a ring of entries, the oldest at `oldest`, the newest `count - 1` places after it.
  private var ring: [Entry]
  private var oldest = 0
  private(set) var count = 0

  struct Entry {
    var name: String
    var value: String
    var size: Int
  }

  init(maxHeaderListSize: Int = HPACKDecoder.defaultMaxHeaderListSize) {
    self.maxHeaderListSize = maxHeaderListSize
    self.ring = Array(repeating: Entry(name: "", value: "", size: 0), count: 16)
  }

  /// This side's SETTINGS_HEADER_TABLE_SIZE, acknowledged by the peer: the encoder may choose sizes up to it
  /// from now on, and the table shrinks to it at once if it is larger.
  mutating func allow(tableSize size: Int) {
    allowedTableSize = max(size, 0)
    if tableSize > allowedTableSize {
      tableSize = allowedTableSize
      evict(toFit: 0)
    }
  }

  /// The dynamic table's entries, newest first (index 62 first).
  var dynamicEntries: [Entry] {
    (0..<count).map { ring[(oldest + count - 1 - $0) & (ring.count - 1)] }
  }

  /// Decodes one whole header block (the fragments of a HEADERS frame and its CONTINUATION frames together).
  mutating func decode(_ block: ByteBuffer) throws(DecodingError) -> HPACKHeaders {
    // The fields go into `HPACKHeaders` by its initializer from pairs, which takes each as it is:
    // `HPACKHeaders.add` checks every name is ASCII again, a byte at a time through `String.UTF8View` (about
    // 2,500 instructions for a request's nine fields). Names are checked here when they are read, so only a
    // block with a field that must not be indexed (which the pairs cannot mark) is built by `add`.
    var fields = self.fields
    self.fields = []
    if fields.capacity == 0 { fields.reserveCapacity(16) }
    defer {
      // One at a time: `removeAll(keepingCapacity:)` goes through a generic `replaceSubrange`, about twice
      // the instructions for a request's fields.
      while fields.popLast() != nil {}
      // The room a request's fields take is kept; the room a block of hundreds took is not.
      self.fields = fields.capacity <= 64 ? fields : []
    }
    var unindexed: [(at: Int, indexing: HPACKIndexing)] = []
    var failure: DecodingError?
    block.withUnsafeReadableBytes { bytes in
      do throws(DecodingError) {
        try decode(bytes, into: &fields, unindexed: &unindexed)
      } catch {
        failure = error
      }
    }
    if let failure { throw failure }
    guard !unindexed.isEmpty else { return HPACKHeaders(fields) }
    var headers = HPACKHeaders()
    headers.reserveCapacity(fields.count)
    var next = 0
    for (at, (name, value)) in fields.enumerated() {
      var indexing = HPACKIndexing.indexable
      if next < unindexed.count, unindexed[next].at == at {
        indexing = unindexed[next].indexing
        next += 1
      }
      headers.add(name: name, value: value, indexing: indexing)
    }
    return headers
  }

  private mutating func decode(
    _ bytes: UnsafeRawBufferPointer, into fields: inout [(String, String)], unindexed: inout [(at: Int, indexing: HPACKIndexing)]
  ) throws(DecodingError) {
    var at = 0
    var listSize = 0
    var sizeUpdates = 0
    while at < bytes.count {
      let first = bytes[at]
      let name: String
      let value: String
      if first & 0x80 != 0 {
        // 1xxxxxxx: an indexed field (6.1).
        let index = try Self.integer(bytes, &at, prefix: 7)
        (name, value) = try field(at: index)
      } else if first & 0xE0 == 0x20 {
        // 001xxxxx: a dynamic table size update (6.3), only before the first field (4.2).
        guard fields.isEmpty else { throw DecodingError("a dynamic table size update after a field") }
        sizeUpdates += 1
        guard sizeUpdates <= 2 else { throw DecodingError("more than two dynamic table size updates") }
        let size = try Self.integer(bytes, &at, prefix: 5)
        guard size <= allowedTableSize else {
          throw DecodingError("a dynamic table size of \(size), above the \(allowedTableSize) allowed")
        }
        tableSize = size
        evict(toFit: 0)
        continue
      } else {
        // 01xxxxxx: a literal with incremental indexing; 0000xxxx without indexing; 0001xxxx never indexed (6.2).
        let incremental = first & 0x40 != 0
        let index = try Self.integer(bytes, &at, prefix: incremental ? 6 : 4)
        if index == 0 {
          name = try Self.string(bytes, &at)
          try Self.checkName(name)
        } else {
          name = try field(at: index).name
        }
        value = try Self.string(bytes, &at)
        if incremental {
          insert(name: name, value: value)
        } else {
          unindexed.append((fields.count, first & 0x10 != 0 ? .neverIndexed : .nonIndexable))
        }
      }
      listSize += name.utf8.count + value.utf8.count + 32
      guard listSize <= maxHeaderListSize else {
        throw DecodingError("a header list over \(maxHeaderListSize) bytes")
      }
      fields.append((name, value))
    }
  }

  /// The field at `index` of the static table (1...61) or the dynamic table (62 the newest).
  @inline(__always)
  private func field(at index: Int) throws(DecodingError) -> (name: String, value: String) {
    if index >= 1 && index <= statics.count { return statics[index - 1] }
    guard index > 0 else { throw DecodingError("index 0, which names no field") }
    let place = index - statics.count - 1
    guard place < count else {
      throw DecodingError("index \(index), beyond the \(statics.count + count) entries of the tables")
    }
    let entry = ring[(oldest + count - 1 - place) & (ring.count - 1)]
    return (entry.name, entry.value)
  }

  private mutating func insert(name: String, value: String) {
    let size = name.utf8.count + value.utf8.count + 32
    guard size <= tableSize else {
      // Larger than the whole table: the table is emptied and the entry not added (4.4).
      evict(toFit: tableSize + 1)
      return
    }
    evict(toFit: size)
    if count == ring.count {
      // Full: unrolled into a ring twice the size, oldest first.
      var grown = (0..<count).map { ring[(oldest + $0) & (ring.count - 1)] }
      grown.append(contentsOf: repeatElement(Entry(name: "", value: "", size: 0), count: ring.count))
      ring = grown
      oldest = 0
    }
    ring[(oldest + count) & (ring.count - 1)] = Entry(name: name, value: value, size: size)
    count += 1
    tableLength += size
  }

  /// Evicts the oldest entries until `length` more bytes fit in the table (4.4); all of them when it cannot.
  private mutating func evict(toFit length: Int) {
    while count > 0 && tableLength + length > tableSize {
      tableLength -= ring[oldest].size
      ring[oldest] = Entry(name: "", value: "", size: 0)
      oldest = (oldest + 1) & (ring.count - 1)
      count -= 1
    }
  }

  /// An integer with an N-bit prefix (5.1), at most 2^35 (this decoder's limit: every integer HPACK carries,
  /// an index, a length or a table size, is far below).
  static func integer(_ bytes: UnsafeRawBufferPointer, _ at: inout Int, prefix: Int) throws(DecodingError) -> Int {
    guard at < bytes.count else { throw DecodingError("a header block cut short") }
    let mask = (1 << prefix) - 1
    var value = Int(bytes[at]) & mask
    at += 1
    guard value == mask else { return value }
    var shift = 0
    while true {
      guard at < bytes.count else { throw DecodingError("an integer cut short") }
      let byte = bytes[at]
      at += 1
      value += Int(byte & 0x7F) << shift
      if byte & 0x80 == 0 { return value }
      shift += 7
      guard shift <= 28 else { throw DecodingError("an integer of more than 5 bytes after its prefix") }
    }
  }

  /// A string literal (5.2): its bytes as they are, or Huffman-decoded.
  static func string(_ bytes: UnsafeRawBufferPointer, _ at: inout Int) throws(DecodingError) -> String {
    guard at < bytes.count else { throw DecodingError("a header block cut short") }
    let huffman = bytes[at] & 0x80 != 0
    let length = try integer(bytes, &at, prefix: 7)
    guard length <= bytes.count - at else {
      throw DecodingError("a string of \(length) bytes, beyond the \(bytes.count - at) left in its block")
    }
    let string = UnsafeRawBufferPointer(rebasing: bytes[at..<(at + length)])
    at += length
    return huffman ? try HPACKHuffman.decode(string) : String(decoding: string, as: UTF8.self)
  }

  private static func checkName(_ name: String) throws(DecodingError) {
    guard !name.isEmpty else { throw DecodingError("an empty field name") }
    for byte in name.utf8 where byte >= 0x80 {
      throw DecodingError("a field name that is not ASCII")
    }
  }
}

/// The Huffman code of RFC 7541 appendix B, for decoding.
enum HPACKHuffman {
  /// Each symbol's code (0...255, and EOS as 256), its bits right-aligned, and its length in bits.
  static let codes: [(code: UInt32, length: UInt8)] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28), (0xfffffe4, 28), (0xfffffe5, 28),
    (0xfffffe6, 28), (0xfffffe7, 28), (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),
    (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28), (0xfffffed, 28), (0xfffffee, 28),
    (0xfffffef, 28), (0xffffff0, 28), (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28), (0xffffff8, 28), (0xffffff9, 28),
    (0xffffffa, 28), (0xffffffb, 28), (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11), (0x3fa, 10), (0x3fb, 10),
    (0xf9, 8), (0x7fb, 11), (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6), (0x1a, 6), (0x1b, 6),
    (0x1c, 6), (0x1d, 6), (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),
    (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10), (0x1ffa, 13), (0x21, 6),
    (0x5d, 7), (0x5e, 7), (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7),
    (0x69, 7), (0x6a, 7), (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),
    (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7), (0xfc, 8), (0x73, 7),
    (0xfd, 8), (0x1ffb, 13), (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5),
    (0x25, 6), (0x26, 6), (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5), (0x2b, 6), (0x76, 7),
    (0x2c, 6), (0x8, 5), (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15), (0x7fc, 11), (0x3ffd, 14),
    (0x1ffd, 13), (0xffffffc, 28), (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23), (0x3fffd6, 22), (0x7fffda, 23),
    (0x7fffdb, 23), (0x7fffdc, 23), (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23), (0xffffee, 24), (0x7fffe1, 23),
    (0x7fffe2, 23), (0x7fffe3, 23), (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),
    (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24), (0x3fffda, 22), (0x1fffdd, 21),
    (0xfffe9, 20), (0x3fffdb, 22), (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24), (0x1fffdf, 21), (0x3fffdf, 22),
    (0x7fffeb, 23), (0x7fffec, 23), (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23), (0xfffea, 20), (0x3fffe2, 22),
    (0x3fffe3, 22), (0x3fffe4, 22), (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19), (0x3fffe7, 22), (0x7ffff2, 23),
    (0x3fffe8, 22), (0x1ffffec, 25), (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25), (0x7fff2, 19), (0x1fffe3, 21),
    (0x3ffffe6, 26), (0x7ffffe0, 27), (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26), (0xffffffd, 28), (0x7ffffe3, 27),
    (0x7ffffe4, 27), (0x7ffffe5, 27), (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),
    (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23), (0x3fffea, 22), (0x3fffeb, 22),
    (0x1ffffee, 25), (0x1ffffef, 25), (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26), (0x7ffffe7, 27), (0x7ffffe8, 27),
    (0x7ffffe9, 27), (0x7ffffea, 27), (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26), (0x3fffffff, 30),
  ]

  /// The code as a binary tree: node `n`'s children for bits 0 and 1 are at `2n` and `2n + 1`; a value above 0
  /// is the child's node, below 0 the symbol `-value - 1` at a leaf. Node 0 is the root.
  static let tree: [Int16] = {
    var tree = [Int16](repeating: 0, count: 2 * 256)
    var nodes = 1
    for (symbol, (code, length)) in codes.enumerated() {
      var node = 0
      for depth in 0..<Int(length) {
        let slot = 2 * node + Int((code >> (UInt32(length) - 1 - UInt32(depth))) & 1)
        if depth == Int(length) - 1 {
          tree[slot] = Int16(-symbol - 1)
        } else {
          if tree[slot] == 0 {
            tree[slot] = Int16(nodes)
            nodes += 1
          }
          node = Int(tree[slot])
        }
      }
    }
    return tree
  }()

  /// Decodes a Huffman-coded string literal (5.2).
  static func decode(_ bytes: UnsafeRawBufferPointer) throws(HPACKBlockDecoder.DecodingError) -> String {
    var decoded = [UInt8]()
    decoded.reserveCapacity(bytes.count * 8 / 5 + 1)
    let tree = Self.tree
    var node = 0
    // Bits read since the last symbol, and whether all were ones: what is left at the end is padding.
    var depth = 0
    var ones = true
    for byte in bytes {
      var bit = 7
      while bit >= 0 {
        let one = (byte >> UInt8(bit)) & 1
        let next = Int(tree[2 * node + Int(one)])
        if next < 0 {
          let symbol = -next - 1
          guard symbol != 256 else { throw HPACKBlockDecoder.DecodingError("EOS in a Huffman-coded string") }
          decoded.append(UInt8(symbol))
          node = 0
          depth = 0
          ones = true
        } else {
          node = next
          depth += 1
          ones = ones && one == 1
        }
        bit -= 1
      }
    }
    guard depth < 8 else { throw HPACKBlockDecoder.DecodingError("Huffman padding longer than 7 bits") }
    guard ones else { throw HPACKBlockDecoder.DecodingError("Huffman padding that is not the code of EOS") }
    return String(decoding: decoded, as: UTF8.self)
  }
}
