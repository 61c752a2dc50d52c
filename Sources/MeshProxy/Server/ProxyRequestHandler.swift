import Logging
import MeshBalancer
import MeshAPI
import MeshCore
import NIOCore
import NIOHTTP1
import NIOHTTP2

/// Forwards the requests of one downstream HTTP/1.1 connection or HTTP/2 stream: routes each request,
/// streams its body to the upstream and the response back, with backpressure both ways, and answers with
/// an error response (and the `mesh-proxy-error` header) when routing or the upstream fails.
///
/// Runs entirely on the downstream channel's event loop; upstream channels are opened on the same loop.
/// What happens to a request is decided by its ``StateMachine`` (in `ProxyRequestHandler+StateMachine.swift`);
/// this handler feeds it the events and performs its actions: the channel I/O, the router's calls, the route
/// timeout, metrics, tap and logs.
final class ProxyRequestHandler: ChannelInboundHandler, RemovableChannelHandler, UpstreamOpener {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  private let router: any RequestRouter
  private let metrics: ProxyMetrics
  private let peerIdentity: IdentityName?
  /// Where the connection was going before iptables redirected it (transparent mode).
  private let originalDestination: Authority?
  private let inFlight: InFlightRequests
  /// The header read and idle clocks of a downstream HTTP/1.1 connection, told where requests begin and end
  /// and where responses end; nil on HTTP/2.
  private let timeouts: HTTP1TimeoutBytesHandler?
  private let logger: Logger
  private let tap: TapHub

  private var stateMachine: StateMachine
  /// Where the client is: this handler's place in a downstream connection's pipeline, or a downstream HTTP/2
  /// stream without a channel (``attach(to:)``).
  private var context: ChannelHandlerContext?
  private var stream: HTTP2DownstreamStream?
  /// The downstream's event loop while the handler is attached to it.
  private var eventLoop: (any EventLoop)?
  /// The upstream of the current attempt while the request is forwarded, and the handler that reports its
  /// response here (it stays on a pooled HTTP/1.1 connection between requests).
  private var upstream: Upstream?
  private var reporter: UpstreamResponseReporter?
  /// The upstream's codec, which request parts are written to directly; nil for a pipeline without one.
  private var upstreamCodec: (any UpstreamResponseHost)?
  /// The current request as routed, kept to route it again when an upstream refuses it unprocessed.
  private var request: RoutedRequest?
  private var started: NIODeadline = .now()
  private var currentAuthority = ""
  /// What the requests of this handler's downstream connection share (its HTTP/2 streams too).
  private let connection: DownstreamConnectionCache
  private var timeoutTask: Scheduled<Void>?
  /// Whether the current request is counted in ``inFlight``.
  private var counted = false
  /// From the response's head to its end (the latency metrics count to the head).
  private var responseLatency: Double?
  /// The current request as tap describes it, while somebody observes.
  private var tapped: TapRequest?
  private var tapDestination = ""
  private var tapServerID = ""

  /// Turns `autoRead` on or off, then runs `then`: at once on the channel's event loop (no future, no
  /// allocation per request), else through the channel's option future.
  static func setAutoRead(_ channel: any Channel, _ value: Bool, then: (@Sendable () -> Void)? = nil) {
    if channel.eventLoop.inEventLoop, let options = channel.syncOptions {
      try? options.setOption(ChannelOptions.autoRead, value: value)
      then?()
    } else {
      channel.setOption(ChannelOptions.autoRead, value: value).whenComplete { _ in then?() }
    }
  }

  /// Between a read from the client and the end of that read (`channelReadComplete`): what is written to the
  /// upstream meanwhile is flushed once, at the end of the read, not once per part. A GET through the plaintext
  /// proxy flushed its upstream three times (when forwarding started, at the request's end, and when the read
  /// completed), each a trip through the pipeline to the socket, about 1,200 instructions.
  private var readingDownstream = false
  /// Something was written to the upstream and not flushed yet.
  private var upstreamUnflushed = false

  /// Flushes what went to the upstream: at the end of the client's read when inside one, else now.
  private func flushUpstream() {
    if readingDownstream {
      upstreamUnflushed = true
    } else {
      upstreamUnflushed = false
      upstream?.flush()
    }
  }

  /// Whether this handler turned the downstream's `autoRead` off (it is on when the handler is added): most
  /// requests never pause reading, and setting the option costs generic casts on every request.
  private var downstreamReadsPaused = false

  /// Turns the downstream's `autoRead` on or off, unless it already is.
  private func setDownstreamAutoRead(_ on: Bool) {
    guard downstreamReadsPaused == on else { return }
    downstreamReadsPaused = !on
    if let stream {
      stream.setReading(on)
    } else if let context {
      Self.setAutoRead(context.channel, on)
    }
  }

  /// Asks the downstream for the next read (a stream delivers its frames while reading is on: nothing to ask).
  private func readDownstream() {
    if stream == nil { context?.read() }
  }

  private func flushDownstream() {
    if let stream {
      stream.flush()
    } else {
      context?.flush()
    }
  }

  private func closeDownstream() {
    if let stream {
      stream.close()
    } else {
      context?.close(promise: nil)
    }
  }

  init(
    router: any RequestRouter, metrics: ProxyMetrics, peerIdentity: IdentityName?, isHTTP2: Bool,
    inFlight: InFlightRequests, tap: TapHub, logger: Logger, originalDestination: Authority? = nil,
    timeouts: HTTP1TimeoutBytesHandler? = nil,
    connection: DownstreamConnectionCache = DownstreamConnectionCache()
  ) {
    self.timeouts = timeouts
    self.connection = connection
    self.originalDestination = originalDestination
    self.inFlight = inFlight
    self.tap = tap
    self.logger = logger
    self.router = router
    self.metrics = metrics
    self.peerIdentity = peerIdentity
    self.stateMachine = StateMachine(downstreamIsHTTP2: isHTTP2)
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    eventLoop = context.eventLoop
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
    eventLoop = nil
    downstreamCodec = nil
  }

