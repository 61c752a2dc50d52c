import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import MeshAPI
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import MeshKubeLocal
import ServiceLifecycle
import Synchronization
import Testing
import _MeshTestSupport

/// Collects what a stream produces, for polling.
final class Recorder<T: Sendable>: Sendable {
  private let state = Mutex<(items: [T], error: (any Error)?, finished: Bool)>(([], nil, false))
  func append(_ item: T) { state.withLock { $0.items.append(item) } }
  func fail(_ error: any Error) { state.withLock { $0.error = error } }
  func finish() { state.withLock { $0.finished = true } }
  var items: [T] { state.withLock { $0.items } }
  var last: T? { state.withLock { $0.items.last } }
  var error: (any Error)? { state.withLock { $0.error } }
  var finished: Bool { state.withLock { $0.finished } }
}

var testLogger: Logger {
  var logger = Logger(label: "test.discovery")
  logger.logLevel = .warning
  return logger
}

/// A running embedded Kubernetes API.
struct Kube: Sendable {
  let state: LocalKubeState
  let server: LocalKubeAPIServer
  let config: KubeClientConfig

  /// A destination server on 127.0.0.1 (`port` 0: any) with its own informers and client. The tests
  /// written for Endpoints run with `.endpoints` (`--endpoints-api endpoints`); slice tests pass
  /// `.endpointSlices`.
  func destinationServer(port: Int = 0, endpointsAPI: EndpointsAPI = .endpoints) throws -> (DestinationServer, KubeClient) {
    let client = try KubeClient(config: config)
    let server = DestinationServer(
      configuration: .defaults {
        $0.host = "127.0.0.1"
        $0.port = port
        $0.trustDomain = .clusterLocal
        $0.controlPlaneNamespace = "swiftmesh"
        $0.endpointsAPI = endpointsAPI
      },
      client: client,
      informerConfiguration: .defaults {
        $0.initialBackoff = .milliseconds(20)
        $0.maxBackoff = .milliseconds(200)
      },
      logger: testLogger)
    return (server, client)
  }
}

/// Runs an embedded API server and a destination server around `body`.
func withDiscovery(
  endpointsAPI: EndpointsAPI = .endpoints, state: LocalKubeState = LocalKubeState(),
  _ body: @Sendable (Kube, DestinationServer, Int) async throws -> Void
) async throws {
  try await withKube(state: state) { kube in
    let (server, client) = try kube.destinationServer(endpointsAPI: endpointsAPI)
    try await withThrowingTaskGroup(of: Void.self) { group in
      let handle = start(server, in: &group)
      do {
        let port = try await server.listeningPort
        try await body(kube, server, port)
      } catch {
        handle.stop()
        try? await client.shutdown()
        throw error
      }
      handle.stop()
      try await group.waitForAll()
      try await client.shutdown()
    }
  }
}

/// Runs an embedded API server around `body`.
func withKube(state: LocalKubeState = LocalKubeState(), _ body: @Sendable (Kube) async throws -> Void) async throws {
  let api = LocalKubeAPIServer(state: state, logger: testLogger)
  try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await api.run() }
    let config = try await api.clientConfig()
    do {
      try await body(Kube(state: state, server: api, config: config))
    } catch {
      api.stop()
      group.cancelAll()
      throw error
    }
    api.stop()
    group.cancelAll()
  }
}

/// Runs a resolver for the destination server on `port` around `body`.
func withResolver(
  host: String = "127.0.0.1", port: Int, contextToken: String = "", _ body: @Sendable (Resolver) async throws -> Void
) async throws {
  let resolver = try Resolver(
    configuration: .defaults {
      $0.host = host
      $0.port = port
      $0.contextToken = contextToken
      $0.initialBackoff = .milliseconds(20)
      $0.maxBackoff = .milliseconds(200)
    },
    logger: testLogger)
  try await withThrowingTaskGroup(of: Void.self) { group in
    let handle = start(resolver, in: &group)
    defer { handle.stop() }
    try await body(resolver)
  }
}

/// Records every value of `stream` in a child task of `group`.
func record<T: Sendable>(_ stream: AsyncThrowingStream<T, any Error>, in group: inout ThrowingTaskGroup<Void, any Error>) -> Recorder<T> {
  let recorder = Recorder<T>()
  group.addTask {
    do {
      for try await value in stream { recorder.append(value) }
      recorder.finish()
    } catch {
      recorder.fail(error)
    }
  }
  return recorder
}

typealias DestinationClient = Swiftmesh_Destination_Destination.Client<HTTP2ClientTransport.Posix>

/// Runs a raw gRPC client of the destination API on `port` around `body`.
func withDestinationClient<T: Sendable>(port: Int, _ body: @Sendable (DestinationClient) async throws -> T) async throws -> T {
  try await withGRPCClient(
    transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
  ) { client in
    try await body(DestinationClient(wrapping: client))
  }
}

/// Records the raw updates of a `Get` stream for `path` in a child of `group`.
func recordUpdates(
  _ client: DestinationClient, path: String, contextToken: String = "", in group: inout ThrowingTaskGroup<Void, any Error>
) -> Recorder<EndpointUpdate> {
  let recorder = Recorder<EndpointUpdate>()
  group.addTask {
    var request = Swiftmesh_Destination_GetDestination()
    request.path = path
    request.contextToken = contextToken
    do {
      try await client.get(request: ClientRequest(message: request)) { response in
        for try await message in response.messages { recorder.append(try EndpointUpdate(proto: message)) }
      }
      recorder.finish()
    } catch {
      recorder.fail(error)
    }
  }
  return recorder
}

