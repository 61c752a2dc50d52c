import MeshCore
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where a connection redirected by iptables (`mesh-proxy-init`'s `REDIRECT` rules) was going before the
/// kernel turned it to the proxy's port: `SO_ORIGINAL_DST` (IPv4) and `IP6T_SO_ORIGINAL_DST` (IPv6), read
/// from the accepted socket.
enum OriginalDestination {
  /// The option's number for both families (`linux/netfilter_ipv4.h`, `linux/netfilter_ipv6/ip6_tables.h`).
  private static let optionName: SocketOptionName = 80

  /// What reading the original destination of `channel` (an accepted TCP connection) found.
  enum Lookup: Sendable, Equatable {
    /// The connection was redirected: it was going to this address.
    case redirected(Authority)
    /// The connection came straight to the listener (its original destination is the listener itself, or
    /// connection tracking has no entry for it): an application that names the proxy (`127.0.0.1:4140`), or a
    /// peer proxy that dials the inbound port.
    case direct
    /// The kernel could not say (no connection tracking for it, not a TCP/IP socket): the reason.
    case unreadable(String)
  }

  /// Reads the original destination of `channel`; on its event loop.
  static func lookup(_ channel: any Channel) -> EventLoopFuture<Lookup> {
    guard let provider = channel as? any SocketOptionProvider else {
      return channel.eventLoop.makeSucceededFuture(.unreadable("not a socket"))
    }
    let local = channel.localAddress
    let read: EventLoopFuture<Authority?>
    switch local {
    case .v4?:
      read = provider.unsafeGetSocketOption(level: SocketOptionLevel(IPPROTO_IP), name: optionName).map {
        (address: sockaddr_in) in Self.authority(SocketAddress(address, host: ""))
      }
    case .v6?:
      read = provider.unsafeGetSocketOption(level: SocketOptionLevel(IPPROTO_IPV6), name: optionName).map {
        (address: sockaddr_in6) in Self.authority(SocketAddress(address, host: ""))
      }
    default:
      return channel.eventLoop.makeSucceededFuture(.unreadable("not a TCP/IP connection"))
    }
    return read.map { original -> Lookup in
      guard let original else { return .unreadable("the kernel returned no address") }
      if let local, original.host == local.ipAddress, original.port == local.port { return .direct }
      return .redirected(original)
    }.recover { error in
      // No connection-tracking entry: nothing translated this connection's address, so it came straight here.
      if let error = error as? IOError, error.errnoCode == ENOENT { return .direct }
      return .unreadable("SO_ORIGINAL_DST: \(error)")
    }
  }

  private static func authority(_ address: SocketAddress) -> Authority? {
    guard let ip = address.ipAddress, let port = address.port else { return nil }
    return try? Authority(host: ip, port: port)
  }
}
