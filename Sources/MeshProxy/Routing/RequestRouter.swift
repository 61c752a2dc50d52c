package import MeshCore
package import NIOCore
package import NIOHTTP1

/// One request as the router sees it. A class, made once per request and never changed: the request handler
/// keeps it for retries and hands it to the router several times a request, and as a struct (a head, two
/// authorities, an identity and three references) each of those was a copy of every field, about 6,000
/// instructions a request on the inbound proxy (Benchmarks/load/instructions.sh).
package final class RoutedRequest: Sendable {
  package let head: HTTPRequestHead
  /// From `Host` (HTTP/1.1) or `:authority` (HTTP/2).
  package let authority: Authority?
  /// Whether the request arrived over HTTP/2.
  package let arrivedOverHTTP2: Bool
  /// The caller's verified mesh identity (inbound), if any.
  package let peerIdentity: IdentityName?
  /// When the request arrived: the failfast timeout counts from here, across the profile lookup and the
  /// wait for an endpoint together, so a request with no usable destination waits one failfast, not two.
  package let receivedAt: NIODeadline
  /// The protocol an HTTP/1.1 client asks to switch to (its `Upgrade` header with `Connection: upgrade`),
  /// e.g. `websocket`. Such a request travels on HTTP/1.1 to the end (inside mutual TLS between proxies),
  /// and on `101 Switching Protocols` the connection becomes a byte relay.
  package let upgrade: String?
  /// Where the connection was going before iptables redirected it to the proxy (transparent mode); nil
  /// when the client named the proxy itself.
  package let originalDestination: Authority?
  /// Set when the request's client goes away (or the proxy has answered it) while it still waits for an
  /// upstream: its place in a queue is given to the next request instead of opening a stream nobody reads.
  let abandonment: RequestAbandonment
  /// The destination `authority` named for an earlier request of the same downstream connection: looked up
  /// again only when it changes or the router forgot it. Set by the proxy's request handler.
  let destinationMemo: DestinationMemo?
  /// The mesh's own fields `head` carries (the hop header, the original-protocol mark): found in the request
  /// handler's one pass over the head (``RequestHeadScan``), else when the request is made.
  let meshFields: MeshFieldsSeen

  package convenience init(
    head: HTTPRequestHead, authority: Authority?, arrivedOverHTTP2: Bool, peerIdentity: IdentityName?,
    receivedAt: NIODeadline = .now(), upgrade: String? = nil, originalDestination: Authority? = nil,
    destinationMemo: DestinationMemo? = nil
  ) {
    self.init(
      head: head, authority: authority, arrivedOverHTTP2: arrivedOverHTTP2, peerIdentity: peerIdentity,
      receivedAt: receivedAt, upgrade: upgrade, originalDestination: originalDestination,
      destinationMemo: destinationMemo, meshFields: RequestHeadScan(head.headers).meshFields)
  }

  /// A request whose head's mesh fields are already known (`meshFields`, from ``RequestHeadScan``).
  init(
    head: HTTPRequestHead, authority: Authority?, arrivedOverHTTP2: Bool, peerIdentity: IdentityName?,
    receivedAt: NIODeadline = .now(), upgrade: String?, originalDestination: Authority?,
    destinationMemo: DestinationMemo?, meshFields: MeshFieldsSeen
  ) {
    self.meshFields = meshFields
    self.head = head
    self.authority = authority
    self.arrivedOverHTTP2 = arrivedOverHTTP2
    self.peerIdentity = peerIdentity
    self.receivedAt = receivedAt
    self.upgrade = upgrade
    self.originalDestination = originalDestination
    self.abandonment = RequestAbandonment()
    self.destinationMemo = destinationMemo
  }

  /// The same request (same arrival, abandonment and memo) with another head, and `arrivedOverHTTP2` set
  /// as given.
  func with(head: HTTPRequestHead, arrivedOverHTTP2: Bool) -> RoutedRequest {
    RoutedRequest(copying: self, head: head, arrivedOverHTTP2: arrivedOverHTTP2)
  }

  private init(copying other: RoutedRequest, head: HTTPRequestHead, arrivedOverHTTP2: Bool) {
    self.head = head
    self.authority = other.authority
    self.arrivedOverHTTP2 = arrivedOverHTTP2
    self.peerIdentity = other.peerIdentity
    self.receivedAt = other.receivedAt
    self.upgrade = other.upgrade
    self.originalDestination = other.originalDestination
    self.abandonment = other.abandonment
    self.destinationMemo = other.destinationMemo
    self.meshFields = RequestHeadScan(head.headers).meshFields
  }
}

