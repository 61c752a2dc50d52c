import MeshCore
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOPosix
import Synchronization

/// Keeps the proxy from forwarding to itself.
///
/// Two defences, as Linkerd has them:
/// - **Addresses.** The proxy knows the addresses its listeners are bound to (outbound, inbound, admin, tap,
///   gateway). A target that is one of them (an IP literal checked before connecting; a name checked by the
///   address the connection reached) is refused with `loop detected` at once, instead of the request
///   coming back to the listener and being forwarded again, thousands of times.
/// - **A hop header.** Loops that no address check can see (two proxies sending a service to each other, a
///   mirror pointing back through its own gateway) end at the first repeat: each proxy adds its own random
///   token to `swiftmesh-via` on every request it forwards and refuses a request that already carries its
///   token, or more than ``maxHops`` tokens. The inbound side removes the header before the application,
///   so an application that calls back through the mesh starts a fresh chain.
final class LoopGuard: Sendable {
  /// The hop header.
  static let headerName = "swiftmesh-via"
  /// The most proxies one request may pass (a request normally crosses 2, 3 through a gateway).
  static let maxHops = 16

  /// This proxy's token in ``headerName``: random per process.
  let token: String

  private struct Listeners {
    /// Ports bound on a wildcard address (0.0.0.0, ::): any local address with that port is this proxy.
    var wildcardPorts: Set<Int> = []
    /// Ports bound on one address, with that address.
    var boundPorts: [Int: Set<String>] = [:]
    /// The machine's own addresses (interfaces), for wildcard listeners.
    var localAddresses: Set<String> = []
    var allPorts: Set<Int> = []
  }
  private let listeners = Mutex(Listeners())

  init() {
    token = "p" + String(UInt64.random(in: 1...UInt64.max), radix: 36)
  }

  /// Records a bound listener.
  func add(listener address: SocketAddress?) {
    guard let address, let port = address.port, let ip = address.ipAddress else { return }
    let normalized = Self.normalize(ip)
    let wildcard = normalized == "0.0.0.0" || normalized == "::"
    let interfaces: Set<String> =
      wildcard
      ? Set(((try? System.enumerateDevices()) ?? []).compactMap { $0.address?.ipAddress }.map(Self.normalize))
      : []
    listeners.withLock { state in
      state.allPorts.insert(port)
      if wildcard {
        state.wildcardPorts.insert(port)
        state.localAddresses.formUnion(interfaces)
      } else {
        state.boundPorts[port, default: []].insert(normalized)
      }
    }
  }

  /// Records a listener of this process known by its configured address (an IP literal; names are ignored).
  func add(listener authority: Authority) {
    guard authority.isIPAddress else { return }
    add(listener: try? SocketAddress(ipAddress: authority.host, port: authority.port))
  }

  /// Whether `host:port` is one of this proxy's listeners. Names are judged by the caller once connected
  /// (``isSelf(_:)`` with the connection's remote address); `localhost` is judged here.
  func isSelf(host: String, port: Int) -> Bool {
    listeners.withLock { state in
      guard state.allPorts.contains(port) else { return false }
      let host = host == "localhost" ? "127.0.0.1" : Self.normalize(host)
      // Connecting to the unspecified address reaches this host: whatever listens on the port locally.
      if host == "0.0.0.0" || host == "::" { return true }
      if state.boundPorts[port]?.contains(host) == true { return true }
      guard state.wildcardPorts.contains(port) else { return false }
      return Self.isLoopback(host) || state.localAddresses.contains(host)
    }
  }

  func isSelf(_ authority: Authority) -> Bool { isSelf(host: authority.host, port: authority.port) }

  func isSelf(_ address: SocketAddress?) -> Bool {
    guard let address, let ip = address.ipAddress, let port = address.port else { return false }
    return isSelf(host: ip, port: port)
  }

  /// Checks the request's hop header and adds this proxy's token; a loop is an error. `also` is added in the
  /// same step: the headers share their storage with the request as it arrived, so each addition on its own
  /// copied them all.
  func stamp(_ headers: inout HTTPHeaders, also field: (name: String, value: String)? = nil) throws(ProxyError) {
    try check(headers)
    if let field {
      headers.add(contentsOf: [(Self.headerName, token), field])
    } else {
      headers.add(name: Self.headerName, value: token)
    }
  }

  /// Checks the request's hop header without adding this proxy's token: for a request whose HTTP/2 header
  /// block gets the token as it is made (``HopFields``), so that its headers are not copied to add it.
  func check(_ headers: HTTPHeaders) throws(ProxyError) {
    if headers.contains(name: Self.headerName) {
      let existing = headers[Self.headerName]
      var hops = 0
      for value in existing {
        for item in value.split(separator: ",") {
          let hop = item.trimmingSpaces()
          if hop == token {
            throw ProxyError(.loopDetected, "the request already passed this proxy (\(Self.headerName): \(existing.joined(separator: ", ")))")
          }
          hops += 1
        }
      }
      if hops >= Self.maxHops {
        throw ProxyError(.loopDetected, "the request passed \(hops) proxies (limit \(Self.maxHops))")
      }
    }
  }

  private static func normalize(_ ip: String) -> String {
    var ip = ip.lowercased()
    if ip.hasPrefix("::ffff:"), ip.contains(".") { ip.removeFirst(7) }
    return ip
  }

  private static func isLoopback(_ ip: String) -> Bool { ip.hasPrefix("127.") || ip == "::1" }
}

/// The fields the client proxy adds to a request it sends over a mesh HTTP/2 stream: its hop token and, for
/// an HTTP/1 request, the original-protocol mark. Appended to the stream's header block as it is made
/// (``HTTP2ClientStreamState``), instead of to the request's `HTTPHeaders`, whose storage the request as it
/// arrived shares: adding them there copied every field (about 2,500 instructions a request).
struct HopFields: Sendable {
  let token: String
  let markHTTP1: Bool

  func append(to fields: inout [(String, String)]) {
    fields.append((LoopGuard.headerName, token))
    if markHTTP1 { fields.append((MeshHeaders.origProto, "HTTP/1.1")) }
  }
}

extension Substring {
  fileprivate func trimmingSpaces() -> Substring {
    var text = self
    while text.first == " " { text.removeFirst() }
    while text.last == " " { text.removeLast() }
    return text
  }
}
