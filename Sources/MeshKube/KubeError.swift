public import Foundation

/// A Kubernetes `Status` object: what the API server answers on failure (and on some deletes).
public struct KubeStatus: Codable, Sendable, Hashable {
  public var status: String?
  public var message: String?
  public var reason: String?
  public var code: Int?
  public var details: Details?

  public struct Details: Codable, Sendable, Hashable {
    public var name: String?
    public var group: String?
    public var kind: String?
    public init(name: String? = nil, group: String? = nil, kind: String? = nil) {
      self.name = name
      self.group = group
      self.kind = kind
    }
  }

  public init(status: String? = "Failure", message: String?, reason: String?, code: Int?, details: Details? = nil) {
    self.status = status
    self.message = message
    self.reason = reason
    self.code = code
    self.details = details
  }
}

/// Every failure MeshKube reports: a code to branch on (`.conflict` means re-read and retry), a
/// message naming the bad value, the decoded `Status` when the server sent one, and the HTTP status.
public struct KubeError: Error, Sendable, Hashable, CustomStringConvertible {
  /// What went wrong, to branch on (`isNotFound` and its siblings ask the same).
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    private enum Wrapped: String, Hashable, Sendable {
      case notFound, alreadyExists, conflict, gone, unauthorized, forbidden, invalid, badRequest
      case httpStatus, transport, decoding, invalidKubeconfig, watch
    }
    private let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// 404 / `NotFound`.
    public static let notFound = Code(.notFound)
    /// 409 `AlreadyExists` for a create.
    public static let alreadyExists = Code(.alreadyExists)
    /// 409 `Conflict`: the object changed since it was read; re-read and retry.
    public static let conflict = Code(.conflict)
    /// 410 Gone / `Expired`: the resourceVersion is too old; re-list.
    public static let gone = Code(.gone)
    /// 401: the credentials are missing, invalid or expired.
    public static let unauthorized = Code(.unauthorized)
    /// 403: authenticated, but refused.
    public static let forbidden = Code(.forbidden)
    /// 422 `Invalid`: the object does not validate.
    public static let invalid = Code(.invalid)
    /// 400 `BadRequest`.
    public static let badRequest = Code(.badRequest)
    /// Another failed HTTP status (see `httpStatus`).
    public static let httpStatus = Code(.httpStatus)
    /// The connection failed (refused, reset, TLS).
    public static let transport = Code(.transport)
    /// A body (object, list or watch event) could not be decoded.
    public static let decoding = Code(.decoding)
    /// A kubeconfig or in-cluster configuration problem.
    public static let invalidKubeconfig = Code(.invalidKubeconfig)
    /// A watch failed.
    public static let watch = Code(.watch)

    public var description: String { wrapped.rawValue }
  }
  /// What went wrong, to branch on.
  public let code: Code
  /// What went wrong, naming the bad value.
  public let message: String
  /// The HTTP status code, when the error came from a response.
  public let httpStatus: Int?
  /// The Kubernetes `Status` body, when the server sent one.
  public let status: KubeStatus?
  /// The underlying error, if any.
  public let cause: (any Error & Sendable)?

  private init(_ code: Code, _ message: String, httpStatus: Int? = nil, status: KubeStatus? = nil,
               cause: (any Error & Sendable)? = nil) {
    self.code = code
    self.message = message
    self.httpStatus = httpStatus
    self.status = status
    self.cause = cause
  }

  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
  public func hash(into hasher: inout Hasher) { hasher.combine(code) }

  public var description: String {
    var text = message
    if let httpStatus { text += " (HTTP \(httpStatus))" }
    if let cause { text += " (cause: \(cause))" }
    return "KubeError: \(text)"
  }

  /// The server answered 404 / `NotFound`.
  public var isNotFound: Bool { code == .notFound }
  /// The server answered 409 `AlreadyExists` for a create.
  public var isAlreadyExists: Bool { code == .alreadyExists }
  /// The server answered 409 `Conflict`: the object changed since it was read; re-read and retry.
  public var isConflict: Bool { code == .conflict }
  /// The server answered 410 Gone / `Expired`: the resourceVersion is too old; re-list.
  public var isGone: Bool { code == .gone }
  /// The server answered 401: the credentials are missing, invalid or expired.
  public var isUnauthorized: Bool { code == .unauthorized }
  /// 403: authenticated, but RBAC (or another authorizer) refused the request.
  public var isForbidden: Bool { code == .forbidden }
  /// A kubeconfig or in-cluster configuration problem.
  public var isInvalidKubeconfig: Bool { code == .invalidKubeconfig }
  /// The connection failed (refused, reset, TLS).
  public var isTransport: Bool { code == .transport }
  /// A body (object, list or watch event) could not be decoded.
  public var isDecoding: Bool { code == .decoding }

  public static func notFound(_ message: String) -> Self { Self(.notFound, message, httpStatus: 404) }
  public static func conflict(_ message: String) -> Self { Self(.conflict, message, httpStatus: 409) }
  public static func gone(_ message: String) -> Self { Self(.gone, message, httpStatus: 410) }
  public static func invalidKubeconfig(_ message: String, cause: (any Error & Sendable)? = nil) -> Self {
    Self(.invalidKubeconfig, message, cause: cause)
  }
  public static func transport(_ message: String, cause: (any Error & Sendable)? = nil) -> Self {
    Self(.transport, message, cause: cause)
  }
  public static func decoding(_ message: String, cause: (any Error & Sendable)? = nil) -> Self {
    Self(.decoding, message, cause: cause)
  }
  public static func watch(_ message: String) -> Self { Self(.watch, message) }

  /// The error for a `Status` object, from a response body or a watch `ERROR` event.
  public static func fromStatus(_ status: KubeStatus, httpStatus: Int?, context: String) -> Self {
    let http = httpStatus ?? status.code
    let code: Code =
      switch (status.reason, http) {
      case ("NotFound", _), (_, 404): .notFound
      case ("AlreadyExists", _): .alreadyExists
      case ("Conflict", _), (_, 409): .conflict
      case ("Expired", _), ("Gone", _), (_, 410): .gone
      case ("Unauthorized", _), (_, 401): .unauthorized
      case ("Forbidden", _), (_, 403): .forbidden
      case ("Invalid", _), (_, 422): .invalid
      case ("BadRequest", _), (_, 400): .badRequest
      default: .httpStatus
      }
    let reason = status.reason.map { " [\($0)]" } ?? ""
    return Self(code, "\(context): \(status.message ?? "no message")\(reason)", httpStatus: http, status: status)
  }

  /// The error for a failed response whose body is not a `Status`: names the status and a body snippet.
  public static func httpFailure(status: Int, body: Data, context: String) -> Self {
    let code: Code =
      switch status {
      case 401: .unauthorized
      case 403: .forbidden
      case 404: .notFound
      case 409: .conflict
      case 410: .gone
      default: .httpStatus
      }
    var snippet = String(decoding: body.prefix(200), as: UTF8.self)
      .replacingOccurrences(of: "\n", with: " ")
    if body.count > 200 { snippet += "…" }
    return Self(code, "\(context): HTTP \(status) with a non-Status body: '\(snippet)'", httpStatus: status)
  }
}
