import MeshCore
public import MeshKube

/// What the mirror of one remote Service should look like: pure functions of the Link's settings, the remote
/// Service and Endpoints, and the gateway's liveness. `ServiceMirror` compares the result with what is in the
/// source cluster and writes only the difference.
public struct MirrorPlanner: Sendable {
  public var settings: LinkSettings
  /// The gateway's IP addresses the mirrors' endpoints hold: the Link's IP entries until the mirror has
  /// resolved its names (and followed the gateway Service), then what that gave.
  public var gatewayIPs: [String]

  public init(settings: LinkSettings, gatewayIPs: [String]? = nil) {
    self.settings = settings
    self.gatewayIPs = gatewayIPs ?? settings.gatewayAddresses.filter {
      if case .ip = try? GatewayAddress(parsing: $0) { true } else { false }
    }
  }

  /// The mirror Service of `remote`: remote labels and annotations minus the mesh's own, plus the mirror
  /// labels and annotations; the remote ports (name, number, protocol, appProtocol); no selector.
  public func service(for remote: KubeService) -> KubeService {
    let namespace = remote.namespace ?? "default"
    var labels = Self.copyable(remote.metadata.labels)
    labels[MirrorMetadata.mirroredServiceLabel] = "true"
    labels[MirrorMetadata.clusterNameLabel] = settings.targetClusterName
    var annotations = Self.copyable(remote.metadata.annotations)
    annotations[MirrorMetadata.remoteFQNameAnnotation] = settings.remoteFQName(name: remote.name, namespace: namespace)
    annotations[MirrorMetadata.remoteResourceVersionAnnotation] = remote.metadata.resourceVersion ?? ""
    let ports = (remote.spec?.ports ?? []).map { port in
      var copy = KubeService.Port(name: port.name, port: port.port, protocol: port.protocol ?? "TCP")
      copy.appProtocol = port.appProtocol
      return copy
    }
    return KubeService(
      metadata: ObjectMeta(
        name: settings.mirrorName(of: remote.name), namespace: namespace, labels: labels, annotations: annotations),
      spec: .init(type: "ClusterIP", ports: ports))
  }

  /// The mirror's Endpoints: one subset with every gateway address and, for each Service port (named as the
  /// Service names it), the gateway port. No ready remote endpoint: no subset at all. Gateway dead: the
  /// addresses are not ready.
  public func endpoints(for remote: KubeService, remoteEndpoints: Endpoints?, gatewayAlive: Bool) -> Endpoints {
    endpoints(for: remote, remoteReady: Self.hasReadyAddress(remoteEndpoints), gatewayAlive: gatewayAlive)
  }

  /// The mirror's Endpoints, given whether the remote service has a ready endpoint (however it was read).
  public func endpoints(for remote: KubeService, remoteReady: Bool, gatewayAlive: Bool) -> Endpoints {
    gatewayEndpoints(
      for: remote, mirrorName: settings.mirrorName(of: remote.name),
      remoteFQName: settings.remoteFQName(name: remote.name, namespace: remote.namespace ?? "default"),
      extraLabels: [:], remoteReady: remoteReady, gatewayAlive: gatewayAlive)
  }

  /// Endpoints pointing at the gateway for mirror `mirrorName` standing for `remoteFQName`.
  func gatewayEndpoints(
    for remote: KubeService, mirrorName: String, remoteFQName: String, extraLabels: [String: String],
    remoteReady: Bool, gatewayAlive: Bool
  ) -> Endpoints {
    let namespace = remote.namespace ?? "default"
    var labels = [
      MirrorMetadata.mirroredServiceLabel: "true",
      MirrorMetadata.clusterNameLabel: settings.targetClusterName,
    ]
    labels.merge(extraLabels) { $1 }
    var annotations = [MirrorMetadata.remoteFQNameAnnotation: remoteFQName]
    if let identity = settings.gatewayIdentity {
      annotations[MirrorMetadata.gatewayIdentityAnnotation] = identity.description
    }
    var subsets: [Endpoints.Subset] = []
    let ports = (remote.spec?.ports ?? []).map {
      Endpoints.Port(name: $0.name, port: settings.gatewayPort, protocol: $0.protocol ?? "TCP")
    }
    if remoteReady, !ports.isEmpty, !gatewayIPs.isEmpty {
      let addresses = gatewayIPs.map { Endpoints.Address(ip: $0) }
      subsets.append(
        gatewayAlive
          ? Endpoints.Subset(addresses: addresses, ports: ports)
          : Endpoints.Subset(notReadyAddresses: addresses, ports: ports))
    }
    return Endpoints(
      metadata: ObjectMeta(name: mirrorName, namespace: namespace, labels: labels, annotations: annotations),
      subsets: subsets)
  }

