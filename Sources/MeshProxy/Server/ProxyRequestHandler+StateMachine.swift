import MeshBalancer
import NIOCore
import NIOHTTP1
import NIOHTTP2

extension ProxyRequestHandler {
  /// The life of the requests of one downstream HTTP/1.1 connection or HTTP/2 stream, without I/O: each
  /// event (a request part, the route policy, an upstream opened or failed, a response part, the timeout, the
  /// downstream gone) goes in, and what the handler has to do comes out as an ``Action``.
  ///
  /// It holds what decides (which request and upstream attempt is current, whether the request and the
  /// response have ended, retries and refusals so far, the parts kept for a resend); the handler holds the
  /// channels, the timer, the router's request and what is only reported (metrics, tap, logs).
  ///
  /// A value stored in the handler and mutated in place: the request parts live in two arrays that keep
  /// their storage from request to request, outside the state enum, so no event copies them.
  ///
  /// Graceful shutdown is not an event here: on HTTP/1.1 the server codec (``HTTP1ServerCodec``) takes
  /// `ChannelShouldQuiesceEvent` (the request in progress completes, its response says `connection: close`,
  /// then the connection closes), on HTTP/2 `GracefulHTTP2Shutdown` does (GOAWAY; open streams finish).
  struct StateMachine {
    enum State {
      case idle
      /// Waiting for the route policy or the router; request parts that arrive meanwhile are kept in
      /// ``buffered``.
      case opening
      case forwarding(Forwarding)
      /// The proxy answered itself; the rest of the request is dropped.
      case answered
      /// The upstream answered `101 Switching Protocols`: the connection is a byte relay now (the handler is
      /// on its way out of the pipeline).
      case upgraded
      /// Only while a payload is being changed in place (see ``modifyForwarding(_:)``).
      case modifying
    }

    struct Forwarding {
      var responseStarted = false
      var responseEnded = false
      var status = 0
      var grpcStatus: Int?
      /// The upstream accepted the upgrade (`101`): at the end of that response, both sides become a relay.
      var upgradeAccepted = false
    }

    /// What the handler does about an event.
    enum Action {
      case none
      /// A request's head arrived on an idle connection: the handler reads it (authority, upgrade, tap) and
      /// reports ``StateMachine/requestStarted(_:isGRPC:upgrade:closeAfterResponse:)``.
      case startRequest(HTTPRequestHead)
      /// Hold further reads until the upstream is ready (parts already read are buffered) and look up the
      /// route policy of request `requestID`.
      case lookUpPolicy(requestID: Int)
      /// The policy is known: count the route, start its timeout (when it has one) and open an upstream.
      case openUpstream(requestID: Int)
      /// An upstream opened after its request was given up: end its ticket and close it.
      case discardUpstream
      /// The upstream is ready: bind its response handler to `attempt`, send it ``buffered`` and report
      /// ``StateMachine/forwardingStarted()``.
      case startForwarding(attempt: Int)
      /// A request part for the upstream; `last`: flush it and, with `finish`, the request is complete
      /// (return the upstream to its pool, the request is no longer in flight).
      case forwardRequestPart(HTTPServerRequestPart)
      /// A read from the client is complete: flush what went to the upstream.
      case flushUpstream
      /// Hold further reads from the client until the upstream is ready (parts read meanwhile are buffered).
      case pauseReading
      case forwardLastRequestPart(HTTPServerRequestPart, finish: Bool)
      /// The rest of an answered request has arrived: it is no longer in flight.
      case requestDone
      /// The proxy answers the request itself (see ``Answer``), reporting
      /// ``StateMachine/answerWritten(requestEnded:)`` before the answer's end.
      case answer(Answer)
      /// After an answer: reading resumes; with `requestDone` the request is no longer in flight.
      case resumeReading(requestDone: Bool)
      /// The current upstream is abandoned (its ticket completes with `outcome`, its channel closes), then
      /// the proxy answers.
      case abandonUpstreamAndAnswer(RequestOutcome, Answer)
      /// The upstream failed before any response: its ticket completes as a failure, then the proxy answers.
      case failUpstreamAndAnswer(Answer)
      /// Send the request again on a new upstream: the current one is abandoned (closed, its ticket completed
      /// as ``Resend/outcome``), ``buffered`` holds the request again, and the router is asked anew.
      case resend(Resend)
      /// The upstream's response head for the client (`outcome`: the upstream's ticket).
      case forwardResponseHead(HTTPResponseHead, outcome: RequestOutcome)
      case forwardResponseBody(ByteBuffer)
      /// The response's end for the client; `finish`: the request is complete too. Report
      /// ``StateMachine/responseEndWritten()`` after writing it.
      case forwardResponseEnd(HTTPHeaders?, status: Int, grpcStatus: Int?, finish: Bool)
      /// The upstream accepted the upgrade: the 101 goes to the client, counted as the request's response.
      case acceptUpgrade(HTTPResponseHead)
      /// The end of the 101: join both sides into a byte relay, out of the HTTP decoder's callback.
      case scheduleRelay
      /// Take HTTP off both pipelines and join them with a ``ByteRelay``.
      case startRelay
      /// The upstream reset the stream: its ticket completes as a failure, the client gets the same reset.
      case resetDownstream(HTTP2ErrorCode, status: Int)
      /// The upstream failed mid-response: its ticket completes as a failure, the downstream is broken too
      /// (closed).
      case breakDownstream((any Error)?, status: Int)
      /// The downstream went away mid-request: abandon the request (and close the upstream, when there is one).
      case cancelRequest(closeUpstream: Bool)
      case closeDownstream
      case closeUpstreamAndDownstream
    }

