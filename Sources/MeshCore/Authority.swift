/// The target of a request: a host and a port, as in `Host`/`:authority` or a destination path
/// (`backend.default.svc.cluster.local:8080`). Hosts are lowercased and lose a trailing dot.
public struct Authority: Hashable, Sendable, CustomStringConvertible, Codable {
  public let host: String
  public let port: Int
  /// `host:port` (`[host]:port` for IPv6), built once: the proxy names an authority in metric labels,
  /// profiles and logs on every request.
  public let description: String

  public init(host: String, port: Int) throws(MeshError) {
    // Every request's Host is parsed (on an HTTP/2 connection, every stream's): bytes, not Characters.
    // Lowercased only when something is not lowercase ASCII already.
    var value = host.utf8.contains(where: { $0 >= UInt8(ascii: "A") && ($0 <= UInt8(ascii: "Z") || $0 >= 0x80) })
      ? host.lowercased() : host
    if value.utf8.last == UInt8(ascii: ".") { value.removeLast() }
    guard (0...65535).contains(port) else {
      throw .invalidAuthority("invalid authority '\(host):\(port)': port \(port) is outside 0-65535")
    }
    if value.utf8.first == UInt8(ascii: "["), value.utf8.last == UInt8(ascii: "]"), value.utf8.count >= 2 {
      value = String(value.dropFirst().dropLast())
    }
    let isIPv6 = Self.isIPv6Literal(value)
    if !isIPv6, !Self.isIPv4Literal(value), let problem = Self.hostProblem(value) {
      throw .invalidAuthority("invalid authority host '\(host)': \(problem)")
    }
    self.host = value
    self.port = port
    self.description = isIPv6 ? "[\(value)]:\(port)" : "\(value):\(port)"
  }

  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.port == rhs.port && lhs.host == rhs.host }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(host)
    hasher.combine(port)
  }

  /// Parses `host:port`, `[v6]:port`, or a bare host with `defaultPort`. The port is decimal digits only.
  public init(_ text: String, defaultPort: Int? = nil) throws(MeshError) {
    let bytes = text.utf8
    var hostPart = Substring(text)
    var portPart: Substring?
    if bytes.first == UInt8(ascii: "[") {
      guard let close = bytes.firstIndex(of: UInt8(ascii: "]")) else {
        throw .invalidAuthority("invalid authority '\(text)': unterminated '[' in IPv6 literal")
      }
      hostPart = text[bytes.index(after: bytes.startIndex)..<close]
      let rest = text[bytes.index(after: close)...]
      if rest.utf8.first == UInt8(ascii: ":") {
        portPart = rest.dropFirst()
      } else if !rest.isEmpty {
        throw .invalidAuthority("invalid authority '\(text)': unexpected '\(rest)' after IPv6 literal")
      }
    } else if let colon = bytes.lastIndex(of: UInt8(ascii: ":")) {
      if bytes[..<colon].contains(UInt8(ascii: ":")) {
        // A bare IPv6 address without brackets and without a port.
        hostPart = Substring(text)
      } else {
        hostPart = text[..<colon]
        portPart = text[bytes.index(after: colon)...]
      }
    }
    let port: Int
    if let portPart {
      guard let value = Self.decimal(portPart) else {
        throw .invalidAuthority("invalid authority '\(text)': port '\(portPart)' is not a number")
      }
      port = value
    } else if let defaultPort {
      port = defaultPort
    } else {
      throw .invalidAuthority("invalid authority '\(text)': no port")
    }
    if hostPart.isEmpty { throw .invalidAuthority("invalid authority '\(text)': empty host") }
    try self.init(host: String(hostPart), port: port)
  }

  /// Decimal digits (a value past 65535 reads as 65536, for the port range check to refuse), else nil.
  private static func decimal(_ text: Substring) -> Int? {
    guard !text.utf8.isEmpty else { return nil }
    var value = 0
    for byte in text.utf8 {
      guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
      value = min(value * 10 + Int(byte - UInt8(ascii: "0")), 65536)
    }
    return value
  }

  public var isIPAddress: Bool { Self.isIPv4Literal(host) || Self.isIPv6Literal(host) }

  /// For a cluster-local service FQDN `<svc>.<ns>.svc.<clusterDomain>`, its service and namespace.
  public func kubernetesService(clusterDomain: String = "cluster.local") -> (name: String, namespace: String)? {
    let suffix = ".svc." + clusterDomain
    guard host.hasSuffix(suffix) else { return nil }
    let parts = host.dropLast(suffix.count).split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
    return (String(parts[0]), String(parts[1]))
  }

  /// Four dot-separated decimal numbers of at most three digits, each at most 255 (no copies: every
  /// request's Host is checked).
  static func isIPv4Literal(_ text: String) -> Bool {
    var parts = 0
    var digits = 0
    var value = 0
    for byte in text.utf8 {
      if byte == UInt8(ascii: ".") {
        guard digits > 0, value <= 255 else { return false }
        parts += 1
        digits = 0
        value = 0
      } else if byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
        digits += 1
        guard digits <= 3 else { return false }
        value = value * 10 + Int(byte - UInt8(ascii: "0"))
      } else {
        return false
      }
    }
    return parts == 3 && digits > 0 && value <= 255
  }

  /// Hex digits, colons, dots and `%`, with at least one colon.
  static func isIPv6Literal(_ text: String) -> Bool {
    var colon = false
    for byte in text.utf8 {
      switch byte {
      case UInt8(ascii: ":"): colon = true
      case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"),
        UInt8(ascii: "A")...UInt8(ascii: "F"), UInt8(ascii: "."), UInt8(ascii: "%"):
        continue
      default: return false
      }
    }
    return colon
  }

  static func hostProblem(_ host: String) -> String? {
    // Hosts may carry underscores in the wild (SRV-style names); otherwise RFC 1123.
    DNSName.nameProblem(host, allowingUnderscores: true)
  }

  /// Travels as its text (`description`), and is parsed back the same way.
  public init(from decoder: any Decoder) throws { try self.init(try String(from: decoder)) }
  public func encode(to encoder: any Encoder) throws { try description.encode(to: encoder) }
}
