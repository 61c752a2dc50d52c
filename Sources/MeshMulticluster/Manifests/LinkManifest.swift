import Foundation
public import MeshKube

/// What `meshctl multicluster link` learns about a target cluster's gateway, from flags or from the
/// gateway Service `swiftmesh-gateway` in the target's `swiftmesh-multicluster` namespace:
///
/// - addresses: `status.loadBalancer.ingress[].ip` or `.hostname` (a cloud load balancer's DNS name), else `spec.externalIPs`, else the annotation
///   `mirror.swiftmesh.io/gateway-addresses` (comma separated);
/// - port: the Service port named `mc-gateway` (default 4143); probe port: the one named `mc-probe` (4191);
/// - identity: annotation `mirror.swiftmesh.io/gateway-identity`;
/// - probe path and period: annotations `mirror.swiftmesh.io/probe-path`, `mirror.swiftmesh.io/probe-period`.
public struct GatewayValues: Sendable, Hashable {
  public var addresses: [String] = []
  public var port: Int?
  public var identity: String?
  public var probePort: Int?
  public var probePath: String?
  public var probePeriod: String?

  public init() {}

  /// Reads the gateway Service through `client` (the target cluster).
  public static func read(
    from client: KubeClient, namespace: String = MirrorMetadata.multiclusterNamespace,
    name: String = MirrorMetadata.gatewayServiceName
  ) async throws -> GatewayValues {
    let service: KubeService
    do {
      service = try await client.get(KubeService.self, name: name, namespace: namespace)
    } catch let error as KubeError where error.isNotFound {
      throw MulticlusterError.invalidLink(
        "the target cluster has no gateway Service \(namespace)/\(name); install the gateway or pass --gateway-addresses, --gateway-port and --gateway-identity")
    }
    return GatewayValues(service: service)
  }

  /// The values a gateway Service carries.
  public init(service: KubeService) {
    let raw = service.metadata.originalObject
    let ingress = raw?["status"]?["loadBalancer"]?["ingress"]?.arrayValue ?? []
    addresses = ingress.compactMap { entry -> String? in
      if let ip = entry["ip"]?.stringValue, !ip.isEmpty { return ip }
      if let hostname = entry["hostname"]?.stringValue, !hostname.isEmpty { return hostname }
      return nil
    }
    if addresses.isEmpty {
      addresses = (raw?["spec"]?["externalIPs"]?.arrayValue ?? []).compactMap(\.stringValue)
    }
    let annotations = service.metadata.annotations ?? [:]
    if addresses.isEmpty, let list = annotations[MirrorMetadata.gatewayAddressesAnnotation] {
      addresses = list.split(separator: ",").map { String($0).trimmingSpaces }.filter { !$0.isEmpty }
    }
    let ports = service.spec?.ports ?? []
    port = ports.first { $0.name == MirrorMetadata.gatewayPortName }?.port
    probePort = ports.first { $0.name == MirrorMetadata.probePortName }?.port
    identity = annotations[MirrorMetadata.gatewayIdentityAnnotation]
    probePath = annotations[MirrorMetadata.probePathAnnotation]
    probePeriod = annotations[MirrorMetadata.probePeriodAnnotation]
  }
}

/// The manifests `meshctl multicluster link` prints: the credentials Secret and the Link, to apply on the
/// source cluster.
public struct LinkManifest: Sendable {
  public var clusterName: String
  public var namespace: String = MirrorMetadata.multiclusterNamespace
  public var clusterDomain: String = LinkSettings.defaultClusterDomain
  /// The target's kubeconfig, stored verbatim in the Secret (key `kubeconfig`).
  public var kubeconfig: String
  public var gateway: GatewayValues
  public var selector: LabelSelector = MirrorMetadata.defaultSelector
  /// Whether the mirror follows the target's gateway Service (false: the Link is annotated
  /// `mirror.swiftmesh.io/follow-gateway-service: "false"` and keeps its own addresses). Default true.
  public var followGatewayService = true

  public init(clusterName: String, kubeconfig: String, gateway: GatewayValues) {
    self.clusterName = clusterName
    self.kubeconfig = kubeconfig
    self.gateway = gateway
  }

  public var secret: Secret {
    Secret(
      metadata: ObjectMeta(
        name: MirrorMetadata.credentialsSecretName(cluster: clusterName), namespace: namespace,
        labels: [MirrorMetadata.clusterNameLabel: clusterName]),
      type: MirrorMetadata.credentialsSecretType,
      data: [MirrorMetadata.kubeconfigKey: Data(kubeconfig.utf8)])
  }

  public var link: Link {
    var probe = Link.ProbeSpec(
      path: gateway.probePath ?? ProbeSettings().path, port: gateway.probePort ?? ProbeSettings().port,
      period: gateway.probePeriod ?? "3s", timeout: "30s", failureThreshold: ProbeSettings().failureThreshold)
    if probe.path?.isEmpty == true { probe.path = ProbeSettings().path }
    return Link(
      metadata: ObjectMeta(
        name: clusterName, namespace: namespace,
        annotations: followGatewayService ? nil : [MirrorMetadata.followGatewayServiceAnnotation: "false"]),
      spec: .init(
        targetClusterName: clusterName, targetClusterDomain: clusterDomain,
        clusterCredentialsSecret: MirrorMetadata.credentialsSecretName(cluster: clusterName),
        gatewayAddresses: gateway.addresses, gatewayPort: gateway.port ?? LinkSettings.defaultGatewayPort,
        gatewayIdentity: gateway.identity, probeSpec: probe, selector: selector))
  }

  /// Checks the Link the manifests would create, as the mirror will.
  public func validate() throws(MulticlusterError) {
    _ = try LinkSettings(link: link)
  }

  /// The YAML: the Secret, `---`, the Link.
  public func yaml() throws -> String {
    try KubeManifest.yaml([try KubeCodec.encode(secret), try KubeCodec.encode(link)])
  }

  /// The YAML of what `unlink` removes (the Link first: its mirrors go with it; then its Secret).
  public static func unlinkYAML(clusterName: String, namespace: String = MirrorMetadata.multiclusterNamespace) throws -> String {
    let link: JSONValue = [
      "apiVersion": .string(Link.apiVersion), "kind": .string(Link.kind),
      "metadata": ["name": .string(clusterName), "namespace": .string(namespace)],
    ]
    let secret: JSONValue = [
      "apiVersion": "v1", "kind": "Secret",
      "metadata": [
        "name": .string(MirrorMetadata.credentialsSecretName(cluster: clusterName)), "namespace": .string(namespace),
      ],
    ]
    return try KubeManifest.yaml([link, secret])
  }
}