    /// An answer of the proxy's own: `error` makes the response; `requestEnded` says whether the request's
    /// end has arrived (else the rest of it is dropped when it comes).
    ///
    /// The handler writes the answer's head and body, reports ``StateMachine/answerWritten(requestEnded:)``,
    /// then writes its end: writing the end lets the HTTP/1.1 server codec hand over a request the client
    /// pipelined behind this one, at once, and that request must find the answered one settled.
    struct Answer {
      var error: ProxyError
      var requestEnded: Bool
    }

    /// Why a request is sent again.
    enum Resend {
      /// The peer never processed it (GOAWAY, REFUSED_STREAM); `attempt`: the attempt about to be made.
      case refused(attempt: Int)
      /// A failed response on a retryable route (dropped, not forwarded).
      case failedResponse(status: Int, grpcStatus: Int?, retry: Int)
      /// The upstream failed before any response on a retryable route.
      case failure((any Error)?, retry: Int)

      /// How the abandoned upstream's ticket completes.
      var outcome: RequestOutcome {
        if case .refused = self { .cancelled } else { .failure }
      }
    }

    /// The most request body a refused request may have and still be sent again (as Linkerd's retry buffer).
    static let replayLimit = 64 * 1024
    static let maxRefusals = 3
    /// Retries of one request after failed responses (within the route's retry budget).
    static let maxRetries = 3

    private(set) var state: State = .idle
    let downstreamIsHTTP2: Bool

    /// Numbers the requests of this connection/stream, so a timer of an earlier request does nothing.
    private(set) var requestID = 0
    /// Numbers upstream attempts, so events of an abandoned attempt (retried, timed out) are ignored.
    private(set) var attemptID = 0

    /// Whether the current request is a gRPC call (`content-type: application/grpc...`): the proxy's own
    /// answers to it are gRPC statuses.
    private(set) var isGRPC = false
    /// The HTTP/1.1 connection can carry no further request after this one (an upgrade or CONNECT request:
    /// the request parser stops after it): the response says `connection: close`, and the connection closes
    /// after it.
    private(set) var closeAfterResponse = false
    /// The client asked for an upgrade (a `101` is expected, not an error).
    private(set) var upgradeRequested = false
    /// The current request's route policy (timeout, retries, classification), from the destination's profile.
    private(set) var policy: RequestPolicy = .none
    /// Whether the request's end has arrived from the client.
    private(set) var requestEnded = false
    /// Retries of the current request after failed responses or upstream failures.
    private(set) var retries = 0
    /// Times the current request was refused unprocessed (GOAWAY, REFUSED_STREAM) and sent again.
    private(set) var refusals = 0

