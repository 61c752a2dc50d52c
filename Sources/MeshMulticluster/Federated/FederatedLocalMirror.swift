public import Logging
public import MeshKube
public import ServiceLifecycle

/// The local half of federated services: for every Service of this cluster labelled
/// `mirror.swiftmesh.io/federated: member`, the Service `<name>-federated` (created with the member's ports
/// when missing) and its slice `<name>-federated-local-<family>` holding the member's endpoints as they are
/// (direct, pod references kept). A member that goes (or loses the label) takes its slice with it, and a
/// federated Service with neither a local member nor any linked cluster's slice is deleted. The linked
/// clusters' slices are written by each Link's `ServiceMirror`.
public final class FederatedLocalMirror: ServiceLifecycle.Service, Sendable {
  let client: KubeClient
  let logger: Logger
  let queue = MirrorWorkQueue()

  public init(client: KubeClient, logger: Logger) {
    self.client = client
    self.logger = logger
  }

  public func run() async throws {
    do {
      try await cancelWhenGracefulShutdown { await self.follow() }
    } catch is CancellationError {
      return
    }
  }

  func follow() async {
    guard (try? await client.serves(EndpointSlice.self)) ?? true else {
      logger.warning("this cluster serves no EndpointSlices: federated services are not written")
      return
    }
    let services = Informer<KubeService>(client: client, logger: logger)
    let slices = Informer<EndpointSlice>(client: client, logger: logger)
    let serviceEvents = services.events()
    let sliceEvents = slices.events()
    await withDiscardingTaskGroup { group in
      group.addTask { try? await services.run() }
      group.addTask { try? await slices.run() }
      group.addTask {
        for await event in serviceEvents {
          self.queue.add(Self.memberKey(namespace: event.object.namespace, service: event.object.name))
        }
      }
      group.addTask {
        for await event in sliceEvents {
          guard let service = event.object.metadata.labels?[EndpointSlice.serviceNameLabel] else { continue }
          self.queue.add(Self.memberKey(namespace: event.object.namespace, service: service))
        }
      }
      group.addTask { await ServiceMirror.tick(every: .seconds(2)) { self.queue.retry() } }
      var pending = Set<String>()
      while !Task.isCancelled {
        let batch = await queue.next()
        if Task.isCancelled { break }
        pending.formUnion(batch.keys)
        guard services.store.hasSynced, slices.store.hasSynced else { continue }
        let keys = pending.sorted()
        pending = []
        for key in keys {
          do {
            try await reconcile(key, services: services.store, slices: slices.store)
          } catch {
            logger.warning("could not write a federated service; retrying", metadata: ["service": "\(key)", "error": "\(error)"])
            pending.insert(key)
          }
        }
      }
      group.cancelAll()
    }
  }

  /// `namespace/<member name>` for an event about `service` (a member, or its federated service).
  static func memberKey(namespace: String?, service: String) -> String {
    let base = service.hasSuffix("-federated") ? String(service.dropLast("-federated".count)) : service
    return "\(namespace ?? "default")/\(base)"
  }

  func reconcile(_ key: String, services: Store<KubeService>, slices: Store<EndpointSlice>) async throws {
    guard let slash = key.firstIndex(of: "/") else { return }
    let namespace = String(key[..<slash])
    let name = String(key[key.index(after: slash)...])
    let federated = MirrorMetadata.federatedName(of: name)
    let member = services.get(namespace: namespace, name: name).flatMap { MirrorPlanner.isFederatedMember($0) ? $0 : nil }
    let current = services.get(namespace: namespace, name: federated)
    let all = slices.list(label: EndpointSlice.serviceNameLabel, value: federated).filter { $0.namespace == namespace }
    let localSlices = all.filter {
      $0.metadata.labels?[MirrorMetadata.federatedClusterLabel] == nil
        && $0.metadata.labels?[MirrorMetadata.federatedServiceLabel] == "true"
    }
    guard let member else {
      for slice in localSlices {
        try await ignoringNotFound { try await self.client.delete(EndpointSlice.self, name: slice.name, namespace: namespace) }
      }
      if let current, current.metadata.labels?[MirrorMetadata.federatedServiceLabel] == "true",
        !all.contains(where: { $0.metadata.labels?[MirrorMetadata.federatedClusterLabel] != nil })
      {
        try await ignoringNotFound { try await self.client.delete(KubeService.self, name: federated, namespace: namespace) }
        logger.info("deleted a federated service without members", metadata: ["service": "\(namespace)/\(federated)"])
      }
      return
    }
    var service = current
    if service == nil {
      do {
        service = try await client.create(
          MirrorPlanner.federatedService(name: name, namespace: namespace, ports: member.spec?.ports ?? []))
        logger.info("created a federated service", metadata: ["service": "\(namespace)/\(federated)"])
      } catch let error as KubeError where error.isAlreadyExists {
        service = try await client.get(KubeService.self, name: federated, namespace: namespace)
      }
    }
    guard let service, service.metadata.labels?[MirrorMetadata.federatedServiceLabel] == "true" else {
      logger.warning(
        "a Service has the federated service's name and is not one; left alone",
        metadata: ["service": "\(namespace)/\(federated)"])
      return
    }
    // The member's own slices (kube's controller writes them), copied per address family.
    let memberSlices = slices.list(label: EndpointSlice.serviceNameLabel, value: name).filter { $0.namespace == namespace }
    var desired: [EndpointSlice] = []
    if MirrorPlanner.federationPorts(service.spec?.ports) == MirrorPlanner.federationPorts(member.spec?.ports) {
      for (type, suffix) in [("IPv4", "ipv4"), ("IPv6", "ipv6")] {
        let family = memberSlices.filter { $0.addressType == type }
        guard !family.isEmpty else { continue }
        desired.append(
          EndpointSlice(
            metadata: ObjectMeta(
              name: "\(federated)-local-\(suffix)", namespace: namespace,
              labels: [
                EndpointSlice.serviceNameLabel: federated,
                EndpointSlice.managedByLabel: MirrorMetadata.endpointSliceManager,
                MirrorMetadata.federatedServiceLabel: "true",
              ]),
            addressType: type, endpoints: family.flatMap(\.endpoints), ports: family.first?.ports))
      }
    } else {
      logger.warning(
        "a local member's ports differ from its federated service's; the local endpoints are left out",
        metadata: ["service": "\(key)"])
    }
    for slice in desired {
      if var existing = localSlices.first(where: { $0.name == slice.name }) {
        guard existing.endpoints != slice.endpoints || existing.ports != slice.ports else { continue }
        existing.endpoints = slice.endpoints
        existing.ports = slice.ports
        _ = try await client.update(existing)
      } else {
        do { _ = try await client.create(slice) } catch let error as KubeError where error.isAlreadyExists {}
      }
    }
    let wanted = Set(desired.map(\.name))
    for slice in localSlices where !wanted.contains(slice.name) {
      try await ignoringNotFound { try await self.client.delete(EndpointSlice.self, name: slice.name, namespace: namespace) }
    }
  }

  func ignoringNotFound(_ body: () async throws -> Void) async throws {
    do { try await body() } catch let error as KubeError where error.isNotFound {}
  }
}
