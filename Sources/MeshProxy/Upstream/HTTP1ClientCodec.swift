import NIOCore
import NIOHTTP1
import Prometheus

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
final class HTTP1ClientCodec: ChannelDuplexHandler, RemovableChannelHandler, DirectlyWrittenCodec, UpstreamResponseHost {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = HTTPClientResponsePart
  typealias OutboundIn = HTTPClientRequestPart
  typealias OutboundOut = IOData

  /// Where the response parts go when a request handler forwards on this connection (directly, not through
  /// the pipeline); without one they go to the next handler.
  var responses: UpstreamResponseReporter?

  private var reader = HTTP1MessageReader()
  /// The methods of requests sent whose responses have not begun: HEAD and CONNECT frame theirs differently.
  private var methods = CircularBuffer<HTTPMethod>(initialCapacity: 2)
  /// The response being read asks for its connection to close once it ends.
  private var closeAfterResponse = false
  private var removed = false
  /// The request being written is chunked.
  private var chunkedRequest = false
  private(set) var pipelineContext: ChannelHandlerContext?
  /// The connection's TCP counters, when this codec keeps them (first in a plaintext connection's pipeline, it
  /// sees every byte read and written) instead of a ``ConnectionMetricsHandler`` in front of it.
  private let tcp: ProxyMetrics.TCP?
  /// The connection's opening is counted (and its close not yet).
  private var tcpCounted = false

  init(tcp: ProxyMetrics.TCP? = nil) { self.tcp = tcp }

  func handlerAdded(context: ChannelHandlerContext) {
    pipelineContext = context
    if context.channel.isActive { countOpened() }
  }

  func channelActive(context: ChannelHandlerContext) {
    countOpened()
    context.fireChannelActive()
  }

  private func countOpened() {
    guard let tcp, !tcpCounted else { return }
    tcpCounted = true
    tcp.open.increment()
    tcp.opened.increment()
  }

  private func countWritten(_ bytes: Int) {
    if let tcp, bytes > 0 { tcp.write.increment(by: Int64(bytes)) }
  }

  // MARK: Requests