    /// The current request's parts so far, while they fit ``replayLimit`` (``replayable``): what a refused
    /// request is sent again with. Both arrays keep their storage from request to request.
    private(set) var replay = RequestParts()
    private(set) var replayable = true
    private var replayBytes = 0
    /// Parts read while the request waits for its upstream (``State/opening``).
    private(set) var buffered = RequestParts()

    init(downstreamIsHTTP2: Bool) {
      self.downstreamIsHTTP2 = downstreamIsHTTP2
    }

    /// Whether a response from the upstream is being written to the client: its head went, its end not yet.
    var isResponding: Bool {
      if case .forwarding(let forwarding) = state { forwarding.responseStarted && !forwarding.responseEnded } else { false }
    }

    var isForwarding: Bool {
      if case .forwarding = state { true } else { false }
    }

    /// Whether events of upstream attempt `attempt` still count.
    func isCurrent(attempt: Int) -> Bool { attempt == attemptID }

    /// Changes the forwarding payload in place: the state holds a placeholder meanwhile, so the payload is
    /// never referenced twice (and nothing in it is copied on write).
    private mutating func modifyForwarding(_ body: (inout Forwarding) -> Void) {
      guard case .forwarding(var forwarding) = state else { return }
      state = .modifying
      body(&forwarding)
      state = .forwarding(forwarding)
    }

    // MARK: Downstream

    /// A part of the client's request arrived.
    mutating func requestPartReceived(_ part: HTTPServerRequestPart) -> Action {
      switch state {
      case .idle:
        guard case .head(let head) = part else { return .none }
        return .startRequest(head)
      case .opening:
        record(part)
        buffered.append(part)
        if case .end = part { requestEnded = true }
        return .none
      case .forwarding(let forwarding):
        record(part)
        guard case .end = part else { return .forwardRequestPart(part) }
        requestEnded = true
        let finish = forwarding.responseEnded
        if finish { state = .idle }
        return .forwardLastRequestPart(part, finish: finish)
      case .answered:
        guard case .end = part else { return .none }
        state = .idle
        return .requestDone
      case .upgraded:
        return .none
      case .modifying:
        preconditionFailure("request part while the state is being modified")
      }
    }

    /// The handler has read a new request's head (`head`, as it goes upstream): `upgrade` is the protocol the
    /// client asks to switch to (an h2c upgrade is not one), `closeAfterResponse` whether the connection ends
    /// with this request.
    mutating func requestStarted(
      _ head: HTTPRequestHead, isGRPC: Bool, upgrade: Bool, closeAfterResponse: Bool
    ) -> Action {
      state = .opening
      self.isGRPC = isGRPC
      self.closeAfterResponse = closeAfterResponse
      upgradeRequested = upgrade
      buffered.clear()
      buffered.append(.head(head))
      replay.clear()
      replayable = !upgrade
      if replayable { replay.append(.head(head)) }
      replayBytes = 0
      refusals = 0
      retries = 0
      requestEnded = false
      requestID &+= 1
      policy = .none
      if head.method.isCONNECT {
        return .answer(answer(ProxyError(.connectRefused, "the proxy does not open tunnels (CONNECT \(head.uri))")))
      }
      return .lookUpPolicy(requestID: requestID)
    }

    /// A read from the client is complete.
    func readComplete() -> Action {
      switch state {
      case .forwarding:
        return .flushUpstream
      case .opening where !requestEnded:
        // The upstream is not there yet (a new connection or stream, discovery still answering) and the
        // request goes on: hold further reads until it is ready; parts already read are buffered. A request
        // that has ended (every request without a body) keeps reading: nothing of it is left to hold back, the
        // server codec holds a pipelined next request, and each pause and resume would cost an epoll_ctl.
        return .pauseReading
      default:
        return .none
      }
    }

