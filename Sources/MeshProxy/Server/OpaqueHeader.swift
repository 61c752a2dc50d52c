public import MeshCore
public import NIOCore

/// The line a proxy writes first on an opaque (non-HTTP) connection it carries to a peer proxy inside mutual
/// TLS, so the receiving side knows where the bytes go:
///
///     swiftmesh-opaque/1 <target-port>[ <authority>]\r\n
///
/// - `target-port`: the port the client asked for (the application port of the pod behind the peer proxy);
///   the peer's inbound side delivers to that port on its pod's loopback.
/// - `authority` (`host:port`): set when the connection goes through a multi-cluster gateway, which resolves
///   it to the local service it names, as it routes HTTP requests by their authority.
///
/// Only a meshed client (mutual TLS) is believed: the header is read after the handshake, never on plaintext.
public struct OpaqueHeader: Sendable, Hashable, CustomStringConvertible {
  public static let prefix: [UInt8] = Array("swiftmesh-opaque/1 ".utf8)
  /// The longest header accepted (a DNS name of 253 bytes, a port, the prefix, spaces and CRLF fit).
  public static let maximumLength = 320

  public var targetPort: Int
  public var authority: Authority?

  public init(targetPort: Int, authority: Authority? = nil) {
    self.targetPort = targetPort
    self.authority = authority
  }

  public var description: String {
    "swiftmesh-opaque/1 \(targetPort)" + (authority.map { " \($0)" } ?? "")
  }

  /// The header's bytes, CRLF included.
  public func encoded(allocator: ByteBufferAllocator = .init()) -> ByteBuffer {
    allocator.buffer(string: description + "\r\n")
  }

  /// What the start of a connection says about a header.
  public enum Parse: Sendable, Equatable {
    /// Not a header: the connection is something else (HTTP, say).
    case notHeader
    /// A prefix of a header so far: wait for more bytes.
    case incomplete
    /// A header, `length` bytes long (CRLF included).
    case header(OpaqueHeader, length: Int)
    /// It starts like a header but is not a valid one: the reason.
    case invalid(String)
  }

  /// Reads a header at the start of `buffer` without consuming it.
  public static func parse(_ buffer: ByteBuffer) -> Parse {
    let available = buffer.readableBytes
    let compared = min(available, prefix.count)
    guard buffer.readableBytesView.prefix(compared).elementsEqual(prefix.prefix(compared)) else {
      return .notHeader
    }
    let view = buffer.readableBytesView
    guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
      return available > maximumLength ? .invalid("no end of line within \(maximumLength) bytes") : .incomplete
    }
    let length = view.distance(from: view.startIndex, to: newline) + 1
    guard length <= maximumLength, length >= prefix.count + 3,
      view[view.index(before: newline)] == UInt8(ascii: "\r")
    else { return .invalid("malformed opaque header line") }
    let fields = String(decoding: view[view.startIndex.advanced(by: prefix.count)..<view.index(before: newline)], as: UTF8.self)
      .split(separator: " ", omittingEmptySubsequences: false)
    guard (1...2).contains(fields.count), let port = Int(fields[0]), (1...65_535).contains(port) else {
      return .invalid("opaque header needs a target port in 1-65535: '\(fields.joined(separator: " "))'")
    }
    var header = OpaqueHeader(targetPort: port)
    if fields.count == 2 {
      guard let authority = try? Authority(String(fields[1])), authority.port > 0 else {
        return .invalid("opaque header authority is not host:port: '\(fields[1])'")
      }
      header.authority = authority
    }
    return .header(header, length: length)
  }
}