  func write(_ part: HTTPClientRequestPart, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
    switch part {
    case .head(let head):
      methods.append(head.method)
      let (buffer, chunked) = HTTP1HeadEncoding.encode(
        startLine: .request(head), headers: head.headers, body: HTTP1HeadEncoding.requestBody(head.method),
        allocator: context.channel.allocator)
      chunkedRequest = chunked
      countWritten(buffer.readableBytes)
      context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: promise)
    case .body(let part):
      countWritten(HTTP1HeadEncoding.writeBody(part, chunked: chunkedRequest, context: context, promise: promise))
    case .end(let trailers):
      countWritten(HTTP1HeadEncoding.writeEnd(trailers, chunked: chunkedRequest, context: context, promise: promise))
      chunkedRequest = false
    }
  }

  // MARK: Responses

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let bytes = unwrapInboundIn(data)
    if let tcp { tcp.read.increment(by: Int64(bytes.readableBytes)) }
    reader.append(bytes)
    while !removed {
      let event: HTTP1MessageReader.Event
      do {
        event = try reader.next()
        if case .head(let section) = event {
          guard let head = try response(section) else { continue }
          deliver(.head(head), context: context)
          continue
        }
      } catch {
        reader.fail()
        failed(HTTP1ResponseError(error), context: context)
        return
      }
      switch event {
      case .needMore, .head:
        return
      case .body(let bytes):
        deliver(.body(bytes), context: context)
      case .end(let trailers):
        deliver(.end(trailers), context: context)
        if closeAfterResponse {
          closeAfterResponse = false
          context.close(promise: nil)
        }
      }
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    do {
      if case .end(let trailers) = try reader.finish() { deliver(.end(trailers), context: context) }
    } catch {
      failed(HTTP1ResponseError(error), context: context)
    }
    responses?.inactive()
    if let tcp, tcpCounted {
      tcpCounted = false
      tcp.open.decrement()
      tcp.closed.increment()
    }
    context.fireChannelInactive()
  }

  private func deliver(_ part: HTTPClientResponsePart, context: ChannelHandlerContext) {
    if let responses {
      responses.received(part)
    } else {
      context.fireChannelRead(wrapInboundOut(part))
    }
  }

  /// An error of this connection: the request forwarded on it fails and the connection closes; without a
  /// reporter the error goes on.
  private func failed(_ error: any Error, context: ChannelHandlerContext) {
    if let responses {
      responses.failed(error)
      context.close(promise: nil)
    } else {
      context.fireErrorCaught(error)
    }
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) { failed(error, context: context) }

  func channelReadComplete(context: ChannelHandlerContext) {
    responses?.readComplete()
    context.fireChannelReadComplete()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    responses?.writabilityChanged(context.channel.isWritable)
    context.fireChannelWritabilityChanged()
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    removed = true
    pipelineContext = nil
    // The connection lives on without this codec (an upgrade's relay): a counting handler takes over, in front.
    if let tcp, tcpCounted, context.channel.isActive {
      tcpCounted = false
      try? context.pipeline.syncOperations.addHandler(ConnectionMetricsHandler(metrics: tcp, counted: true), position: .first)
    }
    let bytes = reader.takeLeftover()
    // What followed an upgrade goes on as bytes, to the relay behind. Not when the channel closes (every
    // handler leaves then, and the ones behind take response parts, not bytes), nor bytes of a response.
    guard reader.isUpgraded, context.channel.isActive, let bytes, bytes.readableBytes > 0 else { return }
    context.fireChannelRead(NIOAny(bytes))
  }

  /// Parses a response head and frames its body; nil for an informational response, which is dropped.
  private func response(_ section: ByteBuffer) throws -> HTTPResponseHead? {
    var fields = HTTP1Grammar.Fields()
    let (version, status) = try section.withUnsafeReadableBytes { bytes in
      let (version, status, end) = try Self.parseStatusLine(bytes)
      try HTTP1Grammar.parseFields(bytes, from: end, into: &fields)
      return (version, status)
    }
    let code = status.code
    if code >= 100, code < 200, code != 101 {
      reader.skipMessage()
      return nil
    }
    let method = methods.popFirst() ?? .GET
    // As `head.isKeepAlive` says, from the tokens seen while parsing (that getter scans the headers again and
    // cost 8,000 instructions a response).
    closeAfterResponse = fields.connectionClose || (version.minor == 0 && !fields.connectionKeepAlive)
    if code == 101 || (method.isCONNECT && code >= 200 && code < 300) {
      closeAfterResponse = false
      reader.beginBody(.none, upgrade: true)
    } else if method.isHEAD || code == 204 || code == 304 {
      reader.beginBody(.none)
    } else if let chunked = fields.transferEncodingChunked {
      guard fields.contentLength == nil else {
        throw HTTP1ParseError("a response with both transfer-encoding and content-length")
      }
      reader.beginBody(chunked ? .chunked : .untilClose)
    } else if let length = fields.contentLength {
      reader.beginBody(.length(length))
    } else {
      reader.beginBody(.untilClose)
    }
    if reader.isUntilClose { closeAfterResponse = false }  // it ends with the connection anyway
    return HTTPResponseHead(version: version, status: status, headers: HTTPHeaders(fields.headers))
  }

  /// `HTTP/1.x SP 3DIGIT [SP reason] CRLF`: the version, the status, and where the fields begin.
  static func parseStatusLine(_ bytes: UnsafeRawBufferPointer) throws -> (HTTPVersion, HTTPResponseStatus, Int) {
    // "HTTP/1.1 200" is 12 bytes; the section ends with CRLF CRLF.
    guard bytes.count >= 14, let version = HTTP1Grammar.version(bytes, at: 0), bytes[8] == 0x20 else {
      throw HTTP1ParseError("not an HTTP/1.0 or HTTP/1.1 status line")
    }
    var code = 0
    for index in 9..<12 {
      let digit = bytes[index] &- 0x30
      guard digit < 10 else { throw HTTP1ParseError("a status code that is not three digits") }
      code = code * 10 + Int(digit)
    }
    guard code >= 100 else { throw HTTP1ParseError("status code \(code)") }
    var index = 12
    var reasonStart = 12
    if bytes[12] == 0x20 {
      reasonStart = 13
      index = 13
      while bytes[index] != 0x0D {
        let byte = bytes[index]
        guard byte >= 0x20 && byte != 0x7F || byte == 0x09 else {
          throw HTTP1ParseError("a control character in the reason phrase")
        }
        index += 1
      }
    }
    guard bytes[index] == 0x0D, bytes[index + 1] == 0x0A else { throw HTTP1ParseError("a malformed status line") }
    var status = HTTPResponseStatus(statusCode: code)
    if case .custom = status {
      status = HTTPResponseStatus(
        statusCode: code,
        reasonPhrase: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[reasonStart..<index]), as: UTF8.self))
    }
    return (version, status, index + 2)
  }
}

/// A response the proxy's HTTP/1.1 client could not read.
struct HTTP1ResponseError: Error, CustomStringConvertible {
  let description: String
  init(_ error: any Error) { self.description = "invalid HTTP/1.1 response from the upstream: \(error)" }
}
