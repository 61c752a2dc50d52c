public import MeshKube

/// Headless services (a StatefulSet's): an exported headless Service whose endpoints have hostnames is
/// mirrored as a headless `<name>-<cluster>` whose endpoints keep the hostnames, plus one *endpoint mirror*
/// per hostname, `<hostname>-<cluster>`: a ClusterIP Service behind the gateway standing for
/// `<hostname>.<name>.<namespace>.svc.<remote-domain>` (which the target's destination service resolves to
/// that one pod). The headless mirror's endpoint for a hostname is the endpoint mirror's cluster IP, so
/// `<hostname>.<name>-<cluster>.<namespace>.svc.<domain>` resolves to it and the traffic goes through the
/// gateway to the right pod. A headless Service without hostnames is mirrored as an ordinary ClusterIP mirror.
extension MirrorPlanner {
  /// One endpoint of a remote headless service that has a hostname.
  public struct HostnameEndpoint: Sendable, Hashable {
    public var hostname: String
    /// Ready (or serving while terminating) in the target.
    public var ready: Bool
    public init(hostname: String, ready: Bool) {
      self.hostname = hostname
      self.ready = ready
    }
  }

  /// An endpoint mirror and the cluster IP it was given (nil until created).
  public struct EndpointMirror: Sendable, Hashable {
    public var hostname: String
    public var clusterIP: String?
    public var ready: Bool
    public init(hostname: String, clusterIP: String?, ready: Bool) {
      self.hostname = hostname
      self.clusterIP = clusterIP
      self.ready = ready
    }
  }

  public static func isHeadless(_ service: KubeService) -> Bool { service.spec?.clusterIP == "None" }

  /// The hostnames of a remote service's endpoints (sorted, each once; ready when any of its endpoints is).
  public static func hostnames(slices: [EndpointSlice]) -> [HostnameEndpoint] {
    var ready: [String: Bool] = [:]
    for slice in slices {
      for endpoint in slice.endpoints {
        guard let hostname = endpoint.hostname, !hostname.isEmpty else { continue }
        let isReady = endpoint.conditions?.ready ?? true
        let serving = endpoint.conditions?.serving ?? isReady
        ready[hostname] = (ready[hostname] ?? false) || isReady || (serving && endpoint.conditions?.terminating == true)
      }
    }
    return ready.keys.sorted().map { HostnameEndpoint(hostname: $0, ready: ready[$0]!) }
  }

  /// The same from v1 Endpoints.
  public static func hostnames(endpoints: Endpoints?) -> [HostnameEndpoint] {
    var ready: [String: Bool] = [:]
    for subset in endpoints?.subsets ?? [] {
      for address in subset.addresses ?? [] { if let h = address.hostname, !h.isEmpty { ready[h] = true } }
      for address in subset.notReadyAddresses ?? [] {
        if let h = address.hostname, !h.isEmpty { ready[h] = ready[h] ?? false }
      }
    }
    return ready.keys.sorted().map { HostnameEndpoint(hostname: $0, ready: ready[$0]!) }
  }

  /// `<hostname>-<targetClusterName>`.
  public func endpointMirrorName(hostname: String) -> String { settings.mirrorName(of: hostname) }

  /// `<hostname>.<name>.<namespace>.svc.<targetClusterDomain>`.
  public func endpointRemoteFQName(of remote: KubeService, hostname: String) -> String {
    "\(hostname).\(settings.remoteFQName(name: remote.name, namespace: remote.namespace ?? "default"))"
  }

  /// The headless mirror Service: as `service(for:)`, with `clusterIP: None`.
  public func headlessService(for remote: KubeService) -> KubeService {
    var mirror = service(for: remote)
    mirror.spec?.clusterIP = "None"
    return mirror
  }

  /// Labels of an endpoint mirror's objects: which headless mirror it belongs to.
  public func endpointMirrorLabels(of remote: KubeService) -> [String: String] {
    [MirrorMetadata.headlessMirrorLabel: settings.mirrorName(of: remote.name)]
  }

  /// The endpoint mirror Service for `hostname`: a ClusterIP Service with the remote's ports.
  public func endpointMirrorService(for remote: KubeService, hostname: String) -> KubeService {
    var mirror = service(for: remote)
    mirror.metadata.name = endpointMirrorName(hostname: hostname)
    mirror.metadata.labels?.merge(endpointMirrorLabels(of: remote)) { $1 }
    mirror.metadata.annotations?[MirrorMetadata.remoteFQNameAnnotation] = endpointRemoteFQName(of: remote, hostname: hostname)
    return mirror
  }

