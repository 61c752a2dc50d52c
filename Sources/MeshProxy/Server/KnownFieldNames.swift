/// The field names most heads carry, as string literals, each in its usual spelling and in lowercase.
///
/// A parsed HTTP/1 head's name is the literal when its bytes are one of these spellings (``name(_:)``), so it
/// is not made as a new `String` (its bytes checked as UTF-8 and copied, about 190 instructions a name); and
/// the lowercase form an HTTP/2 block needs is the literal beside it (``lowercase(_:)``), not a string made
/// byte by byte (about 290). An application's response head through the pair's server proxy has seven or
/// eight such names (Benchmarks/load/instructions.sh).
///
/// A name is found by its length and two integers read from its first and last bytes (``key(of:)``): the names
/// here are at most 16 bytes, so the two cover all of them, and a miss costs a few comparisons.
enum KnownFieldNames {
  /// (usual spelling, lowercase). Both spellings are found; both give the lowercase.
  private static let names: [(String, String)] = [
    ("TE", "te"), ("Age", "age"), ("Via", "via"), ("Host", "host"), ("Date", "date"), ("ETag", "etag"),
    ("Vary", "vary"), ("Link", "link"), ("Allow", "allow"), ("Range", "range"), ("Accept", "accept"),
    ("Server", "server"), ("Cookie", "cookie"), ("Origin", "origin"), ("Pragma", "pragma"),
    ("Expect", "expect"), ("Expires", "expires"), ("Referer", "referer"), ("Upgrade", "upgrade"),
    ("Trailer", "trailer"), ("Location", "location"), ("If-Match", "if-match"), ("Connection", "connection"),
    ("User-Agent", "user-agent"), ("Keep-Alive", "keep-alive"), ("Set-Cookie", "set-cookie"),
    ("X-Request-Id", "x-request-id"), ("Content-Type", "content-type"), ("Last-Modified", "last-modified"),
    ("Accept-Ranges", "accept-ranges"), ("Cache-Control", "cache-control"), ("Authorization", "authorization"),
    ("If-None-Match", "if-none-match"), ("Content-Range", "content-range"), ("Content-Length", "content-length"),
    ("Accept-Charset", "accept-charset"), ("Accept-Encoding", "accept-encoding"),
    ("Accept-Language", "accept-language"), ("X-Forwarded-For", "x-forwarded-for"),
    ("Content-Encoding", "content-encoding"), ("Content-Language", "content-language"),
    ("Content-Location", "content-location"), ("X-Forwarded-Host", "x-forwarded-host"),
  ]

  static let maxLength = 16

  /// Every spelling's key (two integers each), grouped by length: `starts[n]` is the first of length n,
  /// `starts[n + 1]` the end of them. Plain memory made once and kept for the process (one lazy global, no
  /// reference counting, no bounds checks on the way), so that a look-up compares integers and touches no
  /// string until it has found one; `spellings` and `lowercases` hold the literals in the same order.
  private struct Keys: @unchecked Sendable {
    let keys: UnsafePointer<UInt64>
    let starts: UnsafePointer<Int>
  }

  private static let built = build()
  private static let table: Keys = built.table
  private static let spellings: [String] = built.spellings
  private static let lowercases: [String] = built.lowercases

  private static func build() -> (table: Keys, spellings: [String], lowercases: [String]) {
    var pairs: [(String, String)] = []
    for (usual, lower) in names {
      precondition(usual.utf8.count <= maxLength, "\(usual): the key covers \(maxLength) bytes at most")
      pairs.append((usual, lower))
      if usual != lower { pairs.append((lower, lower)) }
    }
    pairs.sort { $0.0.utf8.count < $1.0.utf8.count }
    let keys = UnsafeMutablePointer<UInt64>.allocate(capacity: 2 * pairs.count)
    for (index, (spelling, _)) in pairs.enumerated() {
      let key = Array(spelling.utf8).withUnsafeBytes { Self.key(of: $0) }
      keys[2 * index] = key.head
      keys[2 * index + 1] = key.tail
    }
    let starts = UnsafeMutablePointer<Int>.allocate(capacity: maxLength + 2)
    var index = 0
    for length in 0...(maxLength + 1) {
      while index < pairs.count, pairs[index].0.utf8.count < length { index += 1 }
      starts[length] = index
    }
    return (Keys(keys: UnsafePointer(keys), starts: UnsafePointer(starts)), pairs.map(\.0), pairs.map(\.1))
  }

  /// Two integers that tell apart any two spellings of the same length (2 to 16 bytes): the first and the
  /// last eight bytes, or four and four, or two and two, little-endian.
  @inline(__always)
  private static func key(of bytes: UnsafeRawBufferPointer) -> (head: UInt64, tail: UInt64) {
    let count = bytes.count
    if count >= 8 {
      return (
        UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self)),
        UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self))
      )
    }
    if count >= 4 {
      let first = UInt64(UInt32(littleEndian: bytes.loadUnaligned(as: UInt32.self)))
      let last = UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self)))
      return (first | last << 32, 0)
    }
    let first = UInt64(UInt16(littleEndian: bytes.loadUnaligned(as: UInt16.self)))
    let last = UInt64(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: count - 2, as: UInt16.self)))
    return (first | last << 16, 0)
  }

  private static func entry(_ bytes: UnsafeRawBufferPointer) -> Int? {
    let count = bytes.count
    guard count >= 2, count <= maxLength else { return nil }
    let key = Self.key(of: bytes)
    let table = Self.table
    var index = table.starts[count]
    let end = table.starts[count + 1]
    while index < end {
      if table.keys[2 * index] == key.head && table.keys[2 * index + 1] == key.tail { return index }
      index += 1
    }
    return nil
  }

  /// The literal spelled exactly as `bytes`, or nil.
  static func name(_ bytes: UnsafeRawBufferPointer) -> String? {
    entry(bytes).map { spellings[$0] }
  }

  /// The lowercase literal of `bytes` when they are a known spelling, or nil.
  static func lowercase(_ bytes: UnsafeRawBufferPointer) -> String? {
    entry(bytes).map { lowercases[$0] }
  }
}
