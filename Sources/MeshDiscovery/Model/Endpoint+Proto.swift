import Logging
public import MeshAPI
public import MeshCore

extension EndpointUpdate {
  /// The wire form.
  public var proto: Swiftmesh_Destination_Update {
    var update = Swiftmesh_Destination_Update()
    switch self {
    case .add(let endpoints):
      var set = Swiftmesh_Destination_WeightedAddrSet()
      set.addrs = endpoints.map(\.proto)
      update.add = set
    case .remove(let addresses):
      var set = Swiftmesh_Destination_AddrSet()
      set.addrs = addresses.map(Swiftmesh_Destination_TcpAddress.init)
      update.remove = set
    case .noEndpoints(let exists):
      var none = Swiftmesh_Destination_NoEndpoints()
      none.exists = exists
      update.noEndpoints = none
    }
    return update
  }

  /// Reads the wire form. Addresses that do not parse are an error naming them; an identity or
  /// authority override that does not parse is dropped from that endpoint and reported to `problem`.
  public init(
    proto update: Swiftmesh_Destination_Update, problem: (String) -> Void = { _ in }
  ) throws(DiscoveryError) {
    switch update.update {
    case .add(let set):
      var endpoints: [Endpoint] = []
      for addr in set.addrs {
        var endpoint = try Endpoint(proto: addr, problem: problem)
        for (key, value) in set.metricLabels where endpoint.metricLabels[key] == nil {
          endpoint.metricLabels[key] = value
        }
        endpoints.append(endpoint)
      }
      self = .add(endpoints)
    case .remove(let set):
      var addresses: [Authority] = []
      for addr in set.addrs { addresses.append(try Authority(proto: addr)) }
      self = .remove(addresses)
    case .noEndpoints(let none):
      self = .noEndpoints(exists: none.exists)
    case nil:
      throw .invalidResponse("update without add, remove or no_endpoints")
    }
  }
}

extension Swiftmesh_Destination_TcpAddress {
  init(_ authority: Authority) {
    self.init()
    ip = authority.host
    port = UInt32(authority.port)
  }
}

extension Authority {
  init(proto: Swiftmesh_Destination_TcpAddress) throws(DiscoveryError) {
    do {
      try self.init(host: proto.ip, port: Int(proto.port))
    } catch {
      throw .invalidResponse("invalid endpoint address '\(proto.ip):\(proto.port)': \(error.message)")
    }
    guard isIPAddress else { throw .invalidResponse("endpoint address '\(proto.ip)' is not an IP address") }
  }
}

extension Endpoint {
  /// The wire form.
  public var proto: Swiftmesh_Destination_WeightedAddr {
    var addr = Swiftmesh_Destination_WeightedAddr()
    addr.addr = Swiftmesh_Destination_TcpAddress(address)
    addr.weight = weight
    addr.metricLabels = metricLabels
    addr.tlsIdentity = tlsIdentity?.description ?? ""
    addr.protocolHint = protocolHint == .http2 ? .h2 : .unknown
    addr.authorityOverride = authorityOverride?.description ?? ""
    if let opaqueInboundPort { addr.opaqueTransport.inboundPort = UInt32(opaqueInboundPort) }
    addr.fallback = isFallback
    return addr
  }

  /// Reads the wire form (see `EndpointUpdate.init(proto:problem:)`).
  public init(proto addr: Swiftmesh_Destination_WeightedAddr, problem: (String) -> Void = { _ in }) throws(DiscoveryError) {
    let address = try Authority(proto: addr.addr)
    var identity: IdentityName?
    if !addr.tlsIdentity.isEmpty {
      do { identity = try IdentityName(addr.tlsIdentity) } catch {
        problem("endpoint \(address): ignoring TLS identity: \(error.message)")
      }
    }
    var override: Authority?
    if !addr.authorityOverride.isEmpty {
      do { override = try Authority(addr.authorityOverride) } catch {
        problem("endpoint \(address): ignoring authority override: \(error.message)")
      }
    }
    self.init(
      address: address, weight: addr.weight, tlsIdentity: identity,
      protocolHint: addr.protocolHint == .h2 ? .http2 : .unknown, authorityOverride: override,
      metricLabels: addr.metricLabels)
    isFallback = addr.fallback
    if addr.hasOpaqueTransport {
      let port = Int(addr.opaqueTransport.inboundPort)
      if (1...65_535).contains(port) {
        opaqueInboundPort = port
      } else {
        problem("endpoint \(address): ignoring opaque transport port \(port)")
      }
    }
  }
}
