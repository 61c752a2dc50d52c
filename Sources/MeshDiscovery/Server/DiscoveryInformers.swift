public import Logging
public import MeshKube

/// The informers discovery reads, shared by every publisher and subscriber: Services, Endpoints,
/// Pods, ServiceProfiles and TrafficSplits, all namespaces.
public struct DiscoveryInformers: Sendable {
  public let services: Informer<MeshKube.Service>
  public let endpoints: Informer<Endpoints>
  public let pods: Informer<Pod>
  public let serviceProfiles: Informer<ServiceProfile>
  public let trafficSplits: Informer<TrafficSplit>

  public init(
    services: Informer<MeshKube.Service>, endpoints: Informer<Endpoints>, pods: Informer<Pod>,
    serviceProfiles: Informer<ServiceProfile>, trafficSplits: Informer<TrafficSplit>
  ) {
    self.services = services
    self.endpoints = endpoints
    self.pods = pods
    self.serviceProfiles = serviceProfiles
    self.trafficSplits = trafficSplits
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
      pods: Informer(client: client, configuration: convert(configuration), logger: logger),
      serviceProfiles: Informer(client: client, configuration: convert(configuration), logger: logger),
      trafficSplits: Informer(client: client, configuration: convert(configuration), logger: logger))
  }

  /// Whether every informer has listed once.
  public var hasSynced: Bool {
    services.store.hasSynced && endpoints.store.hasSynced && pods.store.hasSynced
      && serviceProfiles.store.hasSynced && trafficSplits.store.hasSynced
  }
}
