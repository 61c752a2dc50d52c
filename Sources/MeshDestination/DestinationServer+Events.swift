import Logging
import MeshCore
import MeshKube
public import MeshDiscovery

extension DestinationServer {
  /// Recomputes the publishers of one service (endpoints and profile).
  func refresh(namespace: String, service: String) {
    let key = "\(namespace)/\(service)"
    endpointRegistry.refresh(service: key)
    profileRegistry.refresh(service: key)
  }

  func handle(_ event: InformerEvent<KubeService>) {
    refresh(namespace: event.object.namespace ?? "default", service: event.object.name)
    // An endpoint mirror answers for `<hostname>.<headless mirror>...`: those subscribers hang on the parent.
    if let parent = event.object.metadata.labels?[EndpointTranslator.headlessMirrorLabel], !parent.isEmpty {
      refresh(namespace: event.object.namespace ?? "default", service: parent)
    }
  }

  func handle(_ event: InformerEvent<Endpoints>) {
    refresh(namespace: event.object.namespace ?? "default", service: event.object.name)
  }

  /// A slice concerns the service its `kubernetes.io/service-name` label names (before and after an
  /// update, should the label change); a slice without the label concerns no service.
  func handle(_ event: InformerEvent<EndpointSlice>) {
    var slices = [event.object]
    if case .updated(let old, _) = event { slices.append(old) }
    var seen = Set<String>()
    for slice in slices {
      guard let service = slice.metadata.labels?[EndpointSlice.serviceNameLabel], !service.isEmpty else { continue }
      let namespace = slice.namespace ?? "default"
      if seen.insert("\(namespace)/\(service)").inserted { refresh(namespace: namespace, service: service) }
      if let parent = slice.metadata.labels?[EndpointTranslator.headlessMirrorLabel], !parent.isEmpty,
        seen.insert("\(namespace)/\(parent)").inserted
      {
        refresh(namespace: namespace, service: parent)
      }
    }
  }

  /// A pod's identity or readiness matters to every service of its namespace that selects it;
  /// recompute that namespace's endpoint publishers (unchanged sets send nothing).
  func handle(_ event: InformerEvent<Pod>) {
    if case .updated(let old, let new) = event, old.metadata.labels == new.metadata.labels,
      old.metadata.annotations == new.metadata.annotations, old.spec?.serviceAccountName == new.spec?.serviceAccountName
    {
      return
    }
    endpointRegistry.refresh(namespace: event.object.namespace ?? "default")
  }

  /// ServiceProfiles are named `<svc>.<ns>.svc.<cluster-domain>` in the service's namespace.
  func handle(_ event: InformerEvent<ServiceProfile>) {
    let suffix = ".svc.\(configuration.clusterDomain)"
    let name = event.object.name
    guard name.hasSuffix(suffix) else { return }
    let parts = name.dropLast(suffix.count).split(separator: ".")
    guard parts.count == 2 else { return }
    profileRegistry.refresh(service: "\(parts[1])/\(parts[0])")
  }

  func handle(_ event: InformerEvent<TrafficSplit>) {
    var splits = [event.object]
    if case .updated(let old, _) = event { splits.append(old) }
    for split in splits {
      let service = split.spec.service.split(separator: ".").first.map(String.init) ?? split.spec.service
      profileRegistry.refresh(service: "\(split.namespace ?? "default")/\(service)")
    }
  }

  // MARK: - Computing values from the stores