/// The mesh's own fields found in a request's head.
struct MeshFieldsSeen: OptionSet, Sendable {
  let rawValue: UInt8
  /// The hop header (``LoopGuard/headerName``).
  static let hopHeader = MeshFieldsSeen(rawValue: 1 << 0)
  /// The original-protocol mark (`MeshHeaders.origProto`).
  static let origProto = MeshFieldsSeen(rawValue: 1 << 1)
}

/// The fields the proxy looks for in every request head, found in one pass over its headers, each name by its
/// length and then its bytes without regard to case: `HTTPHeaders.first(name:)` and `contains(name:)` are a
/// pass each, about 200 instructions, and the client proxy made five of them a request (host, content type,
/// upgrade, the hop header, the original-protocol mark).
struct RequestHeadScan {
  /// The first `host` field's value.
  var host: String?
  /// The first `content-type` field's value.
  var contentType: String?
  /// An `upgrade` field is there (``HTTPHeaderRules/requestedUpgrade(_:)`` says whether it asks for one).
  var hasUpgrade = false
  var meshFields: MeshFieldsSeen = []

  init(_ headers: HTTPHeaders) {
    for (name, value) in headers {
      switch name.utf8.count {
      case 4: if host == nil, Self.isName(name, "host") { host = value }
      case 7: if Self.isName(name, "upgrade") { hasUpgrade = true }
      case 12: if contentType == nil, Self.isName(name, "content-type") { contentType = value }
      // LoopGuard.headerName and MeshHeaders.origProto (HTTPHeaderRulesTests checks that they are these).
      case 13: if Self.isName(name, "swiftmesh-via") { meshFields.insert(.hopHeader) }
      case 20: if Self.isName(name, "swiftmesh-orig-proto") { meshFields.insert(.origProto) }
      default: break
      }
    }
  }

  /// `name` is `lowercase` without regard to case, compared on the string's own bytes with a literal (the
  /// comparison of two `String`s reaches each one's bytes through a closure: about 150 instructions a name).
  @inline(__always)
  private static func isName(_ name: String, _ lowercase: StaticString) -> Bool {
    name.utf8.withContiguousStorageIfAvailable { HTTP1Grammar.isName(UnsafeRawBufferPointer($0), lowercase) }
      ?? HTTPHeaderRules.isName(name, lowercase.description)
  }
}

/// The destination a downstream connection's requests go to, kept between them: a request's three lookups of
/// its destination (policy, target, endpoint) were three trips through the router's shared, locked map, with
/// the authority hashed each time (Benchmarks/load/instructions.sh). Touched only on the connection's event
/// loop (its HTTP/2 streams run there too).
package final class DestinationMemo: @unchecked Sendable {
  var destination: Destination?
}

/// Whether a request was given up; touched only on the request's event loop.
final class RequestAbandonment: @unchecked Sendable {
  var isAbandoned = false
}

