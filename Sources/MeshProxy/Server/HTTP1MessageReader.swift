#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP1

/// What the proxy's HTTP/1.1 decoders (``HTTP1ClientCodec`` for responses, ``HTTP1RequestDecoder`` for
/// requests) share: the bytes of a connection cut into heads, body pieces and ends (RFC 9112). A decoder
/// parses each head (``HTTP1Grammar``) and says how its body is framed; the reader does the rest. It finds the
/// end of a head before anything of it is parsed (memchr for each LF), so a head is read in one pass over its
/// bytes, and hands out body pieces as slices of the bytes read, without copying them.
struct HTTP1MessageReader {
  /// How a message's body is delimited.
  enum Framing: Equatable {
    case none
    case length(Int)
    case chunked
    case untilClose
  }

  enum Event {
    /// A head (start line to the empty line, CRLFs included): the decoder parses it, then calls
    /// ``beginBody(_:upgrade:)``, or ``skipMessage()`` to drop it.
    case head(ByteBuffer)
    case body(ByteBuffer)
    case end(HTTPHeaders?)
    case needMore
  }

  private enum State {
    case head
    /// A head was handed out; its decoder has not said how the body is framed yet.
    case framing
    case body(remaining: Int)
    case chunkSize
    case chunkData(remaining: Int)
    case chunkDataEnd
    case trailers
    case untilClose
    case end
    /// The bytes belong to another protocol (an upgrade, a tunnel): kept for whoever takes over.
    case upgraded
    case failed
  }

  /// The most bytes a head, or a trailer section, may take.
  static let maxHeadSize = 80 * 1024
  /// The longest chunk-size line (size and extensions).
  static let maxChunkLineSize = 4 * 1024

  private var state = State.head
  /// After this message, the bytes are another protocol's.
  private var upgradeAfter = false
  /// Bytes read and not parsed yet; nil when there are none (the next read is then used as it is).
  private var pending: ByteBuffer?
  /// How much of `pending` was searched for the end of a head (or trailer section) already.
  private var scanned = 0

  var isFailed: Bool {
    if case .failed = state { return true }
    return false
  }

  var isUpgraded: Bool {
    if case .upgraded = state { return true }
    return false
  }

  /// Between messages, with nothing of the next one read.
  var isIdle: Bool {
    if case .head = state { return (pending?.readableBytes ?? 0) == 0 }
    return false
  }

  /// In a body that ends when the connection closes.
  var isUntilClose: Bool {
    if case .untilClose = state { return true }
    return false
  }

  mutating func append(_ incoming: ByteBuffer) {
    if case .failed = state { return }
    if pending == nil || pending!.readableBytes == 0 {
      pending = incoming
    } else {
      var incoming = incoming
      pending!.writeBuffer(&incoming)
    }
  }

  /// Nothing more is read; what was pending is dropped.
  mutating func fail() {
    state = .failed
    pending = nil
  }

  /// The bytes not parsed, taken out.
  mutating func takeLeftover() -> ByteBuffer? {
    defer { pending = nil }
    return pending
  }

  /// The body of the head just handed out is framed as `framing`; with `upgrade`, the bytes after the message
  /// are another protocol's.
  mutating func beginBody(_ framing: Framing, upgrade: Bool = false) {
    upgradeAfter = upgrade
    switch framing {
    case .none, .length(0): state = .end
    case .length(let length): state = .body(remaining: length)
    case .chunked: state = .chunkSize
    case .untilClose: state = .untilClose
    }
  }

  /// The head just handed out is dropped (an informational response): the next head follows.
  mutating func skipMessage() { state = .head }

  /// The connection closed: the end of a body that lasts until then, nil if nothing was under way; throws
  /// when a message was cut short.
  mutating func finish() throws -> Event? {
    switch state {
    case .untilClose:
      state = .head
      return .end(nil)
    case .head where (pending?.readableBytes ?? 0) == 0, .upgraded, .failed:
      return nil
    default:
      state = .failed
      throw HTTP1ParseError("the connection closed in the middle of a message", .invalidEOFState)
    }
  }

