import Foundation

/// The per-pod settings of `config.swiftmesh.io/` annotations: a namespace's are inherited by its pods, a
/// pod's own override them key by key. Every value is checked, so a typo is an error that names it rather
/// than a proxy that silently runs with defaults.
public struct ProxyConfigAnnotations: Sendable, Hashable {
  /// Inbound ports (or ranges) not redirected to the proxy (added to the admin and tap ports).
  public var skipInboundPorts: [String] = []
  /// Outbound ports (or ranges) not redirected to the proxy.
  public var skipOutboundPorts: [String] = []
  /// Source subnets (CIDR) whose inbound connections are not redirected.
  public var skipSubnets: [String] = []
  /// Ports whose traffic is opaque TCP (the server speaks first).
  public var opaquePorts: [String]?
  public var proxyUID: Int?
  public var proxyLogLevel: String?
  public var proxyImage: String?
  public var proxyInitImage: String?
  /// Kubernetes quantities for the proxy container's resources.
  public var proxyCPURequest: String?
  public var proxyCPULimit: String?
  public var proxyMemoryRequest: String?
  public var proxyMemoryLimit: String?

  /// Every key understood, after the prefix.
  public static let keys = [
    "skip-inbound-ports", "skip-outbound-ports", "skip-subnets", "opaque-ports", "proxy-uid", "proxy-log-level",
    "proxy-image", "proxy-init-image", "proxy-cpu-request", "proxy-cpu-limit", "proxy-memory-request",
    "proxy-memory-limit",
  ]

  static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

  public init() {}

  /// The effective settings: `namespace`'s config annotations, overridden by `pod`'s.
  public init(namespace: [String: String], pod: [String: String]) throws(InjectError) {
    var merged: [String: (value: String, source: String)] = [:]
    for (source, annotations) in [("namespace", namespace), ("pod", pod)] {
      for (key, value) in annotations where key.hasPrefix(InjectAnnotations.configPrefix) {
        merged[String(key.dropFirst(InjectAnnotations.configPrefix.count))] = (value, source)
      }
    }
    for (key, entry) in merged.sorted(by: { $0.key < $1.key }) {
      let (value, source) = entry
      func bad(_ expected: String) -> InjectError {
        .invalidAnnotation("\(InjectAnnotations.configPrefix)\(key): '\(value)' (on the \(source)) is not \(expected)")
      }
      func portList() throws(InjectError) -> [String] {
        guard let ports = Self.ports(value) else { throw bad("a list of ports or ranges (e.g. 25,3306,8000-8100)") }
        return ports
      }
      switch key {
      case "skip-inbound-ports": skipInboundPorts = try portList()
      case "skip-outbound-ports": skipOutboundPorts = try portList()
      case "opaque-ports": opaquePorts = try portList()
      case "skip-subnets":
        guard let subnets = Self.subnets(value) else { throw bad("a list of CIDR subnets (e.g. 10.0.0.0/8)") }
        skipSubnets = subnets
      case "proxy-uid":
        guard let uid = Int(value.trimmingCharacters(in: .whitespaces)), uid > 0 else { throw bad("a user ID above 0") }
        proxyUID = uid
      case "proxy-log-level":
        guard Self.logLevels.contains(value) else { throw bad("a log level (\(Self.logLevels.joined(separator: ", ")))") }
        proxyLogLevel = value
      case "proxy-image", "proxy-init-image":
        guard !value.isEmpty, !value.contains(where: \.isWhitespace) else { throw bad("an image reference") }
        if key == "proxy-image" { proxyImage = value } else { proxyInitImage = value }
      case "proxy-cpu-request", "proxy-cpu-limit", "proxy-memory-request", "proxy-memory-limit":
        guard Self.isQuantity(value) else { throw bad("a Kubernetes quantity (e.g. 100m, 64Mi)") }
        switch key {
        case "proxy-cpu-request": proxyCPURequest = value
        case "proxy-cpu-limit": proxyCPULimit = value
        case "proxy-memory-request": proxyMemoryRequest = value
        default: proxyMemoryLimit = value
        }
      default:
        throw InjectError.invalidAnnotation(
          "\(InjectAnnotations.configPrefix)\(key) (on the \(source)) is not a config annotation; known: "
            + Self.keys.joined(separator: ", "))
      }
    }
  }

  /// `80,443,8000-8100` as its items, or nil if one is not a port (1-65535) or an ascending range.
  static func ports(_ text: String) -> [String]? {
    var items: [String] = []
    for raw in text.split(separator: ",") {
      let item = raw.trimmingCharacters(in: .whitespaces)
      if item.isEmpty { continue }
      let bounds = item.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
      guard bounds.count <= 2, bounds.allSatisfy({ $0 != nil && (1...65535).contains($0!) }) else { return nil }
      if bounds.count == 2, bounds[0]! > bounds[1]! { return nil }
      items.append(item)
    }
    return items
  }

  /// `10.0.0.0/8,fd00::/8` as its items, or nil if one is not an IPv4 or IPv6 CIDR.
  static func subnets(_ text: String) -> [String]? {
    var items: [String] = []
    for raw in text.split(separator: ",") {
      let item = raw.trimmingCharacters(in: .whitespaces)
      if item.isEmpty { continue }
      let parts = item.split(separator: "/", omittingEmptySubsequences: false)
      guard parts.count == 2, let prefix = Int(parts[1]) else { return nil }
      if parts[0].contains(":") {
        guard (0...128).contains(prefix), parts[0].allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return nil }
      } else {
        let octets = parts[0].split(separator: ".", omittingEmptySubsequences: false).map { Int($0) }
        guard (0...32).contains(prefix), octets.count == 4, octets.allSatisfy({ $0 != nil && (0...255).contains($0!) }) else {
          return nil
        }
      }
      items.append(item)
    }
    return items
  }

  /// A Kubernetes resource quantity: a decimal number with an optional SI or binary suffix.
  static func isQuantity(_ text: String) -> Bool {
    let suffixes = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", ""]
    guard let suffix = suffixes.first(where: { text.hasSuffix($0) }) else { return false }
    let number = text.dropLast(suffix.count)
    let pieces = number.split(separator: ".", omittingEmptySubsequences: false)
    return !number.isEmpty && pieces.count <= 2 && pieces.allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }
  }
}
