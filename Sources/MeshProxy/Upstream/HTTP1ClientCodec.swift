#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP1

/// The proxy's HTTP/1.1 client side toward an upstream, in one handler: requests encoded with
/// ``HTTP1HeadEncoding`` (as ``HTTP1ResponseEncoder`` encodes responses), responses decoded here; in place of
/// NIO's `HTTPRequestEncoder` and `ByteToMessageHandler(HTTPResponseDecoder)`, and one handler hop instead of two.
///
/// NIO's decoder runs llhttp, whose callbacks make a `String` of every piece of every header and pass through
/// two delegates; with a dozen headers that was about a sixth of the instructions of a request through the
/// plaintext proxy (`Benchmarks/load/instructions.sh`). This one finds the end of the head, then reads it in
/// one pass over its bytes.
///
/// It reads what NIO's decoder reads (RFC 9112), as strictly:
/// - a status line `HTTP/1.0` or `HTTP/1.1`, a three-digit status, an optional reason; header fields
///   `token ":" OWS value OWS`, values without control characters but HTAB; no whitespace before the colon,
///   no folded lines; a head of at most 80 KiB;
/// - the body framed by the request and the response (6.3): none for a response to HEAD, for 204 and 304;
///   `transfer-encoding` whose last coding is chunked, then chunks with extensions and trailers; else
///   `content-length` (one, digits only); else until the connection closes. Both `transfer-encoding` and
///   `content-length`, or a second `content-length`, is an error (request smuggling's raw material);
/// - 1xx responses other than 101 are dropped (NIO's default); a 101, or a 2xx to CONNECT, ends the message
///   and the bytes after it are another protocol's: kept, and handed on when the handler is removed (the
///   upgrade's byte relay takes them).
///
/// A response whose head says the connection closes (`connection: close`, or HTTP/1.0 without keep-alive) is
/// ended, then the connection is closed, so the pool never hands it to another request.
final class HTTP1ClientCodec: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = HTTPClientResponsePart
  typealias OutboundIn = HTTPClientRequestPart
  typealias OutboundOut = IOData

  /// The most bytes a response head (status line and headers) or a trailer section may take.
  static let maxHeadSize = 80 * 1024
  /// The longest chunk-size line (size and extensions).
  static let maxChunkLineSize = 4 * 1024

  private enum State {
    /// Waiting for a response head.
    case head
    /// In a body of known length: bytes still to come.
    case body(remaining: Int)
    /// Waiting for a chunk-size line.
    case chunkSize
    /// In a chunk: bytes still to come.
    case chunkData(remaining: Int)
    /// The CRLF after a chunk's data.
    case chunkDataEnd
    /// After the last chunk: trailer fields, then an empty line.
    case trailers
    /// A body that ends when the connection closes.
    case untilClose
    /// The message ends now (no body, or the body is complete); with `upgrade`, the bytes after it are another
    /// protocol's.
    case end(upgrade: Bool)
    /// The bytes belong to another protocol (101, a tunnel): kept for whoever takes over.
    case upgraded
    /// An error was reported; nothing more is read.
    case failed
  }

  private enum Step {
    case part(HTTPClientResponsePart)
    case again
    case needMore
  }

  private var state = State.head
  /// Bytes received and not parsed yet; nil when there are none (the next read is then used as it is).
  private var pending: ByteBuffer?
  /// How much of `pending` was searched for the end of a head (or trailer section) already.
  private var scanned = 0
  /// The methods of requests sent whose responses have not begun: HEAD and CONNECT frame theirs differently.
  private var methods = CircularBuffer<HTTPMethod>(initialCapacity: 2)
  /// The response being read asks for its connection to close once it ends.
  private var closeAfterResponse = false
  private var removed = false
  /// The request being written is chunked.
  private var chunkedRequest = false

  // MARK: Requests

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    switch unwrapOutboundIn(data) {
    case .head(let head):
      methods.append(head.method)
      let (buffer, chunked) = HTTP1HeadEncoding.encode(
        startLine: .request(head), headers: head.headers, body: HTTP1HeadEncoding.requestBody(head.method),
        version: head.version, allocator: context.channel.allocator)
      chunkedRequest = chunked
      context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: promise)
    case .body(let part):
      HTTP1HeadEncoding.writeBody(part, chunked: chunkedRequest, context: context, promise: promise)
    case .end(let trailers):
      HTTP1HeadEncoding.writeEnd(trailers, chunked: chunkedRequest, context: context, promise: promise)
      chunkedRequest = false
    }
  }

  // MARK: Responses

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let incoming = unwrapInboundIn(data)
    if case .failed = state { return }
    if pending == nil || pending!.readableBytes == 0 {
      pending = incoming
    } else {
      var incoming = incoming
      pending!.writeBuffer(&incoming)
    }
    parse(context: context)
  }

  func channelInactive(context: ChannelHandlerContext) {
    switch state {
    case .untilClose:
      state = .head
      context.fireChannelRead(wrapInboundOut(.end(nil)))
    case .head where (pending?.readableBytes ?? 0) == 0, .upgraded, .failed:
      break
    default:
      // Closed in the middle of a response: it is incomplete.
      state = .failed
      context.fireErrorCaught(HTTP1ResponseError("the upstream closed the connection in the middle of a response"))
    }
    context.fireChannelInactive()
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    removed = true
    let bytes = pending
    pending = nil
    // What followed an upgrade goes on as bytes, to the relay behind. Not when the channel closes (every
    // handler leaves then, and the ones behind take response parts, not bytes), nor bytes of a response.
    guard case .upgraded = state, context.channel.isActive, let bytes, bytes.readableBytes > 0 else { return }
    context.fireChannelRead(NIOAny(bytes))
  }

  private func parse(context: ChannelHandlerContext) {
    while !removed {
      let step: Step
      do {
        step = try next()
      } catch {
        state = .failed
        pending = nil
        context.fireErrorCaught(error)
        return
      }
      switch step {
      case .needMore: return
      case .again: continue
      case .part(let part):
        context.fireChannelRead(wrapInboundOut(part))
        if case .end = part, closeAfterResponse {
          closeAfterResponse = false
          context.close(promise: nil)
        }
      }
    }
  }

  /// The next part the bytes at hand make, if any.
  private func next() throws -> Step {
    switch state {
    case .head:
      return try head()
    case .body(let remaining):
      guard let slice = take(upTo: remaining) else { return .needMore }
      state = slice.readableBytes == remaining ? .end(upgrade: false) : .body(remaining: remaining - slice.readableBytes)
      return .part(.body(slice))
    case .chunkSize:
      guard let line = try line(limit: Self.maxChunkLineSize, what: "chunk-size line") else { return .needMore }
      let size = try Self.chunkSize(line)
      state = size == 0 ? .trailers : .chunkData(remaining: size)
      return .again
    case .chunkData(let remaining):
      guard let slice = take(upTo: remaining) else { return .needMore }
      state = slice.readableBytes == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - slice.readableBytes)
      return .part(.body(slice))
    case .chunkDataEnd:
      guard var bytes = pending, bytes.readableBytes >= 2 else { return .needMore }
      guard bytes.readInteger(as: UInt16.self) == 0x0D0A else { throw HTTP1ResponseError("a chunk's data is not followed by CRLF") }
      keep(bytes)
      state = .chunkSize
      return .again
    case .trailers:
      guard let section = try section(what: "trailer section") else { return .needMore }
      state = .head
      if section.readableBytes == 2 { return .part(.end(nil)) }
      let trailers = try section.withUnsafeReadableBytes { bytes in
        var fields = Fields()
        try Self.parseFields(bytes, from: 0, into: &fields)
        return fields.headers
      }
      return .part(.end(HTTPHeaders(trailers)))
    case .untilClose:
      guard let bytes = pending, bytes.readableBytes > 0 else { return .needMore }
      pending = nil
      return .part(.body(bytes))
    case .end(let upgrade):
      state = upgrade ? .upgraded : .head
      return .part(.end(nil))
    case .upgraded, .failed:
      return .needMore
    }
  }

  /// Parses a response head, when all of it is here.
  private func head() throws -> Step {
    // Empty lines before a status line are ignored (RFC 9112 2.2).
    while var bytes = pending, bytes.readableBytes >= 2, bytes.getInteger(at: bytes.readerIndex, as: UInt16.self) == 0x0D0A {
      bytes.moveReaderIndex(forwardBy: 2)
      keep(bytes)
    }
    guard let section = try section(what: "response head") else { return .needMore }
    var fields = Fields()
    let (version, status) = try section.withUnsafeReadableBytes { bytes in
      let (version, status, end) = try Self.parseStatusLine(bytes)
      try Self.parseFields(bytes, from: end, into: &fields)
      return (version, status)
    }
    let code = status.code
    if code >= 100, code < 200, code != 101 { return .again }  // informational: dropped
    let method = methods.popFirst() ?? .GET
    let head = HTTPResponseHead(version: version, status: status, headers: HTTPHeaders(fields.headers))
    // As `head.isKeepAlive` says, from the tokens seen while parsing (that getter scans the headers again and
    // cost 8,000 instructions a response).
    closeAfterResponse = fields.connectionClose || (version.minor == 0 && !fields.connectionKeepAlive)
    if code == 101 || (method == .CONNECT && code >= 200 && code < 300) {
      closeAfterResponse = false
      state = .end(upgrade: true)
    } else if method == .HEAD || code == 204 || code == 304 {
      state = .end(upgrade: false)
    } else if let chunked = fields.transferEncodingChunked {
      guard fields.contentLength == nil else {
        throw HTTP1ResponseError("a response with both transfer-encoding and content-length")
      }
      state = chunked ? .chunkSize : .untilClose
    } else if let length = fields.contentLength {
      state = length == 0 ? .end(upgrade: false) : .body(remaining: length)
    } else {
      state = .untilClose
    }
    if case .untilClose = state { closeAfterResponse = false }  // it ends with the connection anyway
    return .part(.head(head))
  }

  // MARK: Bytes

  /// Stores what is left of the pending bytes (nil when nothing is).
  private func keep(_ bytes: ByteBuffer) {
    pending = bytes.readableBytes > 0 ? bytes : nil
  }

  /// Up to `count` pending bytes, taken out; nil when there are none.
  private func take(upTo count: Int) -> ByteBuffer? {
    guard var bytes = pending, bytes.readableBytes > 0 else { return nil }
    let slice = bytes.readSlice(length: min(count, bytes.readableBytes))!
    keep(bytes)
    return slice
  }

  /// A line (without its CRLF), taken out of the pending bytes, when all of it is here.
  private func line(limit: Int, what: String) throws -> ByteBuffer? {
    guard var bytes = pending else { return nil }
    let found = bytes.withUnsafeReadableBytes { raw -> Int? in
      guard raw.count >= 2 else { return nil }
      for index in 0..<(raw.count - 1) where raw[index] == 0x0D {
        return raw[index + 1] == 0x0A ? index : -1
      }
      return nil
    }
    guard let length = found else {
      if bytes.readableBytes > limit { throw HTTP1ResponseError("a \(what) over \(limit) bytes") }
      return nil
    }
    guard length >= 0 else { throw HTTP1ResponseError("a CR without LF in a \(what)") }
    if length > limit { throw HTTP1ResponseError("a \(what) over \(limit) bytes") }
    let line = bytes.readSlice(length: length)!
    bytes.moveReaderIndex(forwardBy: 2)
    keep(bytes)
    return line
  }

  /// A head or trailer section up to and with its empty line (CRLF CRLF, or CRLF alone for an empty trailer
  /// section), taken out of the pending bytes, when all of it is here. What was searched is not searched again.
  private func section(what: String) throws -> ByteBuffer? {
    guard var bytes = pending else { return nil }
    let start = max(scanned - 3, 0)
    let found = bytes.withUnsafeReadableBytes { raw -> Int? in
      if raw.count >= 2, raw[0] == 0x0D, raw[1] == 0x0A { return 2 }
      // Each LF (memchr: vectorized) may end CR LF CR LF.
      var index = start + 3
      while index < raw.count, let base = raw.baseAddress,
        let found = memchr(base + index, 0x0A, raw.count - index)
      {
        let lf = base.distance(to: UnsafeRawPointer(found))
        if raw[lf - 1] == 0x0D, raw[lf - 2] == 0x0A, raw[lf - 3] == 0x0D { return lf + 1 }
        index = lf + 1
      }
      return nil
    }
    guard let length = found else {
      if bytes.readableBytes > Self.maxHeadSize { throw HTTP1ResponseError("a \(what) over \(Self.maxHeadSize) bytes") }
      scanned = bytes.readableBytes
      return nil
    }
    if length > Self.maxHeadSize { throw HTTP1ResponseError("a \(what) over \(Self.maxHeadSize) bytes") }
    scanned = 0
    let section = bytes.readSlice(length: length)!
    keep(bytes)
    return section
  }

  // MARK: Grammar

  /// The header fields of a head or trailer section, and the framing they say.
  struct Fields {
    var headers: [(String, String)] = []
    var contentLength: Int?
    /// Set when `transfer-encoding` is present: whether its last coding is chunked.
    var transferEncodingChunked: Bool?
    /// `connection` named `close`, or `keep-alive`.
    var connectionClose = false
    var connectionKeepAlive = false
  }

  /// `HTTP/1.x SP 3DIGIT [SP reason] CRLF`: the version, the status, and where the fields begin.
  static func parseStatusLine(_ bytes: UnsafeRawBufferPointer) throws -> (HTTPVersion, HTTPResponseStatus, Int) {
    // "HTTP/1.1 200" is 12 bytes; the section ends with CRLF CRLF.
    guard bytes.count >= 14, bytes[0] == 0x48, bytes[1] == 0x54, bytes[2] == 0x54, bytes[3] == 0x50, bytes[4] == 0x2F,
      bytes[5] == 0x31, bytes[6] == 0x2E, bytes[7] == 0x30 || bytes[7] == 0x31, bytes[8] == 0x20
    else { throw HTTP1ResponseError("not an HTTP/1.0 or HTTP/1.1 status line") }
    let version = HTTPVersion(major: 1, minor: Int(bytes[7] - 0x30))
    var code = 0
    for index in 9..<12 {
      let digit = bytes[index] &- 0x30
      guard digit < 10 else { throw HTTP1ResponseError("a status code that is not three digits") }
      code = code * 10 + Int(digit)
    }
    guard code >= 100 else { throw HTTP1ResponseError("status code \(code)") }
    var index = 12
    var reasonStart = 12
    if bytes[12] == 0x20 {
      reasonStart = 13
      index = 13
      while bytes[index] != 0x0D {
        let byte = bytes[index]
        guard byte >= 0x20 && byte != 0x7F || byte == 0x09 else { throw HTTP1ResponseError("a control character in the reason phrase") }
        index += 1
      }
    }
    guard bytes[index] == 0x0D, bytes[index + 1] == 0x0A else { throw HTTP1ResponseError("a malformed status line") }
    var status = HTTPResponseStatus(statusCode: code)
    if case .custom = status {
      status = HTTPResponseStatus(
        statusCode: code, reasonPhrase: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[reasonStart..<index]), as: UTF8.self))
    }
    return (version, status, index + 2)
  }

  /// The fields from `start` to the section's empty line.
  static func parseFields(_ bytes: UnsafeRawBufferPointer, from start: Int, into fields: inout Fields) throws {
    // Room for a typical head's fields at once, not four reallocations on the way to a dozen.
    fields.headers.reserveCapacity(16)
    var index = start
    while true {
      // An empty line ends the section.
      if bytes[index] == 0x0D {
        guard bytes[index + 1] == 0x0A else { throw HTTP1ResponseError("a CR without LF") }
        return
      }
      let nameStart = index
      while bytes[index] != 0x3A {  // ":"
        guard isTokenByte(bytes[index]) else {
          throw HTTP1ResponseError(
            bytes[index] == 0x20 || bytes[index] == 0x09
              ? (index == nameStart ? "a folded header line" : "whitespace before a header's colon")
              : "a character a header name cannot have")
        }
        index += 1
      }
      let nameEnd = index
      guard nameEnd > nameStart else { throw HTTP1ResponseError("an empty header name") }
      index += 1
      while bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
      let valueStart = index
      var valueEnd = index
      while true {
        let byte = bytes[index]
        if byte == 0x0D { break }
        guard byte >= 0x20 && byte != 0x7F || byte == 0x09 else {
          throw HTTP1ResponseError("a control character in a header value")
        }
        index += 1
        if byte != 0x20 && byte != 0x09 { valueEnd = index }
      }
      guard bytes[index + 1] == 0x0A else { throw HTTP1ResponseError("a CR without LF") }
      index += 2
      let name = UnsafeRawBufferPointer(rebasing: bytes[nameStart..<nameEnd])
      let value = UnsafeRawBufferPointer(rebasing: bytes[valueStart..<valueEnd])
      switch name.count {
      case 14 where isName(name, "content-length"):
        guard fields.contentLength == nil else { throw HTTP1ResponseError("more than one content-length") }
        fields.contentLength = try contentLength(value)
      case 17 where isName(name, "transfer-encoding"):
        fields.transferEncodingChunked = lastCodingIsChunked(value)
      case 10 where isName(name, "connection"):
        forEachToken(value) { token in
          if isName(token, "close") { fields.connectionClose = true }
          if isName(token, "keep-alive") { fields.connectionKeepAlive = true }
        }
      default:
        break
      }
      fields.headers.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
    }
  }

  /// tchar (RFC 9110 5.6.2) as two bit sets, bytes 0-63 and 64-127: ``!#$%&'*+-.^_`|~``, digits, letters.
  static let tokenLow: UInt64 = 0x03FF_6CFA_0000_0000
  static let tokenHigh: UInt64 = 0x57FF_FFFF_C7FF_FFFE

  @inline(__always)
  static func isTokenByte(_ byte: UInt8) -> Bool {
    byte < 64 ? tokenLow >> UInt64(byte) & 1 != 0 : byte < 128 && tokenHigh >> UInt64(byte - 64) & 1 != 0
  }

  static func isName(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
    let expected = UnsafeRawBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
    guard bytes.count == expected.count else { return false }
    for index in 0..<bytes.count where bytes[index] | 0x20 != expected[index] { return false }
    return true
  }

  static func contentLength(_ value: UnsafeRawBufferPointer) throws -> Int {
    guard !value.isEmpty else { throw HTTP1ResponseError("an empty content-length") }
    var length = 0
    for byte in value {
      let digit = byte &- 0x30
      guard digit < 10 else { throw HTTP1ResponseError("a content-length that is not digits") }
      let (times10, overflow1) = length.multipliedReportingOverflow(by: 10)
      let (sum, overflow2) = times10.addingReportingOverflow(Int(digit))
      guard !overflow1, !overflow2 else { throw HTTP1ResponseError("a content-length too large") }
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
    var end = value.count
    var start = end
    while start > 0, value[start - 1] != 0x2C { start -= 1 }  // after the last comma
    while start < end, value[start] == 0x20 || value[start] == 0x09 { start += 1 }
    while end > start, value[end - 1] == 0x20 || value[end - 1] == 0x09 { end -= 1 }
    return isName(UnsafeRawBufferPointer(rebasing: value[start..<end]), "chunked")
  }

  /// `chunk-size [ ";" chunk-ext ]`: the size.
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
        guard size < (1 << 56) else { throw HTTP1ResponseError("a chunk size too large") }
        size = size << 4 | Int(digit)
        index += 1
      }
      guard index > 0 else { throw HTTP1ResponseError("a chunk-size line without a size") }
      // No whitespace before an extension: llhttp refuses it too.
      guard index == bytes.count || bytes[index] == 0x3B else { throw HTTP1ResponseError("a malformed chunk-size line") }
      for byte in UnsafeRawBufferPointer(rebasing: bytes[index...]) where byte < 0x20 && byte != 0x09 || byte == 0x7F {
        throw HTTP1ResponseError("a control character in a chunk extension")
      }
      return size
    }
  }
}

/// A response the proxy's HTTP/1.1 client could not read.
struct HTTP1ResponseError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = "invalid HTTP/1.1 response from the upstream: \(description)" }
}