/// Where a request goes: an upstream channel speaking HTTP/1 parts (an HTTP/1.1 connection, or an HTTP/2
/// stream behind a codec), the head to send there, and the metric labels of the hop.
package final class Upstream: @unchecked Sendable {
  /// The HTTP/1.1 connection the request goes on; nil for an HTTP/2 stream (``stream``), which has no channel.
  let channel: (any Channel)?
  let head: HTTPRequestHead
  let ticket: TicketBox?
  let labels: ProxyMetrics.LabelSet
  /// For HTTP/1.1 connections: returns a finished connection to its pool. Nil for HTTP/2 streams.
  let release: (@Sendable (any Channel) -> Void)?
  /// For HTTP/2 streams: the stream, and whether a failure means the peer never processed the request.
  let stream: UpstreamStream?

  /// An HTTP/1.1 connection.
  init(
    channel: any Channel, head: HTTPRequestHead, ticket: TicketBox?, labels: ProxyMetrics.LabelSet,
    release: (@Sendable (any Channel) -> Void)?
  ) {
    self.stream = nil
    self.channel = channel
    self.head = head
    self.ticket = ticket
    self.labels = labels
    self.release = release
  }

  /// An HTTP/2 stream.
  init(stream: UpstreamStream, head: HTTPRequestHead, ticket: TicketBox?, labels: ProxyMetrics.LabelSet) {
    self.stream = stream
    self.channel = nil
    self.head = head
    self.ticket = ticket
    self.labels = labels
    self.release = nil
  }

  /// Flushes what was written to the upstream.
  func flush() {
    if let channel { channel.flush() } else { stream?.stream.flush() }
  }

  /// Closes the connection, or resets the stream (CANCEL) unless it has ended.
  func close() {
    if let channel { channel.close(promise: nil) } else { stream?.stream.close() }
  }

  /// The peer's address (the connection's, for a stream).
  var remoteAddress: SocketAddress? { channel?.remoteAddress ?? stream?.stream.remoteAddress }

  /// Pauses or resumes reading the upstream's response (back-pressure from a slow client).
  func setReading(_ on: Bool) {
    if let channel {
      ProxyRequestHandler.setAutoRead(channel, on) { if on { channel.read() } }
    } else {
      stream?.stream.setReading(on)
    }
  }
}

/// One opaque (non-HTTP) connection as the router sees it.
package struct OpaqueConnection: Sendable {
  /// Where the client was going (transparent mode); nil when it came straight to the listener.
  package var originalDestination: Authority?
  /// The header a peer proxy sent first, inside mutual TLS.
  package var header: OpaqueHeader?
  /// The caller's verified mesh identity (inbound), if any.
  package var peerIdentity: IdentityName?

  package init(originalDestination: Authority?, header: OpaqueHeader? = nil, peerIdentity: IdentityName? = nil) {
    self.originalDestination = originalDestination
    self.header = header
    self.peerIdentity = peerIdentity
  }
}

/// How an upstream comes: at once (a resolved destination and an idle pooled connection), or later.
package enum UpstreamOpening: Sendable {
  case ready(Upstream)
  case pending(EventLoopFuture<Upstream>)

  func future(on eventLoop: any EventLoop) -> EventLoopFuture<Upstream> {
    switch self {
    case .ready(let upstream): eventLoop.makeSucceededFuture(upstream)
    case .pending(let future): future
    }
  }
}

/// Where an upstream that was not at hand is told: its opening's result, on the request's event loop.
package typealias UpstreamCompletion = @Sendable (Result<Upstream, any Error>) -> Void

/// What opens upstreams (the request handler) and is told of those that were not at hand. An object, not a
/// closure, so that a request whose upstream is at hand allocates nothing for the case it was not.
package protocol UpstreamOpener: AnyObject {
  func opened(_ result: Result<Upstream, any Error>)
}

extension NIOLoopBound where Value == any UpstreamOpener {
  /// The opener's callback, made only when it is needed.
  var completion: UpstreamCompletion { { result in self.value.opened(result) } }
}

extension RequestRouter {
  package var takesOutMeshFieldsOnArrival: Bool { false }
}

