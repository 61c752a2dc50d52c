import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

// The proxy's HTTP/2 streams carry HTTP/1-style parts (`HTTPClientRequestPart`, `HTTPServerResponsePart`...)
// to and from the request handler. One handler per stream does what three did: swift-nio-http2's
// `HTTP2FramePayloadToHTTP1{Client,Server}Codec`, the receive-side validation (``HTTP2HeaderValidator``), and,
// on the server side, keeping a response without a body one HEADERS frame (the gRPC trailers-only form).
//
// Each handler in a stream's pipeline is set up and torn down per request, and every frame passes each; and
// NIO's codecs build each header block three times (an array, `HTTPHeaders`, then `HPACKHeaders`, lowercasing
// every name with Unicode rules and comparing it with five names). Together that was about 37,000
// instructions a request on each side of the mTLS pair (Benchmarks/load/instructions.sh). Here a block is
// built once, names are lowercased only when they have an uppercase letter, and a received block is
// validated and read in one pass.
//
// The translation is NIO's, rule for rule:
// - a request's `host` becomes `:authority` (none, or two, is an error), after `:path`, `:method` and
//   `:scheme`; names are lowercased; `connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`,
//   `upgrade` and the names `connection` lists are dropped;
// - the last frame written is held until the end or a flush, so the end rides on it (END_STREAM) instead of
//   an empty DATA frame;
// - a received request gets `host` from `:authority` unless it has one, and a body framing header when its
//   method may have a body and it has no `content-length`: `content-length: 0` when the HEADERS end the
//   stream, else `transfer-encoding: chunked`; a final response the same unless it is 204, 304, or answers
//   HEAD or CONNECT;
// - heads carry version 2.0; DATA frames are bodies, END_STREAM is the end; other frames have no HTTP/1 part.

