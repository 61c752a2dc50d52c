/// One address a logical destination resolves to, with what a proxy needs to talk to it: how much
/// traffic it should get, whom to expect on the other side of TLS, which protocol it speaks, and
/// which authority to send when it is a gateway.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
  /// What the endpoint is known to speak.
  public struct ProtocolHint: Hashable, Sendable, CustomStringConvertible {
    private enum Wrapped: Hashable, Sendable { case unknown, http2 }
    private let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// Nothing known: speak what the application speaks.
    public static let unknown = ProtocolHint(.unknown)
    /// A mesh proxy that accepts HTTP/2 (HTTP/1 may be carried over it).
    public static let http2 = ProtocolHint(.http2)

    public var description: String {
      switch wrapped {
      case .unknown: "unknown"
      case .http2: "h2"
      }
    }
  }

  /// The weight an endpoint gets unless told otherwise.
  public static let defaultWeight: UInt32 = 10_000

  /// The IP address and port to connect to.
  public var address: Authority
  /// Relative weight (default 10000).
  public var weight: UInt32
  /// The identity the endpoint presents; nil means it is not meshed (no mesh TLS).
  public var tlsIdentity: IdentityName?
  public var protocolHint: ProtocolHint
  /// When set, the authority to send instead of the original one (a multi-cluster gateway).
  public var authorityOverride: Authority?
  /// Labels for this endpoint's metrics (`pod`, `serviceaccount`, `target_cluster`, ...).
  public var metricLabels: [String: String]
  /// For a meshed pod: the port of its proxy's inbound listener, where opaque (non-HTTP) connections go
  /// (inside mutual TLS, naming `address`'s port in their header); nil: to `address`.
  public var opaqueInboundPort: Int?
  /// Of a federated service: a linked cluster's gateway, used only while no other endpoint can take a
  /// request (local affinity).
  public var isFallback: Bool = false

  /// Where an opaque connection to this endpoint connects.
  public var opaqueAddress: Authority {
    guard let port = opaqueInboundPort, let proxy = try? Authority(host: address.host, port: port) else { return address }
    return proxy
  }

  public init(
    address: Authority, weight: UInt32 = Endpoint.defaultWeight, tlsIdentity: IdentityName? = nil,
    protocolHint: ProtocolHint = .unknown, authorityOverride: Authority? = nil, metricLabels: [String: String] = [:],
    opaqueInboundPort: Int? = nil
  ) {
    self.opaqueInboundPort = opaqueInboundPort
    self.address = address
    self.weight = weight
    self.tlsIdentity = tlsIdentity
    self.protocolHint = protocolHint
    self.authorityOverride = authorityOverride
    self.metricLabels = metricLabels
  }

  public var description: String {
    var parts = ["\(address)", "weight=\(weight)"]
    if let tlsIdentity { parts.append("identity=\(tlsIdentity)") }
    if protocolHint != .unknown { parts.append("protocol=\(protocolHint)") }
    if let authorityOverride { parts.append("authority-override=\(authorityOverride)") }
    if let opaqueInboundPort { parts.append("opaque-inbound-port=\(opaqueInboundPort)") }
    if isFallback { parts.append("fallback") }
    return parts.joined(separator: " ")
  }
}

/// A complete snapshot of what a destination resolves to: whether it exists, and its endpoints
/// (sorted by address). An existing destination may have no endpoints.
public struct EndpointSet: Hashable, Sendable, CustomStringConvertible {
  /// Whether the destination is known (a service of the cluster).
  public var exists: Bool
  /// The endpoints, sorted by address.
  public var endpoints: [Endpoint]

  public init(exists: Bool, endpoints: [Endpoint] = []) {
    self.exists = exists
    self.endpoints = endpoints.sorted { Self.precedes($0.address, $1.address) }
  }

  /// A destination the cluster does not know.
  public static let doesNotExist = EndpointSet(exists: false)

  /// The addresses, in order.
  public var addresses: [Authority] { endpoints.map(\.address) }

  public var description: String {
    guard exists else { return "(does not exist)" }
    return endpoints.isEmpty ? "(no endpoints)" : endpoints.map(\.description).joined(separator: ", ")
  }

  /// Address order: by host text, then port.
  public static func precedes(_ a: Authority, _ b: Authority) -> Bool {
    a.host == b.host ? a.port < b.port : a.host < b.host
  }
}
