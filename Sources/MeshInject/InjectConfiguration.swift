import Foundation
import Crypto

/// What the mesh puts into every pod it injects: images, where the control plane is, the trust anchors and
/// the proxy's defaults. Per-pod changes come from config annotations (`ProxyConfigAnnotations`).
public struct InjectConfiguration: Sendable, Hashable {
  /// The control plane's namespace: part of every identity name and of the service addresses below.
  /// Default `swiftmesh`.
  public var controlPlaneNamespace = "swiftmesh"
  /// The trust domain identities end in. Default `cluster.local`.
  public var trustDomain = "cluster.local"
  /// The cluster's DNS domain, for the control plane's service names. Default `cluster.local`.
  public var clusterDomain = "cluster.local"
  /// The version recorded in `swiftmesh.io/proxy-version` and used in the default image tags. Default `0.1.0`.
  public var proxyVersion = "0.1.0"
  /// The sidecar's image (runs `mesh-proxy`). Default `ghcr.io/swiftmesh/mesh-proxy:<proxyVersion>`.
  public var proxyImage: String?
  /// The init container's image (runs `mesh-proxy-init`). Default `ghcr.io/swiftmesh/mesh-proxy-init:<proxyVersion>`.
  public var proxyInitImage: String?
  /// The trust anchors (PEM) the proxy verifies the identity service and its peers with. Required.
  public var trustRootsPEM = ""
  /// The identity service, HOST:PORT. Default `swiftmesh-identity.<ns>.svc.<domain>:8080`.
  public var identityServer: String?
  /// The destination service, HOST:PORT. Default `swiftmesh-destination.<ns>.svc.<domain>:8086`.
  public var destination: String?
  /// Proxy ports: inbound 4143, outbound 4140, admin 4191, tap 4190 (as DESIGN.md).
  public var inboundPort = 4143
  public var outboundPort = 4140
  public var adminPort = 4191
  public var tapPort = 4190
  /// The proxy's user ID (its own connections are not redirected). Default 2102.
  public var proxyUID = 2102
  /// The proxy's log level. Default `info`.
  public var proxyLogLevel = "info"

  public init() {}
  public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
    var c = Self()
    configure(&c)
    return c
  }

  var resolvedProxyImage: String { proxyImage ?? "ghcr.io/swiftmesh/mesh-proxy:\(proxyVersion)" }
  var resolvedProxyInitImage: String { proxyInitImage ?? "ghcr.io/swiftmesh/mesh-proxy-init:\(proxyVersion)" }
  var resolvedIdentityServer: String {
    identityServer ?? "swiftmesh-identity.\(controlPlaneNamespace).svc.\(clusterDomain):8080"
  }
  var resolvedDestination: String {
    destination ?? "swiftmesh-destination.\(controlPlaneNamespace).svc.\(clusterDomain):8086"
  }

  /// The hex SHA-256 of the trust anchors PEM, as `swiftmesh.io/trust-root-sha256` carries it.
  public var trustRootSHA256: String {
    SHA256.hash(data: Data(trustRootsPEM.utf8)).map { String(format: "%02x", $0) }.joined()
  }
}

/// The names injection reads and writes on pods and namespaces.
public enum InjectAnnotations {
  /// `enabled` or `disabled`, on a namespace or a pod (template).
  public static let inject = "swiftmesh.io/inject"
  public static let proxyVersion = "swiftmesh.io/proxy-version"
  public static let trustRootSHA256 = "swiftmesh.io/trust-root-sha256"
  /// The trust anchors PEM, which a downward-API volume gives the proxy as a file (a pod cannot mount a
  /// ConfigMap of the control plane's namespace).
  public static let identityTrustRoots = "swiftmesh.io/identity-trust-roots"
  /// The label on injected pods naming the control plane's namespace.
  public static let controlPlaneNamespaceLabel = "swiftmesh.io/control-plane-ns"
  /// The prefix of per-pod configuration annotations.
  public static let configPrefix = "config.swiftmesh.io/"

  /// The annotations the injector writes (and `uninject` removes, with `inject`).
  static let written = [proxyVersion, trustRootSHA256, identityTrustRoots]

  /// The containers and volumes injection adds.
  public static let initContainerName = "swiftmesh-init"
  public static let proxyContainerName = "swiftmesh-proxy"
  static let identityVolume = "swiftmesh-identity"
  static let tokenVolume = "swiftmesh-token"
  /// An emptyDir on the init container's `/run`: `iptables-legacy` takes its lock there, and the init
  /// container's root filesystem is read-only (Linkerd mounts `linkerd-proxy-init-xtables-lock` so).
  static let xtablesLockVolume = "swiftmesh-init-xtables-lock"
  /// The audience of the projected token the proxy shows the identity service.
  public static let tokenAudience = "identity.swiftmesh.io"
}