/// HTTP/1 heads to HTTP/2 header blocks and back.
enum HTTP2Translation {
  /// `name` in lowercase ASCII: a literal for the names most heads carry (``KnownFieldNames``), else the same
  /// string (no copy) unless it has an uppercase letter. Field names are tokens, so ASCII is all there is to
  /// fold.
  static func lowercased(_ name: String) -> String {
    var name = name
    return name.withUTF8 { bytes in
      if let known = KnownFieldNames.lowercase(UnsafeRawBufferPointer(bytes)) { return known }
      guard bytes.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) else { return nil }
      return String(unsafeUninitializedCapacity: bytes.count) { out in
        for index in 0..<bytes.count {
          let byte = bytes[index]
          out[index] = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
        }
        return bytes.count
      }
    } ?? name
  }

  /// Appends the HTTP/1 `headers` a block may carry, names lowercased, in one pass: no connection-specific
  /// field (RFC 9113 8.2.2: the hop-by-hop ones and whatever `connection` lists), and `te` only as
  /// `te: trailers`. `skippingHost` leaves out `host` (it became `:authority`). A request handler strips a
  /// head before it gets here, so this usually finds nothing to drop; a response head for an HTTP/2 client is
  /// stripped only here.
  ///
  /// A block's fields are gathered in an array and made `HPACKHeaders` once (``block(_:)``):
  /// `HPACKHeaders.add` checks that each name is ASCII with a closure it does not specialise, about 260
  /// instructions a field, eight fields a request on each proxy of the pair. The names here need no check:
  /// they come from a parsed HTTP/1 head (tokens, ``HTTP1Grammar``), from a validated HTTP/2 block, or are
  /// the constants below.
  private static func appendRegular(
    _ headers: HTTPHeaders, to fields: inout [(String, String)], skippingHost: Bool
  ) {
    var listed: [String] = []
    for (name, value) in headers {
      let count = name.utf8.count
      if skippingHost, count == 4, HTTPHeaderRules.isName(name, "host") { continue }
      let hopByHop = HTTPHeaderRules.HopByHop(name)
      if hopByHop.isEmpty {
        fields.append((lowercased(name), value))
      } else if hopByHop == .connection {
        // Byte by byte: splitting the `String` by `Character` cost about 3,000 instructions a response.
        var value = value
        value.withUTF8 { bytes in
          HTTP1Grammar.forEachToken(UnsafeRawBufferPointer(bytes)) { token in
            // What nearly every `connection` says: nothing more to drop.
            if token.isEmpty || HTTP1Grammar.isName(token, "keep-alive") || HTTP1Grammar.isName(token, "close") { return }
            listed.append(lowercased(String(decoding: token, as: UTF8.self)))
          }
        }
      } else if hopByHop == .te, value.lowercased().contains("trailers") {
        fields.append(("te", "trailers"))
      }
    }
    // A field `connection` lists is dropped wherever it came (rare: most list only hop-by-hop names).
    for name in listed where HTTPHeaderRules.HopByHop(name).subtracting(.te).isEmpty {
      fields.removeAll { $0.0 == name }
    }
  }

  /// The block of `fields`, made without `HPACKHeaders.add`'s per-name check (see ``appendRegular``).
  /// `fields` is emptied here by popping, where its element type is known: let go of full, the array's storage
  /// would destroy each field through the runtime's generic tuple path (about 90 instructions a field, eight
  /// fields a request on each proxy of the pair).
  private static func block(_ fields: inout [(String, String)]) -> HPACKHeaders {
    let block = HPACKHeaders(fields)
    while fields.popLast() != nil {}
    return block
  }

  /// A request head as HTTP/2 header fields, with the `hop` fields (``HopFields``) last when a peer proxy
  /// gets it.
  static func requestBlock(_ head: HTTPRequestHead, scheme: String, hop: HopFields? = nil) throws -> HPACKHeaders {
    var authority: String?
    for (name, value) in head.headers where name.utf8.count == 4 && HTTPHeaderRules.isName(name, "host") {
      if authority != nil { throw NIOHTTP2Errors.duplicateHostHeader() }
      authority = value
    }
    guard let authority else { throw NIOHTTP2Errors.missingHostHeader() }
    var fields: [(String, String)] = []
    fields.reserveCapacity(head.headers.count + 5)
    fields.append((":path", head.uri))
    fields.append((":method", head.method.rawValue))
    fields.append((":scheme", scheme))
    fields.append((":authority", authority))
    appendRegular(head.headers, to: &fields, skippingHost: true)
    hop?.append(to: &fields)
    return block(&fields)
  }

  /// A response head as HTTP/2 header fields.
  static func responseBlock(_ head: HTTPResponseHead) -> HPACKHeaders {
    var fields: [(String, String)] = []
    fields.reserveCapacity(head.headers.count + 1)
    fields.append((":status", statusString(head.status.code)))
    appendRegular(head.headers, to: &fields, skippingHost: false)
    return block(&fields)
  }

  /// Trailers as HTTP/2 header fields.
  static func trailersBlock(_ trailers: HTTPHeaders) -> HPACKHeaders {
    var fields: [(String, String)] = []
    fields.reserveCapacity(trailers.count)
    appendRegular(trailers, to: &fields, skippingHost: false)
    return block(&fields)
  }

  private static func statusString(_ code: UInt) -> String {
    switch code {
    case 200: "200"
    case 204: "204"
    case 404: "404"
    case 502: "502"
    case 503: "503"
    default: String(code)
    }
  }

  /// A DATA frame as HTTP/1 parts: its bytes as a body (none when it only ends the stream), then the end when
  /// it has END_STREAM.
  static func parts<Head>(of frame: HTTP2Frame.FramePayload.Data, _ emit: (HTTPPart<Head, ByteBuffer>) -> Void) {
    guard case .byteBuffer(let buffer) = frame.data else { return }
    if buffer.readableBytes > 0 || !frame.endStream { emit(.body(buffer)) }
    if frame.endStream { emit(.end(nil)) }
  }

  /// The methods after which a request without `content-length` is given body framing.
  static func mayHaveBody(_ method: HTTPMethod) -> Bool {
    switch method {
    case .GET, .HEAD, .DELETE, .CONNECT, .TRACE: false
    default: true
    }
  }
}

