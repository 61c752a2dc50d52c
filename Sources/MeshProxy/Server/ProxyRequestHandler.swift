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
final class ProxyRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  private enum State {
    case idle
    /// Waiting for the router; request parts that arrive meanwhile are kept in ``buffered``.
    case opening
    case forwarding(ForwardingState)
    /// The proxy answered itself; the rest of the request is dropped.
    case answered
    /// The upstream answered `101 Switching Protocols`: the connection is a byte relay now (this handler is
    /// on its way out of the pipeline).
    case upgraded
  }

  private struct ForwardingState {
    var upstream: Upstream
    /// Reports the upstream's response here; stays on a pooled HTTP/1.1 connection between requests.
    var responseHandler: UpstreamResponseHandler
    var requestEnded: Bool
    var responseStarted: Bool
    var status: Int = 0
    var grpcStatus: Int?
    /// The upstream accepted the upgrade (`101`): at the end of that response, both sides become a relay.
    var upgradeAccepted = false
  }

  private let router: any RequestRouter
  private let metrics: ProxyMetrics
  private let peerIdentity: IdentityName?
  /// Where the connection was going before iptables redirected it (transparent mode).
  private let originalDestination: Authority?
  private var state: State = .idle
  private var started: NIODeadline = .now()
  private var downstreamIsHTTP2: Bool
  private var context: ChannelHandlerContext?
  private var currentAuthority = ""
  /// Whether the current request is a gRPC call (`content-type: application/grpc...`): the proxy's own
  /// answers to it are gRPC statuses.
  private var isGRPC = false

  private let inFlight: InFlightRequests
  private let logger: Logger
  private let tap: TapHub
  /// The current request as tap describes it, while somebody observes.
  private var tapped: TapRequest?
  private var tapDestination = ""
  private var tapServerID = ""

  /// The current request as routed, kept to route it again when an upstream refuses it unprocessed.
  private var request: RoutedRequest?
  /// The current request's parts so far, while they fit ``replayLimit`` (``replayable``): what a refused
  /// request is sent again with. Both arrays keep their storage from request to request.
  private var replay: [HTTPServerRequestPart] = []
  private var replayable = true
  /// Parts read while the request waits for its upstream (``State/opening``).
  private var buffered: [HTTPServerRequestPart] = []
  /// The last request's `Host` and the authority parsed from it: the requests of one connection name the
  /// same authority, parsed once.
  private var lastHost: String?
  private var lastAuthority: Authority?
  private var replayBytes = 0
  /// Times the current request was refused unprocessed (GOAWAY, REFUSED_STREAM) and sent again.
  private var refusals = 0
  /// The most request body a refused request may have and still be sent again (as Linkerd's retry buffer).
  static let replayLimit = 64 * 1024
  static let maxRefusals = 3

  /// The current request's route policy (timeout, retries, classification), from the destination's profile.
  private var policy: RequestPolicy = .none
  /// Retries of the current request after failed responses (within the route's retry budget).
  private var retries = 0
  static let maxRetries = 3
  /// Numbers the requests of this connection/stream, so a timer of an earlier request does nothing.
  private var requestID = 0
  /// Numbers upstream attempts, so events of an abandoned attempt (retried, timed out) are ignored.
  private var attemptID = 0
  private var timeoutTask: Scheduled<Void>?
  private var counted = false
  /// The HTTP/1.1 connection can carry no further request after this one (an upgrade or CONNECT request:
  /// the request parser stops after it): the response says `connection: close`, and the connection closes
  /// after it.
  private var closeAfterResponse = false

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

  init(
    router: any RequestRouter, metrics: ProxyMetrics, peerIdentity: IdentityName?, isHTTP2: Bool,
    inFlight: InFlightRequests, tap: TapHub, logger: Logger, originalDestination: Authority? = nil
  ) {
    self.originalDestination = originalDestination
    self.inFlight = inFlight
    self.tap = tap
    self.logger = logger
    self.router = router
    self.metrics = metrics
    self.peerIdentity = peerIdentity
    self.downstreamIsHTTP2 = isHTTP2
  }

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }
  func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

  // MARK: Downstream

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let part = unwrapInboundIn(data)
    switch state {
    case .idle:
      guard case .head(let head) = part else { return }
      // Asks for the next read while the pipeline handler still lets it through (it holds reads from a
      // request's end until its response's end): the socket stays registered for reading while the response
      // is on its way, instead of being taken off epoll at the end of this read and put back after the
      // response, two epoll_ctl calls a request. Bytes a client sends meanwhile (a pipelined request) are
      // still held back by the pipeline handler.
      context.read()
      begin(head, context: context)
    case .opening:
      record(part)
      buffered.append(part)
    case .forwarding(var forwarding):
      record(part)
      forwarding.upstream.channel.write(Self.clientPart(part, head: forwarding.upstream.head), promise: nil)
      if case .end = part {
        forwarding.requestEnded = true
        forwarding.upstream.channel.flush()
        state = .forwarding(forwarding)
        finishIfDone()
      }
    case .answered:
      if case .end = part { resetAfterAnswer(context: context) }
    case .upgraded:
      break
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    switch state {
    case .forwarding(let forwarding):
      forwarding.upstream.channel.flush()
    case .opening where !bufferedRequestEnded:
      // The upstream is not there yet (a new connection or stream, discovery still answering) and the request
      // goes on: hold further reads until it is ready; parts already read are buffered. A request that has
      // ended (every request without a body) keeps reading: nothing of it is left to hold back, the pipeline
      // handler holds a pipelined next request, and each pause and resume would cost an epoll_ctl.
      Self.setAutoRead(context.channel, false)
    default:
      break
    }
    context.fireChannelReadComplete()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    // The client reads slowly: stop reading the upstream until it catches up.
    if case .forwarding(let forwarding) = state {
      let writable = context.channel.isWritable
      let upstream = forwarding.upstream.channel
      Self.setAutoRead(upstream, writable) {
        if writable { upstream.read() }
      }
    }
    context.fireChannelWritabilityChanged()
  }

  func channelInactive(context: ChannelHandlerContext) {
    switch state {
    case .opening, .forwarding:
      // Settled first: closing the upstream reports its close back here (the downstream's cancellation is
      // not an upstream reset).
      let previous = state
      state = .answered
      request?.abandonment.isAbandoned = true
      if case .forwarding(let forwarding) = previous {
        forwarding.upstream.ticket?.complete(.cancelled)
        forwarding.upstream.channel.close(promise: nil)
      }
    default:
      break
    }
    cancelTimeout()
    endCounted()
    context.fireChannelInactive()
  }

  private func begin(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
    started = .now()
    if !counted {
      counted = true
      inFlight.begin()
    }
    state = .opening
    let host = head.headers.first(name: "host")
    let authority: Authority?
    if let host, host == lastHost {
      authority = lastAuthority
    } else {
      authority = host.flatMap { try? Authority($0, defaultPort: 80) }
      lastHost = host
      lastAuthority = authority
    }
    currentAuthority = authority?.description ?? host ?? ""
    isGRPC = head.headers.first(name: "content-type").map(Self.isGRPCContentType) ?? false
    var head = head
    var upgrade = downstreamIsHTTP2 ? nil : HTTPHeaderRules.requestedUpgrade(head.headers)
    // The HTTP/1.1 parser reads nothing after an upgrade or CONNECT request: this connection ends with it.
    closeAfterResponse = upgrade != nil || (!downstreamIsHTTP2 && head.method == .CONNECT)
    if let requested = upgrade, requested.lowercased().split(separator: ",").contains(where: {
      HTTPHeaderRules.trimmed($0) == "h2c"
    }) {
      // An h2c upgrade is not performed: the request goes on as plain HTTP/1.1 (a server may answer it
      // either way), never left hanging.
      upgrade = nil
      head.headers.remove(name: "upgrade")
      head.headers.remove(name: "http2-settings")
    }
    var request = RoutedRequest(
      head: head, authority: authority, arrivedOverHTTP2: downstreamIsHTTP2, peerIdentity: peerIdentity)
    request.upgrade = upgrade
    request.originalDestination = originalDestination
    self.request = request
    buffered.removeAll(keepingCapacity: true)
    buffered.append(.head(head))
    replay.removeAll(keepingCapacity: true)
    replayable = upgrade == nil
    if replayable { replay.append(.head(head)) }
    replayBytes = 0
    refusals = 0
    retries = 0
    requestID &+= 1
    policy = .none
    tapDestination = ""
    tapServerID = ""
    if tap.isObserved {
      let tapped = TapRequest(
        id: tap.requestID(), direction: router.direction, source: Self.address(context.channel.remoteAddress),
        tls: peerIdentity != nil, clientID: peerIdentity?.description ?? "", method: head.method.rawValue,
        authority: currentAuthority, path: head.uri)
      self.tapped = tapped
      tap.publish(tapped, destination: "", serverID: "", event: .requestInit(.init()))
    } else {
      tapped = nil
    }
    if head.method == .CONNECT {
      answer(
        ProxyError(.connectRefused, "the proxy does not open tunnels (CONNECT \(head.uri))"), context: context,
        requestEnded: false)
      return
    }
    let id = requestID
    if let policy = router.knownPolicy(for: request) {
      // The destination's profile is known already (every request but a destination's first): no future.
      apply(policy, to: request, id: id)
      return
    }
    // Hold further reads until the upstream is ready; parts already read are buffered.
    Self.setAutoRead(context.channel, false)
    let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
    router.policy(for: request, on: context.eventLoop).hop(to: context.eventLoop).whenSuccess { policy in
      bound.value.apply(policy, to: request, id: id)
    }
  }

  /// The destination's profile is known: start the route's clock and route the request.
  private func apply(_ policy: RequestPolicy, to request: RoutedRequest, id: Int) {
    guard id == requestID, let context, case .opening = state else { return }
    self.policy = policy
    if policy.hasRoute { metrics.routeRequest(policy, direction: router.direction) }
    policy.budget?.deposit()
    if let timeout = policy.timeout {
      let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
      timeoutTask = context.eventLoop.scheduleTask(in: TimeAmount(timeout)) { bound.value.timedOut(id) }
    }
    route(request, context: context)
  }

  /// The route's timeout expired before the response headers: answer 504 and abandon the upstream call.
  private func timedOut(_ id: Int) {
    guard id == requestID, let context else { return }
    timeoutTask = nil
    let detail = "no response within the route timeout of \(policy.timeout.map { "\($0)" } ?? "?")"
    switch state {
    case .opening:
      answer(ProxyError(.timeout, detail), context: context, requestEnded: bufferedRequestEnded)
    case .forwarding(let forwarding) where !forwarding.responseStarted:
      attemptID &+= 1
      forwarding.upstream.ticket?.complete(.cancelled)
      forwarding.upstream.channel.close(promise: nil)
      answer(ProxyError(.timeout, detail), context: context, requestEnded: forwarding.requestEnded)
    default:
      break
    }
  }

  private func cancelTimeout() {
    timeoutTask?.cancel()
    timeoutTask = nil
  }

  private func route(_ request: RoutedRequest, context: ChannelHandlerContext) {
    let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
    router.open(request, on: context.eventLoop).hop(to: context.eventLoop).whenComplete { result in
      bound.value.opened(result)
    }
    // Reads are not paused here: see `channelReadComplete`.
  }

  private func opened(_ result: Result<Upstream, any Error>) {
    guard let context else {
      if case .success(let upstream) = result {
        upstream.ticket?.complete(.cancelled)
        upstream.channel.close(promise: nil)
      }
      return
    }
    guard case .opening = state else {
      // The client went away meanwhile.
      if case .success(let upstream) = result {
        upstream.ticket?.complete(.cancelled)
        upstream.channel.close(promise: nil)
      }
      return
    }
    switch result {
    case .failure(let error):
      let proxyError = error as? ProxyError ?? ProxyError(.connectFailed, "\(error)")
      answer(proxyError, context: context, requestEnded: bufferedRequestEnded)
    case .success(let upstream):
      metrics.requestStarted(upstream.labels)
      if tapped != nil {
        tapDestination = Self.address(upstream.channel.remoteAddress)
        tapServerID = upstream.labels.serverID
      }
      attemptID &+= 1
      let downstream = NIOLoopBound(self, eventLoop: context.eventLoop)
      let responseHandler: UpstreamResponseHandler
      let pipeline = upstream.channel.pipeline.syncOperations
      if upstream.release != nil, let pooled = try? pipeline.handler(type: UpstreamResponseHandler.self) {
        // A pooled HTTP/1.1 connection keeps its handler from request to request.
        responseHandler = pooled
        pooled.bind(downstream, attempt: attemptID)
      } else {
        responseHandler = UpstreamResponseHandler(downstream: downstream, attempt: attemptID)
        do {
          try pipeline.addHandler(responseHandler)
        } catch {
          upstream.channel.close(promise: nil)
          answer(ProxyError(.connectFailed, "upstream pipeline: \(error)"), context: context, requestEnded: false)
          return
        }
      }
      var forwarding = ForwardingState(
        upstream: upstream, responseHandler: responseHandler, requestEnded: false, responseStarted: false)
      for part in buffered {
        upstream.channel.write(Self.clientPart(part, head: upstream.head), promise: nil)
        if case .end = part { forwarding.requestEnded = true }
      }
      buffered.removeAll(keepingCapacity: true)
      upstream.channel.flush()
      state = .forwarding(forwarding)
      Self.setAutoRead(context.channel, true)
      context.read()
    }
  }

  /// The proxy answers the request itself.
  private func answer(_ error: ProxyError, context: ChannelHandlerContext, requestEnded: Bool) {
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
    if closeAfterResponse { headers.add(name: "connection", value: "close") }
    let status: HTTPResponseStatus
    let grpcStatus: Int?
    if isGRPC {
      // A gRPC client understands a status, not an error page: a trailers-only response (HTTP 200, one
      // HEADERS frame with END_STREAM) with the proxy's reason in grpc-message, as Linkerd answers.
      status = .ok
      grpcStatus = error.grpcStatus
      headers.add(name: "content-type", value: "application/grpc")
      headers.add(name: "grpc-status", value: String(error.grpcStatus))
      headers.add(name: "grpc-message", value: GRPCMessage.percentEncoded("\(error)"))
      if !downstreamIsHTTP2 { headers.add(name: "content-length", value: "0") }
      context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
    } else {
      status = error.status
      grpcStatus = nil
      headers.add(name: "content-type", value: "text/plain; charset=utf-8")
      let body = ByteBuffer(string: "\(error)\n")
      headers.add(name: "content-length", value: String(body.readableBytes))
      context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
      context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
    }
    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    var labels = ProxyMetrics.RequestLabels(
      direction: router.direction, authority: request.map { router.metricAuthority(for: $0) } ?? "",
      tls: peerIdentity != nil)
    labels.clientID = peerIdentity?.description ?? ""
    metrics.responseEnded(
      labels, status: Int(status.code), grpcStatus: grpcStatus, latencyMilliseconds: elapsedMilliseconds())
    tapResponse(status: Int(status.code))
    tapEnd(status: Int(status.code), grpcStatus: grpcStatus, proxyError: error.reason.rawValue)
    if policy.hasRoute {
      metrics.routeResponse(
        policy, direction: router.direction, status: Int(status.code), latencyMilliseconds: elapsedMilliseconds())
    }
    cancelTimeout()
    state = .answered
    if closeAfterResponse {
      context.close(promise: nil)
      return
    }
    Self.setAutoRead(context.channel, true)
    context.read()
    if requestEnded { resetAfterAnswer(context: context) }
  }

  private func resetAfterAnswer(context: ChannelHandlerContext) {
    state = .idle
    endCounted()
  }

  private func endCounted() {
    if counted {
      counted = false
      inFlight.end()
    }
  }

  // MARK: Upstream (called by UpstreamResponseHandler, same event loop)

  func upstreamResponse(_ part: HTTPClientResponsePart, attempt: Int) {
    guard attempt == attemptID, let context, case .forwarding(var forwarding) = state else { return }
    switch part {
    case .head(let head)
    where retryAfter(
      status: Int(head.status.code), grpcStatus: isGRPC ? head.headers.first(name: "grpc-status").flatMap { Int($0) } : nil,
      forwarding, context: context):
      return
    case .head(let head) where head.status == .switchingProtocols:
      guard request?.upgrade != nil else {
        forwarding.upstream.ticket?.complete(.failure)
        forwarding.upstream.channel.close(promise: nil)
        answer(
          ProxyError(.upstreamReset, "the upstream switched protocols without being asked to"), context: context,
          requestEnded: forwarding.requestEnded)
        return
      }
      acceptUpgrade(head, forwarding, context: context)
    case .end where forwarding.upgradeAccepted:
      // Out of the HTTP decoder's callback first: the pipelines change under it.
      let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
      context.eventLoop.execute { bound.value.becomeRelay() }
    case .head(var head):
      cancelTimeout()
      forwarding.responseStarted = true
      forwarding.status = Int(head.status.code)
      forwarding.grpcStatus = head.headers.first(name: "grpc-status").flatMap { Int($0) }
      // A peer proxy that shed the request (`overloaded`) is alive and busy, not failing: its time only
      // raises the endpoint's load estimate, so shedding never ejects the only endpoint of a service.
      let outcome: RequestOutcome =
        head.status.code < 500
        ? .success
        : head.headers.first(name: ProxyError.headerName) == ProxyError.Reason.overloaded.rawValue
          ? .cancelled : .failure
      forwarding.upstream.ticket?.complete(outcome)
      HTTPHeaderRules.stripHopByHop(&head.headers)
      if closeAfterResponse { head.headers.add(name: "connection", value: "close") }
      // Set only when it differs: the head's storage is shared, and a write copies it.
      if head.version != .http1_1 { head.version = .http1_1 }
      let latency = elapsedMilliseconds()
      state = .forwarding(forwarding)
      responseLatency = latency
      tapResponse(status: forwarding.status)
      context.write(wrapOutboundOut(.head(head)), promise: nil)
    case .body(let buffer):
      context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    case .end(let trailers):
      if let grpc = trailers?.first(name: "grpc-status").flatMap({ Int($0) }) { forwarding.grpcStatus = grpc }
      metrics.responseEnded(
        forwarding.upstream.labels, status: forwarding.status, grpcStatus: forwarding.grpcStatus,
        latencyMilliseconds: responseLatency ?? elapsedMilliseconds())
      if policy.hasRoute {
        metrics.routeResponse(
          policy, direction: router.direction, status: forwarding.status,
          latencyMilliseconds: responseLatency ?? elapsedMilliseconds())
      }
      responseLatency = nil
      tapEnd(status: forwarding.status, grpcStatus: forwarding.grpcStatus, proxyError: "")
      forwarding.responseStarted = true
      state = .forwarding(forwarding)
      responseEnded = true
      // Settle the state before the last write: on an HTTP/2 downstream, writing END_STREAM closes the
      // stream and `channelInactive` runs inside this write. Still `.forwarding` then, it would reset the
      // upstream stream that has just completed (an RST_STREAM per request, which peers count as abuse).
      finishIfDone()
      context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
      if closeAfterResponse {
        // A refused upgrade: an ordinary response, after which this connection ends. Its upstream
        // connection was asked for an upgrade too and is not reused.
        if case .forwarding(let forwarding) = state { forwarding.upstream.channel.close(promise: nil) }
        state = .answered
        context.close(promise: nil)
      }
    }
  }

  // MARK: Upgrades

  /// The upstream answered `101 Switching Protocols`: the 101 goes to the client, counted as the request's
  /// response; at the end of it (``becomeRelay``) both connections become a byte relay.
  private func acceptUpgrade(_ head: HTTPResponseHead, _ forwarding: ForwardingState, context: ChannelHandlerContext) {
    var forwarding = forwarding
    cancelTimeout()
    forwarding.responseStarted = true
    forwarding.upgradeAccepted = true
    forwarding.status = 101
    forwarding.upstream.ticket?.complete(.success)
    let latency = elapsedMilliseconds()
    metrics.responseEnded(forwarding.upstream.labels, status: 101, grpcStatus: nil, latencyMilliseconds: latency)
    if policy.hasRoute {
      metrics.routeResponse(policy, direction: router.direction, status: 101, latencyMilliseconds: latency)
    }
    tapResponse(status: 101)
    var head = head
    let protocolName = head.headers.first(name: "upgrade") ?? request?.upgrade
    HTTPHeaderRules.stripHopByHop(&head.headers, upgrade: protocolName)
    head.version = .http1_1
    state = .forwarding(forwarding)
    context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
  }

  /// Takes HTTP off both pipelines and joins them with a ``ByteRelay``. Bytes the upstream sent right after
  /// its 101 (already read) reach the client; from here on nothing is parsed.
  private func becomeRelay() {
    guard let context, case .forwarding(let forwarding) = state, forwarding.upgradeAccepted else { return }
    state = .upgraded
    endCounted()
    let upstream = forwarding.upstream.channel
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
        (up, try? up.handler(type: NIOHTTPRequestHeadersValidator.self)),
        (up, try? up.handler(type: HTTPRequestEncoder.self)),
        (down, try? down.handler(type: HTTPServerPipelineHandler.self)),
        (down, try? down.handler(type: NIOHTTPResponseHeadersValidator.self)),
        (down, try? down.handler(type: HTTPServerProtocolErrorHandler.self)),
        (down, try? down.handler(type: HTTP1TimeoutPartsHandler.self)),
        (down, try? down.handler(type: HTTP1TimeoutBytesHandler.self)),
        (down, try? down.handler(type: HTTPResponseEncoder.self)),
      ]
      for case (let pipeline, let handler?) in httpHandlers { pipeline.removeHandler(handler, promise: nil) }
      let decoders: [(ChannelPipeline.SynchronousOperations, (any RemovableChannelHandler)?)] = [
        (down, try? down.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)),
        (up, try? up.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self)),
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
      // Reading resumes on both sides (the HTTP handlers may have held a read back: the pipelining handler
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

  private var responseLatency: Double?
  private var responseEnded = false

  /// A failed response on a retryable route: if the whole request is kept, retries are left and the budget
  /// allows, the response is dropped and the request sent again (to a newly picked endpoint or leaf).
  ///
  /// A gRPC call is retried when the server answered UNAVAILABLE (14) in a trailers-only response: nothing of
  /// the response has reached the client yet, and UNAVAILABLE says the call was not processed.
  private func retryAfter(
    status: Int, grpcStatus: Int?, _ forwarding: ForwardingState, context: ChannelHandlerContext
  ) -> Bool {
    let failed = policy.isFailure(status: status) || (isGRPC && grpcStatus == 14)
    guard policy.isRetryable, failed, forwarding.requestEnded, retries < Self.maxRetries,
      replayable, let request, let budget = policy.budget, budget.withdraw()
    else { return false }
    retries += 1
    metrics.routeRetry(policy, direction: router.direction)
    metrics.responseEnded(
      forwarding.upstream.labels, status: status, grpcStatus: grpcStatus, latencyMilliseconds: elapsedMilliseconds())
    logger.debug(
      "retrying a failed response",
      metadata: [
        "authority": "\(currentAuthority)", "route": "\(policy.routeName)", "status": "\(status)",
        "retry": "\(retries)",
      ])
    attemptID &+= 1
    forwarding.upstream.ticket?.complete(.failure)
    forwarding.upstream.channel.close(promise: nil)
    state = .opening
    buffered = replay
    route(request, context: context)
    return true
  }

  /// The upstream failed before any response (reset, closed: a crashed peer) on a retryable route: sent again
  /// under the same rules as a failed response (whole request kept, retries left, budget).
  private func retryAfterFailure(_ forwarding: ForwardingState, error: (any Error)?, context: ChannelHandlerContext) -> Bool {
    guard policy.isRetryable, forwarding.requestEnded, retries < Self.maxRetries, replayable, let request,
      let budget = policy.budget, budget.withdraw()
    else { return false }
    retries += 1
    metrics.routeRetry(policy, direction: router.direction)
    logger.debug(
      "retrying after an upstream failure",
      metadata: [
        "authority": "\(currentAuthority)", "route": "\(policy.routeName)",
        "error": "\(error.map { "\($0)" } ?? "closed")", "retry": "\(retries)",
      ])
    attemptID &+= 1
    forwarding.upstream.ticket?.complete(.failure)
    forwarding.upstream.channel.close(promise: nil)
    state = .opening
    buffered = replay
    route(request, context: context)
    return true
  }

  func upstreamReadComplete(attempt: Int) {
    guard attempt == attemptID else { return }
    context?.flush()
  }

  func upstreamWritabilityChanged(_ writable: Bool, attempt: Int) {
    guard attempt == attemptID, let context else { return }
    Self.setAutoRead(context.channel, writable)
    if writable { context.read() }
  }

  /// The upstream closed or failed. Before the response ended, that is an upstream reset.
  func upstreamFailed(_ error: (any Error)?, attempt: Int) {
    guard attempt == attemptID, let context, case .forwarding(let forwarding) = state else { return }
    if responseEnded { return }
    if !forwarding.responseStarted, let stream = forwarding.upstream.stream, stream.wasRefused(by: error),
      refusals < Self.maxRefusals, replayable, let request
    {
      // The peer never processed it (GOAWAY, REFUSED_STREAM): send it again, on a fresh connection.
      refusals += 1
      attemptID &+= 1
      logger.debug(
        "upstream refused the request unprocessed; sending it again",
        metadata: [
          "direction": "\(router.direction)", "authority": "\(currentAuthority)", "attempt": "\(refusals + 1)",
        ])
      forwarding.upstream.ticket?.complete(.cancelled)
      forwarding.upstream.channel.close(promise: nil)
      state = .opening
      buffered = replay
      route(request, context: context)
      return
    }
    if !forwarding.responseStarted, retryAfterFailure(forwarding, error: error, context: context) { return }
    forwarding.upstream.ticket?.complete(.failure)
    if downstreamIsHTTP2, let reset = error as? NIOHTTP2Errors.StreamClosed {
      // The upstream reset the stream: the client gets the same reset (gRPC maps its code to a status, as it
      // would directly), not a status the proxy made up.
      logger.debug(
        "upstream reset the stream; resetting the downstream stream",
        metadata: ["direction": "\(router.direction)", "authority": "\(currentAuthority)", "code": "\(reset.errorCode)"])
      metrics.proxyError(direction: router.direction, reason: .upstreamReset)
      tapEnd(status: forwarding.status, grpcStatus: nil, proxyError: ProxyError.Reason.upstreamReset.rawValue)
      state = .answered
      cancelTimeout()
      context.triggerUserOutboundEvent(StreamResetEvent(code: reset.errorCode), promise: nil)
      context.close(promise: nil)
      return
    }
    if forwarding.responseStarted {
      // Mid-response: the only honest signal left is to break the downstream stream too.
      logger.debug(
        "upstream failed mid-response; resetting the downstream",
        metadata: [
          "direction": "\(router.direction)", "authority": "\(currentAuthority)",
          "error": "\(error.map { "\($0)" } ?? "closed")",
        ])
      metrics.proxyError(direction: router.direction, reason: .upstreamReset)
      metrics.responseEnded(
        forwarding.upstream.labels, status: 502, grpcStatus: nil, latencyMilliseconds: elapsedMilliseconds())
      tapEnd(status: forwarding.status, grpcStatus: nil, proxyError: ProxyError.Reason.upstreamReset.rawValue)
      state = .answered
      context.close(promise: nil)
    } else {
      let detail = error.map { "\($0)" } ?? "connection closed before the response"
      state = .opening
      buffered.removeAll(keepingCapacity: true)
      answer(ProxyError(.upstreamReset, detail), context: context, requestEnded: forwarding.requestEnded)
    }
  }

  /// Both directions are done: return an HTTP/1.1 upstream to its pool and get ready for the next request.
  private func finishIfDone() {
    guard case .forwarding(let forwarding) = state, forwarding.requestEnded, responseEnded else { return }
    responseEnded = false
    if let release = forwarding.upstream.release {
      // The handler stays on the connection, unbound until the connection's next request.
      forwarding.responseHandler.unbind()
      release(forwarding.upstream.channel)
    }
    state = .idle
    endCounted()
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

  /// Keeps a request part for a possible resend, until the body outgrows ``replayLimit``.
  private func record(_ part: HTTPServerRequestPart) {
    guard replayable else { return }
    if case .body(let buffer) = part {
      replayBytes += buffer.readableBytes
      if replayBytes > Self.replayLimit {
        replayable = false
        replay.removeAll(keepingCapacity: true)
        return
      }
    }
    replay.append(part)
  }

  /// Whether the parts buffered while opening include the request's end.
  private var bufferedRequestEnded: Bool {
    buffered.contains { if case .end = $0 { true } else { false } }
  }

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

  static func clientPart(_ part: HTTPServerRequestPart, head: HTTPRequestHead) -> NIOAny {
    switch part {
    case .head: NIOAny(HTTPClientRequestPart.head(head))
    case .body(let buffer): NIOAny(HTTPClientRequestPart.body(.byteBuffer(buffer)))
    case .end(let trailers): NIOAny(HTTPClientRequestPart.end(trailers))
    }
  }
}

