public import MeshCore

/// What a destination path names: a service of the cluster (which may or may not exist), or a name
/// outside the cluster domain that discovery does not know.
public enum DestinationTarget: Hashable, Sendable, CustomStringConvertible {
  /// `<name>.<namespace>.svc.<cluster-domain>:<port>`.
  case service(namespace: String, name: String, port: Int)
  /// Anything else that is a well-formed `host:port`.
  case unknown(Authority)

  /// Parses a destination path (`host:port`). A path without a port, with a port that is not a
  /// number in 1-65535, or with an invalid host, is an `invalidPath` error naming the path.
  public static func parse(_ path: String, clusterDomain: String) throws(DiscoveryError) -> DestinationTarget {
    guard !path.isEmpty else { throw .invalidPath("invalid destination path '': empty") }
    let authority: Authority
    do {
      authority = try Authority(path)
    } catch {
      throw .invalidPath("invalid destination path '\(path)': \(error.message)")
    }
    guard authority.port > 0 else { throw .invalidPath("invalid destination path '\(path)': port 0") }
    if let (name, namespace) = authority.kubernetesService(clusterDomain: clusterDomain) {
      return .service(namespace: namespace, name: name, port: authority.port)
    }
    return .unknown(authority)
  }

  /// `namespace/name` for a service target.
  public var serviceKey: String? {
    if case .service(let namespace, let name, _) = self { return "\(namespace)/\(name)" }
    return nil
  }

  public var namespace: String? {
    if case .service(let namespace, _, _) = self { return namespace }
    return nil
  }

  public var port: Int {
    switch self {
    case .service(_, _, let port): port
    case .unknown(let authority): authority.port
    }
  }

  public var description: String {
    switch self {
    case .service(let namespace, let name, let port): "service \(namespace)/\(name) port \(port)"
    case .unknown(let authority): "unknown \(authority)"
    }
  }
}