/// Decides where each request goes and opens the upstream for it, on the request's event loop.
package protocol RequestRouter: Sendable {
  /// The `direction` label of this side.
  var direction: String { get }
  /// Whether the mesh's own request fields (the hop header, the original-protocol mark) are taken out of a
  /// request as it arrives over HTTP/2, by the stream's codec, rather than by this router: true for the
  /// inbound side, where they end. A request the codec marked as carried HTTP/1.1 has an HTTP/1.1 head.
  var takesOutMeshFieldsOnArrival: Bool { get }
  /// Opens an upstream for `request`; fails with `ProxyError`.
  func open(_ request: RoutedRequest, on eventLoop: any EventLoop) -> EventLoopFuture<Upstream>
  /// ``open(_:on:)``, without a future when the upstream is at hand at once (the usual case: a future made and
  /// freed costs about a thousand instructions, Benchmarks/load/instructions.sh).
  func openNow(_ request: RoutedRequest, on eventLoop: any EventLoop) -> UpstreamOpening
  /// ``openNow(_:on:)`` with no future at all: the upstream when it is at hand, else nil and `opener` is told
  /// the result later, on `eventLoop` (or at once, before this returns, when it fails at once).
  /// The request handler opens every upstream this way: through the mTLS pair, the two futures of an HTTP/2
  /// stream's opening cost about 6,000 instructions a request (Benchmarks/load/instructions.sh).
  func openNow(_ request: RoutedRequest, on eventLoop: any EventLoop, for opener: NIOLoopBound<any UpstreamOpener>) -> Upstream?
  /// The route policy for `request` (timeout, retries, classification), once the destination's profile is
  /// known. Asked once per request.
  func policy(for request: RoutedRequest, on eventLoop: any EventLoop) -> EventLoopFuture<RequestPolicy>
  /// The route policy for `request` when it is known without waiting (the destination's profile is at hand),
  /// else nil, and ``policy(for:on:)`` is asked. Spares every request but a destination's first a future.
  func knownPolicy(for request: RoutedRequest) -> RequestPolicy?
  /// The `authority` metric label of a request this side answered itself: the authority when the proxy
  /// knows it (a destination discovery knows; a caller with a mesh identity), else empty, so that no client
  /// mints series by choosing Host headers.
  func metricAuthority(for request: RoutedRequest) -> String
  /// Whether connections to `original` (a redirected connection's original destination) are opaque TCP,
  /// skipping protocol detection.
  func isOpaque(_ original: Authority, on eventLoop: any EventLoop) -> EventLoopFuture<Bool>
  /// Opens the upstream of an opaque connection: connected (mutual TLS set up and the `OpaqueHeader`
  /// written, toward a peer proxy), on `eventLoop`; fails with `ProxyError`.
  func openOpaque(_ connection: OpaqueConnection, on eventLoop: any EventLoop) -> EventLoopFuture<any Channel>
}

extension RequestRouter {
  package func openNow(_ request: RoutedRequest, on eventLoop: any EventLoop) -> UpstreamOpening {
    .pending(open(request, on: eventLoop))
  }

  package func openNow(
    _ request: RoutedRequest, on eventLoop: any EventLoop, for opener: NIOLoopBound<any UpstreamOpener>
  ) -> Upstream? {
    switch openNow(request, on: eventLoop) {
    case .ready(let upstream):
      return upstream
    case .pending(let future):
      future.hop(to: eventLoop).whenComplete(opener.completion)
      return nil
    }
  }

  package func metricAuthority(for request: RoutedRequest) -> String { "" }

  package func policy(for request: RoutedRequest, on eventLoop: any EventLoop) -> EventLoopFuture<RequestPolicy> {
    eventLoop.makeSucceededFuture(.none)
  }

  package func knownPolicy(for request: RoutedRequest) -> RequestPolicy? { nil }

  package func isOpaque(_ original: Authority, on eventLoop: any EventLoop) -> EventLoopFuture<Bool> {
    eventLoop.makeSucceededFuture(false)
  }

  package func openOpaque(_ connection: OpaqueConnection, on eventLoop: any EventLoop) -> EventLoopFuture<any Channel> {
    eventLoop.makeFailedFuture(ProxyError(.unknownRoute, "the \(direction) side carries no opaque connections"))
  }
}

