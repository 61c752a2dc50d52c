public import ArgumentParser

/// The mesh settings injection writes into pods, as command-line options: one definition for
/// `mesh-controller injector` and `meshctl inject --manual`, so both give the same pod.
public struct InjectOptions: ParsableArguments, Sendable {
  @Option(help: "The control plane's namespace.")
  public var controlPlaneNamespace = InjectConfiguration().controlPlaneNamespace
  @Option(help: "The trust domain identities end in.")
  public var trustDomain = InjectConfiguration().trustDomain
  @Option(help: "The cluster's DNS domain.")
  public var clusterDomain = InjectConfiguration().clusterDomain
  @Option(help: "The proxy version (annotation and default image tags).")
  public var proxyVersion = InjectConfiguration().proxyVersion
  @Option(help: "The proxy image (default ghcr.io/swiftmesh/mesh-proxy:VERSION).")
  public var proxyImage: String?
  @Option(help: "The init container's image (default ghcr.io/swiftmesh/mesh-proxy-init:VERSION).")
  public var proxyInitImage: String?

  public init() {}

  /// The configuration these options give, with the trust anchors `trustRootsPEM`.
  public func configuration(trustRootsPEM: String) -> InjectConfiguration {
    .defaults {
      $0.trustRootsPEM = trustRootsPEM
      $0.controlPlaneNamespace = controlPlaneNamespace
      $0.trustDomain = trustDomain
      $0.clusterDomain = clusterDomain
      $0.proxyVersion = proxyVersion
      $0.proxyImage = proxyImage
      $0.proxyInitImage = proxyInitImage
    }
  }
}