  /// Serves the request of a downstream HTTP/2 stream without a channel: its parts come from `stream`
  /// (``received(_:)``, ``downstreamReadComplete()``...) and the response goes to it.
  func attach(to stream: HTTP2DownstreamStream) {
    self.stream = stream
    eventLoop = stream.eventLoop
    stream.requests = self
  }

  // MARK: Downstream

  /// The downstream's codec right in front of this handler (``HTTP1ServerCodec``, ``HTTP2ServerStreamCodec``),
  /// when the pipeline was built with the two side by side: they call each other directly, as the pipeline would
  /// but without its hops and the parts' boxing into `NIOAny` and dynamic casts out of it (about 500
  /// instructions a part, five or more a request). Nil in a pipeline built otherwise (the tests'): then parts
  /// go through the pipeline.
  var downstreamCodec: (any DownstreamCodec)?

  /// A response part to the client: to its stream, or to the codec directly when it is there, else through the
  /// pipeline.
  private func writeDownstream(_ part: HTTPServerResponsePart) {
    if let stream {
      stream.write(part)
    } else if let downstreamCodec {
      downstreamCodec.writeDirectly(part, promise: nil)
    } else {
      context?.write(wrapOutboundOut(part), promise: nil)
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    received(unwrapInboundIn(data))
  }

  /// A request part: from the pipeline, from the downstream's codec directly (``downstreamCodec``), or from the
  /// stream.
  func received(_ part: HTTPServerRequestPart) {
    guard eventLoop != nil else { return }
    readingDownstream = true
    switch part {
    case .head:
      timeouts?.headReceived()
    case .end: timeouts?.requestEnded()
    case .body: break
    }
    perform(stateMachine.requestPartReceived(part))
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    downstreamReadComplete()
    context.fireChannelReadComplete()
  }

  /// The end of a read of the downstream.
  func downstreamReadComplete() {
    readingDownstream = false
    perform(stateMachine.readComplete())
    if upstreamUnflushed { flushUpstream() }
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    downstreamWritabilityChanged(context.channel.isWritable)
    context.fireChannelWritabilityChanged()
  }

  func downstreamWritabilityChanged(_ writable: Bool) {
    // The client reads slowly: stop reading the upstream until it catches up.
    if stateMachine.isForwarding, let upstream {
      upstream.setReading(writable)
    }
  }

  /// HTTP/1.1: a request the parser refuses (a malformed line or header, a body framed two ways) is answered
  /// 400 and the connection closes (the decoder closes it after this), unless a response is already under way;
  /// then closing is all that is left. What NIO's `HTTPServerProtocolErrorHandler` does, without its hop for
  /// every response part. (The proxy's own answers are written whole at once, so only a forwarded response can
  /// be under way.)
  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if error is HTTPParserError, !stateMachine.downstreamIsHTTP2, !stateMachine.isResponding {
      let headers = HTTPHeaders([("connection", "close"), ("content-length", "0")])
      writeDownstream(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers)))
      writeDownstream(.end(nil))
      context.flush()
    }
    context.fireErrorCaught(error)
  }

  func channelInactive(context: ChannelHandlerContext) {
    downstreamInactive()
    context.fireChannelInactive()
  }

  /// The downstream connection or stream has ended. On a stream the handler is detached here, as a stream
  /// channel removed its handlers right after; it keeps the stream, closed, so that a flush still reaches the
  /// connection (writing the response's last frame closes the stream at once, before the flush that sends it).
  func downstreamInactive() {
    perform(stateMachine.downstreamInactive())
    cancelTimeout()
    endCounted()
    if stream != nil { eventLoop = nil }
  }

  /// A new request's head: its authority (parsed once per `Host` value), its upgrade, tap; then the state
  /// machine starts it.
  private func begin(_ head: HTTPRequestHead) {
    started = .now()
    if !counted {
      counted = true
      inFlight.begin()
    }
    let scan = RequestHeadScan(head.headers)
    let host = scan.host
    let authority: Authority?
    if let host, host == connection.lastHost {
      authority = connection.lastAuthority
    } else {
      authority = host.flatMap { try? Authority($0, defaultPort: 80) }
      connection.lastHost = host
      connection.lastAuthority = authority
    }
    currentAuthority = authority?.description ?? host ?? ""
    let isGRPC = scan.contentType.map(Self.isGRPCContentType) ?? false
    let downstreamIsHTTP2 = stateMachine.downstreamIsHTTP2
    var head = head
    var upgrade = downstreamIsHTTP2 || !scan.hasUpgrade ? nil : HTTPHeaderRules.requestedUpgrade(head.headers)
    // The HTTP/1.1 parser reads nothing after an upgrade or CONNECT request: this connection ends with it.
    let closeAfterResponse = upgrade != nil || (!downstreamIsHTTP2 && head.method.isCONNECT)
    if let requested = upgrade, requested.lowercased().split(separator: ",").contains(where: {
      HTTPHeaderRules.trimmed($0) == "h2c"
    }) {
      // An h2c upgrade is not performed: the request goes on as plain HTTP/1.1 (a server may answer it
      // either way), never left hanging.
      upgrade = nil
      head.headers.remove(name: "upgrade")
      head.headers.remove(name: "http2-settings")
    }
    let request = RoutedRequest(
      head: head, authority: authority, arrivedOverHTTP2: downstreamIsHTTP2, peerIdentity: peerIdentity,
      upgrade: upgrade, originalDestination: originalDestination, destinationMemo: connection.destination,
      meshFields: scan.meshFields)
    self.request = request
    tapDestination = ""
    tapServerID = ""
    if tap.isObserved {
      let tapped = TapRequest(
        id: tap.requestID(), direction: router.direction, source: Self.address(stream?.remoteAddress ?? context?.channel.remoteAddress),
        tls: peerIdentity != nil, clientID: peerIdentity?.description ?? "", method: head.method.rawValue,
        authority: currentAuthority, path: head.uri)
      self.tapped = tapped
      tap.publish(tapped, destination: "", serverID: "", event: .requestInit(.init()))
    } else {
      tapped = nil
    }
    let action = stateMachine.requestStarted(
      head, isGRPC: isGRPC, upgrade: upgrade != nil, closeAfterResponse: closeAfterResponse)
    perform(action)
  }

  /// Asks for the route policy of request `id`: at once when the destination's profile is known.
  private func lookUpPolicy(requestID id: Int) {
    guard let request, let eventLoop else { return }
    if let policy = router.knownPolicy(for: request) {
      // The destination's profile is known already (every request but a destination's first): no future.
      apply(policy, id: id)
      return
    }
    // Hold further reads until the upstream is ready; parts already read are buffered.
    setDownstreamAutoRead(false)
    let bound = NIOLoopBound(self, eventLoop: eventLoop)
    router.policy(for: request, on: eventLoop).hop(to: eventLoop).whenSuccess { policy in
      bound.value.apply(policy, id: id)
    }
  }

  /// The destination's profile is known: start the route's clock and route the request.
  private func apply(_ policy: RequestPolicy, id: Int) {
    guard eventLoop != nil else { return }
    perform(stateMachine.policyKnown(policy, requestID: id))
  }

  /// The route's timeout expired before the response headers: answer 504 and abandon the upstream call.
  private func timedOut(_ id: Int) {
    guard eventLoop != nil else { return }
    // Only the current request's timer is still set (an earlier one was cancelled or has fired).
    if id == stateMachine.requestID { timeoutTask = nil }
    perform(stateMachine.timedOut(requestID: id))
  }

  private func cancelTimeout() {
    timeoutTask?.cancel()
    timeoutTask = nil
  }

  private func route() {
    guard let request, let eventLoop else { return }
    // Reads are not paused here: see `channelReadComplete`.
    let opener = NIOLoopBound<any UpstreamOpener>(self, eventLoop: eventLoop)
    if let upstream = router.openNow(request, on: eventLoop, for: opener) {
      // At hand (what a completed future's callback would do at once, without the future).
      opened(.success(upstream))
    }
  }

  func opened(_ result: Result<Upstream, any Error>) {
    guard let eventLoop else {
      if case .success(let upstream) = result {
        upstream.ticket?.complete(.cancelled)
        upstream.close()
      }
      return
    }
    switch result {
    case .failure(let error):
      perform(stateMachine.upstreamOpenFailed(error))
    case .success(let upstream):
      switch stateMachine.upstreamOpened() {
      case .startForwarding(let attempt):
        startForwarding(upstream, attempt: attempt, eventLoop: eventLoop)
      default:
        // The client went away meanwhile.
        upstream.ticket?.complete(.cancelled)
        upstream.close()
      }
    }
  }

  /// The upstream of `attempt` is ready: its response handler reports here, and the parts read so far go to it.
  private func startForwarding(_ upstream: Upstream, attempt: Int, eventLoop: any EventLoop) {
    metrics.requestStarted(series(upstream.labels))
    if tapped != nil {
      tapDestination = Self.address(upstream.remoteAddress)
      tapServerID = upstream.labels.labels.serverID
    }
    let downstream = NIOLoopBound(self, eventLoop: eventLoop)
    let reporter: UpstreamResponseReporter
    let host = Self.responseHost(of: upstream)
    if let host {
      if let pooled = host.responses {
        // A pooled HTTP/1.1 connection keeps its reporter from request to request.
        reporter = pooled
        pooled.bind(downstream, attempt: attempt)
      } else {
        reporter = UpstreamResponseReporter(downstream: downstream, attempt: attempt)
        host.responses = reporter
      }
      reporter.reportIfInactive(upstream)
    } else if let channel = upstream.channel, upstream.release != nil,
      let pooled = try? channel.pipeline.syncOperations.handler(type: UpstreamResponseHandler.self)
    {
      reporter = pooled.reporter
      reporter.bind(downstream, attempt: attempt)
      reporter.reportIfInactive(upstream)
    } else {
      reporter = UpstreamResponseReporter(downstream: downstream, attempt: attempt)
      do {
        guard let channel = upstream.channel else { throw ChannelError.ioOnClosedChannel }
        try channel.pipeline.syncOperations.addHandler(UpstreamResponseHandler(reporter))
      } catch {
        upstream.close()
        perform(stateMachine.upstreamUnusable(error))
        return
      }
    }
    upstreamCodec = host
    self.upstream = upstream
    for part in stateMachine.buffered {
      writeUpstream(part, upstream)
    }
    flushUpstream()
    self.reporter = reporter
    stateMachine.forwardingStarted()
    setDownstreamAutoRead(true)
    readDownstream()
  }

  /// A request part to the upstream: to its codec directly when it has one, else through its pipeline.
  private func writeUpstream(_ part: HTTPServerRequestPart, _ upstream: Upstream) {
    if let upstreamCodec {
      upstreamCodec.writeDirectly(Self.clientPart(part, head: upstream.head), promise: nil)
    } else {
      upstream.channel?.write(NIOAny(Self.clientPart(part, head: upstream.head)), promise: nil)
    }
  }

  /// The upstream's codec, which reports its response parts straight to a reporter: an HTTP/2 stream's, or
  /// an HTTP/1.1 connection's (the first handler after the TCP metrics handler); nil for another pipeline.
  private static func responseHost(of upstream: Upstream) -> (any UpstreamResponseHost)? {
    if let stream = upstream.stream { return stream.stream }
    return try? upstream.channel?.pipeline.syncOperations.handler(type: HTTP1ClientCodec.self)
  }

  // MARK: Actions

  private func perform(_ action: StateMachine.Action) {
    switch action {
    case .none:
      break
    case .startRequest(let head):
      // Asks for the next read while the pipeline handler still lets it through (it holds reads from a
      // request's end until its response's end): the socket stays registered for reading while the response
      // is on its way, instead of being taken off epoll at the end of this read and put back after the
      // response, two epoll_ctl calls a request. Bytes a client sends meanwhile (a pipelined request) are
      // still held back by the pipeline handler.
      readDownstream()
      begin(head)
    case .lookUpPolicy(let requestID):
      lookUpPolicy(requestID: requestID)
    case .openUpstream(let requestID):
      let policy = stateMachine.policy
      if policy.hasRoute { metrics.routeRequest(policy, direction: router.direction) }
      policy.budget?.deposit()
      if let timeout = policy.timeout, let eventLoop {
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        timeoutTask = eventLoop.scheduleTask(in: TimeAmount(timeout)) { bound.value.timedOut(requestID) }
      }
      route()
    case .discardUpstream, .startForwarding:
      // Answers to `upstreamOpened()`, handled where it is asked.
      break
    case .forwardRequestPart(let part):
      if let upstream {
        writeUpstream(part, upstream)
        upstreamUnflushed = true
      }
    case .forwardLastRequestPart(let part, let finish):
      guard let upstream else { break }
      writeUpstream(part, upstream)
      if finish {
        // The response is over already: the upstream goes back to its pool, flushed.
        upstreamUnflushed = false
        upstream.flush()
        self.finish()
      } else {
        flushUpstream()
      }
    case .flushUpstream:
      flushUpstream()
    case .pauseReading:
      setDownstreamAutoRead(false)
    case .requestDone:
      endCounted()
    case .answer(let answer):
      write(answer)
    case .abandonUpstreamAndAnswer(let outcome, let answer):
      if let upstream {
        upstream.ticket?.complete(outcome)
        upstream.close()
      }
      write(answer)
    case .failUpstreamAndAnswer(let answer):
      upstream?.ticket?.complete(.failure)
      write(answer)
    case .resumeReading(let requestDone):
      setDownstreamAutoRead(true)
      readDownstream()
      if requestDone { endCounted() }
    case .resend(let resend):
      self.resend(resend)
    case .forwardResponseHead(var head, let outcome):
      cancelTimeout()
      upstream?.ticket?.complete(outcome)
      // An HTTP/2 client's codec leaves the connection-specific fields out as it makes the header block
      // (`HTTP2Translation`): stripping them here too cost a pass and a copy of the headers.
      if !stateMachine.downstreamIsHTTP2 { HTTPHeaderRules.stripHopByHop(&head.headers) }
      if stateMachine.closeAfterResponse { head.headers.add(name: "connection", value: "close") }
      // Set only when it differs: the head's storage is shared, and a write copies it. A head that came over
      // HTTP/2 keeps its 2.0: an HTTP/1 client's encoder writes it as HTTP/1.1, an HTTP/2 client's has no
      // version to write.
      if head.version.major < 2, head.version != .http1_1 { head.version = .http1_1 }
      responseLatency = elapsedMilliseconds()
      tapResponse(status: Int(head.status.code))
      writeDownstream(.head(head))
    case .forwardResponseBody(let buffer):
      writeDownstream(.body(.byteBuffer(buffer)))
    case .forwardResponseEnd(let trailers, let status, let grpcStatus, let finish):
      forwardResponseEnd(trailers, status: status, grpcStatus: grpcStatus, finish: finish)
    case .acceptUpgrade(let head):
      acceptUpgrade(head)
    case .scheduleRelay:
      // Out of the HTTP decoder's callback first: the pipelines change under it.
      guard let context else { break }
      let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
      context.eventLoop.execute {
        let handler = bound.value
        guard handler.context != nil else { return }
        handler.perform(handler.stateMachine.relayReady())
      }
    case .startRelay:
      // An upgrade is HTTP/1.1's: its connection's pipeline becomes the relay.
      if let context { becomeRelay(context: context) }
    case .resetDownstream(let code, let status):
      upstream?.ticket?.complete(.failure)
      // The upstream reset the stream: the client gets the same reset (gRPC maps its code to a status, as it
      // would directly), not a status the proxy made up.
      logger.debug(
        "upstream reset the stream; resetting the downstream stream",
        metadata: ["direction": "\(router.direction)", "authority": "\(currentAuthority)", "code": "\(code)"])
      metrics.proxyError(direction: router.direction, reason: .upstreamReset)
      tapEnd(status: status, grpcStatus: nil, proxyError: ProxyError.Reason.upstreamReset.rawValue)
      cancelTimeout()
      releaseUpstream()
      if let stream {
        stream.reset(code)
      } else if let context {
        context.triggerUserOutboundEvent(StreamResetEvent(code: code), promise: nil)
        context.close(promise: nil)
      }
    case .breakDownstream(let error, let status):
      upstream?.ticket?.complete(.failure)
      // Mid-response: the only honest signal left is to break the downstream stream too.
      logger.debug(
        "upstream failed mid-response; resetting the downstream",
        metadata: [
          "direction": "\(router.direction)", "authority": "\(currentAuthority)",
          "error": "\(error.map { "\($0)" } ?? "closed")",
        ])
      metrics.proxyError(direction: router.direction, reason: .upstreamReset)
      if let upstream {
        metrics.responseEnded(
          series(upstream.labels, countOverflow: true), status: 502, grpcStatus: nil,
          latencyMilliseconds: elapsedMilliseconds())
      }
      tapEnd(status: status, grpcStatus: nil, proxyError: ProxyError.Reason.upstreamReset.rawValue)
      releaseUpstream()
      closeDownstream()
    case .cancelRequest(let closeUpstream):
      request?.abandonment.isAbandoned = true
      if closeUpstream, let upstream {
        upstream.ticket?.complete(.cancelled)
        upstream.close()
      }
      releaseUpstream()
    case .closeDownstream:
      closeDownstream()
    case .closeUpstreamAndDownstream:
      upstream?.close()
      releaseUpstream()
      closeDownstream()
    }
  }

  /// The proxy answers the request itself.
  private func write(_ answer: StateMachine.Answer) {
    let error = answer.error
    request?.abandonment.isAbandoned = true
    metrics.proxyError(direction: router.direction, reason: error.reason)
    logger.debug(
      "proxy answered the request itself",
      metadata: [
        "direction": "\(router.direction)", "authority": "\(currentAuthority)", "status": "\(error.status.code)",
        "reason": "\(error.reason.rawValue)", "error": "\(error)",
      ])
    var headers = HTTPHeaders()
    headers.add(name: ProxyError.headerName, value: error.reason.rawValue)
    if stateMachine.closeAfterResponse { headers.add(name: "connection", value: "close") }
    let status: HTTPResponseStatus
    let grpcStatus: Int?
    if stateMachine.isGRPC {
      // A gRPC client understands a status, not an error page: a trailers-only response (HTTP 200, one
      // HEADERS frame with END_STREAM) with the proxy's reason in grpc-message, as Linkerd answers.
      status = .ok
      grpcStatus = error.grpcStatus
      headers.add(name: "content-type", value: "application/grpc")
      headers.add(name: "grpc-status", value: String(error.grpcStatus))
      headers.add(name: "grpc-message", value: GRPCMessage.percentEncoded("\(error)"))
      if !stateMachine.downstreamIsHTTP2 { headers.add(name: "content-length", value: "0") }
      writeDownstream(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
    } else {
      status = error.status
      grpcStatus = nil
      headers.add(name: "content-type", value: "text/plain; charset=utf-8")
      let body = ByteBuffer(string: "\(error)\n")
      headers.add(name: "content-length", value: String(body.readableBytes))
      writeDownstream(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
      writeDownstream(.body(.byteBuffer(body)))
    }
    var labels = ProxyMetrics.RequestLabels(
      direction: router.direction, authority: request.map { router.metricAuthority(for: $0) } ?? "",
      tls: peerIdentity != nil)
    labels.clientID = peerIdentity?.description ?? ""
    metrics.responseEnded(
      labels, status: Int(status.code), grpcStatus: grpcStatus, latencyMilliseconds: elapsedMilliseconds())
    tapResponse(status: Int(status.code))
    tapEnd(status: Int(status.code), grpcStatus: grpcStatus, proxyError: error.reason.rawValue)
    let policy = stateMachine.policy
    if policy.hasRoute {
      metrics.routeResponse(
        policy, direction: router.direction, status: Int(status.code), latencyMilliseconds: elapsedMilliseconds())
    }
    cancelTimeout()
    releaseUpstream()
    // The answered request is settled before its end is written: writing the end lets the pipeline handler
    // hand over a request the client pipelined behind it, at once and inside this write, and that request
    // must find the handler ready for it (it was buffered with the answered one and lost).
    let answered = stateMachine.requestID
    let next = stateMachine.answerWritten(requestEnded: answer.requestEnded)
    if case .resumeReading(requestDone: true) = next { endCounted() }
    timeouts?.responseEnded()
    writeDownstream(.end(nil))
    flushDownstream()
    switch next {
    case .resumeReading:
      // Unless a pipelined request has begun meanwhile (it manages reading itself).
      guard stateMachine.requestID == answered else { return }
      setDownstreamAutoRead(true)
      readDownstream()
    default:
      perform(next)
    }
  }

  /// The metric series of `labels`, kept for the connection's next request.
  private func series(_ labels: ProxyMetrics.LabelSet, countOverflow: Bool = false) -> ProxyMetrics.RequestSeries {
    let series = metrics.series(
      for: labels, cached: connection.series, cachedFor: connection.seriesLabels, countOverflow: countOverflow)
    connection.series = series
    connection.seriesLabels = labels
    return series
  }

  private func endCounted() {
    if counted {
      counted = false
      inFlight.end()
    }
  }

  // MARK: Upstream (called by UpstreamResponseReporter, same event loop)

  func upstreamResponse(_ part: HTTPClientResponsePart, attempt: Int) {
    guard eventLoop != nil else { return }
    perform(stateMachine.responsePartReceived(part, attempt: attempt))
  }

  private func forwardResponseEnd(_ trailers: HTTPHeaders?, status: Int, grpcStatus: Int?, finish: Bool) {
    let latency = responseLatency ?? elapsedMilliseconds()
    if let upstream {
      metrics.responseEnded(
        series(upstream.labels, countOverflow: true), status: status, grpcStatus: grpcStatus,
        latencyMilliseconds: latency)
    }
    let policy = stateMachine.policy
    if policy.hasRoute {
      metrics.routeResponse(policy, direction: router.direction, status: status, latencyMilliseconds: latency)
    }
    responseLatency = nil
    tapEnd(status: status, grpcStatus: grpcStatus, proxyError: "")
    // The state machine has settled before this last write: on an HTTP/2 downstream, writing END_STREAM
    // closes the stream and `channelInactive` runs inside it (see `responsePartReceived`).
    if finish { self.finish() }
    timeouts?.responseEnded()
    writeDownstream(.end(trailers))
    flushDownstream()
    perform(stateMachine.responseEndWritten())
  }

  /// Both directions are done: return an HTTP/1.1 upstream to its pool and get ready for the next request.
  private func finish() {
    if upstreamUnflushed {
      upstreamUnflushed = false
      upstream?.flush()
    }
    if let upstream, let release = upstream.release {
      // The handler stays on the connection, unbound until the connection's next request.
      reporter?.unbind()
      if let channel = upstream.channel { release(channel) }
    }
    releaseUpstream()
    endCounted()
  }

  /// Drops the references to an upstream the request is done with (closed, pooled or abandoned).
  private func releaseUpstream() {
    upstreamUnflushed = false
    upstream = nil
    upstreamCodec = nil
    reporter = nil
  }

  /// Sends the request again: the current upstream is abandoned, a new one is asked of the router.
  private func resend(_ resend: StateMachine.Resend) {
    let policy = stateMachine.policy
    switch resend {
    case .refused(let attempt):
      logger.debug(
        "upstream refused the request unprocessed; sending it again",
        metadata: ["direction": "\(router.direction)", "authority": "\(currentAuthority)", "attempt": "\(attempt)"])
    case .failedResponse(let status, let grpcStatus, let retry):
      metrics.routeRetry(policy, direction: router.direction)
      if let upstream {
        metrics.responseEnded(
          series(upstream.labels, countOverflow: true), status: status, grpcStatus: grpcStatus,
          latencyMilliseconds: elapsedMilliseconds())
      }
      logger.debug(
        "retrying a failed response",
        metadata: [
          "authority": "\(currentAuthority)", "route": "\(policy.routeName)", "status": "\(status)",
          "retry": "\(retry)",
        ])
    case .failure(let error, let retry):
      metrics.routeRetry(policy, direction: router.direction)
      logger.debug(
        "retrying after an upstream failure",
        metadata: [
          "authority": "\(currentAuthority)", "route": "\(policy.routeName)",
          "error": "\(error.map { "\($0)" } ?? "closed")", "retry": "\(retry)",
        ])
    }
    if let upstream {
      upstream.ticket?.complete(resend.outcome)
      upstream.close()
    }
    releaseUpstream()
    route()
  }

  // MARK: Upgrades

  /// The upstream answered `101 Switching Protocols`: the 101 goes to the client, counted as the request's
  /// response; at the end of it (``becomeRelay(context:)``) both connections become a byte relay.
  private func acceptUpgrade(_ head: HTTPResponseHead) {
    cancelTimeout()
    upstream?.ticket?.complete(.success)
    let latency = elapsedMilliseconds()
    if let upstream {
      metrics.responseEnded(
        series(upstream.labels, countOverflow: true), status: 101, grpcStatus: nil, latencyMilliseconds: latency)
    }
    let policy = stateMachine.policy
    if policy.hasRoute {
      metrics.routeResponse(policy, direction: router.direction, status: 101, latencyMilliseconds: latency)
    }
    tapResponse(status: 101)
    var head = head
    let protocolName = head.headers.first(name: "upgrade") ?? request?.upgrade
    HTTPHeaderRules.stripHopByHop(&head.headers, upgrade: protocolName)
    head.version = .http1_1
    writeDownstream(.head(head))
    flushDownstream()
  }

  /// Takes HTTP off both pipelines and joins them with a ``ByteRelay``. Bytes the upstream sent right after
  /// its 101 (already read) reach the client; from here on nothing is parsed.
  private func becomeRelay(context: ChannelHandlerContext) {
    guard let routed = self.upstream, let upstream = routed.channel else { return }
    // From here the upstream's bytes are the relay's: its codec reports nothing more.
    reporter?.unbind()
    if let host = Self.responseHost(of: routed) { host.responses = nil }
    releaseUpstream()
    endCounted()
    let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
    let (downstreamEnd, upstreamEnd) = ByteRelay.pair(onFirstClose: {
      let handler = bound.value
      handler.tapEnd(status: 101, grpcStatus: nil, proxyError: "")
    })
    do {
      let down = context.pipeline.syncOperations
      let up = upstream.pipeline.syncOperations
      try down.addHandler(downstreamEnd)
      try up.addHandler(upstreamEnd)
      // Outbound HTTP handlers first, so the relay's writes meet bytes-only handlers; the decoders last,
      // as removing one hands its unparsed bytes to the relay behind it.
      let httpHandlers: [(ChannelPipeline.SynchronousOperations, (any RemovableChannelHandler)?)] = [
        (up, try? up.handler(type: UpstreamResponseHandler.self)),
        (down, try? down.handler(type: HTTPServerPipelineHandler.self)),
        (down, try? down.handler(type: HTTP1TimeoutBytesHandler.self)),
      ]
      for case (let pipeline, let handler?) in httpHandlers { pipeline.removeHandler(handler, promise: nil) }
      let decoders: [(ChannelPipeline.SynchronousOperations, (any RemovableChannelHandler)?)] = [
        (down, try? down.handler(type: HTTP1ServerCodec.self)),
        (up, try? up.handler(type: HTTP1ClientCodec.self)),
      ]
      let downstream = context.channel
      for case (let pipeline, let decoder?) in decoders {
        // A decoder leaves a moment later, handing its unparsed bytes on as it goes: written by the relay,
        // they are flushed once it is gone (no read completes for them).
        let removed = context.eventLoop.makePromise(of: Void.self)
        removed.futureResult.whenComplete { _ in
          downstream.flush()
          upstream.flush()
        }
        pipeline.removeHandler(decoder, promise: removed)
      }
      // Reading resumes on both sides (the HTTP handlers may have held a read back: the server codec
      // does while a response is outstanding).
      Self.setAutoRead(upstream, true) { upstream.read() }
      Self.setAutoRead(downstream, true) { downstream.read() }
      down.removeHandler(context: context, promise: nil)
    } catch {
      logger.debug("upgrade failed", metadata: ["authority": "\(currentAuthority)", "error": "\(error)"])
      upstream.close(promise: nil)
      context.close(promise: nil)
    }
  }

  func upstreamReadComplete(attempt: Int) {
    guard stateMachine.isCurrent(attempt: attempt) else { return }
    flushDownstream()
  }

  func upstreamWritabilityChanged(_ writable: Bool, attempt: Int) {
    guard stateMachine.isCurrent(attempt: attempt), eventLoop != nil else { return }
    setDownstreamAutoRead(writable)
    if writable { readDownstream() }
  }

  /// The upstream closed or failed. Before the response ended, that is an upstream reset.
  func upstreamFailed(_ error: (any Error)?, attempt: Int) {
    guard stateMachine.isCurrent(attempt: attempt), eventLoop != nil else { return }
    let refused = upstream?.stream?.wasRefused(by: error) ?? false
    perform(stateMachine.upstreamFailed(error, attempt: attempt, refused: refused))
  }

  // MARK: Tap

  private func tapResponse(status: Int) {
    guard let tapped else { return }
    var event = Swiftmesh_Tap_TapEvent.ResponseInit()
    event.status = UInt32(clamping: status)
    event.latencyMs = elapsedMilliseconds()
    tap.publish(tapped, destination: tapDestination, serverID: tapServerID, event: .responseInit(event))
  }

  private func tapEnd(status: Int, grpcStatus: Int?, proxyError: String) {
    guard let tapped else { return }
    var event = Swiftmesh_Tap_TapEvent.ResponseEnd()
    event.status = UInt32(clamping: status)
    if let grpcStatus { event.grpcStatus = UInt32(clamping: grpcStatus) }
    event.durationMs = elapsedMilliseconds()
    event.proxyError = proxyError
    tap.publish(tapped, destination: tapDestination, serverID: tapServerID, event: .responseEnd(event))
    self.tapped = nil
  }

  /// `ip:port` (`[ip]:port` for IPv6), or empty.
  static func address(_ address: SocketAddress?) -> String {
    guard let address, let ip = address.ipAddress, let port = address.port else { return "" }
    return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
  }

  // MARK: Helpers

  private func elapsedMilliseconds() -> Double {
    Double((NIODeadline.now() - started).nanoseconds) / 1_000_000
  }

  /// `application/grpc`, `application/grpc+proto`, ... in any case, without building a lowercased copy.
  static func isGRPCContentType(_ value: String) -> Bool {
    let prefix = "application/grpc".utf8
    var value = value.utf8.makeIterator()
    for expected in prefix {
      guard let byte = value.next(), byte | 0x20 == expected | 0x20 else { return false }
    }
    return true
  }

  static func clientPart(_ part: HTTPServerRequestPart, head: HTTPRequestHead) -> HTTPClientRequestPart {
    switch part {
    case .head: .head(head)
    case .body(let buffer): .body(.byteBuffer(buffer))
    case .end(let trailers): .end(trailers)
    }
  }
}

/// Hands an upstream's response parts and state changes to the downstream's handler (same event loop).
///
/// The upstream's own codec (``HTTP1ClientCodec``, ``HTTP2ClientStreamCodec``) calls it directly, holding it as
/// its ``UpstreamResponseHandler/Host/responses``: no handler of its own in the upstream's pipeline, so no pipeline
/// hop (and dynamic cast) for every response part, read completion and state change, and on an HTTP/2 stream
/// no handler added and removed per request. (``UpstreamResponseHandler`` puts it in a pipeline that has
/// neither codec.) On a pooled HTTP/1.1 connection it stays with the codec between requests, unbound (events
/// of an idle connection go nowhere), and is bound to the next request's handler.
final class UpstreamResponseReporter {
  private var downstream: NIOLoopBound<ProxyRequestHandler>?
  private var attempt: Int
  private var done = false

  init(downstream: NIOLoopBound<ProxyRequestHandler>, attempt: Int) {
    self.downstream = downstream
    self.attempt = attempt
  }

  /// Reports to `downstream` from now on (a pooled connection's next request).
  func bind(_ downstream: NIOLoopBound<ProxyRequestHandler>, attempt: Int) {
    self.downstream = downstream
    self.attempt = attempt
    done = false
  }

  /// The request ended: nothing is reported until the next ``bind(_:attempt:)``.
  func unbind() {
    downstream = nil
    done = true
  }

  /// An upstream that closed before the reporter was in place (its connection went away between opening the
  /// stream and forwarding on it) would never report it: report it now, once the request is forwarding.
  func reportIfInactive(_ upstream: Upstream) {
    if let channel = upstream.channel {
      reportIfInactive(channel)
    } else if let stream = upstream.stream?.stream, stream.isClosed {
      reportLater(on: stream.eventLoop)
    }
  }

  func reportIfInactive(_ channel: any Channel) {
    guard !channel.isActive else { return }
    reportLater(on: channel.eventLoop)
  }

  private func reportLater(on eventLoop: any EventLoop) {
    let attempt = self.attempt
    let reporter = NIOLoopBound(self, eventLoop: eventLoop)
    eventLoop.execute {
      let reporter = reporter.value
      guard !reporter.done, reporter.attempt == attempt, let downstream = reporter.downstream else { return }
      reporter.done = true
      downstream.value.upstreamFailed(nil, attempt: attempt)
    }
  }

  func received(_ part: HTTPClientResponsePart) {
    guard let downstream else { return }
    if case .end = part { done = true }
    downstream.value.upstreamResponse(part, attempt: attempt)
  }

  func readComplete() {
    downstream?.value.upstreamReadComplete(attempt: attempt)
  }

  func writabilityChanged(_ writable: Bool) {
    downstream?.value.upstreamWritabilityChanged(writable, attempt: attempt)
  }

  /// The upstream failed (the caller closes it).
  func failed(_ error: any Error) {
    guard !done, let downstream else { return }
    done = true
    downstream.value.upstreamFailed(error, attempt: attempt)
  }

  func inactive() {
    guard !done, let downstream else { return }
    done = true
    downstream.value.upstreamFailed(nil, attempt: attempt)
  }
}

/// An upstream codec that reports its response parts to an ``UpstreamResponseReporter`` directly.
/// A codec the request handler writes its parts to directly (``ProxyRequestHandler/pair(_:with:)``, and the
/// upstream's codec) as well as through the pipeline: both ways end in ``write(_:context:promise:)``.
protocol DirectlyWrittenCodec: ChannelOutboundHandler, AnyObject {
  /// This handler's context while it is in the pipeline: set in `handlerAdded`, cleared in `handlerRemoved`.
  var pipelineContext: ChannelHandlerContext? { get }
  func write(_ part: OutboundIn, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?)
}

extension DirectlyWrittenCodec {
  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    write(unwrapOutboundIn(data), context: context, promise: promise)
  }

  /// Writes `part` as a write through the pipeline would reach this codec (nothing behind it takes writes),
  /// without the trip from the pipeline's tail and the part's boxing into `NIOAny` and dynamic cast out of it
  /// (about 500 instructions a part). Fails the promise once the codec has left the pipeline.
  func writeDirectly(_ part: OutboundIn, promise: EventLoopPromise<Void>?) {
    guard let context = pipelineContext else {
      promise?.fail(ChannelError.ioOnClosedChannel)
      return
    }
    write(part, context: context, promise: promise)
  }
}

