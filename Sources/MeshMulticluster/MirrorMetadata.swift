public import MeshKube

/// The names multi-cluster objects carry: labels and annotations of mirrors, the gateway Service a target
/// cluster publishes, and the credentials Secret a Link names.
public enum MirrorMetadata {
  /// Every label and annotation the mesh owns on mirrors starts with this; remote ones with it are not copied.
  public static let prefix = "mirror.swiftmesh.io/"
  /// On a Service in the target cluster: `"true"` exports it (the selector `meshctl multicluster link` writes).
  public static let exportedLabel = "mirror.swiftmesh.io/exported"
  /// On a mirror Service and its EndpointSlices (or Endpoints): `"true"`.
  public static let mirroredServiceLabel = "mirror.swiftmesh.io/mirrored-service"
  /// On a mirror Service and its EndpointSlices (or Endpoints): the Link's `targetClusterName`.
  public static let clusterNameLabel = "mirror.swiftmesh.io/cluster-name"
  /// On a mirror Service (and its EndpointSlices or Endpoints): `<name>.<namespace>.svc.<targetClusterDomain>`.
  public static let remoteFQNameAnnotation = "mirror.swiftmesh.io/remote-svc-fq-name"
  /// On a mirror Service: the resourceVersion of the remote Service it was made from.
  public static let remoteResourceVersionAnnotation = "mirror.swiftmesh.io/remote-resource-version"
  /// On a mirror's EndpointSlices or Endpoints (what discovery reads), and on the gateway Service: the
  /// gateway's identity.
  public static let gatewayIdentityAnnotation = "mirror.swiftmesh.io/gateway-identity"
  /// On an endpoint mirror (`<hostname>-<cluster>`, one per named endpoint of a headless service) and its
  /// EndpointSlices or Endpoints: the name of the headless mirror it belongs to.
  public static let headlessMirrorLabel = "mirror.swiftmesh.io/headless-mirror-svc-name"
  /// On a Service in any linked cluster: `"member"` makes it a member of the federated service
  /// `<name>-federated` (in every cluster: the local members' endpoints, and each linked cluster's gateway).
  public static let federatedLabel = "mirror.swiftmesh.io/federated"
  /// On a federated Service `<name>-federated` and its EndpointSlices: `"true"`.
  public static let federatedServiceLabel = "mirror.swiftmesh.io/federated-service"
  /// On the EndpointSlices of a federated service that point at a linked cluster's gateway: that cluster's
  /// name (the slice of the local members has none).
  public static let federatedClusterLabel = "mirror.swiftmesh.io/federated-cluster"
  /// `<name>-federated`.
  public static func federatedName(of name: String) -> String { "\(name)-federated" }
  /// The `endpointslice.kubernetes.io/managed-by` value of mirror EndpointSlices (kube's controllers
  /// leave slices managed by others alone).
  public static let endpointSliceManager = "service-mirror.swiftmesh.io"
  /// Annotations kubectl owns; never copied onto a mirror (kubectl apply would take the mirror for its own).
  public static let notCopied: Set<String> = ["kubectl.kubernetes.io/last-applied-configuration"]

  /// The gateway Service a target cluster publishes: `swiftmesh-gateway` in `swiftmesh-multicluster`.
  public static let gatewayServiceName = "swiftmesh-gateway"
  /// The namespace of the gateway Service, of Links and of their credentials Secrets (the CLI default).
  public static let multiclusterNamespace = "swiftmesh-multicluster"
  /// Gateway Service port names: traffic, and the probe (the gateway's admin port).
  public static let gatewayPortName = "mc-gateway"
  public static let probePortName = "mc-probe"
  /// Gateway Service annotations for the probe.
  public static let probePathAnnotation = "mirror.swiftmesh.io/probe-path"
  public static let probePeriodAnnotation = "mirror.swiftmesh.io/probe-period"
  /// Gateway Service annotation listing the gateway's addresses (comma separated), used when the Service has
  /// no `status.loadBalancer.ingress` and no `spec.externalIPs`.
  public static let gatewayAddressesAnnotation = "mirror.swiftmesh.io/gateway-addresses"

  /// On a Link: `"false"` keeps the Link's own `gatewayAddresses` even when the target's gateway Service
  /// publishes others (`meshctl multicluster link --gateway-addresses` writes it).
  public static let followGatewayServiceAnnotation = "mirror.swiftmesh.io/follow-gateway-service"
  /// The Lease each Link's mirror renews in the Link's namespace while it runs (`service-mirror-<link>`);
  /// its annotation `gatewayReportAnnotation` carries the gateway's state as JSON.
  public static func heartbeatLeaseName(link: String) -> String { "service-mirror-\(link)" }
  public static let gatewayReportAnnotation = "mirror.swiftmesh.io/gateway-report"

  /// The Secret holding the target's kubeconfig: its type and the data key.
  public static let credentialsSecretType = "mirror.swiftmesh.io/remote-kubeconfig"
  public static let kubeconfigKey = "kubeconfig"
  /// The credentials Secret name the CLI writes for a target cluster.
  public static func credentialsSecretName(cluster: String) -> String { "cluster-credentials-\(cluster)" }

  /// The selector the CLI writes: `mirror.swiftmesh.io/exported=true`.
  public static let defaultSelector = LabelSelector(matchLabels: [exportedLabel: "true"])

  /// The label selector of every mirror (Service, Endpoints and EndpointSlices) of one target cluster.
  public static func mirrorSelector(cluster: String) -> String {
    "\(mirroredServiceLabel)=true,\(clusterNameLabel)=\(cluster)"
  }

  /// The label selector of the mirror EndpointSlices the service mirror wrote for one target cluster. Slices
  /// that kube's endpointslice-mirroring controller makes from mirror Endpoints (with `endpointsAPI =
  /// .endpoints` on a real cluster) carry the mirror labels too, but are that controller's: never touched.
  public static func mirrorSliceSelector(cluster: String) -> String {
    "\(mirrorSelector(cluster: cluster)),\(EndpointSlice.managedByLabel)=\(endpointSliceManager)"
  }
}
