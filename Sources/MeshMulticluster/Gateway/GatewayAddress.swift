import MeshKube

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import MeshCore
import NIOPosix

/// One entry of a Link's `gatewayAddresses` (or of what the target's gateway Service publishes): an IP address
/// used as it is, or a DNS name the mirror resolves (a cloud load balancer's hostname).
public enum GatewayAddress: Sendable, Hashable, CustomStringConvertible {
  case ip(String)
  case name(String)

  /// Classifies `text`; the error says why it is neither an IP address nor a DNS name.
  public init(parsing text: String) throws(MulticlusterError) {
    let trimmed = text.trimmingSpaces
    if let ip = Self.normalizedIP(trimmed) {
      self = .ip(ip)
      return
    }
    if let problem = Self.nameProblem(trimmed) {
      throw .invalidGatewayAddress("'\(text)' is neither an IP address nor a DNS name (\(problem))")
    }
    var name = trimmed.lowercased()
    if name.hasSuffix(".") { name.removeLast() }
    self = .name(name)
  }

  public var description: String {
    switch self {
    case .ip(let ip): ip
    case .name(let name): name
    }
  }

  /// `text` as an IPv4 or IPv6 address in its canonical form, or nil.
  static func normalizedIP(_ text: String) -> String? {
    for family in [AF_INET, AF_INET6] {
      var storage = in6_addr()
      let parsed = withUnsafeMutableBytes(of: &storage) { inet_pton(family, text, $0.baseAddress) == 1 }
      guard parsed else { continue }
      var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
      let ok = withUnsafeBytes(of: &storage) { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) != nil }
      guard ok else { return nil }
      return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    return nil
  }

  /// Why `text` is not a DNS name (RFC 1123 labels), or nil.
  static func nameProblem(_ text: String) -> String? {
    var name = Substring(text)
    if name.hasSuffix(".") { name = name.dropLast() }
    if name.isEmpty { return "empty" }
    if name.utf8.count > 253 { return "longer than 253 characters" }
    let labels = name.split(separator: ".", omittingEmptySubsequences: false)
    for label in labels {
      if label.isEmpty { return "empty label" }
      if label.utf8.count > 63 { return "label '\(label)' is longer than 63 characters" }
      let allowed = label.utf8.allSatisfy {
        ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z"))
          || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: "-")
      }
      if !allowed { return "only letters, digits, '-' and '.' are allowed" }
      if label.first == "-" || label.last == "-" { return "label '\(label)' starts or ends with '-'" }
    }
    if labels.allSatisfy({ $0.allSatisfy(\.isNumber) }) { return "all-numeric, but not a valid IPv4 address" }
    return nil
  }

  /// Splits entries into usable addresses (in order, without duplicates) and the problems of the others.
  public static func parse(_ entries: [String]) -> (addresses: [GatewayAddress], problems: [String]) {
    var addresses: [GatewayAddress] = []
    var problems: [String] = []
    for entry in entries {
      do {
        let address = try GatewayAddress(parsing: entry)
        if !addresses.contains(address) { addresses.append(address) }
      } catch {
        problems.append(error.message)
      }
    }
    return (addresses, problems)
  }
}

/// Resolves gateway names to IP addresses. The mirror's default asks the system resolver (`getaddrinfo`);
/// tests inject one they control.
public protocol GatewayResolver: Sendable {
  /// Every IP address `name` resolves to (IPv4 and IPv6); throws when it does not resolve.
  func resolve(_ name: String) async throws -> [String]
}

/// Why a gateway name did not resolve.
public struct GatewayResolutionError: Error, Sendable, CustomStringConvertible {
  public var name: String
  public var reason: String
  public init(name: String, reason: String) {
    self.name = name
    self.reason = reason
  }
  public var description: String { "'\(name)' does not resolve: \(reason)" }
}

/// `getaddrinfo` on NIO's blocking thread pool.
public struct SystemGatewayResolver: GatewayResolver {
  public init() {}

  public func resolve(_ name: String) async throws -> [String] {
    try await NIOThreadPool.singleton.runIfActive { try Self.lookup(name) }
  }

  static func lookup(_ name: String) throws -> [String] {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    #if canImport(Darwin)
    hints.ai_socktype = SOCK_STREAM
    #else
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    #endif
    var result: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(name, nil, &hints, &result)
    guard status == 0, let first = result else {
      throw GatewayResolutionError(name: name, reason: String(cString: gai_strerror(status)))
    }
    defer { freeaddrinfo(first) }
    var addresses: [String] = []
    var cursor: UnsafeMutablePointer<addrinfo>? = first
    while let info = cursor {
      var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
      if let address = info.pointee.ai_addr {
        switch info.pointee.ai_family {
        case AF_INET:
          address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { v4 in
            var ip = v4.pointee.sin_addr
            _ = inet_ntop(AF_INET, &ip, &buffer, socklen_t(buffer.count))
          }
        case AF_INET6:
          address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { v6 in
            var ip = v6.pointee.sin6_addr
            _ = inet_ntop(AF_INET6, &ip, &buffer, socklen_t(buffer.count))
          }
        default:
          break
        }
      }
      let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
      if !text.isEmpty, !addresses.contains(text) { addresses.append(text) }
      cursor = info.pointee.ai_next
    }
    guard !addresses.isEmpty else { throw GatewayResolutionError(name: name, reason: "no IPv4 or IPv6 address") }
    return addresses
  }
}

