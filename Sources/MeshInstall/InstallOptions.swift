public import MeshCore

/// What `meshctl install` is asked for. The defaults install SwiftMesh `PackageVersion.current` from
/// `ghcr.io/swiftmesh` into a cluster whose DNS domain is `cluster.local`, one replica per component.
public struct InstallOptions: Sendable, Hashable {
  /// Which objects to render: Linkerd's `install --crds`, then `install`.
  public enum Scope: String, Sendable, Hashable, CaseIterable {
    /// The CustomResourceDefinitions only.
    case crds
    /// Everything but the CustomResourceDefinitions.
    case controlPlane
    /// The CustomResourceDefinitions first, then everything else.
    case all
  }

  /// Where the images are: `<registry>/mesh-proxy:<version>` and so on. Default `ghcr.io/swiftmesh`.
  public var imageRegistry = "ghcr.io/swiftmesh"
  /// The images' tag. Default `PackageVersion.current`.
  public var version = PackageVersion.current
  /// This cluster's name in the mesh (what other clusters call it: `meshctl multicluster link
  /// --cluster-name`). Nil: the name the issuer certificate records (`meshctl identity issuer --cluster-name`).
  public var clusterName: String? = nil
  /// The cluster's DNS domain (services are `<name>.<namespace>.svc.<domain>`). Default `cluster.local`.
  public var clusterDomain = "cluster.local"
  /// Three replicas of identity, destination, the injector and the gateway, one per node (required
  /// anti-affinity), each with a PodDisruptionBudget. Default false: one replica each.
  public var highAvailability = false
  public var scope = Scope.all

  public init() {}

  public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
    var options = Self()
    configure(&options)
    return options
  }

  /// Replicas of a component that scales with `highAvailability`.
  var replicas: Int { highAvailability ? 3 : 1 }

  /// `<registry>/<name>:<version>`.
  func image(_ name: String) -> String { "\(imageRegistry)/\(name):\(version)" }

  /// Throws, naming the flag and the value, when a value cannot go into the manifests as given.
  public func validate() throws(MeshError) {
    let registryCharacters = imageRegistry.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || "._-/:".contains($0)) }
    guard !imageRegistry.isEmpty, registryCharacters, !imageRegistry.hasSuffix("/"), !imageRegistry.hasPrefix("/") else {
      throw .invalidArgument(
        "--image-registry '\(imageRegistry)' is not a registry path (lowercase letters, digits, '.', '-', '_', ':', '/', e.g. ghcr.io/swiftmesh)")
    }
    let tagCharacters = version.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
    guard !version.isEmpty, version.count <= 128, tagCharacters, version.first != ".", version.first != "-" else {
      throw .invalidArgument("--version '\(version)' is not an image tag (letters, digits, '.', '-', '_', at most 128)")
    }
    if let clusterName { try Self.validateClusterName(clusterName) }
    do {
      _ = try TrustDomain(clusterDomain)
    } catch {
      throw .invalidArgument("--cluster-domain '\(clusterDomain)' is not a DNS domain: \(error.message)")
    }
  }

  /// A cluster name is one DNS label (RFC 1123): mirrors are called `<service>-<cluster-name>`.
  static func validateClusterName(_ name: String) throws(MeshError) {
    let characters = name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }
    guard !name.isEmpty, name.count <= 63, characters, name.first != "-", name.last != "-" else {
      throw .invalidArgument(
        "--cluster-name '\(name)' is not a DNS label (lowercase letters, digits and '-', at most 63, e.g. east)")
    }
  }
}
