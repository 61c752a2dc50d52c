import NIOCore
import NIOHTTP1

/// Reads HTTP/1.1 requests from a downstream connection, in place of NIO's llhttp-based `HTTPRequestDecoder`
/// (see ``HTTP1MessageReader``: the head found first, then read in one pass over its bytes; llhttp's callbacks
/// made a `String` of every piece of every header and passed through two delegates).
///
/// It reads what llhttp reads, as strictly (RFC 9112):
/// - a request line `method SP request-target SP HTTP-version CRLF` (more spaces taken, as llhttp does): the
///   method any token (extension methods pass, where llhttp knew a fixed list), the target visible ASCII, the
///   version `HTTP/1.0` or `HTTP/1.1`; header fields as ``HTTP1Grammar/parseFields(_:from:into:)``
///   reads them; a head of at most 80 KiB;
/// - the body framed by `transfer-encoding`, whose last coding must be chunked, or by one `content-length`;
///   both, or a second `content-length`, is refused (the raw material of request smuggling); else no body;
/// - CONNECT, or an upgrade request (`connection: upgrade` and an `upgrade` field), ends what is HTTP: the bytes
///   after it (and its body) are another protocol's, kept and handed on when the decoder is removed.
///
/// What it refuses, it reports as llhttp's `HTTPParserError`, which the request handler answers with 400; nothing
/// more is read from the connection.
///
/// The proxy reads requests with ``HTTP1ServerCodec``, which is this reading (``HTTP1RequestReading``) with the
/// response encoder and the pipelining in one handler; this decoder alone is the reading's side-by-side test
/// with NIO's decoder.
final class HTTP1RequestDecoder: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = HTTPServerRequestPart

  private var reading = HTTP1RequestReading()
  private var removed = false

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard !reading.reader.isFailed else { return }
    reading.reader.append(unwrapInboundIn(data))
    while !removed {
      do {
        guard let part = try reading.next() else { return }
        context.fireChannelRead(wrapInboundOut(part))
      } catch {
        reading.reader.fail()
        context.fireErrorCaught(HTTP1RequestReading.parserError(error, default: .unknown))
        return
      }
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    finish(context: context)
    context.fireChannelInactive()
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if case .inputClosed = event as? ChannelEvent { finish(context: context) }
    context.fireUserInboundEventTriggered(event)
  }

  /// The client sent no more: a request cut short is an error.
  private func finish(context: ChannelHandlerContext) {
    if let error = reading.finish() { context.fireErrorCaught(error) }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    removed = true
    // What the client sent after an upgrade request goes on as bytes, to the relay behind.
    guard let bytes = reading.upgradeLeftover(), context.channel.isActive else { return }
    context.fireChannelRead(NIOAny(bytes))
  }
}

/// Requests read from a downstream connection's bytes (``HTTP1MessageReader``), as NIO's request parts.
struct HTTP1RequestReading {
  var reader = HTTP1MessageReader()
  /// The last request head read asks for the connection to close after its response (RFC 9112 9.6:
  /// `connection: close`, or HTTP/1.0 without `keep-alive`).
  private(set) var closeRequested = false

  /// The next request part the bytes at hand make, nil when more are needed.
  mutating func next() throws -> HTTPServerRequestPart? {
    switch try reader.next() {
    case .needMore: return nil
    case .head(let section): return .head(try request(section))
    case .body(let bytes): return .body(bytes)
    case .end(let trailers): return .end(trailers)
    }
  }

  /// The bytes after an upgrade request (taken out), which are the new protocol's; nil when there are none or
  /// no upgrade was made.
  mutating func upgradeLeftover() -> ByteBuffer? {
    guard reader.isUpgraded, let bytes = reader.takeLeftover(), bytes.readableBytes > 0 else { return nil }
    return bytes
  }

  /// The client sent no more: the error to report when a request was cut short, else nil.
  mutating func finish() -> HTTPParserError? {
    do {
      _ = try reader.finish()
      return nil
    } catch {
      return Self.parserError(error, default: .invalidEOFState)
    }
  }

  /// What is reported for a refused request: llhttp's error kinds, as NIO's decoder reported them.
  static func parserError(_ error: any Error, default kind: HTTPParserError) -> HTTPParserError {
    (error as? HTTP1ParseError)?.kind ?? kind
  }

  /// Parses a request head and frames its body.
  private mutating func request(_ section: ByteBuffer) throws -> HTTPRequestHead {
    var fields = HTTP1Grammar.Fields()
    let (method, uri, version) = try section.withUnsafeReadableBytes { bytes in
      let (method, uri, version, end) = try Self.parseRequestLine(bytes)
      try HTTP1Grammar.parseFields(bytes, from: end, into: &fields)
      return (method, uri, version)
    }
    let framing: HTTP1MessageReader.Framing
    if let chunked = fields.transferEncodingChunked {
      guard fields.contentLength == nil else {
        throw HTTP1ParseError("a request with both transfer-encoding and content-length", .unexpectedContentLength)
      }
      guard chunked else { throw HTTP1ParseError("a request transfer-encoding not ending in chunked", .invalidChunkSize) }
      framing = .chunked
    } else {
      framing = fields.contentLength.map { .length($0) } ?? .none
    }
    // As llhttp: after an upgrade request (its body included) the bytes are the new protocol's.
    let upgrade = method.isCONNECT || (fields.connectionUpgrade && fields.upgrade)
    reader.beginBody(framing, upgrade: upgrade)
    closeRequested = fields.connectionClose || (version.minor == 0 && !fields.connectionKeepAlive)
    return HTTPRequestHead(version: version, method: method, uri: uri, headers: HTTPHeaders(fields.headers))
  }

  /// `method SP request-target SP HTTP-version CRLF`, and where the fields begin.
  static func parseRequestLine(_ bytes: UnsafeRawBufferPointer) throws -> (HTTPMethod, String, HTTPVersion, Int) {
    var index = 0
    while HTTP1Grammar.isTokenByte(bytes[index]) { index += 1 }
    let methodEnd = index
    guard methodEnd > 0, bytes[index] == 0x20 else { throw HTTP1ParseError("a malformed method", .invalidMethod) }
    // One space, or more (llhttp takes more, as RFC 9112 3 lets a recipient).
    while bytes[index] == 0x20 { index += 1 }
    let targetStart = index
    while bytes[index] > 0x20 && bytes[index] < 0x7F { index += 1 }
    let targetEnd = index
    guard targetEnd > targetStart, bytes[index] == 0x20 else {
      throw HTTP1ParseError("a malformed request target", .invalidURL)
    }
    while bytes[index] == 0x20 { index += 1 }
    guard let version = HTTP1Grammar.version(bytes, at: index), bytes[index + 8] == 0x0D, bytes[index + 9] == 0x0A else {
      throw HTTP1ParseError("not HTTP/1.0 or HTTP/1.1", .invalidVersion)
    }
    let method = HTTPMethod(rawValue: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[..<methodEnd]), as: UTF8.self))
    let uri = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[targetStart..<targetEnd]), as: UTF8.self)
    return (method, uri, version, index + 10)
  }
}
