import NIOCore
import NIOHTTP1

/// The proxy's HTTP/1.1 encoders: in place of NIO's `HTTPResponseEncoder` (toward clients) and
/// `HTTPRequestEncoder` (toward HTTP/1.1 upstreams), with NIO's framing rules and a cheaper head.
///
/// NIO writes a head piece by piece (name, `": "`, value, CRLF: four buffer writes with their capacity and
/// uniqueness checks per header) and frames the body by editing the head's headers first (`contains`,
/// `remove`, `replaceOrAdd`: each a pass over them, and a copy of their storage, which the proxy shares with the
/// head it parsed). These size the head once, write it with one capacity check, and settle the framing in the
/// same pass, leaving out the headers the framing drops. Together that was about 7 % of the instructions of a
/// request through the plaintext proxy (`Benchmarks/load/instructions.sh`).
///
/// The framing is NIO's (RFC 9112 6): a message that has a body and a `content-length` keeps it, and any
/// `transfer-encoding` goes; an HTTP/1.1 message with a body and no length is sent chunked; a response that
/// cannot have a body (1xx, 204, 304, a 2xx to CONNECT) carries neither header; a request whose method rarely
/// has a body keeps the framing it has. Responses to HEAD keep the headers a GET would have had, and no body
/// bytes are sent.
enum HTTP1HeadEncoding {
  /// Whether the message can have a body (NIO's `HTTPMethod.HasBody`).
  enum Body {
    case yes
    case no
    case unlikely
  }

  /// Whether requests with `method` have a body, as NIO's encoder judges it.
  static func requestBody(_ method: HTTPMethod) -> Body {
    switch method {
    case .TRACE: .no
    case .POST, .PUT, .PATCH: .yes
    default: .unlikely
    }
  }

  /// Writes `startLine` and `headers`, framed for `body`, into a new buffer; returns it and whether the body
  /// is to be sent chunked.
  ///
  /// In one pass over the headers when the head fits the room a typical head needs (``encodeInOnePass``), else in
  /// two, sized exactly (``encodeMeasured``); the bytes are the same.
  static func encode(
    startLine: StartLine, headers: HTTPHeaders, body: Body, allocator: ByteBufferAllocator
  ) -> (ByteBuffer, chunked: Bool) {
    encodeInOnePass(startLine: startLine, headers: headers, body: body, allocator: allocator)
      ?? encodeMeasured(startLine: startLine, headers: headers, body: body, allocator: allocator)
  }

  /// What the framing does to a head: the headers it drops, the one it adds, and whether the body is chunked.
  struct Framing {
    var dropContentLength = false
    var dropTransferEncoding = false
    var addChunked = false
    var chunked = false

    /// For a message with `body`, given the framing headers it has (`firstTransferEncodingIsChunked`: its first
    /// `transfer-encoding` says `chunked`).
    init(
      body: Body, version: HTTPVersion, contentLength: Bool, firstTransferEncodingIsChunked: Bool
    ) {
      let http11 = version.major == 1 && version.minor >= 1
      switch body {
      case .no:
        dropContentLength = true
        dropTransferEncoding = true
      case .yes where contentLength:
        dropTransferEncoding = true
      case .yes:
        if http11 {
          dropTransferEncoding = true
          addChunked = true
        }
        chunked = http11
      case .unlikely where contentLength:
        dropTransferEncoding = true
      case .unlikely:
        chunked = http11 && firstTransferEncodingIsChunked
      }
    }
  }

  /// Room a head gets in one pass: its start line, this much per header, and the framing's end.
  static let onePassBytesPerHeader = 64

