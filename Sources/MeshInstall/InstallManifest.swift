public import MeshCore

/// Everything one cluster needs, as Kubernetes objects in apply order: `meshctl install`'s output.
///
/// The parts, in order: the CRDs; the namespaces and the install's values; RBAC; identity (with the issuer
/// Secret and the trust-roots ConfigMaps); destination; the proxy injector (with its serving certificate and
/// the MutatingWebhookConfiguration); the multi-cluster gateway; the service mirror. Rendering is a pure
/// function of the options and the key material: the same inputs give the same bytes.
public struct InstallManifest: Sendable {
  /// A group of objects; `Examples/kubernetes/NN-<part>.yaml` holds one each.
  public enum Part: String, Sendable, CaseIterable {
    case crds, namespaces, rbac, identity, destination, injector, gateway, mirror

    /// The file name in `Examples/kubernetes`: `00-crds.yaml` ... `07-mirror.yaml`.
    public var fileName: String {
      let index = Self.allCases.firstIndex(of: self)!
      return "0\(index)-\(rawValue).yaml"
    }
  }

  /// The key material an install puts in the cluster.
  public struct KeyMaterial: Sendable, Hashable {
    public var issuer: IssuerMaterial
    public var webhook: WebhookMaterial

    /// `--issuer-dir` (checked), and the injector's certificate from `injectorDirectory` (generated and
    /// written there when it holds none) or, without one, freshly generated.
    public static func load(issuerDirectory: String, injectorDirectory: String? = nil) throws(MeshError) -> Self {
      let issuer = try IssuerMaterial.load(directory: issuerDirectory)
      guard let injectorDirectory else { return Self(issuer: issuer, webhook: try WebhookMaterial.generate()) }
      return Self(issuer: issuer, webhook: try WebhookMaterial.loadOrGenerate(directory: injectorDirectory))
    }
  }

  public let options: InstallOptions
  /// The objects of each part in `options.scope`, in apply order.
  public let parts: [(part: Part, objects: [ManifestObject])]

  /// The manifest for `options`. `material` is required unless the scope is `.crds`; `--cluster-name` must
  /// agree with the cluster the issuer names, if it names one.
  public init(options: InstallOptions, material: KeyMaterial?) throws(MeshError) {
    try options.validate()
    let values: Values
    if options.scope == .crds {
      values = Values(options: options, clusterName: options.clusterName ?? "", trustDomain: .clusterLocal, material: material)
    } else {
      guard let material else {
        throw .invalidConfiguration("--issuer-dir is required (the issuer this cluster's identity service signs with)")
      }
      values = try Values(options: options, material: material)
    }
    self.init(options: options, values: values)
  }

  private init(options: InstallOptions, values: Values) {
    self.options = options
    let scoped: [Part]
    switch options.scope {
    case .crds: scoped = [.crds]
    case .controlPlane: scoped = Part.allCases.filter { $0 != .crds }
    case .all: scoped = Part.allCases
    }
    parts = scoped.map { ($0, values.objects($0)) }
  }

  /// Every object, in apply order.
  public var objects: [ManifestObject] { parts.flatMap(\.objects) }

  /// The objects as one multi-document YAML stream.
  public var yaml: String { Self.stream(objects.map(\.yaml)) }

  /// What `meshctl uninstall` prints for `kubectl delete --ignore-not-found -f -`: every object
  /// `meshctl install` may create in `scope` (with `--ha` or without), named only; the webhook first (no pod
  /// waits for a departing injector), then the rest in reverse apply order (the CRDs last).
  public static func uninstallYAML(scope: InstallOptions.Scope) -> String {
    // The names do not depend on the key material, the registry or the domains: render with none.
    let options = InstallOptions.defaults {
      $0.scope = scope
      $0.highAvailability = true
    }
    let values = Values(options: options, clusterName: "", trustDomain: .clusterLocal, material: nil)
    let reversed = InstallManifest(options: options, values: values).objects.reversed()
    let webhooks = reversed.filter { $0.kind == "MutatingWebhookConfiguration" }
    return stream((webhooks + reversed.filter { $0.kind != "MutatingWebhookConfiguration" }).map(\.referenceYAML))
  }

  static func stream(_ documents: [String]) -> String {
    documents.joined(separator: "---\n")
  }
}

/// The values the objects are rendered from.
struct Values: Sendable {
  static let controlPlaneNamespace = IdentityName.defaultControlPlaneNamespace
  static let multiclusterNamespace = "swiftmesh-multicluster"

  var options: InstallOptions
  var clusterName: String
  var trustDomain: TrustDomain
  /// Nil only when rendering names (uninstall) or the CRDs.
  var material: InstallManifest.KeyMaterial?

  init(options: InstallOptions, clusterName: String, trustDomain: TrustDomain, material: InstallManifest.KeyMaterial?) {
    self.options = options
    self.clusterName = clusterName
    self.trustDomain = trustDomain
    self.material = material
  }

  init(options: InstallOptions, material: InstallManifest.KeyMaterial) throws(MeshError) {
    let issuerCluster = material.issuer.clusterName
    switch (options.clusterName, issuerCluster) {
    case (let given?, let issued?) where given != issued:
      throw .invalidConfiguration(
        "--cluster-name \(given), but the issuer was made for cluster \(issued) (meshctl identity issuer --cluster-name): use that issuer's cluster or its name")
    case (let given?, _):
      clusterName = given
    case (nil, let issued?):
      try InstallOptions.validateClusterName(issued)
      clusterName = issued
    case (nil, nil):
      throw .invalidConfiguration(
        "--cluster-name is required: the issuer names no cluster (meshctl identity issuer --cluster-name records one)")
    }
    self.options = options
    self.trustDomain = material.issuer.trustDomain
    self.material = material
  }

  func objects(_ part: InstallManifest.Part) -> [ManifestObject] {
    switch part {
    case .crds: InstallManifest.crds
    case .namespaces: namespaces
    case .rbac: rbac
    case .identity: identity
    case .destination: destination
    case .injector: injector
    case .gateway: gateway
    case .mirror: mirror
    }
  }

  /// `<service>.<namespace>.svc.<cluster-domain>`.
  func serviceHost(_ service: String, _ namespace: String) -> String {
    "\(service).\(namespace).svc.\(options.clusterDomain)"
  }

  /// The mesh identity of a component's ServiceAccount.
  func identity(_ serviceAccount: String, _ namespace: String) -> String {
    "\(serviceAccount).\(namespace).serviceaccount.identity.\(Self.controlPlaneNamespace).\(trustDomain.name)"
  }
}
