public import Logging
public import MeshKube
import Synchronization
public import MeshDiscovery

/// The informers discovery reads, shared by every publisher and subscriber: Services, EndpointSlices
/// or Endpoints, Pods, ServiceProfiles and TrafficSplits, all namespaces.
///
/// Both endpoint informers exist; only the one of the API in use runs (`DestinationServer.run()`
/// chooses, see `EndpointsAPI`), and only it counts for `hasSynced`.
public struct DiscoveryInformers: Sendable {
  public let services: Informer<KubeService>
  public let endpoints: Informer<Endpoints>
  public let endpointSlices: Informer<EndpointSlice>
  public let pods: Informer<Pod>
  public let serviceProfiles: Informer<ServiceProfile>
  public let trafficSplits: Informer<TrafficSplit>
  let selection: EndpointsAPISelection

  public init(
    services: Informer<KubeService>, endpoints: Informer<Endpoints>, endpointSlices: Informer<EndpointSlice>,
    pods: Informer<Pod>, serviceProfiles: Informer<ServiceProfile>, trafficSplits: Informer<TrafficSplit>
  ) {
    self.services = services
    self.endpoints = endpoints
    self.endpointSlices = endpointSlices
    self.pods = pods
    self.serviceProfiles = serviceProfiles
    self.trafficSplits = trafficSplits
    self.selection = EndpointsAPISelection()
  }

  /// Informers over all namespaces for `client`.
  public init(client: KubeClient, configuration: Informer<Pod>.Configuration = .init(), logger: Logger) {
    func convert<R>(_ c: Informer<Pod>.Configuration) -> Informer<R>.Configuration {
      var out = Informer<R>.Configuration(namespace: c.namespace, labelSelector: nil, fieldSelector: nil)
      out.pageSize = c.pageSize
      out.watchTimeoutSeconds = c.watchTimeoutSeconds
      out.initialBackoff = c.initialBackoff
      out.maxBackoff = c.maxBackoff
      out.resyncInterval = c.resyncInterval
      return out
    }
    self.init(
      services: Informer(client: client, configuration: convert(configuration), logger: logger),
      endpoints: Informer(client: client, configuration: convert(configuration), logger: logger),
      endpointSlices: Informer(client: client, configuration: convert(configuration), logger: logger),
      pods: Informer(client: client, configuration: convert(configuration), logger: logger),
      serviceProfiles: Informer(client: client, configuration: convert(configuration), logger: logger),
      trafficSplits: Informer(client: client, configuration: convert(configuration), logger: logger))
  }

  /// The endpoints API in use: nil until the destination server has chosen one (at the start of `run()`).
  public var endpointsAPI: EndpointsAPI? { selection.current }

  /// Whether every informer in use has listed once (false until the endpoints API is chosen).
  public var hasSynced: Bool {
    guard let api = selection.current else { return false }
    let endpointsSynced = api == .endpointSlices ? endpointSlices.store.hasSynced : endpoints.store.hasSynced
    return endpointsSynced && services.store.hasSynced && pods.store.hasSynced
      && serviceProfiles.store.hasSynced && trafficSplits.store.hasSynced
  }

  /// The slices of service `namespace/name` (label `kubernetes.io/service-name`), sorted by slice name.
  public func slices(namespace: String, service: String) -> [EndpointSlice] {
    endpointSlices.store.list(label: EndpointSlice.serviceNameLabel, value: service).filter { $0.namespace == namespace }
  }
}

/// The endpoints API chosen at run time, read by every publisher's computation.
final class EndpointsAPISelection: Sendable {
  private let state = Mutex<EndpointsAPI?>(nil)
  var current: EndpointsAPI? { state.withLock { $0 } }
  func choose(_ api: EndpointsAPI) { state.withLock { $0 = api } }
}