  /// The head written while its headers are read once, into room for ``onePassBytesPerHeader`` bytes a header;
  /// nil when it does not fit, or has more framing headers than it keeps track of (two), for
  /// ``encodeMeasured``. The framing headers are written where they stand and taken out afterwards when the
  /// framing drops them (moving the bytes after them), which a proxied message rarely needs: the first pass of
  /// the measured encoding was about 40 % of a head's cost (`Benchmarks/load/instructions.sh`).
  static func encodeInOnePass(
    startLine: StartLine, headers: HTTPHeaders, body: Body, allocator: ByteBufferAllocator
  ) -> (ByteBuffer, chunked: Bool)? {
    let version = startLine.version
    let tail = 2 + chunkedHeader.utf8CodeUnitCount
    let room = startLine.size + headers.count * onePassBytesPerHeader + tail
    var buffer = allocator.buffer(capacity: room)
    var chunked = false
    var fits = true
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { raw in
      var out = Output(UnsafeMutableRawBufferPointer(rebasing: raw[..<room]))
      startLine.write(to: &out)
      let limit = room - tail
      // The framing headers seen (at most two), each as its byte range and whether it is content-length.
      var framingCount = 0
      var first = (start: 0, end: 0, isLength: false)
      var second = (start: 0, end: 0, isLength: false)
      var contentLength = false
      var transferEncoding = false
      var firstTransferEncodingIsChunked = false
      for (name, value) in headers {
        let nameCount = name.utf8.count
        let start = out.offset
        guard start + nameCount + value.utf8.count + 4 <= limit else {
          fits = false
          return 0
        }
        let isLength = nameCount == 14 && HTTPHeaderRules.isName(name, "content-length")
        let isEncoding = !isLength && nameCount == 17 && HTTPHeaderRules.isName(name, "transfer-encoding")
        out.write(name)
        out.write(literal: ": ")
        out.write(value)
        out.write(literal: "\r\n")
        guard isLength || isEncoding else { continue }
        if isLength {
          contentLength = true
        } else {
          if !transferEncoding { firstTransferEncodingIsChunked = value == "chunked" }
          transferEncoding = true
        }
        switch framingCount {
        case 0: first = (start, out.offset, isLength)
        case 1: second = (start, out.offset, isLength)
        default:
          fits = false
          return 0
        }
        framingCount += 1
      }
      let framing = Framing(
        body: body, version: version, contentLength: contentLength,
        firstTransferEncodingIsChunked: firstTransferEncodingIsChunked)
      func takeOut(_ range: (start: Int, end: Int, isLength: Bool)) {
        guard range.isLength ? framing.dropContentLength : framing.dropTransferEncoding else { return }
        let base = raw.baseAddress!
        (base + range.start).copyMemory(from: base + range.end, byteCount: out.offset - range.end)
        out.offset -= range.end - range.start
      }
      // The second range first, so that the first one's offsets still hold.
      if framingCount == 2 { takeOut(second) }
      if framingCount >= 1 { takeOut(first) }
      if framing.addChunked { out.write(literal: chunkedHeader) }
      out.write(literal: "\r\n")
      chunked = framing.chunked
      return out.offset
    }
    return fits ? (buffer, chunked) : nil
  }