/// What one received frame reads as: at most two HTTP/1 parts, or a malformed block (the stream is reset).
///
/// One concrete type per side (``HTTP2ResponsePartsRead``, ``HTTP2RequestPartsRead``) rather than one generic
/// struct: a generic struct is copied and destroyed through its value witnesses, which find each field's
/// layout in the type's metadata at run time (about 1,000 instructions a request on each proxy of the pair,
/// for a value made and let go of at every frame).
protocol HTTP2PartsRead {
  associatedtype Part
  var first: Part? { get set }
  var second: Part? { get set }
  var malformed: HTTP2HeaderValidator.Malformed? { get set }
  init()
}

extension HTTP2PartsRead {
  init(malformed: HTTP2HeaderValidator.Malformed) {
    self.init()
    self.malformed = malformed
  }

  mutating func deliver(_ part: Part) {
    if first == nil { first = part } else { second = part }
  }
}

/// What a frame an upstream stream received reads as (``HTTP2ClientStreamState``).
struct HTTP2ResponsePartsRead: HTTP2PartsRead {
  var first: HTTPClientResponsePart?
  var second: HTTPClientResponsePart?
  var malformed: HTTP2HeaderValidator.Malformed?
}

/// What a frame a downstream stream received reads as (``HTTP2ServerStreamState``).
struct HTTP2RequestPartsRead: HTTP2PartsRead {
  var first: HTTPServerRequestPart?
  var second: HTTPServerRequestPart?
  var malformed: HTTP2HeaderValidator.Malformed?
}

/// The frames one HTTP/1 part completes: at most two (the last frame written is held, so that the end can
/// ride on it).
struct HTTP2FramesToSend {
  var first: (frame: HTTP2Frame.FramePayload, promise: EventLoopPromise<Void>?)?
  var second: (frame: HTTP2Frame.FramePayload, promise: EventLoopPromise<Void>?)?

  mutating func emit(_ frame: HTTP2Frame.FramePayload, _ promise: EventLoopPromise<Void>?) {
    if first == nil { first = (frame, promise) } else { second = (frame, promise) }
  }
}

/// The client side of one HTTP/2 stream as HTTP/1 parts: request parts become frames, received frames become
/// response parts; the received blocks are validated (``HTTP2HeaderValidator``). Shared by the pipeline codec
/// (``HTTP2ClientStreamCodec``) and the proxy's upstream streams (``HTTP2UpstreamStream``), which have no
/// channel of their own.
struct HTTP2ClientStreamState {
  private let scheme: String
  /// The request's method once its head is written: a response to HEAD or CONNECT gets no body framing.
  private var requestMethod: HTTPMethod?
  private var finalResponseSeen = false
  /// The final response's body against its `content-length`.
  private var bodyLength = HTTP2BodyLength()
  /// A malformed response was received: nothing more is read.
  private(set) var failed = false
  /// The last frame written, held so that the end can ride on it.
  private var pending: (frame: HTTP2Frame.FramePayload, promise: EventLoopPromise<Void>?)?

  /// Added to the request's header block (a request the client proxy sends to a peer proxy).
  var hopFields: HopFields?

  init(scheme: String) { self.scheme = scheme }

  typealias Read = HTTP2ResponsePartsRead

