public import NIOHTTP1

/// Why the proxy answered a request itself. Every such answer carries the reason in the
/// `mesh-proxy-error` response header, and is counted.
public struct ProxyError: Error, Hashable, Sendable, CustomStringConvertible {
  public enum Reason: String, Sendable, Hashable {
    /// No endpoint became available within the failfast timeout.
    case noEndpoints = "no endpoints"
    /// Connecting to the chosen endpoint failed (refused, timed out, TLS refused).
    case connectFailed = "connect failed"
    /// The upstream closed or reset the stream before the response ended.
    case upstreamReset = "upstream reset"
    /// Neither the destination service nor DNS knows the request's authority.
    case unknownAuthority = "unknown authority"
    /// The request has no usable authority.
    case badAuthority = "bad authority"
    /// The request's authority is not served here (gateway outside the local cluster domain).
    case unknownRoute = "unknown route"
    /// The request already passed this proxy (a loop).
    case loopDetected = "loop detected"
    /// The caller has no mesh identity where one is required.
    case identityRequired = "identity required"
    /// The route's timeout expired first.
    case timeout = "request timeout"
  }

  public var reason: Reason
  public var detail: String

  public init(_ reason: Reason, _ detail: String) {
    self.reason = reason
    self.detail = detail
  }

  /// The status the proxy answers with.
  public var status: HTTPResponseStatus {
    switch reason {
    case .noEndpoints, .unknownAuthority: .serviceUnavailable
    case .connectFailed, .upstreamReset: .badGateway
    case .badAuthority: .badRequest
    case .unknownRoute: .notFound
    case .loopDetected: .loopDetected
    case .identityRequired: .forbidden
    case .timeout: .gatewayTimeout
    }
  }

  public var description: String { "\(reason.rawValue): \(detail)" }

  /// The response header naming the reason.
  public static let headerName = "mesh-proxy-error"
}

/// Header names the proxies use between themselves.
public enum MeshHeaders {
  /// Marks an HTTP/1.1 request carried over HTTP/2 between proxies; the far side restores HTTP/1.1.
  public static let origProto = "swiftmesh-orig-proto"
}