  /// The head written in two passes over its headers: one finds the framing headers and the size of them all,
  /// the other writes them into a buffer of that size.
  static func encodeMeasured(
    startLine: StartLine, headers: HTTPHeaders, body: Body, allocator: ByteBufferAllocator
  ) -> (ByteBuffer, chunked: Bool) {
    // One pass finds the framing headers and the size of them all.
    var contentLength = false
    var transferEncoding = false
    var firstTransferEncodingIsChunked = false
    var headersSize = 0
    for (name, value) in headers {
      let nameCount = name.utf8.count
      headersSize += nameCount + value.utf8.count + 4
      switch nameCount {
      case 14 where HTTPHeaderRules.isName(name, "content-length"):
        contentLength = true
      case 17 where HTTPHeaderRules.isName(name, "transfer-encoding"):
        if !transferEncoding { firstTransferEncodingIsChunked = value == "chunked" }
        transferEncoding = true
      default:
        break
      }
    }
    let framing = Framing(
      body: body, version: startLine.version, contentLength: contentLength,
      firstTransferEncodingIsChunked: firstTransferEncodingIsChunked)
    let dropContentLength = framing.dropContentLength
    let dropTransferEncoding = framing.dropTransferEncoding
    let dropping = (dropContentLength && contentLength) || (dropTransferEncoding && transferEncoding)

    let size = startLine.size + headersSize + 2 + (framing.addChunked ? chunkedHeader.utf8CodeUnitCount : 0)
    var buffer = allocator.buffer(capacity: size)
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { raw in
      var out = Output(UnsafeMutableRawBufferPointer(rebasing: raw[..<size]))
      startLine.write(to: &out)
      for (name, value) in headers {
        if dropping {
          let count = name.utf8.count
          if dropContentLength && count == 14 && HTTPHeaderRules.isName(name, "content-length") { continue }
          if dropTransferEncoding && count == 17 && HTTPHeaderRules.isName(name, "transfer-encoding") { continue }
        }
        out.write(name)
        out.write(literal: ": ")
        out.write(value)
        out.write(literal: "\r\n")
      }
      if framing.addChunked { out.write(literal: chunkedHeader) }
      out.write(literal: "\r\n")
      return out.offset
    }
    return (buffer, framing.chunked)
  }

  private static let chunkedHeader: StaticString = "transfer-encoding: chunked\r\n"

  /// A request or status line.
  enum StartLine {
    case request(HTTPRequestHead)
    case response(HTTPResponseHead)

    /// The version the line says: the head's, but HTTP/1.1 for a head that came over HTTP/2 (version 2.0),
    /// so that the request handler need not set it on a head whose storage it shares (a copy of the head).
    var version: HTTPVersion {
      let version: HTTPVersion
      switch self {
      case .request(let head): version = head.version
      case .response(let head): version = head.version
      }
      return version.major >= 2 ? .http1_1 : version
    }

    var size: Int {
      switch self {
      case .request(let head):
        head.method.rawValue.utf8.count + 1 + head.uri.utf8.count + 1 + versionSize(version) + 2
      case .response(let head):
        // "HTTP/1.1 200 " + reason + CRLF; the code is written as three digits.
        versionSize(version) + 5 + head.status.reasonPhrase.utf8.count + 2
      }
    }

    func write(to out: inout Output) {
      switch self {
      case .request(let head):
        out.write(head.method.rawValue)
        out.write(literal: " ")
        out.write(head.uri)
        out.write(literal: " ")
        out.write(version: version)
        out.write(literal: "\r\n")
      case .response(let head):
        out.write(version: version)
        out.write(literal: " ")
        out.write(statusCode: head.status.code)
        out.write(literal: " ")
        out.write(head.status.reasonPhrase)
        out.write(literal: "\r\n")
      }
    }

    private func versionSize(_ version: HTTPVersion) -> Int {
      version.major < 10 && version.minor < 10 ? 8 : 5 + String(version.major).utf8.count + String(version.minor).utf8.count + 1
    }
  }

  /// Copies bytes into a buffer's writable bytes, sized beforehand.
  struct Output {
    let raw: UnsafeMutableRawBufferPointer
    var offset = 0

    init(_ raw: UnsafeMutableRawBufferPointer) { self.raw = raw }

    @inline(__always)
    mutating func write(_ string: String) {
      var string = string
      string.withUTF8 { bytes in
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        assert(offset + bytes.count <= raw.count, "the head was sized wrong")
        (raw.baseAddress! + offset).copyMemory(from: base, byteCount: bytes.count)
        offset += bytes.count
      }
    }

    @inline(__always)
    mutating func write(literal string: StaticString) {
      assert(offset + string.utf8CodeUnitCount <= raw.count, "the head was sized wrong")
      (raw.baseAddress! + offset).copyMemory(from: string.utf8Start, byteCount: string.utf8CodeUnitCount)
      offset += string.utf8CodeUnitCount
    }