/// What the gateway's addresses are now: the Link's entries, or what the target's gateway Service publishes
/// (when it publishes any and the Link follows it), with names replaced by the IPs they resolved to. A name
/// that stops resolving keeps its last known IPs. Pure state; `ServiceMirror` runs the resolution.
struct GatewayAddressBook: Sendable, Hashable {
  /// Usable entries in effect, and where they came from.
  var sources: [GatewayAddress] = []
  var sourceDescription = "the Link"
  /// Entries that are neither IPs nor names.
  var invalid: [String] = []
  /// Last IPs each name resolved to.
  var lastKnown: [String: [String]] = [:]
  /// Names whose last resolution failed, and why.
  var unresolved: [String: String] = [:]

  /// Chooses the entries: the gateway Service's when it publishes any, else the Link's.
  mutating func choose(link: [String], service published: [String]?) {
    if let published, !published.isEmpty {
      let parsed = GatewayAddress.parse(published)
      invalid = parsed.problems.map { "gateway Service: \($0)" }
      sources = parsed.addresses
      sourceDescription = "the target's gateway Service"
      if sources.isEmpty {
        // Nothing usable published: the Link's entries still hold.
        let fromLink = GatewayAddress.parse(link)
        sources = fromLink.addresses
        invalid += fromLink.problems
        sourceDescription = "the Link (the gateway Service publishes nothing usable)"
      }
    } else {
      let parsed = GatewayAddress.parse(link)
      sources = parsed.addresses
      invalid = parsed.problems
      sourceDescription = "the Link"
    }
    let names = Set(sources.compactMap { if case .name(let n) = $0 { n } else { nil } })
    lastKnown = lastKnown.filter { names.contains($0.key) }
    unresolved = unresolved.filter { names.contains($0.key) }
  }

  var names: [String] { sources.compactMap { if case .name(let n) = $0 { n } else { nil } } }

  mutating func record(_ name: String, _ result: Result<[String], GatewayResolutionError>) {
    switch result {
    case .success(let ips):
      lastKnown[name] = ips
      unresolved[name] = nil
    case .failure(let failure):
      unresolved[name] = failure.reason
    }
  }

  /// Every IP in effect, in the order of the entries, without duplicates.
  var ips: [String] {
    var out: [String] = []
    for source in sources {
      switch source {
      case .ip(let ip): if !out.contains(ip) { out.append(ip) }
      case .name(let name): for ip in lastKnown[name] ?? [] where !out.contains(ip) { out.append(ip) }
      }
    }
    return out
  }

  /// The `GatewayResolved` condition: (status, reason, message).
  var condition: (status: Bool, reason: String, message: String) {
    let resolved = names.filter { lastKnown[$0] != nil && unresolved[$0] == nil }
      .map { "\($0) -> \(lastKnown[$0]!.joined(separator: ","))" }
    var problems: [String] = []
    for name in names.sorted() {
      guard let reason = unresolved[name] else { continue }
      if let kept = lastKnown[name] {
        problems.append("'\(name)' does not resolve (\(reason)); keeping its last known addresses \(kept.joined(separator: ","))")
      } else {
        problems.append("'\(name)' does not resolve (\(reason)) and has no last known address")
      }
    }
    problems += invalid.map { "\($0); ignored" }
    let current = ips
    let inUse = current.isEmpty ? "no gateway address is usable" : "gateway addresses in use: \(current.joined(separator: ","))"
    let detail = resolved.isEmpty ? "" : " (\(resolved.joined(separator: "; ")))"
    if current.isEmpty {
      return (false, MulticlusterError.Code.noGatewayAddress.reason,
              "\(inUse), from \(sourceDescription); " + problems.joined(separator: "; "))
    }
    if !invalid.isEmpty && unresolved.isEmpty {
      return (false, MulticlusterError.Code.invalidGatewayAddress.reason,
              problems.joined(separator: "; ") + "; \(inUse)\(detail), from \(sourceDescription)")
    }
    if !problems.isEmpty {
      return (false, MulticlusterError.Code.gatewayNameNotResolved.reason,
              problems.joined(separator: "; ") + "; \(inUse)\(detail), from \(sourceDescription)")
    }
    return (true, "Resolved", "\(inUse)\(detail), from \(sourceDescription)")
  }
}