  /// Reads a received frame. A malformed block is returned (the caller fails the stream and resets it), and
  /// nothing is read after it. Returned rather than called back, so that what the parts cause (a retry that
  /// closes the stream) does not run inside this mutation.
  mutating func read(_ payload: HTTP2Frame.FramePayload) -> Read {
    var out = Read()
    if failed { return out }
    switch payload {
    case .headers(let frame):
      let kind: HTTP2HeaderValidator.Kind = finalResponseSeen ? .trailers : .response
      switch HTTP2HeaderValidator.read(frame.headers, as: kind, room: 1) {
      case .invalid(let reason):
        return failing(.init(reason: reason))
      case .valid(let block):
        if kind == .trailers {
          if let reason = bodyLength.ended() { return failing(.body(reason)) }
          out.deliver(.end(block.headers()))
          return out
        }
        guard let statusValue = block.status, let code = Int(statusValue, radix: 10), (100...999).contains(code) else {
          return failing(.init(reason: "a :status that is not three digits"))
        }
        let status = HTTPResponseStatus(statusCode: code)
        guard block.finalResponse else {
          out.deliver(.head(HTTPResponseHead(version: .http2, status: status, headers: block.headers())))
          return out
        }
        guard let method = requestMethod else {
          return failing(.init(reason: "a response before the request"))
        }
        finalResponseSeen = true
        // A response to HEAD, a 204 and a 304 have no body, whatever their length says.
        let bodiless = method.isHEAD || code == 204 || code == 304
        bodyLength.expect(bodiless ? 0 : block.contentLength)
        if frame.endStream, let reason = bodyLength.ended() { return failing(.body(reason)) }
        let addsFraming = !bodiless && !method.isCONNECT && !block.hasContentLength
        var headers = block.headers()
        if addsFraming {
          if frame.endStream {
            headers.add(name: "content-length", value: "0")
          } else {
            headers.add(name: "transfer-encoding", value: "chunked")
          }
        }
        out.deliver(.head(HTTPResponseHead(version: .http2, status: status, headers: headers)))
        if frame.endStream { out.deliver(.end(nil)) }
      }
    case .data(let frame):
      if let reason = bodyLength.received(frame.data.readableBytes, endStream: frame.endStream) {
        return failing(.body(reason))
      }
      HTTP2Translation.parts(of: frame) { out.deliver($0) }
    default:
      break
    }
    return out
  }

  /// A malformed stream: nothing more is read.
  private mutating func failing(_ malformed: HTTP2HeaderValidator.Malformed) -> Read {
    failed = true
    return Read(malformed: malformed)
  }

  typealias Frames = HTTP2FramesToSend

  /// Writes a request part; the frames to send are returned, so that what sending them causes does not run
  /// inside this mutation.
  mutating func write(_ part: HTTPClientRequestPart, promise: EventLoopPromise<Void>?) throws -> Frames {
    var out = Frames()
    switch part {
    case .head(let head):
      precondition(requestMethod == nil, "one request per HTTP/2 stream")
      let block = try HTTP2Translation.requestBlock(head, scheme: scheme, hop: hopFields)
      requestMethod = head.method
      if let last = pending.take() { out.emit(last.frame, last.promise) }
      pending = (.headers(.init(headers: block)), promise)
    case .body(let body):
      if let last = pending.take() { out.emit(last.frame, last.promise) }
      pending = (.data(.init(data: body)), promise)
    case .end(let trailers):
      let last = pending.take()
      switch (last?.frame, trailers) {
      case (.headers(var headers), nil):
        headers.endStream = true
        var combined = last?.promise
        combined.setOrCascade(to: promise)
        out.emit(.headers(headers), combined)
      case (.data(var body), nil):
        body.endStream = true
        var combined = last?.promise
        combined.setOrCascade(to: promise)
        out.emit(.data(body), combined)
      case (let frame?, let trailers?):
        out.emit(frame, last?.promise)
        out.emit(.headers(.init(headers: HTTP2Translation.trailersBlock(trailers), endStream: true)), promise)
      case (nil, let trailers?):
        out.emit(.headers(.init(headers: HTTP2Translation.trailersBlock(trailers), endStream: true)), promise)
      case (let frame?, nil):
        // Only HEADERS and DATA are ever held.
        out.emit(frame, last?.promise)
        out.emit(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)), promise)
      case (nil, nil):
        out.emit(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)), promise)
      }
    }
    return out
  }

  /// The frame held back by the last write (to be written before a flush), if any.
  mutating func takePending() -> (frame: HTTP2Frame.FramePayload, promise: EventLoopPromise<Void>?)? {
    pending.take()
  }
}

/// An upstream HTTP/2 stream on the client side as a stream channel's handler (``HTTP2ClientStreamState``):
/// HTTP/1 request parts out, response parts in. A malformed response fails the stream with
/// ``HTTP2HeaderValidator/Malformed`` and resets it. The proxy's own upstream streams have no channel
/// (``HTTP2UpstreamStream``); this codec is what the translation is tested through, side by side with NIO's.
final class HTTP2ClientStreamCodec: ChannelDuplexHandler, RemovableChannelHandler, DirectlyWrittenCodec, UpstreamResponseHost {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias InboundOut = HTTPClientResponsePart
  typealias OutboundIn = HTTPClientRequestPart
  typealias OutboundOut = HTTP2Frame.FramePayload