    mutating func write(version: HTTPVersion) {
      if version.major < 10 && version.minor < 10 {
        write(literal: "HTTP/")
        raw[offset] = UInt8(ascii: "0") + UInt8(version.major)
        raw[offset + 1] = UInt8(ascii: ".")
        raw[offset + 2] = UInt8(ascii: "0") + UInt8(version.minor)
        offset += 3
      } else {
        write(literal: "HTTP/")
        write(String(version.major))
        write(literal: ".")
        write(String(version.minor))
      }
    }

    /// Three digits (a status code is 100 to 999; others are clamped there, as no client could read them).
    mutating func write(statusCode: UInt) {
      let code = min(max(statusCode, 100), 999)
      raw[offset] = UInt8(ascii: "0") + UInt8(code / 100)
      raw[offset + 1] = UInt8(ascii: "0") + UInt8(code / 10 % 10)
      raw[offset + 2] = UInt8(ascii: "0") + UInt8(code % 10)
      offset += 3
    }
  }

  /// A body part: as is, or as one chunk (size line, bytes, CRLF; empty parts are not framed, as they would
  /// end the body). `promise` completes with the last of the writes.
  /// Returns the number of bytes written.
  @discardableResult
  static func writeBody(
    _ part: IOData, chunked: Bool, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?
  ) -> Int {
    let count = part.readableBytes
    guard chunked, count > 0 else {
      context.write(NIOAny(part), promise: promise)
      return count
    }
    var line = context.channel.allocator.buffer(capacity: 20)
    line.writeString(String(count, radix: 16))
    line.writeStaticString("\r\n")
    let framing = line.readableBytes + 2
    context.write(NIOAny(IOData.byteBuffer(line)), promise: nil)
    context.write(NIOAny(part), promise: nil)
    line.moveReaderIndex(forwardBy: line.readableBytes - 2)
    context.write(NIOAny(IOData.byteBuffer(line)), promise: promise)
    return count + framing
  }

  /// A message's end: the last chunk and the trailers when chunked; else nothing (a promise is completed in
  /// order by an empty write).
  /// Returns the number of bytes written.
  @discardableResult
  static func writeEnd(
    _ trailers: HTTPHeaders?, chunked: Bool, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?
  ) -> Int {
    if chunked {
      var buffer = context.channel.allocator.buffer(capacity: 8)
      appendEnd(trailers, to: &buffer)
      let count = buffer.readableBytes
      context.write(NIOAny(IOData.byteBuffer(buffer)), promise: promise)
      return count
    } else if let promise {
      context.write(NIOAny(IOData.byteBuffer(context.channel.allocator.buffer(capacity: 0))), promise: promise)
    }
    return 0
  }

  /// The last chunk and the trailers of a chunked body, appended to `buffer`.
  static func appendEnd(_ trailers: HTTPHeaders?, to buffer: inout ByteBuffer) {
    buffer.writeStaticString("0\r\n")
    for (name, value) in trailers ?? [:] {
      buffer.writeString(name)
      buffer.writeStaticString(": ")
      buffer.writeString(value)
      buffer.writeStaticString("\r\n")
    }
    buffer.writeStaticString("\r\n")
  }
}

/// Encodes the responses of a downstream HTTP/1.1 connection (see ``HTTP1HeadEncoding``). The request handler
/// tells it each request's method (``requestReceived(_:)``), so that responses to HEAD and CONNECT carry no body.
/// (``HTTP1ServerCodec`` does the same with the decoder and the pipelining in one handler; this one stays for
/// the encoder's side-by-side tests with NIO's.)
final class HTTP1ResponseEncoder: ChannelOutboundHandler, RemovableChannelHandler {
  typealias OutboundIn = HTTPServerResponsePart
  typealias OutboundOut = IOData

  private var encoding = HTTP1ResponseEncoding()