  /// The next event the bytes at hand make.
  mutating func next() throws -> Event {
    while true {
      switch state {
      case .head:
        // Empty lines before a start line are ignored (RFC 9112 2.2).
        while var bytes = pending, bytes.readableBytes >= 2,
          bytes.getInteger(at: bytes.readerIndex, as: UInt16.self) == 0x0D0A
        {
          bytes.moveReaderIndex(forwardBy: 2)
          keep(bytes)
        }
        guard let section = try section(what: "head") else { return .needMore }
        state = .framing
        return .head(section)
      case .framing:
        preconditionFailure("a head was read and not framed")
      case .body(let remaining):
        guard let slice = take(upTo: remaining) else { return .needMore }
        state = slice.readableBytes == remaining ? .end : .body(remaining: remaining - slice.readableBytes)
        return .body(slice)
      case .chunkSize:
        guard let line = try line() else { return .needMore }
        let size = try HTTP1Grammar.chunkSize(line)
        state = size == 0 ? .trailers : .chunkData(remaining: size)
      case .chunkData(let remaining):
        guard let slice = take(upTo: remaining) else { return .needMore }
        state = slice.readableBytes == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - slice.readableBytes)
        return .body(slice)
      case .chunkDataEnd:
        guard var bytes = pending, bytes.readableBytes >= 2 else { return .needMore }
        guard bytes.readInteger(as: UInt16.self) == 0x0D0A else {
          throw HTTP1ParseError("a chunk's data is not followed by CRLF", .strictModeAssertion)
        }
        keep(bytes)
        state = .chunkSize
      case .trailers:
        guard let section = try section(what: "trailer section") else { return .needMore }
        state = upgradeAfter ? .upgraded : .head
        if section.readableBytes == 2 { return .end(nil) }
        let trailers = try section.withUnsafeReadableBytes { bytes in
          var fields = HTTP1Grammar.Fields()
          try HTTP1Grammar.parseFields(bytes, from: 0, into: &fields)
          return fields.headers
        }
        return .end(HTTPHeaders(trailers))
      case .untilClose:
        guard let bytes = pending, bytes.readableBytes > 0 else { return .needMore }
        pending = nil
        return .body(bytes)
      case .end:
        state = upgradeAfter ? .upgraded : .head
        return .end(nil)
      case .upgraded, .failed:
        return .needMore
      }
    }
  }

  // MARK: Bytes

  /// Stores what is left of the pending bytes (nil when nothing is).
  private mutating func keep(_ bytes: ByteBuffer) {
    pending = bytes.readableBytes > 0 ? bytes : nil
  }

  /// Up to `count` pending bytes, taken out; nil when there are none.
  private mutating func take(upTo count: Int) -> ByteBuffer? {
    guard var bytes = pending, bytes.readableBytes > 0 else { return nil }
    let slice = bytes.readSlice(length: min(count, bytes.readableBytes))!
    keep(bytes)
    return slice
  }

  /// A chunk-size line (without its CRLF), taken out of the pending bytes, when all of it is here.
  private mutating func line() throws -> ByteBuffer? {
    guard var bytes = pending else { return nil }
    let limit = Self.maxChunkLineSize
    let found = bytes.withUnsafeReadableBytes { raw -> Int? in
      guard raw.count >= 2 else { return nil }
      for index in 0..<(raw.count - 1) where raw[index] == 0x0D {
        return raw[index + 1] == 0x0A ? index : -1
      }
      return nil
    }
    guard let length = found else {
      if bytes.readableBytes > limit { throw HTTP1ParseError("a chunk-size line over \(limit) bytes", .invalidChunkSize) }
      return nil
    }
    guard length >= 0 else { throw HTTP1ParseError("a CR without LF in a chunk-size line", .lfExpected) }
    if length > limit { throw HTTP1ParseError("a chunk-size line over \(limit) bytes", .invalidChunkSize) }
    let line = bytes.readSlice(length: length)!
    bytes.moveReaderIndex(forwardBy: 2)
    keep(bytes)
    return line
  }

  /// A head or trailer section up to and with its empty line (CRLF CRLF, or CRLF alone for an empty trailer
  /// section), taken out of the pending bytes, when all of it is here. What was searched is not searched again.
  private mutating func section(what: String) throws -> ByteBuffer? {
    guard var bytes = pending else { return nil }
    let start = scanned
    let found = bytes.withUnsafeReadableBytes { raw -> Int? in
      if raw.count >= 2, raw[0] == 0x0D, raw[1] == 0x0A { return 2 }
      // Each LF (memchr: vectorized) ends a line, after a CR (a bare LF is refused at once, as llhttp does,
      // rather than waited on until the head times out), and the head if the line was empty.
      var index = start
      while index < raw.count, let base = raw.baseAddress,
        let found = memchr(base + index, 0x0A, raw.count - index)
      {
        let lf = base.distance(to: UnsafeRawPointer(found))
        guard lf > 0, raw[lf - 1] == 0x0D else { return -1 }
        if lf >= 3, raw[lf - 2] == 0x0A, raw[lf - 3] == 0x0D { return lf + 1 }
        index = lf + 1
      }
      return nil
    }
    if found == -1 { throw HTTP1ParseError("an LF without CR in a \(what)", .lfExpected) }
    guard let length = found else {
      if bytes.readableBytes > Self.maxHeadSize { throw HTTP1ParseError("a \(what) over \(Self.maxHeadSize) bytes", .headerOverflow) }
      scanned = bytes.readableBytes
      return nil
    }
    if length > Self.maxHeadSize { throw HTTP1ParseError("a \(what) over \(Self.maxHeadSize) bytes", .headerOverflow) }
    scanned = 0
    let section = bytes.readSlice(length: length)!
    keep(bytes)
    return section
  }
}