  private var state: HTTP2ClientStreamState

  /// Where the response parts go once a request handler forwards on this stream (directly, not through the
  /// stream's pipeline); without one they go to the next handler.
  var responses: UpstreamResponseReporter?
  private(set) var pipelineContext: ChannelHandlerContext?

  init(scheme: String = "http") { self.state = HTTP2ClientStreamState(scheme: scheme) }

  func handlerAdded(context: ChannelHandlerContext) { pipelineContext = context }
  func handlerRemoved(context: ChannelHandlerContext) { pipelineContext = nil }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var read = state.read(unwrapInboundIn(data))
    if let part = read.first.take() { deliver(context: context, part) }
    if let part = read.second.take() { deliver(context: context, part) }
    guard let malformed = read.malformed else { return }
    report(malformed, context: context)
    context.writeAndFlush(wrapOutboundOut(.rstStream(.protocolError)), promise: nil)
    context.close(promise: nil)
  }

  private func deliver(context: ChannelHandlerContext, _ part: HTTPClientResponsePart) {
    if let responses {
      responses.received(part)
    } else {
      context.fireChannelRead(wrapInboundOut(part))
    }
  }

  func write(_ part: HTTPClientRequestPart, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
    do {
      let frames = try state.write(part, promise: promise)
      if let first = frames.first { context.write(wrapOutboundOut(first.frame), promise: first.promise) }
      if let second = frames.second { context.write(wrapOutboundOut(second.frame), promise: second.promise) }
    } catch {
      promise?.fail(error)
      context.fireErrorCaught(error)
    }
  }

  func flush(context: ChannelHandlerContext) {
    if let last = state.takePending() { context.write(wrapOutboundOut(last.frame), promise: last.promise) }
    context.flush()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    state.takePending()?.promise?.fail(error)
    report(error, context: context)
  }

  /// An error of this stream: the request forwarded on it fails and the stream closes; without a reporter the
  /// error goes on.
  private func report(_ error: any Error, context: ChannelHandlerContext) {
    if let responses {
      responses.failed(error)
      context.close(promise: nil)
    } else {
      context.fireErrorCaught(error)
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    responses?.readComplete()
    context.fireChannelReadComplete()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    responses?.writabilityChanged(context.channel.isWritable)
    context.fireChannelWritabilityChanged()
  }

  func channelInactive(context: ChannelHandlerContext) {
    responses?.inactive()
    context.fireChannelInactive()
  }
}

/// A downstream HTTP/2 stream on the server side: request parts in (the received blocks validated by
/// ``HTTP2HeaderValidator``; a malformed request is reset with PROTOCOL_ERROR and goes no further), response
/// parts out.
///
/// A final response head is held until the next write or flush: when the end comes right behind it with no
/// body, the two become one HEADERS frame with END_STREAM. That is how a gRPC *trailers-only* response (how C
/// core, Go and Java servers answer every error: `:status`, `grpc-status` and `grpc-message` in one HEADERS
/// frame) must look; re-sent as HEADERS and an empty DATA frame, a gRPC client finds no trailers and reports
/// UNKNOWN instead of the server's status. Likewise the last DATA frame is held until the next write or
/// flush: when the end comes right behind it, it carries END_STREAM itself, rather than an empty DATA frame
/// after it (one frame fewer to encode, send, decode and pass through the peer's stream for nearly every
/// response, whose body and end an upstream answers together). A ``StreamResetEvent`` goes out as RST_STREAM
/// with its code, so that an upstream's reset crosses the proxy as a reset.
struct HTTP2ServerStreamState {
  private var requestSeen = false
  /// The request's body against its `content-length`.
  private var bodyLength = HTTP2BodyLength()
  /// A malformed request was received: nothing more is read.
  private(set) var failed = false
  private var held: (headers: HTTP2Frame.FramePayload.Headers, promise: EventLoopPromise<Void>?)?
  /// The final response head has gone by: nothing more is held.
  private var finalHeadSeen = false
  /// The last DATA frame, until the next write or flush shows whether the end follows it.
  private var heldData: (data: IOData, promise: EventLoopPromise<Void>?)?
  /// Takes the mesh's own fields out of requests (``RequestRouter/takesOutMeshFieldsOnArrival``): the hop
  /// header, and the original-protocol mark, which makes the head HTTP/1.1. Done while the block becomes
  /// HTTP/1 headers, where the inbound router stripping them from the headers made cost a pass and a copy.
  private let takesOutMeshFields: Bool