    /// The downstream channel went inactive.
    mutating func downstreamInactive() -> Action {
      switch state {
      case .opening:
        state = .answered
        return .cancelRequest(closeUpstream: false)
      case .forwarding:
        // Settled first: closing the upstream reports its close back here (the downstream's cancellation is
        // not an upstream reset).
        state = .answered
        return .cancelRequest(closeUpstream: true)
      case .idle, .answered, .upgraded:
        return .none
      case .modifying:
        preconditionFailure("downstream inactive while the state is being modified")
      }
    }

    // MARK: Opening

    /// The destination's profile is known for request `requestID`: start the route's clock and route it.
    mutating func policyKnown(_ policy: RequestPolicy, requestID: Int) -> Action {
      guard requestID == self.requestID, case .opening = state else { return .none }
      self.policy = policy
      return .openUpstream(requestID: requestID)
    }

    /// The route's timeout of request `requestID` expired: before the response headers, answer 504 and
    /// abandon the upstream call.
    mutating func timedOut(requestID: Int) -> Action {
      guard requestID == self.requestID else { return .none }
      let detail = "no response within the route timeout of \(policy.timeout.map { "\($0)" } ?? "?")"
      switch state {
      case .opening:
        return .answer(answer(ProxyError(.timeout, detail)))
      case .forwarding(let forwarding) where !forwarding.responseStarted:
        attemptID &+= 1
        return .abandonUpstreamAndAnswer(.cancelled, answer(ProxyError(.timeout, detail)))
      default:
        return .none
      }
    }

    /// The router opened an upstream.
    mutating func upstreamOpened() -> Action {
      // Otherwise the client went away meanwhile (or the proxy answered).
      guard case .opening = state else { return .discardUpstream }
      attemptID &+= 1
      return .startForwarding(attempt: attemptID)
    }

    /// The handler sent ``buffered`` to the upstream opened for the current attempt (reported right after
    /// ``Action/startForwarding(attempt:)``, whatever happened during those writes, as it always was).
    mutating func forwardingStarted() {
      buffered.clear()
      state = .forwarding(Forwarding())
    }

    /// The upstream opened but cannot be used (its pipeline refused the response handler).
    func upstreamUnusable(_ error: any Error) -> Action {
      // A request whose end was buffered has ended: the connection goes on to the next request (it used to
      // wait for an end that had already arrived, and swallowed the next request's head).
      .answer(answer(ProxyError(.connectFailed, "upstream pipeline: \(error)")))
    }

    /// The router could not open an upstream.
    func upstreamOpenFailed(_ error: any Error) -> Action {
      guard case .opening = state else { return .none }
      let proxyError = error as? ProxyError ?? ProxyError(.connectFailed, "\(error)")
      return .answer(answer(proxyError))
    }

    // MARK: Upstream

    /// A part of the upstream's response for attempt `attempt`.
    mutating func responsePartReceived(_ part: HTTPClientResponsePart, attempt: Int) -> Action {
      guard attempt == attemptID, case .forwarding(let forwarding) = state else { return .none }
      switch part {
      case .head(let head):
        let status = Int(head.status.code)
        // Only a gRPC request's response is classified by `grpc-status` (as Linkerd does): for other requests
        // the field means nothing, and looking for it was a pass over every response's headers.
        let grpcStatus = isGRPC ? head.headers.first(name: "grpc-status").flatMap { Int($0) } : nil
        if let resend = retryAfterResponse(status: status, grpcStatus: grpcStatus) {
          return .resend(resend)
        }
        if head.status == .switchingProtocols {
          guard upgradeRequested else {
            return .abandonUpstreamAndAnswer(
              .failure,
              answer(ProxyError(.upstreamReset, "the upstream switched protocols without being asked to")))
          }
          modifyForwarding {
            $0.responseStarted = true
            $0.upgradeAccepted = true
            $0.status = 101
          }
          return .acceptUpgrade(head)
        }
        modifyForwarding {
          $0.responseStarted = true
          $0.status = status
          $0.grpcStatus = grpcStatus
        }
        // A peer proxy that shed the request (`overloaded`) is alive and busy, not failing: its time only
        // raises the endpoint's load estimate, so shedding never ejects the only endpoint of a service.
        let outcome: RequestOutcome =
          status < 500
          ? .success
          : head.headers.first(name: ProxyError.headerName) == ProxyError.Reason.overloaded.rawValue
            ? .cancelled : .failure
        return .forwardResponseHead(head, outcome: outcome)
      case .body(let buffer):
        return .forwardResponseBody(buffer)
      case .end where forwarding.upgradeAccepted:
        return .scheduleRelay
      case .end(let trailers):
        var forwarding = forwarding
        if isGRPC, let grpc = trailers?.first(name: "grpc-status").flatMap({ Int($0) }) { forwarding.grpcStatus = grpc }
        forwarding.responseStarted = true
        forwarding.responseEnded = true
        // Settled before the last write: on an HTTP/2 downstream, writing END_STREAM closes the stream and
        // `channelInactive` runs inside this write. Still `.forwarding` then, it would reset the upstream
        // stream that has just completed (an RST_STREAM per request, which peers count as abuse).
        let finish = requestEnded
        state = finish ? .idle : .forwarding(forwarding)
        return .forwardResponseEnd(
          trailers, status: forwarding.status, grpcStatus: forwarding.grpcStatus, finish: finish)
      }
    }