// MARK: - Kubernetes objects

func service(
  _ name: String, _ namespace: String, ports: [(name: String?, port: Int, target: Int?)] = [("http", 8080, 8080)],
  labels: [String: String]? = nil, annotations: [String: String]? = nil
) -> KubeService {
  KubeService(
    metadata: ObjectMeta(name: name, namespace: namespace, labels: labels, annotations: annotations),
    spec: .init(
      selector: ["app": name],
      ports: ports.map { KubeService.Port(name: $0.name, port: $0.port, targetPort: $0.target.map { .int($0) }) }))
}

/// Endpoints with the given IPs (each backed by a pod `<name>-<i>` when `pods`).
func endpoints(
  _ name: String, _ namespace: String, ips: [String], port: Int = 8080, portName: String? = "http",
  pods: Bool = true, annotations: [String: String]? = nil
) -> Endpoints {
  Endpoints(
    metadata: ObjectMeta(name: name, namespace: namespace, annotations: annotations),
    subsets: ips.isEmpty
      ? []
      : [
        .init(
          addresses: ips.map { ip in
            Endpoints.Address(
              ip: ip, targetRef: pods ? ObjectReference(kind: "Pod", namespace: namespace, name: podName(name, ip)) : nil)
          },
          ports: [.init(name: portName, port: port)])
      ])
}

func podName(_ service: String, _ ip: String) -> String {
  "\(service)-\(ip.split(separator: ".").last ?? "")"
}

func pod(_ name: String, _ namespace: String, serviceAccount: String, meshed: Bool) -> Pod {
  Pod(
    metadata: ObjectMeta(
      name: name, namespace: namespace, labels: meshed ? ["swiftmesh.io/proxy": "mesh-proxy"] : nil),
    spec: .init(serviceAccountName: serviceAccount))
}

/// Replaces (or creates) an object in the embedded state.
func put<R: KubeResource>(_ object: R, in state: LocalKubeState) throws {
  if let existing = state.get(R.self, name: object.name, namespace: object.namespace) {
    var updated = object
    updated.metadata.resourceVersion = existing.metadata.resourceVersion
    try state.update(updated)
  } else {
    try state.create(object)
  }
}

func authority(_ text: String) throws -> Authority { try Authority(text) }

func ips(_ range: ClosedRange<Int>, prefix: String = "10.1.0.") -> [String] { range.map { "\(prefix)\($0)" } }

/// An EndpointSlice of service `service` (label `kubernetes.io/service-name`) with one endpoint per IP
/// (each backed by a pod `<service>-<last octet>` when `pods`), all with `conditions`.
func slice(
  _ name: String, service: String, _ namespace: String, ips: [String], port: Int = 8080, portName: String? = "http",
  addressType: String = "IPv4", pods: Bool = true, conditions: EndpointSlice.Conditions? = .init(ready: true, serving: true, terminating: false),
  zone: String? = nil, nodeName: String? = nil, forZones: [String]? = nil, annotations: [String: String]? = nil
) -> EndpointSlice {
  EndpointSlice(
    metadata: ObjectMeta(
      name: name, namespace: namespace,
      labels: [EndpointSlice.serviceNameLabel: service, EndpointSlice.managedByLabel: "endpointslice-controller.k8s.io"],
      annotations: annotations),
    addressType: addressType,
    endpoints: ips.map { ip in
      EndpointSlice.Endpoint(
        addresses: [ip], conditions: conditions, nodeName: nodeName, zone: zone,
        targetRef: pods ? ObjectReference(kind: "Pod", namespace: namespace, name: podName(service, ip)) : nil,
        hints: forZones.map { EndpointSlice.Hints(forZones: $0.map { EndpointSlice.ForZone(name: $0) }) })
    },
    ports: [.init(name: portName, port: port, protocol: "TCP")])
}

/// The addresses an update stream has brought its subscriber to (adds replace, removes remove).
func addresses(after updates: [EndpointUpdate]) -> Set<Authority> {
  var current = Set<Authority>()
  for update in updates {
    switch update {
    case .add(let endpoints): current.formUnion(endpoints.map(\.address))
    case .remove(let gone): current.subtract(gone)
    case .noEndpoints: current = []
    }
  }
  return current
}

/// Publishes `ips` for service `name` as `api` reads them: its v1 Endpoints, or one EndpointSlice `<name>-0`.
func publish(
  _ name: String, _ namespace: String, ips: [String], pods: Bool = true, api: EndpointsAPI, in state: LocalKubeState
) throws {
  switch api {
  case .endpoints: try put(endpoints(name, namespace, ips: ips, pods: pods), in: state)
  case .endpointSlices: try put(slice("\(name)-0", service: name, namespace, ips: ips, pods: pods), in: state)
  }
}

/// Whether `server`'s informers hold service `namespace/name` and its endpoints object(s) as `api` reads
/// them: wait for it before a test that expects the first message to carry them.
func informersHold(_ server: DestinationServer, _ name: String, _ namespace: String, api: EndpointsAPI) -> Bool {
  guard server.informers.services.store.get(namespace: namespace, name: name) != nil else { return false }
  switch api {
  case .endpoints: return server.informers.endpoints.store.get(namespace: namespace, name: name) != nil
  case .endpointSlices: return !server.informers.slices(namespace: namespace, service: name).isEmpty
  }
}