/// Hands an upstream's response parts and state changes to the downstream's handler (same event loop).
///
/// On a pooled HTTP/1.1 connection it stays in the pipeline between requests, unbound (events of an idle
/// connection go nowhere), and is bound to the next request's handler: no handler is added and removed per
/// request.
final class UpstreamResponseHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPClientResponsePart

  private var downstream: NIOLoopBound<ProxyRequestHandler>?
  private var attempt: Int
  private var done = false
  private var context: ChannelHandlerContext?

  init(downstream: NIOLoopBound<ProxyRequestHandler>, attempt: Int) {
    self.downstream = downstream
    self.attempt = attempt
  }

  /// Reports to `downstream` from now on (a pooled connection's next request).
  func bind(_ downstream: NIOLoopBound<ProxyRequestHandler>, attempt: Int) {
    self.downstream = downstream
    self.attempt = attempt
    done = false
    if let context { reportIfInactive(context: context) }
  }

  /// The request ended: nothing is reported until the next ``bind(_:attempt:)``.
  func unbind() {
    downstream = nil
    done = true
  }

  /// An upstream that closed before this handler was in place (its connection went away between opening
  /// the stream and forwarding on it) would never report it: report it now, once the request is forwarding.
  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    reportIfInactive(context: context)
  }

  func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

  private func reportIfInactive(context: ChannelHandlerContext) {
    guard !context.channel.isActive else { return }
    let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
    let attempt = self.attempt
    context.eventLoop.execute {
      let handler = bound.value
      guard !handler.done, handler.attempt == attempt, let downstream = handler.downstream else { return }
      handler.done = true
      downstream.value.upstreamFailed(nil, attempt: attempt)
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard let downstream else { return }
    let part = unwrapInboundIn(data)
    if case .end = part { done = true }
    downstream.value.upstreamResponse(part, attempt: attempt)
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    downstream?.value.upstreamReadComplete(attempt: attempt)
    context.fireChannelReadComplete()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    downstream?.value.upstreamWritabilityChanged(context.channel.isWritable, attempt: attempt)
    context.fireChannelWritabilityChanged()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if !done, let downstream {
      done = true
      downstream.value.upstreamFailed(error, attempt: attempt)
    }
    context.close(promise: nil)
  }

  func channelInactive(context: ChannelHandlerContext) {
    if !done, let downstream {
      done = true
      downstream.value.upstreamFailed(nil, attempt: attempt)
    }
    context.fireChannelInactive()
  }
}
