import MeshCore
public import MeshKube

/// Mirrors as EndpointSlices, and remote services followed through theirs.
///
/// Why the mirror writes EndpointSlices itself rather than Endpoints for kube's endpointslice-mirroring
/// controller to turn into slices: a mirror Service has no selector, so no controller makes slices for
/// it unless something does. The mirroring controller would, but only on a real cluster that runs it
/// (not on the embedded API the demo and tests use, nor on a cluster where it is disabled), only after
/// an extra asynchronous hop, and only from the `v1` Endpoints API that Kubernetes deprecated in 1.33.
/// Written directly, the slice carries the gateway's readiness in `conditions` and is what kube-proxy
/// and the destination service read, on any cluster that serves `discovery.k8s.io/v1`. The slices are
/// labelled `endpointslice.kubernetes.io/managed-by: service-mirror.swiftmesh.io`, so kube's own
/// EndpointSlice controllers leave them alone. `ServiceMirror.Configuration.endpointsAPI = .endpoints`
/// writes Endpoints instead, for clusters without EndpointSlices.
extension MirrorPlanner {
  /// The slices of a mirror: one per address family of the gateway addresses (`<mirror>-ipv4`,
  /// `<mirror>-ipv6`; a slice holds one address type), each with the gateway addresses of that family
  /// and, for each Service port (named as the Service names it), the gateway port. No serving remote
  /// endpoint (`remoteReady` false) or no port: no endpoints. Gateway dead: the endpoints are neither
  /// ready nor serving.
  public func endpointSlices(for remote: KubeService, remoteReady: Bool, gatewayAlive: Bool) -> [EndpointSlice] {
    gatewaySlices(
      for: remote, mirrorName: settings.mirrorName(of: remote.name),
      remoteFQName: settings.remoteFQName(name: remote.name, namespace: remote.namespace ?? "default"),
      extraLabels: [:], remoteReady: remoteReady, gatewayAlive: gatewayAlive)
  }

  /// Slices pointing at the gateway for mirror `mirrorName` standing for `remoteFQName`.
  func gatewaySlices(
    for remote: KubeService, mirrorName: String, remoteFQName: String, extraLabels: [String: String],
    remoteReady: Bool, gatewayAlive: Bool
  ) -> [EndpointSlice] {
    let namespace = remote.namespace ?? "default"
    var labels = [
      MirrorMetadata.mirroredServiceLabel: "true",
      MirrorMetadata.clusterNameLabel: settings.targetClusterName,
      EndpointSlice.serviceNameLabel: mirrorName,
      EndpointSlice.managedByLabel: MirrorMetadata.endpointSliceManager,
    ]
    labels.merge(extraLabels) { $1 }
    var annotations = [MirrorMetadata.remoteFQNameAnnotation: remoteFQName]
    if let identity = settings.gatewayIdentity {
      annotations[MirrorMetadata.gatewayIdentityAnnotation] = identity.description
    }
    let ports = (remote.spec?.ports ?? []).map {
      EndpointSlice.Port(name: $0.name ?? "", port: settings.gatewayPort, protocol: $0.protocol ?? "TCP")
    }
    let families: [(type: String, suffix: String, addresses: [String])] = [
      ("IPv4", "ipv4", gatewayIPs.filter { !$0.contains(":") }),
      ("IPv6", "ipv6", gatewayIPs.filter { $0.contains(":") }),
    ]
    return families.filter { !$0.addresses.isEmpty }.map { family in
      let conditions = EndpointSlice.Conditions(ready: gatewayAlive, serving: gatewayAlive, terminating: false)
      let endpoints = remoteReady && !ports.isEmpty
        ? family.addresses.map { EndpointSlice.Endpoint(addresses: [$0], conditions: conditions) }
        : []
      return EndpointSlice(
        metadata: ObjectMeta(
          name: Self.sliceName(mirror: mirrorName, suffix: family.suffix), namespace: namespace, labels: labels,
          annotations: annotations),
        addressType: family.type, endpoints: endpoints, ports: ports)
    }
  }

  static func sliceName(mirror: String, suffix: String) -> String { "\(mirror)-\(suffix)" }

  /// Whether any of a remote service's slices has an endpoint its destination service would serve:
  /// ready, or serving while terminating (the remote is draining, and still answers).
  public static func hasServingEndpoint(_ slices: [EndpointSlice]) -> Bool {
    slices.contains { slice in
      slice.endpoints.contains { endpoint in
        let ready = endpoint.conditions?.ready ?? true
        let serving = endpoint.conditions?.serving ?? ready
        return ready || (serving && endpoint.conditions?.terminating == true)
      }
    }
  }

  /// Whether the mirror slice in the cluster already says what `desired` says.
  public static func matches(_ current: EndpointSlice, _ desired: EndpointSlice) -> Bool {
    (current.metadata.labels ?? [:]) == (desired.metadata.labels ?? [:])
      && (current.metadata.annotations ?? [:]) == (desired.metadata.annotations ?? [:])
      && current.addressType == desired.addressType
      && normalized(current.endpoints) == normalized(desired.endpoints)
      && normalized(current.ports) == normalized(desired.ports)
  }

  /// `current` with `desired`'s labels, annotations, endpoints and ports (the address type of a slice
  /// cannot change; a family has its own slice name).
  public static func applying(_ desired: EndpointSlice, to current: EndpointSlice) -> EndpointSlice {
    var updated = current
    updated.metadata.labels = desired.metadata.labels ?? [:]
    updated.metadata.annotations = desired.metadata.annotations ?? [:]
    updated.endpoints = desired.endpoints
    updated.ports = desired.ports
    return updated
  }

  struct SliceEndpointKey: Hashable {
    var addresses: [String]
    var hostname: String
    var ready: Bool
    var serving: Bool
    var terminating: Bool
  }

  static func normalized(_ endpoints: [EndpointSlice.Endpoint]) -> [SliceEndpointKey] {
    endpoints.map {
      let ready = $0.conditions?.ready ?? true
      return SliceEndpointKey(
        addresses: $0.addresses, hostname: $0.hostname ?? "", ready: ready, serving: $0.conditions?.serving ?? ready,
        terminating: $0.conditions?.terminating ?? false)
    }
  }

  static func normalized(_ ports: [EndpointSlice.Port]?) -> [PortKey] {
    (ports ?? []).map {
      PortKey(name: $0.name ?? "", port: $0.port ?? 0, proto: $0.protocol ?? "TCP", appProtocol: $0.appProtocol ?? "")
    }
  }
}