/// A message the proxy's HTTP/1.1 decoders could not read: what is wrong, and the nearest of llhttp's errors
/// (the request decoder reports that one, which the server codec and the request handler act on).
struct HTTP1ParseError: Error, CustomStringConvertible {
  let description: String
  let kind: HTTPParserError
  init(_ description: String, _ kind: HTTPParserError = .invalidHeaderToken) {
    self.description = description
    self.kind = kind
  }
}

/// RFC 9112's grammar, on bytes, for the proxy's HTTP/1.1 decoders: as strict as llhttp, which they replace.
enum HTTP1Grammar {
  /// The header fields of a head or trailer section, and the framing they say.
  struct Fields {
    var headers: [(String, String)] = []
    var contentLength: Int?
    /// Set when `transfer-encoding` is present: whether its last coding is chunked.
    var transferEncodingChunked: Bool?
    /// `connection` named `close`, `keep-alive`, `upgrade`.
    var connectionClose = false
    var connectionKeepAlive = false
    var connectionUpgrade = false
    /// An `upgrade` field is present.
    var upgrade = false
  }

  /// The fields from `start` to the section's empty line: `token ":" OWS value OWS CRLF`, the value without
  /// control characters but HTAB; no whitespace before the colon, no folded lines.
  static func parseFields(_ bytes: UnsafeRawBufferPointer, from start: Int, into fields: inout Fields) throws {
    // Room for a typical head's fields at once, not four reallocations on the way to a dozen.
    fields.headers.reserveCapacity(16)
    var index = start
    while true {
      // An empty line ends the section.
      if bytes[index] == 0x0D {
        guard bytes[index + 1] == 0x0A else { throw HTTP1ParseError("a CR without LF", .lfExpected) }
        return
      }
      let nameStart = index
      while bytes[index] != 0x3A {  // ":"
        guard isTokenByte(bytes[index]) else {
          throw HTTP1ParseError(
            bytes[index] == 0x20 || bytes[index] == 0x09
              ? (index == nameStart ? "a folded header line" : "whitespace before a header's colon")
              : "a character a header name cannot have")
        }
        index += 1
      }
      let nameEnd = index
      guard nameEnd > nameStart else { throw HTTP1ParseError("an empty header name") }
      index += 1
      while bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
      let valueStart = index
      // The line's CR by memchr, then the value checked in one pass without an early exit (which the compiler
      // vectorizes), then its trailing whitespace trimmed: a byte at a time with all three in one loop cost
      // about 18 instructions a byte.
      guard let cr = memchr(bytes.baseAddress! + index, 0x0D, bytes.count - index) else {
        throw HTTP1ParseError("a header line without CRLF", .lfExpected)
      }
      index = UnsafeRawPointer(cr) - UnsafeRawPointer(bytes.baseAddress!)
      var invalid: UInt8 = 0
      for offset in valueStart..<index {
        let byte = bytes[offset]
        invalid |= (byte < 0x20 ? 1 : 0) & (byte != 0x09 ? 1 : 0) | (byte == 0x7F ? 1 : 0)
      }
      guard invalid == 0 else { throw HTTP1ParseError("a control character in a header value", .invalidCharactersUsed) }
      var valueEnd = index
      while valueEnd > valueStart, bytes[valueEnd - 1] == 0x20 || bytes[valueEnd - 1] == 0x09 { valueEnd -= 1 }
      guard index + 1 < bytes.count, bytes[index + 1] == 0x0A else { throw HTTP1ParseError("a CR without LF", .lfExpected) }
      index += 2
      let name = UnsafeRawBufferPointer(rebasing: bytes[nameStart..<nameEnd])
      let value = UnsafeRawBufferPointer(rebasing: bytes[valueStart..<valueEnd])
      switch name.count {
      case 14 where isName(name, "content-length"):
        guard fields.contentLength == nil else { throw HTTP1ParseError("more than one content-length", .unexpectedContentLength) }
        fields.contentLength = try contentLength(value)
      case 17 where isName(name, "transfer-encoding"):
        fields.transferEncodingChunked = lastCodingIsChunked(value)
      case 10 where isName(name, "connection"):
        forEachToken(value) { token in
          if isName(token, "close") { fields.connectionClose = true }
          if isName(token, "keep-alive") { fields.connectionKeepAlive = true }
          if isName(token, "upgrade") { fields.connectionUpgrade = true }
        }
      case 7 where isName(name, "upgrade"):
        fields.upgrade = true
      default:
        break
      }
      fields.headers.append(
        (KnownFieldNames.name(name) ?? String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
    }
  }

  /// tchar (RFC 9110 5.6.2) as two bit sets, bytes 0-63 and 64-127: ``!#$%&'*+-.^_`|~``, digits, letters.
  static let tokenLow: UInt64 = 0x03FF_6CFA_0000_0000
  static let tokenHigh: UInt64 = 0x57FF_FFFF_C7FF_FFFE

  @inline(__always)
  static func isTokenByte(_ byte: UInt8) -> Bool {
    byte < 64 ? tokenLow >> UInt64(byte) & 1 != 0 : byte < 128 && tokenHigh >> UInt64(byte - 64) & 1 != 0
  }

  /// Whether `bytes` is `lowercase`, ignoring ASCII case (the byte-level `HTTPHeaderRules.isName`).
  static func isName(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
    HTTPHeaderRules.isName(bytes, UnsafeRawBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount))
  }

  /// A `content-length` value: digits only.
  static func contentLength(_ value: UnsafeRawBufferPointer) throws -> Int {
    guard !value.isEmpty else { throw HTTP1ParseError("an empty content-length", .invalidContentLength) }
    var length = 0
    for byte in value {
      let digit = byte &- 0x30
      guard digit < 10 else { throw HTTP1ParseError("a content-length that is not digits", .invalidContentLength) }
      let (times10, overflow1) = length.multipliedReportingOverflow(by: 10)
      let (sum, overflow2) = times10.addingReportingOverflow(Int(digit))
      guard !overflow1, !overflow2 else { throw HTTP1ParseError("a content-length too large", .invalidContentLength) }
      length = sum
    }
    return length
  }

  /// Calls `body` with each comma-separated element of `value`, without surrounding whitespace.
  static func forEachToken(_ value: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
    var start = 0
    while start < value.count {
      var end = start
      while end < value.count, value[end] != 0x2C { end += 1 }
      var first = start
      var last = end
      while first < last, value[first] == 0x20 || value[first] == 0x09 { first += 1 }
      while last > first, value[last - 1] == 0x20 || value[last - 1] == 0x09 { last -= 1 }
      body(UnsafeRawBufferPointer(rebasing: value[first..<last]))
      start = end + 1
    }
  }

  /// Whether the last coding of a `transfer-encoding` value is `chunked`.
  static func lastCodingIsChunked(_ value: UnsafeRawBufferPointer) -> Bool {
    var last = false
    forEachToken(value) { last = isName($0, "chunked") }
    return last
  }

  /// `chunk-size [ ";" chunk-ext ]`: the size. No whitespace before an extension (llhttp refuses it too).
  static func chunkSize(_ line: ByteBuffer) throws -> Int {
    try line.withUnsafeReadableBytes { bytes in
      var size = 0
      var index = 0
      while index < bytes.count {
        let byte = bytes[index]
        let digit: UInt8
        switch byte {
        case 0x30...0x39: digit = byte - 0x30
        case 0x41...0x46: digit = byte - 0x41 + 10
        case 0x61...0x66: digit = byte - 0x61 + 10
        default: digit = 0xFF
        }
        if digit == 0xFF { break }
        guard size < (1 << 56) else { throw HTTP1ParseError("a chunk size too large", .invalidChunkSize) }
        size = size << 4 | Int(digit)
        index += 1
      }
      guard index > 0 else { throw HTTP1ParseError("a chunk-size line without a size", .invalidChunkSize) }
      guard index == bytes.count || bytes[index] == 0x3B else { throw HTTP1ParseError("a malformed chunk-size line", .invalidChunkSize) }
      for byte in UnsafeRawBufferPointer(rebasing: bytes[index...]) where byte < 0x20 && byte != 0x09 || byte == 0x7F {
        throw HTTP1ParseError("a control character in a chunk extension", .invalidChunkSize)
      }
      return size
    }
  }

  /// `"HTTP/1." ("0" / "1")` at `index`: the version.
  static func version(_ bytes: UnsafeRawBufferPointer, at index: Int) -> HTTPVersion? {
    guard index + 8 <= bytes.count, bytes[index] == 0x48, bytes[index + 1] == 0x54, bytes[index + 2] == 0x54,
      bytes[index + 3] == 0x50, bytes[index + 4] == 0x2F, bytes[index + 5] == 0x31, bytes[index + 6] == 0x2E,
      bytes[index + 7] == 0x30 || bytes[index + 7] == 0x31
    else { return nil }
    return HTTPVersion(major: 1, minor: Int(bytes[index + 7] - 0x30))
  }
}