/// HTTP header helpers shared by both sides.
enum HTTPHeaderRules {
  /// Removes hop-by-hop headers, keeping `te: trailers` (gRPC needs it); with `upgrade`, the next hop is
  /// asked for the same upgrade (`Connection: upgrade`, `Upgrade: <upgrade>`).
  ///
  /// `removing` names more headers to drop in the same pass (lowercase; at most 8); the result has bit `i` set
  /// when `removing[i]` was present.
  @discardableResult
  static func stripHopByHop(_ headers: inout HTTPHeaders, upgrade: String? = nil, removing extra: [String] = []) -> UInt8 {
    assert(extra.count <= 8, "at most 8 more names: one bit each")
    // One pass over the headers finds which of them are present (most requests carry none, most responses
    // `connection`); only then are the headers (their storage shared with the parsed head) rebuilt, in one
    // more pass: NIO's `remove(name:)` copies the storage and walks it once per name removed.
    var present: HopByHop = []
    var found: UInt8 = 0
    for (name, _) in headers {
      present.formUnion(HopByHop(name))
      if !extra.isEmpty { found |= Self.matches(name, extra) }
    }
    guard upgrade != nil || !present.isEmpty || found != 0 else { return 0 }
    let keepTrailers = present.contains(.te) && headers["te"].contains { $0.lowercased().contains("trailers") }
    if !present.isEmpty || found != 0 {
      var kept: [(String, String)] = []
      kept.reserveCapacity(headers.count + 2)
      for (name, value) in headers {
        if !present.isEmpty, !HopByHop(name).isEmpty { continue }
        if found != 0, Self.matches(name, extra) != 0 { continue }
        kept.append((name, value))
      }
      if keepTrailers { kept.append(("te", "trailers")) }
      if let upgrade {
        kept.append(("connection", "upgrade"))
        kept.append(("upgrade", upgrade))
      }
      headers = HTTPHeaders(kept)
    } else if let upgrade {
      headers.add(name: "connection", value: "upgrade")
      headers.add(name: "upgrade", value: upgrade)
    }
    return found
  }

  /// The bits of the names in `names` that `name` is (any case).
  private static func matches(_ name: String, _ names: [String]) -> UInt8 {
    var bits: UInt8 = 0
    let count = name.utf8.count
    var index = 0
    while index < names.count {
      if names[index].utf8.count == count, isName(name, names[index]) {
        bits |= 1 << UInt8(truncatingIfNeeded: index)
      }
      index += 1
    }
    return bits
  }

  /// Whether `name` is `lowercase` in any ASCII case. Byte by byte on the strings' UTF-8 storage (the generic
  /// `elementsEqual` over UTF-8 views cost about 360 instructions a call), the lengths compared first; the
  /// storage read as it is (`withUTF8` on copies of the two strings cost about 100 instructions a call, most of
  /// them the copies' reference counting).
  static func isName(_ name: String, _ lowercase: String) -> Bool {
    guard name.utf8.count == lowercase.utf8.count else { return false }
    let fast = name.utf8.withContiguousStorageIfAvailable { bytes in
      lowercase.utf8.withContiguousStorageIfAvailable { expected in
        isName(UnsafeRawBufferPointer(bytes), UnsafeRawBufferPointer(expected))
      }
    }
    if let fast, let result = fast { return result }
    // A bridged or otherwise non-contiguous string.
    var name = name
    var lowercase = lowercase
    return name.withUTF8 { bytes in
      lowercase.withUTF8 { expected in isName(UnsafeRawBufferPointer(bytes), UnsafeRawBufferPointer(expected)) }
    }
  }

  /// The same on bytes (the HTTP/1.1 decoders compare names and tokens before they are strings). Only A-Z
  /// fold: `byte | 0x20` alone would also take CR for `-`.
  static func isName(_ bytes: UnsafeRawBufferPointer, _ lowercase: UnsafeRawBufferPointer) -> Bool {
    guard bytes.count == lowercase.count else { return false }
    for index in 0..<bytes.count {
      let byte = bytes[index]
      if byte != lowercase[index], !(byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") && byte | 0x20 == lowercase[index]) {
        return false
      }
    }
    return true
  }