  /// The endpoint mirror's slices: the gateway, ready when that pod is and the gateway is alive.
  public func endpointMirrorSlices(
    for remote: KubeService, hostname: String, ready: Bool, gatewayAlive: Bool
  ) -> [EndpointSlice] {
    gatewaySlices(
      for: remote, mirrorName: endpointMirrorName(hostname: hostname),
      remoteFQName: endpointRemoteFQName(of: remote, hostname: hostname), extraLabels: endpointMirrorLabels(of: remote),
      remoteReady: ready, gatewayAlive: gatewayAlive)
  }

  /// The endpoint mirror's v1 Endpoints.
  public func endpointMirrorEndpoints(
    for remote: KubeService, hostname: String, ready: Bool, gatewayAlive: Bool
  ) -> Endpoints {
    gatewayEndpoints(
      for: remote, mirrorName: endpointMirrorName(hostname: hostname),
      remoteFQName: endpointRemoteFQName(of: remote, hostname: hostname), extraLabels: endpointMirrorLabels(of: remote),
      remoteReady: ready, gatewayAlive: gatewayAlive)
  }

  /// The headless mirror's slices: per endpoint mirror with a cluster IP, that IP with the hostname, on the
  /// remote service's ports; ready when the pod is and the gateway is alive.
  public func headlessSlices(
    for remote: KubeService, members: [EndpointMirror], gatewayAlive: Bool
  ) -> [EndpointSlice] {
    let namespace = remote.namespace ?? "default"
    let mirrorName = settings.mirrorName(of: remote.name)
    let labels = [
      MirrorMetadata.mirroredServiceLabel: "true",
      MirrorMetadata.clusterNameLabel: settings.targetClusterName,
      EndpointSlice.serviceNameLabel: mirrorName,
      EndpointSlice.managedByLabel: MirrorMetadata.endpointSliceManager,
    ]
    let annotations = [
      MirrorMetadata.remoteFQNameAnnotation: settings.remoteFQName(name: remote.name, namespace: namespace)
    ]
    let ports = (remote.spec?.ports ?? []).map {
      EndpointSlice.Port(name: $0.name ?? "", port: $0.port, protocol: $0.protocol ?? "TCP")
    }
    let placed = members.compactMap { member in member.clusterIP.map { (member, $0) } }
    let families: [(type: String, suffix: String, members: [(EndpointMirror, String)])] = [
      ("IPv4", "ipv4", placed.filter { !$0.1.contains(":") }),
      ("IPv6", "ipv6", placed.filter { $0.1.contains(":") }),
    ]
    return families.filter { !$0.members.isEmpty }.map { family in
      EndpointSlice(
        metadata: ObjectMeta(
          name: Self.sliceName(mirror: mirrorName, suffix: family.suffix), namespace: namespace, labels: labels,
          annotations: annotations),
        addressType: family.type,
        endpoints: family.members.map { member, ip in
          let ready = member.ready && gatewayAlive
          return EndpointSlice.Endpoint(
            addresses: [ip], conditions: .init(ready: ready, serving: ready, terminating: false), hostname: member.hostname)
        },
        ports: ports)
    }
  }

  /// The headless mirror's v1 Endpoints (one subset; addresses with hostnames).
  public func headlessEndpoints(for remote: KubeService, members: [EndpointMirror], gatewayAlive: Bool) -> Endpoints {
    let namespace = remote.namespace ?? "default"
    let labels = [
      MirrorMetadata.mirroredServiceLabel: "true",
      MirrorMetadata.clusterNameLabel: settings.targetClusterName,
    ]
    let annotations = [
      MirrorMetadata.remoteFQNameAnnotation: settings.remoteFQName(name: remote.name, namespace: namespace)
    ]
    let ports = (remote.spec?.ports ?? []).map { Endpoints.Port(name: $0.name, port: $0.port, protocol: $0.protocol ?? "TCP") }
    var ready: [Endpoints.Address] = []
    var notReady: [Endpoints.Address] = []
    for member in members {
      guard let ip = member.clusterIP else { continue }
      let address = Endpoints.Address(ip: ip, hostname: member.hostname)
      if member.ready && gatewayAlive { ready.append(address) } else { notReady.append(address) }
    }
    let subsets = ready.isEmpty && notReady.isEmpty || ports.isEmpty
      ? []
      : [Endpoints.Subset(addresses: ready.isEmpty ? nil : ready, notReadyAddresses: notReady.isEmpty ? nil : notReady, ports: ports)]
    return Endpoints(
      metadata: ObjectMeta(
        name: settings.mirrorName(of: remote.name), namespace: namespace, labels: labels, annotations: annotations),
      subsets: subsets)
  }
}
