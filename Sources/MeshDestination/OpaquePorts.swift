public import MeshCore
public import MeshKube
public import MeshDiscovery

/// Which ports are opaque TCP (no protocol detection), as the destination service tells proxies in each
/// profile (`opaque_protocol`):
///
/// 1. the `config.swiftmesh.io/opaque-ports` annotation of the Service (or of the pod, asked by its IP),
///    which replaces the default list (an annotation that does not parse is ignored);
/// 2. else the Service port's `appProtocol`: `swiftmesh.io/opaque` and `tcp` make it opaque, `http`,
///    `http2`, `grpc` and `kubernetes.io/h2c` do not;
/// 3. else the default list (`PortSet.defaultOpaquePorts`).
public enum OpaquePorts {
  public static let annotation = "config.swiftmesh.io/opaque-ports"

  public static func isOpaque(port: Int, servicePort: KubeService.Port?, annotations: [String: String]?) -> Bool {
    if let text = annotations?[annotation], let ports = try? PortSet(parsing: text) {
      return ports.contains(port)
    }
    switch servicePort?.appProtocol?.lowercased() {
    case "swiftmesh.io/opaque", "tcp": return true
    case "http", "http2", "grpc", "kubernetes.io/h2c", "kubernetes.io/ws", "kubernetes.io/wss": return false
    default: return PortSet.defaultOpaquePorts.contains(port)
    }
  }
}