/// The codec in front of a ``ProxyRequestHandler`` on a downstream connection or stream, paired with it (see
/// ``ProxyRequestHandler/downstreamCodec``).
protocol DownstreamCodec: AnyObject {
  /// The handler request parts go to directly; the codec lets go of it when it leaves the pipeline.
  var requests: ProxyRequestHandler? { get set }
  /// Writes a response part as the handler's `context.write` would (``DirectlyWrittenCodec``).
  func writeDirectly(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?)
}

extension ProxyRequestHandler {
  /// Pairs `handler` with `codec` right in front of it in one pipeline: request parts go from the codec to the
  /// handler and response parts back, as direct calls. Each lets go of the other when it leaves the pipeline.
  static func pair(_ handler: ProxyRequestHandler, with codec: any DownstreamCodec) {
    handler.downstreamCodec = codec
    codec.requests = handler
  }
}

protocol UpstreamResponseHost: AnyObject {
  var responses: UpstreamResponseReporter? { get set }
  /// Writes a request part as the channel's `write` would (the codec is last in its pipeline;
  /// ``DirectlyWrittenCodec``).
  func writeDirectly(_ part: HTTPClientRequestPart, promise: EventLoopPromise<Void>?)
}

/// Puts an ``UpstreamResponseReporter`` in a pipeline that has no ``UpstreamResponseHost`` codec (an upstream
/// speaking HTTP/1 parts by other means).
final class UpstreamResponseHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPClientResponsePart

  let reporter: UpstreamResponseReporter

  init(_ reporter: UpstreamResponseReporter) { self.reporter = reporter }

  func handlerAdded(context: ChannelHandlerContext) { reporter.reportIfInactive(context.channel) }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) { reporter.received(unwrapInboundIn(data)) }

  func channelReadComplete(context: ChannelHandlerContext) {
    reporter.readComplete()
    context.fireChannelReadComplete()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    reporter.writabilityChanged(context.channel.isWritable)
    context.fireChannelWritabilityChanged()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    reporter.failed(error)
    context.close(promise: nil)
  }

  func channelInactive(context: ChannelHandlerContext) {
    reporter.inactive()
    context.fireChannelInactive()
  }
}

/// What the requests of one downstream connection share, kept between them: the last `Host` and the authority
/// parsed from it, the metric series the last request counted in, and the destination it went to. An HTTP/1.1 connection has one; the
/// streams of an HTTP/2 connection share their connection's. Used only on the connection's event loop (its
/// streams run there too).
final class DownstreamConnectionCache: @unchecked Sendable {
  var lastHost: String?
  var lastAuthority: Authority?
  var series: ProxyMetrics.RequestSeries?
  /// The label set ``series`` was last found for.
  var seriesLabels: ProxyMetrics.LabelSet?
  let destination = DestinationMemo()
}
