public import MeshKube

/// Federated services: a Service labelled `mirror.swiftmesh.io/federated: member` in several linked clusters
/// gives, in each, `<name>-federated`: one EndpointSlice of the local members' endpoints (direct; written by
/// `FederatedLocalMirror`) and, per linked cluster with a member, one slice of that cluster's gateway with the
/// remote authority (written by that Link's `ServiceMirror`), labelled with the cluster. The destination
/// service answers the local endpoints while any is ready, the gateways otherwise (local affinity).
extension MirrorPlanner {
  public static func isFederatedMember(_ service: KubeService) -> Bool {
    service.metadata.labels?[MirrorMetadata.federatedLabel] == "member"
  }

  /// The federated Service `<name>-federated` with `ports` (name, port, protocol, appProtocol; a local member's
  /// target ports are kept so its pods' slices match).
  public static func federatedService(name: String, namespace: String, ports: [KubeService.Port]) -> KubeService {
    KubeService(
      metadata: ObjectMeta(
        name: MirrorMetadata.federatedName(of: name), namespace: namespace,
        labels: [MirrorMetadata.federatedServiceLabel: "true"]),
      spec: .init(type: "ClusterIP", ports: ports))
  }

  /// Ports as compared across clusters: name, number and protocol.
  public static func federationPorts(_ ports: [KubeService.Port]?) -> [String] {
    (ports ?? []).map { "\($0.name ?? "")/\($0.port)/\($0.protocol ?? "TCP")" }.sorted()
  }

  /// This Link's slices of `<name>-federated`: the gateway, for `remote` (a member in the target cluster).
  public func federatedSlices(for remote: KubeService, remoteReady: Bool, gatewayAlive: Bool) -> [EndpointSlice] {
    let federated = MirrorMetadata.federatedName(of: remote.name)
    return gatewaySlices(
      for: remote, mirrorName: federated,
      remoteFQName: settings.remoteFQName(name: remote.name, namespace: remote.namespace ?? "default"),
      extraLabels: [
        MirrorMetadata.federatedClusterLabel: settings.targetClusterName, MirrorMetadata.federatedServiceLabel: "true",
      ],
      remoteReady: remoteReady, gatewayAlive: gatewayAlive
    ).map { slice in
      var copy = slice
      copy.metadata.labels?[MirrorMetadata.mirroredServiceLabel] = nil
      let family = String(slice.name.dropFirst(federated.count + 1))
      copy.metadata.name = "\(federated)-\(settings.targetClusterName)-\(family)"
      return copy
    }
  }
}