  /// The hop-by-hop headers, as a set of bits.
  struct HopByHop: OptionSet {
    let rawValue: UInt8
    init(rawValue: UInt8) { self.rawValue = rawValue }
    static let connection = HopByHop(rawValue: 1 << 0)
    static let keepAlive = HopByHop(rawValue: 1 << 1)
    static let proxyConnection = HopByHop(rawValue: 1 << 2)
    static let transferEncoding = HopByHop(rawValue: 1 << 3)
    static let upgrade = HopByHop(rawValue: 1 << 4)
    static let te = HopByHop(rawValue: 1 << 5)

    /// The member `name` is (any case), or none: by its length, then at most two comparisons (every field of
    /// every message comes here; walking `names` cost a reference count per entry).
    init(_ name: String) {
      switch name.utf8.count {
      case 2: self = HTTPHeaderRules.isName(name, "te") ? .te : []
      case 7: self = HTTPHeaderRules.isName(name, "upgrade") ? .upgrade : []
      case 10:
        self =
          HTTPHeaderRules.isName(name, "connection")
          ? .connection : HTTPHeaderRules.isName(name, "keep-alive") ? .keepAlive : []
      case 16: self = HTTPHeaderRules.isName(name, "proxy-connection") ? .proxyConnection : []
      case 17: self = HTTPHeaderRules.isName(name, "transfer-encoding") ? .transferEncoding : []
      default: self = []
      }
    }
  }

  /// The protocol an HTTP/1.1 request asks to switch to: its `Upgrade` header, when `Connection` names
  /// `upgrade`; nil otherwise.
  static func requestedUpgrade(_ headers: HTTPHeaders) -> String? {
    // Checked on every HTTP/1.1 request: nothing is built unless an `Upgrade` header is there at all.
    guard headers.contains(name: "upgrade") else { return nil }
    let connection = headers[canonicalForm: "connection"]
    guard connection.contains(where: { $0.lowercased() == "upgrade" }) else { return nil }
    let upgrade = headers["upgrade"].map(trimmed).filter { !$0.isEmpty }.joined(separator: ", ")
    return upgrade.isEmpty ? nil : upgrade
  }

  /// `value` without leading and trailing spaces and tabs.
  static func trimmed<S: StringProtocol>(_ value: S) -> String {
    // On the UTF-8 view: the same by `Character`, reversed twice, cost about 40,000 instructions a call
    // (Benchmarks/load/instructions.sh).
    let value = Substring(value)
    let utf8 = value.utf8
    var start = utf8.startIndex
    var end = utf8.endIndex
    while start < end, utf8[start] == 0x20 || utf8[start] == 0x09 { start = utf8.index(after: start) }
    while start < end {
      let last = utf8.index(before: end)
      guard utf8[last] == 0x20 || utf8[last] == 0x09 else { break }
      end = last
    }
    return String(value[start..<end])
  }
}

extension HTTPMethod {
  /// `self == .HEAD`, by the enum's case. swift-nio's `HTTPMethod` is `RawRepresentable`, so `==` is the
  /// standard library's comparison of the two `rawValue` strings (each a switch over 30-odd cases): about 80
  /// instructions, and a request asked it several times on each side. A `RAW` method spelled `HEAD` (which
  /// `HTTPMethod(rawValue:)` never makes) still counts.
  var isHEAD: Bool {
    switch self {
    case .HEAD: true
    case .RAW(let value): value == "HEAD"
    default: false
    }
  }

  /// `self == .CONNECT`, as ``isHEAD``.
  var isCONNECT: Bool {
    switch self {
    case .CONNECT: true
    case .RAW(let value): value == "CONNECT"
    default: false
    }
  }
}