    /// The handler wrote the response's end (``Action/forwardResponseEnd(_:status:grpcStatus:finish:)``).
    mutating func responseEndWritten() -> Action {
      guard closeAfterResponse else { return .none }
      // A refused upgrade: an ordinary response, after which this connection ends. Its upstream connection
      // was asked for an upgrade too and is not reused (when still held: an upstream whose request had ended
      // was returned to its pool already).
      let holdsUpstream = isForwarding
      state = .answered
      return holdsUpstream ? .closeUpstreamAndDownstream : .closeDownstream
    }

    /// The upstream of attempt `attempt` closed (`error` nil) or failed. Before the response ended, that is an
    /// upstream reset. `refused`: the upstream is an HTTP/2 stream the peer refused unprocessed.
    mutating func upstreamFailed(_ error: (any Error)?, attempt: Int, refused: Bool) -> Action {
      guard attempt == attemptID, case .forwarding(let forwarding) = state else { return .none }
      if forwarding.responseEnded { return .none }
      if !forwarding.responseStarted, refused, refusals < Self.maxRefusals, replayable {
        // The peer never processed it (GOAWAY, REFUSED_STREAM): send it again, on a fresh connection.
        refusals += 1
        resendPrepare()
        return .resend(.refused(attempt: refusals + 1))
      }
      if !forwarding.responseStarted, let resend = retryAfterFailure(error) { return .resend(resend) }
      if downstreamIsHTTP2, let reset = error as? NIOHTTP2Errors.StreamClosed {
        // The upstream reset the stream: the client gets the same reset (gRPC maps its code to a status, as
        // it would directly), not a status the proxy made up.
        state = .answered
        return .resetDownstream(reset.errorCode, status: forwarding.status)
      }
      if forwarding.responseStarted {
        // Mid-response: the only honest signal left is to break the downstream stream too.
        state = .answered
        return .breakDownstream(error, status: forwarding.status)
      }
      let detail = error.map { "\($0)" } ?? "connection closed before the response"
      state = .opening
      buffered.clear()
      return .failUpstreamAndAnswer(answer(ProxyError(.upstreamReset, detail)))
    }

    /// The end of an accepted upgrade's 101, out of the decoder's callback: the relay starts.
    mutating func relayReady() -> Action {
      guard case .forwarding(let forwarding) = state, forwarding.upgradeAccepted else { return .none }
      state = .upgraded
      return .startRelay
    }

    // MARK: Retries

    /// A failed response on a retryable route: if the whole request is kept, retries are left and the budget
    /// allows, the response is dropped and the request sent again (to a newly picked endpoint or leaf).
    ///
    /// A gRPC call is retried when the server answered UNAVAILABLE (14) in a trailers-only response: nothing
    /// of the response has reached the client yet, and UNAVAILABLE says the call was not processed.
    private mutating func retryAfterResponse(status: Int, grpcStatus: Int?) -> Resend? {
      let failed = policy.isFailure(status: status) || (isGRPC && grpcStatus == 14)
      guard failed, mayRetry() else { return nil }
      return .failedResponse(status: status, grpcStatus: grpcStatus, retry: retries)
    }

