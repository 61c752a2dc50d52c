public import MeshCore
public import MeshKube

/// A Link's spec with defaults filled in and every field checked: what a `ServiceMirror` works from.
public struct LinkSettings: Sendable, Hashable {
  public static let defaultClusterDomain = "cluster.local"
  public static let defaultGatewayPort = 4143

  /// The Link's name and namespace (where its credentials Secret lives).
  public var linkName: String
  public var linkNamespace: String
  public var targetClusterName: String
  /// Default `cluster.local`.
  public var targetClusterDomain: String
  /// Default `cluster-credentials-<targetClusterName>`.
  public var credentialsSecret: String
  /// The target gateway's addresses as the Link gives them: IP addresses and DNS names (resolved by the
  /// mirror, periodically), without the entries that are neither.
  public var gatewayAddresses: [String]
  /// Why the other entries of `gatewayAddresses` are not used (neither an IP address nor a DNS name); they
  /// are reported on the Link (`GatewayResolved`) and the usable ones still serve.
  public var invalidGatewayAddresses: [String]
  /// Whether the mirror follows the target's gateway Service (its published addresses replace the Link's);
  /// false when the Link is annotated `mirror.swiftmesh.io/follow-gateway-service: "false"`.
  public var followGatewayService: Bool
  /// Default 4143.
  public var gatewayPort: Int
  /// The identity the gateway must present; nil: mirrors carry none and the gateway is not probed.
  public var gatewayIdentity: IdentityName?
  public var probe: ProbeSettings
  /// Which remote services are mirrored; nil or empty mirrors nothing.
  public var selector: LabelSelector?

  /// Checks `link` and fills the defaults; the error names the field and the bad value.
  public init(link: Link) throws(MulticlusterError) {
    let spec = link.spec
    linkName = link.name
    linkNamespace = link.namespace ?? "default"
    targetClusterName = spec.targetClusterName
    if let problem = Self.labelProblem(targetClusterName) {
      throw .invalidLink("targetClusterName '\(targetClusterName)': \(problem)")
    }
    let domain = spec.targetClusterDomain ?? ""
    targetClusterDomain = domain.isEmpty ? Self.defaultClusterDomain : domain
    do { _ = try Authority(host: "svc.\(targetClusterDomain)", port: 1) } catch {
      throw .invalidLink("targetClusterDomain '\(targetClusterDomain)': \(error.message)")
    }
    let secret = spec.clusterCredentialsSecret ?? ""
    credentialsSecret = secret.isEmpty ? MirrorMetadata.credentialsSecretName(cluster: targetClusterName) : secret
    let parsed = GatewayAddress.parse(spec.gatewayAddresses ?? [])
    gatewayAddresses = parsed.addresses.map(\.description)
    invalidGatewayAddresses = parsed.problems
    if gatewayAddresses.isEmpty {
      if let problem = parsed.problems.first {
        throw .invalidLink("gatewayAddresses: \(problem); the Link needs at least one IP address or DNS name of the target gateway")
      }
      throw .invalidLink("gatewayAddresses: empty; the Link needs the target gateway's address")
    }
    followGatewayService = link.metadata.annotations?[MirrorMetadata.followGatewayServiceAnnotation] != "false"
    gatewayPort = spec.gatewayPort ?? Self.defaultGatewayPort
    guard (1...65535).contains(gatewayPort) else {
      throw .invalidLink("gatewayPort \(gatewayPort) is outside 1-65535")
    }
    if let text = spec.gatewayIdentity, !text.isEmpty {
      do { gatewayIdentity = try IdentityName(text) } catch {
        throw .invalidLink("gatewayIdentity '\(text)': \(error.message)")
      }
    } else {
      gatewayIdentity = nil
    }
    probe = try ProbeSettings(spec.probeSpec)
    selector = spec.selector
  }

  /// Whether the selector can select anything (an empty selector exports nothing).
  public var selectsAnything: Bool {
    guard let selector else { return false }
    return !(selector.matchLabels ?? [:]).isEmpty || !(selector.matchExpressions ?? []).isEmpty
  }

  /// Whether `service` (in the target cluster) is mirrored: the selector matches, and it is not itself a
  /// mirror (links both ways never mirror mirrors).
  public func exports(_ service: KubeService) -> Bool {
    guard selectsAnything, let selector else { return false }
    let labels = service.metadata.labels ?? [:]
    if labels[MirrorMetadata.mirroredServiceLabel] == "true" { return false }
    return selector.matches(labels)
  }

  /// `<name>-<targetClusterName>`.
  public func mirrorName(of remoteName: String) -> String { "\(remoteName)-\(targetClusterName)" }

  /// `<name>.<namespace>.svc.<targetClusterDomain>`.
  public func remoteFQName(name: String, namespace: String) -> String {
    "\(name).\(namespace).svc.\(targetClusterDomain)"
  }

  static func labelProblem(_ label: String) -> String? {
    if label.isEmpty { return "empty" }
    if label.utf8.count > 63 { return "longer than 63 characters" }
    let allowed = label.utf8.allSatisfy {
      ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
        || $0 == UInt8(ascii: "-")
    }
    if !allowed { return "only a-z, 0-9 and '-' are allowed" }
    if label.first == "-" || label.last == "-" { return "starts or ends with '-'" }
    return nil
  }
}

/// The gateway probe's settings (`probeSpec`), defaults: `/ready` on 4191 every 3 s, 30 s timeout, dead after
/// 3 consecutive failures.
public struct ProbeSettings: Sendable, Hashable {
  public var path = "/ready"
  public var port = 4191
  public var period: Duration = .seconds(3)
  public var timeout: Duration = .seconds(30)
  public var failureThreshold = 3

  public init() {}

  public init(_ spec: Link.ProbeSpec?) throws(MulticlusterError) {
    guard let spec else { return }
    if let path = spec.path, !path.isEmpty {
      guard path.hasPrefix("/") else { throw .invalidLink("probeSpec.path '\(path)' does not start with '/'") }
      self.path = path
    }
    if let port = spec.port {
      guard (1...65535).contains(port) else { throw .invalidLink("probeSpec.port \(port) is outside 1-65535") }
      self.port = port
    }
    if let text = spec.period, !text.isEmpty {
      period = try Self.duration(text, field: "probeSpec.period")
      guard period > .zero else { throw .invalidLink("probeSpec.period '\(text)' must be positive") }
    }
    if let text = spec.timeout, !text.isEmpty {
      timeout = try Self.duration(text, field: "probeSpec.timeout")
      guard timeout > .zero else { throw .invalidLink("probeSpec.timeout '\(text)' must be positive") }
    }
    if let threshold = spec.failureThreshold {
      guard threshold >= 1 else { throw .invalidLink("probeSpec.failureThreshold \(threshold) must be at least 1") }
      failureThreshold = threshold
    }
  }

  static func duration(_ text: String, field: String) throws(MulticlusterError) -> Duration {
    do { return try GoDuration.parse(text) } catch {
      throw .invalidLink("\(field): \(error.message)")
    }
  }
}