  /// A request was handed to the request handler: the next final response answers it.
  func requestReceived(_ method: HTTPMethod) { encoding.requestMethod = method }

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    encoding.write(unwrapOutboundIn(data), context: context, promise: promise)
  }

  func flush(context: ChannelHandlerContext) {
    encoding.writeHeld(context: context)
    context.flush()
  }

  func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
    encoding.writeHeld(context: context)
    context.close(mode: mode, promise: promise)
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    encoding.writeHeld(context: context)
  }
}

/// The state of a downstream connection's response encoding: the method of the request the next final
/// response answers, and how the body of the response under way is framed.
struct HTTP1ResponseEncoding {
  private var chunked = false
  private var suppressBody = false
  /// The method of the request the next final response answers.
  var requestMethod: HTTPMethod?
  /// A response's head, held until its first body part or its end, so that a small response goes to the
  /// socket as one write of head and body: each write through the pipeline cost the client proxy about 1,700
  /// instructions (`Benchmarks/load/instructions.sh`). Only a head written without a promise, of a response
  /// that has a body to come, is held; a flush, a close or the codec's removal writes it.
  private var held: ByteBuffer?

  /// A body part this large or smaller is copied into a held head; a larger one goes as a write of its own.
  static let coalescedBodyLimit = 16384

  /// Writes `part` as bytes to `context`.
  mutating func write(_ part: HTTPServerResponsePart, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
    switch part {
    case .head(let head):
      writeHeld(context: context)
      let code = head.status.code
      var respondingToConnect = false
      // A 1xx other than 101 is followed by the final response, which answers the request.
      if !(code >= 100 && code < 200 && code != 101), let method = requestMethod {
        requestMethod = nil
        suppressBody = method.isHEAD || method.isCONNECT
        respondingToConnect = method.isCONNECT
      }
      let body: HTTP1HeadEncoding.Body = respondingToConnect || !head.status.mayHaveResponseBody ? .no : .yes
      let (buffer, chunked) = HTTP1HeadEncoding.encode(
        startLine: .response(head), headers: head.headers, body: body, allocator: context.channel.allocator)
      self.chunked = suppressBody ? false : chunked
      if promise == nil, body == .yes, !suppressBody {
        held = buffer
      } else {
        context.write(NIOAny(IOData.byteBuffer(buffer)), promise: promise)
      }
    case .body(let part):
      if suppressBody {
        promise?.fail(HTTP1EncoderError.responseBodyNotAllowed)
      } else if var buffer = held, case .byteBuffer(var bytes) = part, bytes.readableBytes <= Self.coalescedBodyLimit {
        held = nil
        let count = bytes.readableBytes
        if chunked, count > 0 {
          buffer.writeString(String(count, radix: 16))
          buffer.writeStaticString("\r\n")
          buffer.writeBuffer(&bytes)
          buffer.writeStaticString("\r\n")
        } else {
          buffer.writeBuffer(&bytes)
        }
        context.write(NIOAny(IOData.byteBuffer(buffer)), promise: promise)
      } else {
        writeHeld(context: context)
        HTTP1HeadEncoding.writeBody(part, chunked: chunked, context: context, promise: promise)
      }
    case .end(let trailers):
      suppressBody = false
      if var buffer = held {
        held = nil
        if chunked { HTTP1HeadEncoding.appendEnd(trailers, to: &buffer) }
        context.write(NIOAny(IOData.byteBuffer(buffer)), promise: promise)
      } else {
        HTTP1HeadEncoding.writeEnd(trailers, chunked: chunked, context: context, promise: promise)
      }
      chunked = false
    }
  }

  /// Writes a held head, if there is one: before a flush, a close, or the encoder's removal.
  mutating func writeHeld(context: ChannelHandlerContext) {
    guard let buffer = held else { return }
    held = nil
    context.write(NIOAny(IOData.byteBuffer(buffer)), promise: nil)
  }
}

/// A body part written for a response that cannot have one (to HEAD or CONNECT).
struct HTTP1EncoderError: Error, CustomStringConvertible {
  static let responseBodyNotAllowed = HTTP1EncoderError()
  var description: String { "a response to HEAD or CONNECT carries no body" }
}
