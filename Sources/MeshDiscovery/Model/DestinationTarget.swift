public import MeshCore

/// What a destination path names: a service of the cluster (which may or may not exist), an IP address
/// (a Service's ClusterIP or a pod's IP, as a transparent proxy asks by a connection's original
/// destination), or a name outside the cluster domain that discovery does not know.
public enum DestinationTarget: Hashable, Sendable, CustomStringConvertible {
  /// `<name>.<namespace>.svc.<cluster-domain>:<port>`.
  case service(namespace: String, name: String, port: Int)
  /// `<hostname>.<name>.<namespace>.svc.<cluster-domain>:<port>`: the endpoint of headless service `name`
  /// whose `hostname` is that (a StatefulSet's pod, `db-0.db.default.svc...`).
  case endpoint(namespace: String, service: String, hostname: String, port: Int)
  /// `<ip>:<port>`: a Service whose ClusterIP it is (that service's endpoints), else a pod whose IP it is
  /// (that pod alone), else nothing.
  case address(Authority)
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
    if authority.isIPAddress { return .address(authority) }
    if let (name, namespace) = authority.kubernetesService(clusterDomain: clusterDomain) {
      return .service(namespace: namespace, name: name, port: authority.port)
    }
    let suffix = ".svc." + clusterDomain
    if authority.host.hasSuffix(suffix) {
      let parts = authority.host.dropLast(suffix.count).split(separator: ".", omittingEmptySubsequences: false)
      if parts.count == 3, parts.allSatisfy({ !$0.isEmpty }) {
        return .endpoint(
          namespace: String(parts[2]), service: String(parts[1]), hostname: String(parts[0]), port: authority.port)
      }
    }
    return .unknown(authority)
  }

  /// `namespace/name` for a service target.
  /// `namespace/name` for a service target (for an endpoint target, its service).
  public var serviceKey: String? {
    switch self {
    case .service(let namespace, let name, _): "\(namespace)/\(name)"
    case .endpoint(let namespace, let service, _, _): "\(namespace)/\(service)"
    case .address, .unknown: nil
    }
  }

  public var namespace: String? {
    switch self {
    case .service(let namespace, _, _), .endpoint(let namespace, _, _, _): namespace
    case .address, .unknown: nil
    }
  }

  public var port: Int {
    switch self {
    case .service(_, _, let port), .endpoint(_, _, _, let port): port
    case .address(let authority), .unknown(let authority): authority.port
    }
  }

  public var description: String {
    switch self {
    case .service(let namespace, let name, let port): "service \(namespace)/\(name) port \(port)"
    case .endpoint(let namespace, let service, let hostname, let port):
      "endpoint \(hostname) of service \(namespace)/\(service) port \(port)"
    case .address(let authority): "address \(authority)"
    case .unknown(let authority): "unknown \(authority)"
    }
  }
}