  init(takingOutMeshFields: Bool) { takesOutMeshFields = takingOutMeshFields }

  typealias Read = HTTP2RequestPartsRead

  /// Reads a received frame. A malformed request is returned (the caller resets the stream with
  /// PROTOCOL_ERROR), and nothing is read after it.
  mutating func read(_ payload: HTTP2Frame.FramePayload) -> Read {
    var out = Read()
    if failed { return out }
    switch payload {
    case .headers(let frame):
      let kind: HTTP2HeaderValidator.Kind = requestSeen ? .trailers : .request
      switch HTTP2HeaderValidator.read(frame.headers, as: kind, takingOutMeshFields: takesOutMeshFields && kind == .request) {
      case .invalid(let reason):
        return failing(.init(reason: reason))
      case .valid(let block):
        if kind == .trailers {
          if let reason = bodyLength.ended() { return failing(.body(reason)) }
          out.deliver(.end(block.headers()))
          return out
        }
        // The validator has made sure of `:method`, and of `:path` unless the method is CONNECT.
        guard let methodValue = block.method, let path = block.path, let authority = block.authority ?? (block.hasHost ? "" : nil)
        else {
          // CONNECT (no `:path`), or neither `:authority` nor `host`: nothing here to forward it to.
          return failing(.init(reason: block.path == nil ? "CONNECT is not proxied" : "no :authority and no host"))
        }
        requestSeen = true
        bodyLength.expect(block.contentLength)
        if frame.endStream, let reason = bodyLength.ended() { return failing(.body(reason)) }
        let method = HTTPMethod(rawValue: methodValue)
        var framing: (String, String)?
        if HTTP2Translation.mayHaveBody(method), !block.hasContentLength {
          framing = frame.endStream ? ("content-length", "0") : ("transfer-encoding", "chunked")
        }
        let first: (String, String)? = block.hasHost ? nil : ("host", authority)
        let version = block.carriedHTTP1 ? HTTPVersion.http1_1 : .http2
        let headers = block.headers(first: first, second: framing)
        out.deliver(.head(HTTPRequestHead(version: version, method: method, uri: path, headers: headers)))
        if frame.endStream { out.deliver(.end(nil)) }
      }
    case .data(let frame):
      if let reason = bodyLength.received(frame.data.readableBytes, endStream: frame.endStream) {
        return failing(.body(reason))
      }
      HTTP2Translation.parts(of: frame) { out.deliver($0) }
    default:
      break
    }
    return out
  }

  /// A malformed stream: nothing more is read.
  private mutating func failing(_ malformed: HTTP2HeaderValidator.Malformed) -> Read {
    failed = true
    return Read(malformed: malformed)
  }

  typealias Frames = HTTP2FramesToSend