    /// The upstream failed before any response (reset, closed: a crashed peer) on a retryable route: sent
    /// again under the same rules as a failed response (whole request kept, retries left, budget).
    private mutating func retryAfterFailure(_ error: (any Error)?) -> Resend? {
      guard mayRetry() else { return nil }
      return .failure(error, retry: retries)
    }

    /// Whether the request may be retried; if so (the budget's withdrawal made), it is set to be sent again.
    private mutating func mayRetry() -> Bool {
      guard policy.isRetryable, requestEnded, retries < Self.maxRetries, replayable, let budget = policy.budget,
        budget.withdraw()
      else { return false }
      retries += 1
      resendPrepare()
      return true
    }

    /// The current attempt is abandoned and the request waits for a new upstream, its parts kept ready.
    private mutating func resendPrepare() {
      attemptID &+= 1
      state = .opening
      buffered = replay
    }

    // MARK: Helpers

    /// The proxy's own answer to the current request.
    private func answer(_ error: ProxyError) -> Answer {
      Answer(error: error, requestEnded: requestEnded)
    }

    /// The handler wrote an ``Answer``: the rest of the request is dropped; after an upgrade or CONNECT
    /// request the connection closes, else it reads on (and with the request ended, it is ready for the next).
    mutating func answerWritten(requestEnded: Bool) -> Action {
      state = .answered
      if closeAfterResponse { return .closeDownstream }
      if requestEnded { state = .idle }
      return .resumeReading(requestDone: requestEnded)
    }

    /// Keeps a request part for a possible resend, until the body outgrows ``replayLimit``.
    private mutating func record(_ part: HTTPServerRequestPart) {
      guard replayable else { return }
      if case .body(let buffer) = part {
        replayBytes += buffer.readableBytes
        if replayBytes > Self.replayLimit {
          replayable = false
          replay.clear()
          return
        }
      }
      replay.append(part)
    }
  }
}

/// A request's parts while they are held (``ProxyRequestHandler/StateMachine/buffered`` and
/// ``ProxyRequestHandler/StateMachine/replay``): the first two inline, any more in an array that keeps its
/// storage. Most requests are a head and an end; on an HTTP/2 stream, whose handler and state machine are new
/// for every request, two arrays made their storage anew every request (three allocations).
struct RequestParts: Sequence, Equatable, ExpressibleByArrayLiteral {
  private var first: HTTPServerRequestPart?
  private var second: HTTPServerRequestPart?
  private var rest: [HTTPServerRequestPart] = []

  init() {}

  init(arrayLiteral parts: HTTPServerRequestPart...) {
    for part in parts { append(part) }
  }

  var isEmpty: Bool { first == nil }
  var count: Int { first == nil ? 0 : second == nil ? 1 : 2 + rest.count }

  mutating func append(_ part: HTTPServerRequestPart) {
    if first == nil {
      first = part
    } else if second == nil {
      second = part
    } else {
      rest.append(part)
    }
  }

  /// Empties it; the array keeps its capacity.
  mutating func clear() {
    first = nil
    second = nil
    rest.clear()
  }

  func makeIterator() -> Iterator { Iterator(parts: self) }

  struct Iterator: IteratorProtocol {
    fileprivate let parts: RequestParts
    fileprivate var index = 0

    mutating func next() -> HTTPServerRequestPart? {
      defer { index += 1 }
      switch index {
      case 0: return parts.first
      case 1: return parts.second
      default: return index - 2 < parts.rest.count ? parts.rest[index - 2] : nil
      }
    }
  }
}

extension Array {
  /// Empties the array and keeps its capacity. `removeAll(keepingCapacity: true)` goes through the generic
  /// `replaceSubrange`, about 700 instructions even for an empty array, twice a request; these hold a
  /// request's few parts.
  fileprivate mutating func clear() {
    while popLast() != nil {}
  }
}
