import MeshBalancer
import MeshDiscovery
import NIOCore
import NIOHTTP1
import NIOHTTP2
import Testing

@testable import MeshProxy

/// `ProxyRequestHandler.StateMachine` on its own: event sequences in, actions out, no channels.
@Suite("Proxy request state machine")
struct ProxyRequestStateMachineTests {
  typealias Machine = ProxyRequestHandler.StateMachine
  typealias Action = Machine.Action

  static let head = HTTPRequestHead(
    version: .http1_1, method: .POST, uri: "/orders", headers: ["host": "backend.default.svc.cluster.local"])

  static func response(_ status: HTTPResponseStatus, _ headers: HTTPHeaders = [:]) -> HTTPClientResponsePart {
    .head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))
  }

  static func body(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

  /// A route that retries failed responses, with a budget that always allows (or never allows) one more.
  static func retryPolicy(budgetAllows: Bool = true, timeout: Duration? = nil) -> RequestPolicy {
    let budget = RetryBudget(retryRatio: 0, minRetriesPerSecond: budgetAllows ? 100 : 0, ttl: .seconds(10))
    return RequestPolicy(
      routeName: "POST /orders", authority: "backend", timeout: timeout, isRetryable: true,
      budget: RetryBudgetTracker(budget, clock: { 0 }))
  }

  // MARK: Helpers

  /// A machine with a request started, routed with `policy`; the request's head is read, nothing more.
  static func opening(
    policy: RequestPolicy = .none, http2: Bool = false, isGRPC: Bool = false, upgrade: Bool = false,
    closeAfterResponse: Bool = false, head: HTTPRequestHead = Self.head
  ) throws -> Machine {
    var machine = Machine(downstreamIsHTTP2: http2)
    guard case .startRequest(let started) = machine.requestPartReceived(.head(head)) else {
      throw Failure("a head on an idle connection starts a request")
    }
    #expect(started == head)
    let requestID = machine.requestID
    guard
      case .lookUpPolicy(let id) = machine.requestStarted(
        head, isGRPC: isGRPC, upgrade: upgrade, closeAfterResponse: closeAfterResponse)
    else { throw Failure("a started request asks for its policy") }
    #expect(id == requestID + 1)
    guard case .openUpstream(let open) = machine.policyKnown(policy, requestID: id), open == id else {
      throw Failure("the policy opens an upstream")
    }
    return machine
  }

  /// Opens the upstream: the attempt number it is bound to.
  @discardableResult
  static func open(_ machine: inout Machine) throws -> Int {
    guard case .startForwarding(let attempt) = machine.upstreamOpened() else {
      throw Failure("an opened upstream starts forwarding")
    }
    machine.forwardingStarted()
    #expect(machine.buffered.isEmpty)
    return attempt
  }

  /// A machine forwarding a request whose parts (head, `body`, end) have all been sent.
  static func forwardingEnded(policy: RequestPolicy = .none, http2: Bool = false, isGRPC: Bool = false) throws
    -> (Machine, attempt: Int)
  {
    var machine = try opening(policy: policy, http2: http2, isGRPC: isGRPC)
    let attempt = try open(&machine)
    expectForward(machine.requestPartReceived(.body(body("order"))))
    expectLastPart(machine.requestPartReceived(.end(nil)), finish: false)
    return (machine, attempt)
  }

  struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
  }

  static func expectNone(_ action: Action, sourceLocation: SourceLocation = #_sourceLocation) {
    guard case .none = action else {
      Issue.record("expected no action, got \(action)", sourceLocation: sourceLocation)
      return
    }
  }

  static func expectForward(_ action: Action, sourceLocation: SourceLocation = #_sourceLocation) {
    guard case .forwardRequestPart = action else {
      Issue.record("expected a forwarded part, got \(action)", sourceLocation: sourceLocation)
      return
    }
  }

  static func expectLastPart(_ action: Action, finish: Bool, sourceLocation: SourceLocation = #_sourceLocation) {
    guard case .forwardLastRequestPart(.end, let finishes) = action else {
      Issue.record("expected the request's end forwarded, got \(action)", sourceLocation: sourceLocation)
      return
    }
    #expect(finishes == finish, sourceLocation: sourceLocation)
  }

  /// The answer in `action` (alone, or after abandoning/failing an upstream).
  static func answer(in action: Action) -> Machine.Answer? {
    switch action {
    case .answer(let answer), .abandonUpstreamAndAnswer(_, let answer), .failUpstreamAndAnswer(let answer): answer
    default: nil
    }
  }

  static func isIdle(_ machine: Machine) -> Bool {
    if case .idle = machine.state { true } else { false }
  }

  // MARK: The ordinary life of a request

  @Test("head, body, end, then the response: every part forwarded, the request finished at the response's end")
  func ordinaryRequest() throws {
    var (machine, attempt) = try Self.forwardingEnded()
    guard case .forwardResponseHead(let head, let outcome) = machine.responsePartReceived(Self.response(.ok), attempt: attempt)
    else { Issue.record("the head is forwarded"); return }
    #expect(head.status == .ok)
    #expect(outcome == .success)
    guard case .forwardResponseBody(let body) = machine.responsePartReceived(.body(Self.body("ok")), attempt: attempt)
    else { Issue.record("the body is forwarded"); return }
    #expect(body == Self.body("ok"))
    guard
      case .forwardResponseEnd(nil, let status, nil, let finish) = machine.responsePartReceived(.end(nil), attempt: attempt)
    else { Issue.record("the end is forwarded"); return }
    #expect(status == 200)
    #expect(finish)
    #expect(Self.isIdle(machine))
    Self.expectNone(machine.responseEndWritten())
    // The connection is ready for its next request, numbered anew.
    guard case .startRequest = machine.requestPartReceived(.head(Self.head)) else {
      Issue.record("the next head starts a request"); return
    }
    guard case .lookUpPolicy(let id) = machine.requestStarted(Self.head, isGRPC: false, upgrade: false, closeAfterResponse: false)
    else { Issue.record("the next request asks for its policy"); return }
    #expect(id == 2)
  }

  @Test("a response that ends before the request: the request's end finishes it")
  func responseBeforeRequestEnd() throws {
    var machine = try Self.opening()
    let attempt = try Self.open(&machine)
    _ = machine.responsePartReceived(Self.response(.ok), attempt: attempt)
    guard case .forwardResponseEnd(_, _, _, let finish) = machine.responsePartReceived(.end(nil), attempt: attempt) else {
      Issue.record("the end is forwarded"); return
    }
    #expect(!finish)
    #expect(machine.isForwarding)
    // The upstream closing now is not a failure: its response is complete.
    Self.expectNone(machine.upstreamFailed(nil, attempt: attempt, refused: false))
    Self.expectForward(machine.requestPartReceived(.body(Self.body("late"))))
    Self.expectLastPart(machine.requestPartReceived(.end(nil)), finish: true)
    #expect(Self.isIdle(machine))
  }

  @Test("parts read while the upstream opens are buffered and kept for a resend; an opened upstream gets them")
  func bufferedWhileOpening() throws {
    var machine = try Self.opening()
    Self.expectNone(machine.requestPartReceived(.body(Self.body("a"))))
    Self.expectNone(machine.requestPartReceived(.end(nil)))
    #expect(machine.buffered == [.head(Self.head), .body(Self.body("a")), .end(nil)])
    #expect(machine.replay == machine.buffered)
    #expect(machine.requestEnded)
    guard case .startForwarding(let attempt) = machine.upstreamOpened() else { Issue.record("forwarding"); return }
    #expect(attempt == 1)
    machine.forwardingStarted()
    #expect(machine.buffered.isEmpty)
    #expect(machine.replay.count == 3)
  }

  @Test("held parts: two inline, more in the array, in order; cleared, they are empty and fill again")
  func requestParts() {
    var parts = RequestParts()
    #expect(parts.isEmpty)
    #expect(Array(parts).isEmpty)
    let all: [HTTPServerRequestPart] = [.head(Self.head)] + (1...4).map { .body(Self.body("\($0)")) } + [.end(nil)]
    for (count, part) in all.enumerated() {
      parts.append(part)
      #expect(parts.count == count + 1)
      #expect(Array(parts) == Array(all.prefix(count + 1)))
    }
    parts.clear()
    #expect(parts.isEmpty)
    #expect(parts.count == 0)
    #expect(Array(parts).isEmpty)
    parts.append(.end(nil))
    #expect(Array(parts) == [.end(nil)])
    #expect(parts == [.end(nil)])
    #expect(parts != [.end(nil), .end(nil)])
  }

  @Test("non-head parts on an idle connection, and a policy or timer of an earlier request, do nothing")
  func staleEvents() throws {
    var idle = Machine(downstreamIsHTTP2: false)
    Self.expectNone(idle.requestPartReceived(.body(Self.body("stray"))))
    Self.expectNone(idle.requestPartReceived(.end(nil)))
    Self.expectNone(idle.downstreamInactive())
    var machine = try Self.opening()
    Self.expectNone(machine.policyKnown(.none, requestID: machine.requestID - 1))
    Self.expectNone(machine.timedOut(requestID: machine.requestID - 1))
    // The policy arrives once: a second report for the same request finds it opening still, but the
    // handler asks only once; after the upstream opened, it is ignored.
    try Self.open(&machine)
    Self.expectNone(machine.policyKnown(.none, requestID: machine.requestID))
  }

  // MARK: Late and illegal events

  @Test("a response after the downstream closed is dropped; an upstream opened after it is discarded")
  func responseAfterDownstreamClosed() throws {
    var (machine, attempt) = try Self.forwardingEnded()
    guard case .cancelRequest(closeUpstream: true) = machine.downstreamInactive() else {
      Issue.record("the upstream is closed with the request"); return
    }
    Self.expectNone(machine.responsePartReceived(Self.response(.ok), attempt: attempt))
    Self.expectNone(machine.responsePartReceived(.end(nil), attempt: attempt))
    Self.expectNone(machine.upstreamFailed(nil, attempt: attempt, refused: false))
    Self.expectNone(machine.downstreamInactive())

    var opening = try Self.opening()
    guard case .cancelRequest(closeUpstream: false) = opening.downstreamInactive() else {
      Issue.record("nothing to close while opening"); return
    }
    guard case .discardUpstream = opening.upstreamOpened() else { Issue.record("discarded"); return }
    Self.expectNone(opening.upstreamOpenFailed(ProxyError(.noEndpoints, "none")))
    Self.expectNone(opening.timedOut(requestID: opening.requestID))
  }

  @Test("a second response end, and a second request end, do nothing")
  func secondEnds() throws {
    var (machine, attempt) = try Self.forwardingEnded()
    _ = machine.responsePartReceived(Self.response(.ok), attempt: attempt)
    _ = machine.responsePartReceived(.end(nil), attempt: attempt)
    #expect(Self.isIdle(machine))
    Self.expectNone(machine.responsePartReceived(.end(nil), attempt: attempt))
    Self.expectNone(machine.requestPartReceived(.end(nil)))
    #expect(Self.isIdle(machine))
  }

  @Test("an upstream failure after part of the response was sent breaks the downstream; nothing follows")
  func failureMidResponse() throws {
    var (machine, attempt) = try Self.forwardingEnded(policy: Self.retryPolicy())
    _ = machine.responsePartReceived(Self.response(.ok), attempt: attempt)
    _ = machine.responsePartReceived(.body(Self.body("par")), attempt: attempt)
    // Not retried although the route allows it: part of the response has reached the client.
    guard case .breakDownstream(_, let status) = machine.upstreamFailed(nil, attempt: attempt, refused: true) else {
      Issue.record("the downstream is broken"); return
    }
    #expect(status == 200)
    Self.expectNone(machine.responsePartReceived(.body(Self.body("tial")), attempt: attempt))
    Self.expectNone(machine.responsePartReceived(.end(nil), attempt: attempt))
    Self.expectNone(machine.downstreamInactive())
  }

  @Test("an upstream failure before any response: answered 502 (upstream reset), then ready for the next request")
  func failureBeforeResponse() throws {
    var (machine, attempt) = try Self.forwardingEnded()
    let action = machine.upstreamFailed(nil, attempt: attempt, refused: false)
    guard case .failUpstreamAndAnswer(let answer) = action else { Issue.record("\(action)"); return }
    #expect(answer.error.reason == .upstreamReset)
    #expect(answer.error.detail == "connection closed before the response")
    #expect(answer.requestEnded)
    guard case .resumeReading(requestDone: true) = machine.answerWritten(requestEnded: answer.requestEnded) else {
      Issue.record("reading resumes, the request is done"); return
    }
    #expect(Self.isIdle(machine))
  }

  @Test("HTTP/2: an upstream stream reset is passed on as the same reset, whatever the response so far")
  func resetPassedOn() throws {
    var (machine, attempt) = try Self.forwardingEnded(http2: true)
    let reset = NIOHTTP2Errors.streamClosed(streamID: 1, errorCode: .cancel)
    guard case .resetDownstream(let code, let status) = machine.upstreamFailed(reset, attempt: attempt, refused: false)
    else { Issue.record("reset"); return }
    #expect(code == .cancel)
    #expect(status == 0)
    Self.expectNone(machine.responsePartReceived(Self.response(.ok), attempt: attempt))
    // An HTTP/1.1 downstream has no stream to reset: before the response it is answered.
    var (http1, attempt1) = try Self.forwardingEnded(http2: false)
    #expect(Self.answer(in: http1.upstreamFailed(reset, attempt: attempt1, refused: false))?.error.reason == .upstreamReset)
  }

  @Test("the downstream cancels while the request is answered: the rest of the request is dropped, its end ends it")
  func answeredThenRest() throws {
    var machine = try Self.opening()
    let action = machine.upstreamOpenFailed(ProxyError(.noEndpoints, "backend has none"))
    guard case .answer(let answer) = action else { Issue.record("\(action)"); return }
    #expect(answer.error.reason == .noEndpoints)
    #expect(!answer.requestEnded)
    guard case .resumeReading(requestDone: false) = machine.answerWritten(requestEnded: false) else {
      Issue.record("reading resumes for the rest of the request"); return
    }
    Self.expectNone(machine.requestPartReceived(.body(Self.body("dropped"))))
    guard case .requestDone = machine.requestPartReceived(.end(nil)) else { Issue.record("done"); return }
    #expect(Self.isIdle(machine))
    // A failure that is not a ProxyError is a connect failure.
    let other = try Self.opening()
    struct Refused: Error {}
    #expect(Self.answer(in: other.upstreamOpenFailed(Refused()))?.error.reason == .connectFailed)
  }

  @Test("the upstream's pipeline refuses the response handler: answered 502; a request that had ended leaves the connection ready for the next")
  func upstreamUnusable() throws {
    var machine = try Self.opening()
    _ = machine.requestPartReceived(.end(nil))
    guard case .startForwarding = machine.upstreamOpened() else { Issue.record("forwarding"); return }
    struct Full: Error {}
    let answer = try #require(Self.answer(in: machine.upstreamUnusable(Full())))
    #expect(answer.error.reason == .connectFailed)
    // The request's end had arrived: once the answer is written, the connection waits for the next request,
    // whose head starts it (it was swallowed while the answered request waited for an end already seen).
    #expect(answer.requestEnded)
    _ = machine.answerWritten(requestEnded: answer.requestEnded)
    #expect(Self.isIdle(machine))
    guard case .startRequest = machine.requestPartReceived(.head(Self.head)) else {
      Issue.record("the next request starts"); return
    }
  }

  @Test("the upstream's pipeline refuses the response handler before the request's end: the rest of the request is read and dropped")
  func upstreamUnusableMidRequest() throws {
    var machine = try Self.opening()
    guard case .startForwarding = machine.upstreamOpened() else { Issue.record("forwarding"); return }
    struct Full: Error {}
    let answer = try #require(Self.answer(in: machine.upstreamUnusable(Full())))
    #expect(!answer.requestEnded)
    guard case .resumeReading(requestDone: false) = machine.answerWritten(requestEnded: answer.requestEnded) else {
      Issue.record("reading resumes"); return
    }
    Self.expectNone(machine.requestPartReceived(.body(Self.body("dropped"))))
    guard case .requestDone = machine.requestPartReceived(.end(nil)) else { Issue.record("done"); return }
    #expect(Self.isIdle(machine))
  }

  // MARK: Timeouts

  @Test("the route timeout: while opening, answered 504; before the response head, the upstream is abandoned too")
  func timeouts() throws {
    var opening = try Self.opening(policy: Self.retryPolicy(timeout: .seconds(2)))
    let answer = try #require(Self.answer(in: opening.timedOut(requestID: opening.requestID)))
    #expect(answer.error.reason == .timeout)
    #expect(answer.error.detail == "no response within the route timeout of 2.0 seconds")

    var (forwarding, attempt) = try Self.forwardingEnded(policy: Self.retryPolicy(timeout: .seconds(2)))
    guard case .abandonUpstreamAndAnswer(.cancelled, let abandoned) = forwarding.timedOut(requestID: forwarding.requestID)
    else { Issue.record("the upstream is abandoned"); return }
    #expect(abandoned.error.reason == .timeout)
    #expect(abandoned.requestEnded)
    // The abandoned attempt's late response and close are ignored.
    Self.expectNone(forwarding.responsePartReceived(Self.response(.ok), attempt: attempt))
    Self.expectNone(forwarding.upstreamFailed(nil, attempt: attempt, refused: false))
    #expect(!forwarding.isCurrent(attempt: attempt))

    var (started, attempt2) = try Self.forwardingEnded(policy: Self.retryPolicy(timeout: .seconds(2)))
    _ = started.responsePartReceived(Self.response(.ok), attempt: attempt2)
    Self.expectNone(started.timedOut(requestID: started.requestID))
  }

  // MARK: Resends

  @Test("refused unprocessed (GOAWAY, REFUSED_STREAM): sent again with the kept parts, three times at most")
  func refusals() throws {
    var (machine, first) = try Self.forwardingEnded()
    var attempt = first
    for expected in 2...4 {
      guard case .resend(let resend) = machine.upstreamFailed(nil, attempt: attempt, refused: true) else {
        Issue.record("refusal \(expected - 1) is resent"); return
      }
      guard case .refused(let number) = resend else { Issue.record("\(resend)"); return }
      #expect(number == expected)
      #expect(resend.outcome == .cancelled)
      #expect(machine.buffered == [.head(Self.head), .body(Self.body("order")), .end(nil)])
      attempt = try Self.open(&machine)
    }
    #expect(machine.refusals == 3)
    let answer = try #require(Self.answer(in: machine.upstreamFailed(nil, attempt: attempt, refused: true)))
    #expect(answer.error.reason == .upstreamReset)
  }

  @Test("a request whose body outgrew the replay limit is not kept: a refusal is answered, not resent")
  func replayLimit() throws {
    var machine = try Self.opening()
    let attempt = try Self.open(&machine)
    let big = ByteBuffer(repeating: 0x61, count: Machine.replayLimit + 1)
    Self.expectForward(machine.requestPartReceived(.body(big)))
    #expect(!machine.replayable)
    #expect(machine.replay.isEmpty)
    Self.expectLastPart(machine.requestPartReceived(.end(nil)), finish: false)
    #expect(Self.answer(in: machine.upstreamFailed(nil, attempt: attempt, refused: true)) != nil)
  }

  @Test("an upgrade request is never kept for a resend")
  func upgradeNotReplayable() throws {
    let machine = try Self.opening(upgrade: true, closeAfterResponse: true)
    #expect(!machine.replayable)
    #expect(machine.replay.isEmpty)
    #expect(machine.buffered.count == 1)
  }

  @Test("a failed response on a retryable route is dropped and retried, three times; the fourth is forwarded")
  func retries() throws {
    var (machine, first) = try Self.forwardingEnded(policy: Self.retryPolicy())
    var attempt = first
    for retry in 1...3 {
      guard case .resend(let resend) = machine.responsePartReceived(Self.response(.serviceUnavailable), attempt: attempt)
      else { Issue.record("retry \(retry)"); return }
      guard case .failedResponse(503, nil, let number) = resend else { Issue.record("\(resend)"); return }
      #expect(number == retry)
      #expect(resend.outcome == .failure)
      // The dropped attempt's rest is ignored.
      Self.expectNone(machine.responsePartReceived(.end(nil), attempt: attempt))
      attempt = try Self.open(&machine)
    }
    guard case .forwardResponseHead(_, let outcome) = machine.responsePartReceived(Self.response(.serviceUnavailable), attempt: attempt)
    else { Issue.record("the fourth failure is forwarded"); return }
    #expect(outcome == .failure)
    #expect(machine.retries == 3)
  }

  @Test("an upstream failure before the response on a retryable route is retried like a failed response")
  func retryAfterFailure() throws {
    var (machine, attempt) = try Self.forwardingEnded(policy: Self.retryPolicy())
    guard case .resend(.failure(nil, retry: 1)) = machine.upstreamFailed(nil, attempt: attempt, refused: false) else {
      Issue.record("retried"); return
    }
    #expect(!machine.isForwarding)
    #expect(machine.buffered.count == 3)
  }

  @Test("no retry before the request's end, with the budget spent, or on a route that is not retryable")
  func noRetry() throws {
    var unfinished = try Self.opening(policy: Self.retryPolicy())
    let attempt = try Self.open(&unfinished)
    guard case .forwardResponseHead = unfinished.responsePartReceived(Self.response(.badGateway), attempt: attempt) else {
      Issue.record("forwarded: the request has not ended"); return
    }
    var (spent, attempt2) = try Self.forwardingEnded(policy: Self.retryPolicy(budgetAllows: false))
    guard case .forwardResponseHead = spent.responsePartReceived(Self.response(.badGateway), attempt: attempt2) else {
      Issue.record("forwarded: no budget"); return
    }
    var (plain, attempt3) = try Self.forwardingEnded()
    guard case .forwardResponseHead = plain.responsePartReceived(Self.response(.badGateway), attempt: attempt3) else {
      Issue.record("forwarded: not retryable"); return
    }
  }

  @Test("gRPC: a trailers-only UNAVAILABLE is retried on a retryable route; grpc-status of the trailers is reported")
  func grpcStatuses() throws {
    var (machine, attempt) = try Self.forwardingEnded(policy: Self.retryPolicy(), isGRPC: true)
    let unavailable = Self.response(.ok, ["grpc-status": "14"])
    guard case .resend(.failedResponse(200, 14, retry: 1)) = machine.responsePartReceived(unavailable, attempt: attempt)
    else { Issue.record("retried"); return }
    let second = try Self.open(&machine)
    _ = machine.responsePartReceived(Self.response(.ok), attempt: second)
    guard
      case .forwardResponseEnd(_, 200, let grpcStatus, true) = machine.responsePartReceived(
        .end(["grpc-status": "5"]), attempt: second)
    else { Issue.record("the end is forwarded"); return }
    #expect(grpcStatus == 5)
  }

  @Test("a peer proxy's 503 overloaded is not the endpoint's failure; other 5xx are")
  func overloadedOutcome() throws {
    var (machine, attempt) = try Self.forwardingEnded()
    let shed = Self.response(.serviceUnavailable, [ProxyError.headerName: ProxyError.Reason.overloaded.rawValue])
    guard case .forwardResponseHead(_, .cancelled) = machine.responsePartReceived(shed, attempt: attempt) else {
      Issue.record("cancelled"); return
    }
  }

  // MARK: Upgrades, CONNECT

  @Test("an accepted upgrade: the 101 goes to the client, at its end the relay starts, once")
  func upgrade() throws {
    var machine = try Self.opening(upgrade: true, closeAfterResponse: true)
    let attempt = try Self.open(&machine)
    _ = machine.requestPartReceived(.end(nil))
    guard case .acceptUpgrade(let head) = machine.responsePartReceived(Self.response(.switchingProtocols), attempt: attempt)
    else { Issue.record("accepted"); return }
    #expect(head.status == .switchingProtocols)
    #expect(machine.isForwarding)
    guard case .scheduleRelay = machine.responsePartReceived(.end(nil), attempt: attempt) else {
      Issue.record("the relay is scheduled"); return
    }
    guard case .startRelay = machine.relayReady() else { Issue.record("the relay starts"); return }
    Self.expectNone(machine.relayReady())
    Self.expectNone(machine.requestPartReceived(.head(Self.head)))
    Self.expectNone(machine.downstreamInactive())
  }

  @Test("a 101 nobody asked for: the upstream fails, the client gets 502")
  func unaskedUpgrade() throws {
    var (machine, attempt) = try Self.forwardingEnded()
    guard case .abandonUpstreamAndAnswer(.failure, let answer) = machine.responsePartReceived(
      Self.response(.switchingProtocols), attempt: attempt)
    else { Issue.record("refused"); return }
    #expect(answer.error.reason == .upstreamReset)
  }

  @Test("a refused upgrade: an ordinary response, then the connection closes (with the upstream, when still held)")
  func refusedUpgrade() throws {
    var ended = try Self.opening(upgrade: true, closeAfterResponse: true)
    let attempt = try Self.open(&ended)
    _ = ended.requestPartReceived(.end(nil))
    _ = ended.responsePartReceived(Self.response(.badRequest), attempt: attempt)
    guard case .forwardResponseEnd(_, 400, _, true) = ended.responsePartReceived(.end(nil), attempt: attempt) else {
      Issue.record("finished"); return
    }
    guard case .closeDownstream = ended.responseEndWritten() else { Issue.record("closed"); return }

    var open = try Self.opening(upgrade: true, closeAfterResponse: true)
    let attempt2 = try Self.open(&open)
    _ = open.responsePartReceived(Self.response(.badRequest), attempt: attempt2)
    _ = open.responsePartReceived(.end(nil), attempt: attempt2)
    guard case .closeUpstreamAndDownstream = open.responseEndWritten() else { Issue.record("both closed"); return }
    // A request end that still arrives is dropped with the answered request (the connection is closing).
    guard case .requestDone = open.requestPartReceived(.end(nil)) else { Issue.record("dropped"); return }
  }

  @Test("CONNECT is answered at once (405); on HTTP/1.1 the connection closes after the answer")
  func connect() throws {
    let connect = HTTPRequestHead(version: .http1_1, method: .CONNECT, uri: "backend:443")
    var machine = Machine(downstreamIsHTTP2: false)
    _ = machine.requestPartReceived(.head(connect))
    let action = machine.requestStarted(connect, isGRPC: false, upgrade: false, closeAfterResponse: true)
    guard case .answer(let answer) = action else { Issue.record("\(action)"); return }
    #expect(answer.error.reason == .connectRefused)
    #expect(answer.error.detail == "the proxy does not open tunnels (CONNECT backend:443)")
    guard case .closeDownstream = machine.answerWritten(requestEnded: answer.requestEnded) else {
      Issue.record("closed"); return
    }
    #expect(machine.closeAfterResponse)
  }

  // MARK: Reads

  @Test("a completed read: flushes while forwarding; pauses reading while the upstream opens for a request that goes on")
  func readComplete() throws {
    var machine = Machine(downstreamIsHTTP2: false)
    Self.expectNone(machine.readComplete())
    machine = try Self.opening()
    guard case .pauseReading = machine.readComplete() else { Issue.record("paused: the body is still coming"); return }
    _ = machine.requestPartReceived(.end(nil))
    // An ended request keeps reading: the pipeline handler holds a pipelined next request.
    Self.expectNone(machine.readComplete())
    try Self.open(&machine)
    guard case .flushUpstream = machine.readComplete() else { Issue.record("flushed"); return }
    var answered = try Self.opening()
    _ = answered.upstreamOpenFailed(ProxyError(.noEndpoints, "none"))
    _ = answered.answerWritten(requestEnded: false)
    Self.expectNone(answered.readComplete())
  }
}