  static func endpointSet(
    _ target: DestinationTarget, zone: String?, informers: DiscoveryInformers, translator: EndpointTranslator,
    logger: Logger
  ) -> EndpointSet {
    let namespace: String
    var name: String
    let port: Int
    var hostname: String?
    switch target {
    case .service(let n, let s, let p): (namespace, name, port) = (n, s, p)
    case .endpoint(let n, let s, let h, let p): (namespace, name, port, hostname) = (n, s, p, h)
    case .address(let address):
      switch Self.owner(of: address, informers: informers) {
      case .service(let service):
        return endpointSet(
          .service(namespace: service.namespace ?? "default", name: service.name, port: address.port), zone: zone,
          informers: informers, translator: translator, logger: logger)
      case .pod(let pod):
        return translator.endpointSet(pod: pod, address: address, defaultNamespace: "default") {
          logger.warning("endpoint skipped", metadata: ["problem": "\($0)"])
        }
      case nil:
        return .doesNotExist
      }
    case .unknown: return .doesNotExist
    }
    // `<hostname>.<name>-<cluster>...` of a headless mirror: the endpoint mirror `<hostname>-<cluster>`, which
    // goes through the linked cluster's gateway with that pod's remote authority.
    if let host = hostname, let service = informers.services.store.get(namespace: namespace, name: name),
      service.spec?.clusterIP == "None", service.metadata.labels?[EndpointTranslator.mirroredServiceLabel] == "true",
      let cluster = service.metadata.labels?[EndpointTranslator.clusterNameLabel], !cluster.isEmpty
    {
      name = "\(host)-\(cluster)"
      hostname = nil
    }
    if informers.endpointsAPI == .endpointSlices {
      var slices = informers.slices(namespace: namespace, service: name)
      if let hostname {
        // One endpoint of the service: the one with this hostname (a headless service's pod).
        slices = slices.map { slice in
          var only = slice
          only.endpoints = slice.endpoints.filter { $0.hostname == hostname }
          return only
        }
      }
      return translator.endpointSet(
        service: informers.services.store.get(namespace: namespace, name: name),
        slices: slices,
        port: port, zone: zone,
        pod: { informers.pods.store.get(namespace: $0, name: $1) },
        problem: { logger.warning("endpoint skipped", metadata: ["problem": "\($0)"]) })
    }
    var endpoints = informers.endpoints.store.get(namespace: namespace, name: name)
    if let hostname, var only = endpoints {
      only.subsets = (only.subsets ?? []).map { subset in
        var kept = subset
        kept.addresses = subset.addresses?.filter { $0.hostname == hostname }
        kept.notReadyAddresses = subset.notReadyAddresses?.filter { $0.hostname == hostname }
        return kept
      }
      endpoints = only
    }
    return translator.endpointSet(
      service: informers.services.store.get(namespace: namespace, name: name),
      endpoints: endpoints,
      port: port,
      pod: { informers.pods.store.get(namespace: $0, name: $1) },
      problem: { logger.warning("endpoint skipped", metadata: ["problem": "\($0)"]) })
  }

  static func profile(
    _ target: DestinationTarget, informers: DiscoveryInformers, translator: ProfileTranslator, problems: ProblemLog
  ) -> Profile {
    let namespace: String
    let name: String
    let port: Int
    switch target {
    case .service(let n, let s, let p), .endpoint(let n, let s, _, let p): (namespace, name, port) = (n, s, p)
    case .address(let address):
      switch Self.owner(of: address, informers: informers) {
      case .service(let service):
        return profile(
          .service(namespace: service.namespace ?? "default", name: service.name, port: address.port),
          informers: informers, translator: translator, problems: problems)
      case .pod(let pod):
        // No profile for a pod; only whether its port is opaque.
        var profile = Profile()
        profile.opaqueProtocol = OpaquePorts.isOpaque(
          port: address.port, servicePort: nil, annotations: pod.metadata.annotations)
        return profile
      case nil:
        return Profile()
      }
    case .unknown: return Profile()
    }
    let profileName = translator.profileName(service: name, namespace: namespace)
    let serviceProfile = informers.serviceProfiles.store.get(namespace: namespace, name: profileName)
    let split = informers.trafficSplits.store.list(namespace: namespace).first {
      ($0.spec.service.split(separator: ".").first.map(String.init) ?? $0.spec.service) == name
    }
    var (profile, found) = translator.profile(
      namespace: namespace, service: name, port: port, serviceProfile: serviceProfile, split: split)
    let service = informers.services.store.get(namespace: namespace, name: name)
    profile.opaqueProtocol = OpaquePorts.isOpaque(
      port: port, servicePort: service?.spec?.ports?.first { $0.port == port },
      annotations: service?.metadata.annotations)
    problems.set(found, for: "\(namespace)/\(profileName)")
    return profile
  }

  /// What an IP address belongs to.
  enum AddressOwner {
    case service(KubeService)
    case pod(Pod)
  }

  /// The Service whose ClusterIP `address` is, else the running pod whose IP it is.
  static func owner(of address: Authority, informers: DiscoveryInformers) -> AddressOwner? {
    let ip = address.host
    if let service = informers.services.store.first(where: {
      $0.spec?.clusterIP == ip || ($0.spec?.clusterIPs ?? []).contains(ip)
    }) {
      return .service(service)
    }
    // A finished pod's IP may already be another's.
    if let pod = informers.pods.store.first(where: {
      ($0.status?.podIP == ip || ($0.status?.podIPs ?? []).contains { $0.ip == ip })
        && $0.status?.phase != "Succeeded" && $0.status?.phase != "Failed"
    }) {
      return .pod(pod)
    }
    return nil
  }
}