  /// Whether any subset has a ready address.
  public static func hasReadyAddress(_ endpoints: Endpoints?) -> Bool {
    (endpoints?.subsets ?? []).contains { !($0.addresses ?? []).isEmpty }
  }

  /// Remote labels or annotations without the mesh's own (`mirror.swiftmesh.io/...`) and kubectl's.
  static func copyable(_ map: [String: String]?) -> [String: String] {
    (map ?? [:]).filter { !$0.key.hasPrefix(MirrorMetadata.prefix) && !MirrorMetadata.notCopied.contains($0.key) }
  }

  // MARK: - Comparison

  /// Whether the mirror Service in the cluster already says what `desired` says (labels, annotations, ports).
  public static func matches(_ current: KubeService, _ desired: KubeService) -> Bool {
    (current.metadata.labels ?? [:]) == (desired.metadata.labels ?? [:])
      && (current.metadata.annotations ?? [:]) == (desired.metadata.annotations ?? [:])
      && normalized(current.spec?.ports) == normalized(desired.spec?.ports)
  }

  /// Whether the mirror Endpoints in the cluster already say what `desired` says.
  public static func matches(_ current: Endpoints, _ desired: Endpoints) -> Bool {
    (current.metadata.labels ?? [:]) == (desired.metadata.labels ?? [:])
      && (current.metadata.annotations ?? [:]) == (desired.metadata.annotations ?? [:])
      && normalized(current.subsets) == normalized(desired.subsets)
  }

  /// `current` with `desired`'s labels, annotations and ports (everything else, e.g. clusterIP, kept).
  public static func applying(_ desired: KubeService, to current: KubeService) -> KubeService {
    var updated = current
    updated.metadata.labels = desired.metadata.labels ?? [:]
    updated.metadata.annotations = desired.metadata.annotations ?? [:]
    var spec = updated.spec ?? .init()
    spec.ports = desired.spec?.ports ?? []
    updated.spec = spec
    return updated
  }

  /// `current` with `desired`'s labels, annotations and subsets.
  public static func applying(_ desired: Endpoints, to current: Endpoints) -> Endpoints {
    var updated = current
    updated.metadata.labels = desired.metadata.labels ?? [:]
    updated.metadata.annotations = desired.metadata.annotations ?? [:]
    updated.subsets = desired.subsets ?? []
    return updated
  }

  struct PortKey: Hashable {
    var name: String
    var port: Int
    var proto: String
    var appProtocol: String
  }

  static func normalized(_ ports: [KubeService.Port]?) -> [PortKey] {
    (ports ?? []).map { PortKey(name: $0.name ?? "", port: $0.port, proto: $0.protocol ?? "TCP", appProtocol: $0.appProtocol ?? "") }
  }

  struct SubsetKey: Hashable {
    var ready: [String]
    var notReady: [String]
    var ports: [PortKey]
  }

  static func normalized(_ subsets: [Endpoints.Subset]?) -> [SubsetKey] {
    (subsets ?? []).map { subset in
      SubsetKey(
        ready: (subset.addresses ?? []).map { "\($0.ip)#\($0.hostname ?? "")" },
        notReady: (subset.notReadyAddresses ?? []).map { "\($0.ip)#\($0.hostname ?? "")" },
        ports: (subset.ports ?? []).map { PortKey(name: $0.name ?? "", port: $0.port, proto: $0.protocol ?? "TCP", appProtocol: "") })
    }.filter { !$0.ready.isEmpty || !$0.notReady.isEmpty }
  }
}
