public import NIOHTTP1

/// Why the proxy answered a request itself: a code (`reason`), a detail naming the bad value, and the
/// underlying cause when there is one. Every such answer carries the code in the `mesh-proxy-error`
/// response header, and is counted. Equal by code.
public struct ProxyError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What went wrong; `rawValue` is what the `mesh-proxy-error` header and the metrics say.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    private enum Wrapped: String, Hashable, Sendable, CaseIterable {
      case noEndpoints = "no endpoints"
      case connectFailed = "connect failed"
      case upstreamReset = "upstream reset"
      case unknownAuthority = "unknown authority"
      case badAuthority = "bad authority"
      case unknownRoute = "unknown route"
      case loopDetected = "loop detected"
      case identityRequired = "identity required"
      case timeout = "request timeout"
      case overloaded = "overloaded"
      case headerTimeout = "request header timeout"
      case connectRefused = "connect not allowed"
    }
    private let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// No endpoint became available within the failfast timeout.
    public static let noEndpoints = Code(.noEndpoints)
    /// Connecting to the chosen endpoint failed (refused, timed out, TLS refused).
    public static let connectFailed = Code(.connectFailed)
    /// The upstream closed or reset the stream before the response ended.
    public static let upstreamReset = Code(.upstreamReset)
    /// Neither the destination service nor DNS knows the request's authority.
    public static let unknownAuthority = Code(.unknownAuthority)
    /// The request has no usable authority.
    public static let badAuthority = Code(.badAuthority)
    /// The request's authority is not served here (gateway outside the local cluster domain).
    public static let unknownRoute = Code(.unknownRoute)
    /// The request already passed this proxy (a loop).
    public static let loopDetected = Code(.loopDetected)
    /// The caller has no mesh identity where one is required.
    public static let identityRequired = Code(.identityRequired)
    /// The route's timeout expired first.
    public static let timeout = Code(.timeout)
    /// Every connection the proxy may open to the upstream is busy and the request could not wait longer
    /// (or the queue of waiting requests is full): shed at once rather than piled onto the application.
    public static let overloaded = Code(.overloaded)
    /// An HTTP/1.1 client did not finish a request head within the header read timeout.
    public static let headerTimeout = Code(.headerTimeout)
    /// A `CONNECT` request: the proxy does not open tunnels to arbitrary addresses.
    public static let connectRefused = Code(.connectRefused)

    /// Every code.
    public static var allCases: [Code] { Wrapped.allCases.map(Code.init) }
    /// The code as the `mesh-proxy-error` header and the metrics' `reason` label say it, e.g. `no endpoints`.
    public var rawValue: String { wrapped.rawValue }
    public var description: String { rawValue }

    /// The status the proxy answers with.
    public var status: HTTPResponseStatus {
      switch wrapped {
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

    /// The gRPC status code the proxy answers a gRPC request with.
    public var grpcStatus: Int {
      switch wrapped {
      case .timeout: 4
      case .identityRequired: 7
      default: 14
      }
    }
  }

  /// The earlier name of ``Code``.
  public typealias Reason = Code

  /// What went wrong.
  public var reason: Code
  /// What was wrong, and with which value.
  public var detail: String
  /// The underlying error, if any.
  public var cause: (any Error & Sendable)?

  public init(_ reason: Code, _ detail: String, cause: (any Error & Sendable)? = nil) {
    self.reason = reason
    self.detail = detail
    self.cause = cause
  }

  public init(code: Code, message: String, cause: (any Error & Sendable)? = nil) {
    self.init(code, message, cause: cause)
  }

  /// The code, as every error of SwiftMesh names it (`reason` here).
  public var code: Code { reason }
  /// The message, as every error of SwiftMesh names it (`detail` here).
  public var message: String { detail }

  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.reason == rhs.reason }
  public func hash(into hasher: inout Hasher) { hasher.combine(reason) }

  /// The status the proxy answers with.
  public var status: HTTPResponseStatus { reason.status }

  public var description: String {
    "\(reason.rawValue): \(detail)" + (cause.map { " (cause: \($0))" } ?? "")
  }

  /// The gRPC status the proxy answers a gRPC request with: DEADLINE_EXCEEDED for a timeout,
  /// PERMISSION_DENIED when an identity is required, UNAVAILABLE for everything else (the call may
  /// succeed later or elsewhere).
  public var grpcStatus: Int { reason.grpcStatus }

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
