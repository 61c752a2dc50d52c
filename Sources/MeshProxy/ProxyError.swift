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
    /// Every connection the proxy may open to the upstream is busy and the request could not wait longer
    /// (or the queue of waiting requests is full): shed at once rather than piled onto the application.
    case overloaded = "overloaded"
    /// An HTTP/1.1 client did not finish a request head within the header read timeout.
    case headerTimeout = "request header timeout"
    /// A `CONNECT` request: the proxy does not open tunnels to arbitrary addresses.
    case connectRefused = "connect not allowed"
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
    case .noEndpoints, .unknownAuthority, .overloaded: .serviceUnavailable
    case .connectFailed, .upstreamReset: .badGateway
    case .badAuthority: .badRequest
    case .unknownRoute: .notFound
    case .loopDetected: .loopDetected
    case .identityRequired: .forbidden
    case .timeout: .gatewayTimeout
    case .headerTimeout: .requestTimeout
    case .connectRefused: .methodNotAllowed
    }
  }

  public var description: String { "\(reason.rawValue): \(detail)" }

  /// The gRPC status the proxy answers a gRPC request with: DEADLINE_EXCEEDED for a timeout,
  /// PERMISSION_DENIED when an identity is required, UNAVAILABLE for everything else (the call may
  /// succeed later or elsewhere).
  public var grpcStatus: Int {
    switch reason {
    case .timeout: 4
    case .identityRequired: 7
    default: 14
    }
  }

  /// The response header naming the reason.
  public static let headerName = "mesh-proxy-error"
}

/// Header names the proxies use between themselves.
public enum MeshHeaders {
  /// Marks an HTTP/1.1 request carried over HTTP/2 between proxies; the far side restores HTTP/1.1.
  public static let origProto = "swiftmesh-orig-proto"
}

/// gRPC's `grpc-message` encoding: UTF-8, with bytes outside printable ASCII and `%` percent-encoded.
enum GRPCMessage {
  static func percentEncoded(_ message: String) -> String {
    var out = ""
    out.reserveCapacity(message.utf8.count)
    for byte in message.utf8 {
      if byte >= 0x20 && byte <= 0x7E && byte != UInt8(ascii: "%") {
        out.unicodeScalars.append(Unicode.Scalar(byte))
      } else {
        out += "%"
        let hex = Array("0123456789ABCDEF".utf8)
        out.unicodeScalars.append(Unicode.Scalar(hex[Int(byte >> 4)]))
        out.unicodeScalars.append(Unicode.Scalar(hex[Int(byte & 0xF)]))
      }
    }
    return out
  }
}