  /// Writes a response part; the frames to send are returned, so that what sending them causes (the stream's
  /// end) does not run inside this mutation.
  mutating func write(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?) -> Frames {
    var out = Frames()
    switch part {
    case .head(let head):
      takeHeld(into: &out)
      let headers = HTTP2Frame.FramePayload.Headers(headers: HTTP2Translation.responseBlock(head))
      if finalHeadSeen || head.status.code < 200 {
        // 1xx heads are informational: the final response comes after them.
        out.emit(.headers(headers), promise)
      } else {
        finalHeadSeen = true
        held = (headers, promise)
      }
    case .body(let body):
      takeHeld(into: &out)
      heldData = (body, promise)
    case .end(nil):
      if let held = held.take() {
        var headers = held.headers
        headers.endStream = true
        var combined = held.promise
        combined.setOrCascade(to: promise)
        out.emit(.headers(headers), combined)
      } else if let data = heldData.take() {
        var combined = data.promise
        combined.setOrCascade(to: promise)
        out.emit(.data(.init(data: data.data, endStream: true)), combined)
      } else {
        out.emit(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)), promise)
      }
    case .end(let trailers?):
      takeHeld(into: &out)
      out.emit(.headers(.init(headers: HTTP2Translation.trailersBlock(trailers), endStream: true)), promise)
    }
    return out
  }

  /// What is held (the head, or the last DATA frame), without END_STREAM: written before a flush.
  mutating func takeHeld() -> Frames {
    var out = Frames()
    takeHeld(into: &out)
    return out
  }

  private mutating func takeHeld(into out: inout Frames) {
    if let held = held.take() { out.emit(.headers(held.headers), held.promise) }
    if let data = heldData.take() { out.emit(.data(.init(data: data.data)), data.promise) }
  }

  /// The stream is reset: what is held is dropped.
  mutating func dropHeld() {
    held?.promise?.fail(ChannelError.outputClosed)
    held = nil
    heldData.take()?.promise?.fail(ChannelError.outputClosed)
  }
}

/// ``HTTP2ServerStreamState`` as a stream channel's handler. The proxy's own downstream streams have no channel
/// (``HTTP2DownstreamStream``); this codec is what the translation is tested through, side by side with NIO's.
final class HTTP2ServerStreamCodec: ChannelDuplexHandler, RemovableChannelHandler, DirectlyWrittenCodec, DownstreamCodec {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias InboundOut = HTTPServerRequestPart
  typealias OutboundIn = HTTPServerResponsePart
  typealias OutboundOut = HTTP2Frame.FramePayload

  /// The request handler behind this codec when the two are paired (``ProxyRequestHandler/pair(_:with:)``):
  /// request parts go to it directly instead of through the stream's pipeline.
  var requests: ProxyRequestHandler?
  private(set) var pipelineContext: ChannelHandlerContext?
  private var state: HTTP2ServerStreamState

  init(takingOutMeshFields: Bool = false) { state = HTTP2ServerStreamState(takingOutMeshFields: takingOutMeshFields) }

  func handlerAdded(context: ChannelHandlerContext) { pipelineContext = context }
  func handlerRemoved(context: ChannelHandlerContext) {
    pipelineContext = nil
    requests = nil
  }

  private func deliver(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
    if let requests {
      requests.received(part)
    } else {
      context.fireChannelRead(wrapInboundOut(part))
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var read = state.read(unwrapInboundIn(data))
    if let part = read.first.take() { deliver(part, context: context) }
    if let part = read.second.take() { deliver(part, context: context) }
    if read.malformed != nil {
      context.writeAndFlush(wrapOutboundOut(.rstStream(.protocolError)), promise: nil)
      context.close(promise: nil)
    }
  }

  func write(_ part: HTTPServerResponsePart, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
    send(state.write(part, promise: promise), context: context)
  }

  private func send(_ frames: HTTP2FramesToSend, context: ChannelHandlerContext) {
    if let first = frames.first { context.write(wrapOutboundOut(first.frame), promise: first.promise) }
    if let second = frames.second { context.write(wrapOutboundOut(second.frame), promise: second.promise) }
  }

  func flush(context: ChannelHandlerContext) {
    send(state.takeHeld(), context: context)
    context.flush()
  }

  func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
    guard let reset = event as? StreamResetEvent else {
      context.triggerUserOutboundEvent(event, promise: promise)
      return
    }
    state.dropHeld()
    context.writeAndFlush(wrapOutboundOut(.rstStream(reset.code)), promise: promise)
  }

  func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
    let held = state.takeHeld()
    if held.first != nil {
      send(held, context: context)
      context.flush()
    }
    context.close(mode: mode, promise: promise)
  }
}

/// Asks a downstream HTTP/2 stream to reset with `code` (the upstream's own reset, passed on).
struct StreamResetEvent: Sendable {
  var code: HTTP2ErrorCode
}

extension Optional {
  fileprivate mutating func take() -> Wrapped? {
    defer { self = nil }
    return self
  }
}
