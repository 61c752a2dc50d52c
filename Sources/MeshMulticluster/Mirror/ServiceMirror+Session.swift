import Foundation
import Logging
import MeshCore
import MeshKube
import Synchronization
import MeshTLS

extension ServiceMirror {
  /// The caches a session works from: the target's Services and EndpointSlices or Endpoints (only the
  /// informer of `remoteAPI` runs), the source's Namespaces; and the API mirrors are written with.
  struct Caches: Sendable {
    let services: Informer<KubeService>
    let endpoints: Informer<Endpoints>
    let slices: Informer<EndpointSlice>
    let namespaces: Informer<Namespace>
    /// How the target's endpoints are read.
    let remoteAPI: EndpointsAPI
    /// How mirrors' endpoints are written in the source cluster.
    let localAPI: EndpointsAPI

    var synced: Bool {
      let endpointsSynced = remoteAPI == .endpointSlices ? slices.store.hasSynced : endpoints.store.hasSynced
      return services.store.hasSynced && endpointsSynced && namespaces.store.hasSynced
    }

    /// Whether remote service `namespace/name` has an endpoint its cluster would serve.
    func remoteReady(namespace: String, name: String) -> Bool {
      switch remoteAPI {
      case .endpointSlices:
        MirrorPlanner.hasServingEndpoint(
          slices.store.list(label: EndpointSlice.serviceNameLabel, value: name).filter { $0.namespace == namespace })
      case .endpoints:
        MirrorPlanner.hasReadyAddress(endpoints.store.get(namespace: namespace, name: name))
      }
    }
  }

  /// The hostnames of remote service `namespace/name`'s endpoints (a headless service's pods).
  func remoteHostnames(_ caches: Caches, namespace: String, name: String) -> [MirrorPlanner.HostnameEndpoint] {
    switch caches.remoteAPI {
    case .endpointSlices:
      MirrorPlanner.hostnames(
        slices: caches.slices.store.list(label: EndpointSlice.serviceNameLabel, value: name).filter { $0.namespace == namespace })
    case .endpoints:
      MirrorPlanner.hostnames(endpoints: caches.endpoints.store.get(namespace: namespace, name: name))
    }
  }

  /// The source cluster's mirrors as last read or written, and what could not be done. Owned by the
  /// reconcile loop alone.
  struct Book {
    var services: [String: KubeService] = [:]
    var endpoints: [String: Endpoints] = [:]
    /// Mirror slices by their own key (`namespace/<mirror>-ipv4`).
    var slices: [String: EndpointSlice] = [:]
    /// Remote service key -> why its mirror could not be written.
    var failures: [String: String] = [:]
    /// Local namespace that does not exist -> remote services waiting for it.
    var missing: [String: Set<String>] = [:]
    var created = 0
    var updated = 0
    var deleted = 0
    /// This Link's slices of federated services, by slice key.
    var federated: [String: EndpointSlice] = [:]
    /// Remote members of federated services (`namespace/name`), and why a member is left out.
    var federatedMembers: Set<String> = []
    var federationProblems: [String: String] = [:]
  }

  /// Follows the target with one set of credentials until cancelled or told to restart.
  func session(settings: LinkSettings, remote client: KubeClient, secretVersion: String?) async {
    // All namespaces of the target; retries capped so a returning target is noticed soon.
    let maxBackoff = configuration.remoteMaxBackoff
    let remoteAPI = await endpointsAPI(of: client, side: "target")
    let localAPI = await endpointsAPI(of: localClient, side: "source")
    let caches = Caches(
      services: Informer(client: client, configuration: .defaults { $0.maxBackoff = maxBackoff }, logger: logger),
      endpoints: Informer(client: client, configuration: .defaults { $0.maxBackoff = maxBackoff }, logger: logger),
      slices: Informer(client: client, configuration: .defaults { $0.maxBackoff = maxBackoff }, logger: logger),
      namespaces: Informer(client: localClient, logger: logger),
      remoteAPI: remoteAPI.api, localAPI: localAPI.api)
    let serviceEvents = caches.services.events()
    let endpointEvents = remoteAPI.api == .endpoints ? caches.endpoints.events() : nil
    let sliceEvents = remoteAPI.api == .endpointSlices ? caches.slices.events() : nil
    let namespaceEvents = caches.namespaces.events()
    let probe = makeProbe(settings)
    queue.reset()
    logger.info(
      "following the target cluster",
      metadata: [
        "server": "\(client.config.server)",
        "gateway": "\(settings.gatewayAddresses.joined(separator: ",")) port \(settings.gatewayPort)",
        "target_endpoints_api": "\(remoteAPI.api)", "mirror_endpoints_api": "\(localAPI.api)",
      ])

    await withDiscardingTaskGroup { group in
      group.addTask { try? await caches.services.run() }
      if let endpointEvents {
        group.addTask { try? await caches.endpoints.run() }
        group.addTask { for await event in endpointEvents { self.queue.add(event.object.metadata.key) } }
      }
      if let sliceEvents {
        group.addTask { try? await caches.slices.run() }
        group.addTask {
          for await event in sliceEvents {
            // A slice concerns the service its kubernetes.io/service-name label names.
            var slices = [event.object]
            if case .updated(let old, _) = event { slices.append(old) }
            for slice in slices {
              guard let service = slice.metadata.labels?[EndpointSlice.serviceNameLabel], !service.isEmpty else { continue }
              self.queue.add("\(slice.namespace ?? "default")/\(service)")
            }
          }
        }
      }
      group.addTask { try? await caches.namespaces.run() }
      let gatewayServiceKey = "\(settings.linkNamespace)/\(MirrorMetadata.gatewayServiceName)"
      group.addTask {
        for await event in serviceEvents {
          if event.object.metadata.key == gatewayServiceKey { self.resolveSignal.notify() }
          self.queue.add(event.object.metadata.key)
        }
      }
      group.addTask { await self.resolveGateway(initial: settings, caches: caches, probe: probe) }
      group.addTask {
        for await event in namespaceEvents {
          if case .added(let namespace) = event { self.queue.namespaceAppeared(namespace.name) }
        }
      }
      if let probe {
        group.addTask {
          // The first round probes the resolved addresses.
          guard await self.waitForGatewayIPs() else { return }
          try? await probe.run()
        }
      }
      group.addTask { await Self.tick(every: self.configuration.repairInterval) { self.queue.repair() } }
      group.addTask { await Self.tick(every: self.configuration.retryInterval) { self.queue.retry() } }
      group.addTask {
        await self.watchTarget(
          client: client, settings: settings, secretVersion: secretVersion, remoteAPI: remoteAPI)
      }
      group.addTask {
        // The first repair waits for complete caches (before that, nothing is known to be missing) and the
        // gateway's first resolution.
        while !caches.synced || self.shared.withLock({ $0.gatewayIPs == nil }) {
          do { try await Task.sleep(for: .milliseconds(20)) } catch { return }
        }
        self.queue.repair()
      }
      await self.reconcileLoop(settings: settings, caches: caches, probe: probe)
      group.cancelAll()
    }
  }

  /// The endpoints API to use with `client`: the configured one, or Endpoints where EndpointSlices are
  /// configured and not served. `known` is false when the server did not answer: the configured API is
  /// then assumed, and `watchTarget` asks the target again once it answers (restarting the session when
  /// the answer differs).
  func endpointsAPI(of client: KubeClient, side: String) async -> (api: EndpointsAPI, known: Bool) {
    let preferred = configuration.endpointsAPI
    do {
      let api = try await client.endpointsAPI(preferring: preferred)
      if api != preferred {
        logger.warning(
          "the \(side) cluster does not serve discovery.k8s.io/v1 EndpointSlices; using v1 Endpoints there",
          metadata: ["server": "\(client.config.server)"])
      }
      return (api, true)
    } catch {
      if preferred == .endpointSlices {
        logger.info(
          "cannot ask the \(side) cluster whether it serves EndpointSlices; assuming it does",
          metadata: ["error": "\(error)"])
      }
      return (preferred, preferred == .endpoints)
    }
  }

  static func tick(every interval: Duration, _ action: @Sendable () -> Void) async {
    while !Task.isCancelled {
      do { try await Task.sleep(for: interval) } catch { return }
      action()
    }
  }

  func makeProbe(_ settings: LinkSettings) -> GatewayProbe? {
    shared.withLock {
      $0.probe = nil
      $0.probed = false
      $0.gatewayIPs = nil
    }
    guard let tls else {
      setCondition(
        ConditionType.gatewayAlive, nil, reason: "ProbeDisabled",
        message: "the mirror runs without identity material, so the gateway is not probed and counts as alive")
      return nil
    }
    guard let identity = settings.gatewayIdentity else {
      setCondition(
        ConditionType.gatewayAlive, nil, reason: "ProbeDisabled",
        message: "the Link names no gatewayIdentity, so the gateway is not probed and counts as alive")
      return nil
    }
    shared.withLock { $0.probed = true }
    setCondition(ConditionType.gatewayAlive, nil, reason: "Probing", message: "no probe has finished yet")
    let ips = MirrorPlanner(settings: settings).gatewayIPs
    return GatewayProbe(
      clusterName: settings.targetClusterName,
      target: .init(addresses: ips, identity: identity, settings: settings.probe),
      tls: tls, metrics: metrics, logger: logger,
      onAddressFailure: { self.resolveSignal.notify() }
    ) { snapshot in
      self.gatewayChanged(snapshot, settings: settings)
    }
  }

  func gatewayChanged(_ snapshot: GatewayProbe.Snapshot, settings: LinkSettings) {
    let livenessChanged = shared.withLock { s -> Bool in
      let before = s.probe?.alive ?? true
      s.probe = snapshot
      return before != (snapshot.alive ?? true)
    }
    let path = settings.probe.path
    switch snapshot.alive {
    case true?:
      let note = snapshot.lastError.map { "; the last probe failed: \($0.message)" } ?? ""
      let count = snapshot.aliveAddresses.map { " (\($0) of \(snapshot.addresses.count) addresses answer)" } ?? ""
      setCondition(
        ConditionType.gatewayAlive, true, reason: "ProbeSucceeded", message: "the gateway answers GET \(path)\(count)\(note)")
    case false?:
      let error = snapshot.lastError ?? .gatewayProbeFailed("probe failed")
      setCondition(
        ConditionType.gatewayAlive, false, reason: error.code.reason,
        message: "\(error.message) (dead after \(snapshot.consecutiveFailures) consecutive failed probes)")
    case nil:
      setCondition(
        ConditionType.gatewayAlive, nil, reason: snapshot.lastError?.code.reason ?? "Probing",
        message: snapshot.lastError?.message ?? "no probe has finished yet")
    }
    if livenessChanged { queue.everything() }
    heartbeatSignal.notify()
  }

  /// Checks the target's API server and the credentials Secret every `targetCheckInterval`; a changed or
  /// deleted Secret restarts the session.
  func watchTarget(
    client: KubeClient, settings: LinkSettings, secretVersion: String?, remoteAPI: (api: EndpointsAPI, known: Bool)
  ) async {
    var last: Bool?
    var remoteAPIKnown = remoteAPI.known
    while !Task.isCancelled {
      var problem: String?
      do {
        _ = try await client.list(KubeService.self, options: ListOptions(limit: 1))
      } catch {
        if Task.isCancelled { return }
        problem = "the API server of '\(settings.targetClusterName)' at \(client.config.server) did not answer: \(error)"
      }
      let reachable = problem == nil
      shared.withLock { $0.targetReachable = reachable }
      metrics.targetReachable(settings.targetClusterName, reachable)
      setCondition(
        ConditionType.targetReachable, reachable, reason: reachable ? "Reachable" : MulticlusterError.Code.targetUnreachable.reason,
        message: problem.map { "\($0); mirrors are kept as they are" } ?? "the target's API server answers")
      if last != reachable {
        if let problem {
          logger.warning("target cluster unreachable; mirrors are kept as they are", metadata: ["error": "\(problem)"])
        } else if last != nil {
          logger.notice("target cluster reachable again")
        }
      }
      last = reachable
      if reachable, !remoteAPIKnown, let api = try? await client.endpointsAPI(preferring: configuration.endpointsAPI) {
        remoteAPIKnown = true
        if api != remoteAPI.api {
          logger.notice(
            "the target serves no EndpointSlices after all; restarting the session to follow its Endpoints")
          queue.restart()
          return
        }
      }
      do {
        let secret = try await localClient.get(Secret.self, name: settings.credentialsSecret, namespace: settings.linkNamespace)
        if secret.metadata.resourceVersion != secretVersion {
          logger.notice("the credentials Secret changed; reconnecting")
          queue.restart()
          return
        }
      } catch let error as KubeError where error.isNotFound {
        logger.warning("the credentials Secret was deleted; mirrors are kept, the Link waits for new credentials")
        queue.restart()
        return
      } catch {
        // The local API is unavailable: nothing to learn about the Secret now.
      }
      do { try await Task.sleep(for: configuration.targetCheckInterval) } catch { return }
    }
  }

  /// Applies batches of work until cancelled or a restart is asked for.
  func reconcileLoop(settings initial: LinkSettings, caches: Caches, probe: GatewayProbe?) async {
    var planner = MirrorPlanner(settings: initial)
    var book = Book()
    var synced = false
    while !Task.isCancelled {
      let batch = await queue.next()
      if Task.isCancelled || batch.restart { return }
      if let ips = shared.withLock({ $0.gatewayIPs }) { planner.gatewayIPs = ips }
      var everything = batch.all
      if batch.linkChanged {
        do {
          let fresh = try LinkSettings(link: link)
          let old = planner.settings
          if fresh.credentialsSecret != old.credentialsSecret || fresh.targetClusterName != old.targetClusterName
            || (fresh.gatewayIdentity == nil) != (old.gatewayIdentity == nil)
          {
            logger.notice("the Link's credentials or gateway identity changed; restarting the session")
            return
          }
          planner.settings = fresh
          if let probe, let identity = fresh.gatewayIdentity {
            // The addresses stay until the resolution (asked for now) has the new ones.
            probe.retarget(.init(addresses: probe.target.addresses, identity: identity, settings: fresh.probe))
          }
          resolveSignal.notify()
          setCondition(ConditionType.linkValid, true, reason: "Valid", message: "the Link's spec is valid")
          logger.info("the Link's spec changed; re-planning every mirror")
          everything = true
        } catch {
          setCondition(ConditionType.linkValid, false, reason: error.code.reason, message: "\(error.message); mirrors are kept as they were")
          logger.error("invalid Link update; mirrors are kept as they were", metadata: ["error": "\(error)"])
        }
      }
      if !synced {
        guard batch.repair, caches.synced else { continue }
        synced = true
      }
      if batch.repair {
        await repair(&book, planner: planner, caches: caches)
      } else {
        var keys: [String] = []
        if everything {
          keys = Array(
          Set(caches.services.store.keys).union(
            book.services.filter { !Self.isEndpointMirror($0.value.metadata) }.keys.compactMap(remoteKey(ofMirror:)))
        ).sorted()
        } else {
          keys = batch.keys
          if batch.retry { keys += book.failures.keys.sorted() }
          for namespace in batch.namespaces.sorted() { keys += (book.missing[namespace] ?? []).sorted() }
        }
        var seen = Set<String>()
        for key in keys where seen.insert(key).inserted {
          if Task.isCancelled { return }
          await reconcile(key, &book, planner: planner, caches: caches)
        }
      }
      publish(book)
    }
  }

  /// `namespace/name` of the remote service a mirror (`namespace/name-cluster`) stands for.
  func remoteKey(ofMirror key: String) -> String? {
    let suffix = "-\(clusterName)"
    guard key.hasSuffix(suffix), key.count > suffix.count, !key.hasSuffix("/\(suffix)") else { return nil }
    return String(key.dropLast(suffix.count))
  }

  /// Re-reads this Link's mirrors, reconciles every remote service and every mirror, deletes orphans.
  func repair(_ book: inout Book, planner: MirrorPlanner, caches: Caches) async {
    let options = ListOptions(labelSelector: MirrorMetadata.mirrorSelector(cluster: clusterName))
    var federatedKeys = Set<String>()
    do {
      let services = try await localClient.listAll(KubeService.self, options: options)
      book.services = Dictionary(services.items.map { ($0.metadata.key, $0) }, uniquingKeysWith: { $1 })
      do {
        let endpoints = try await localClient.listAll(Endpoints.self, options: options)
        book.endpoints = Dictionary(endpoints.items.map { ($0.metadata.key, $0) }, uniquingKeysWith: { $1 })
      } catch let error as KubeError where error.isNotFound && caches.localAPI == .endpointSlices {
        // A cluster that no longer serves v1 Endpoints: no mirror Endpoints to convert.
        book.endpoints = [:]
      }
      do {
        let slices = try await localClient.listAll(
          EndpointSlice.self, options: ListOptions(labelSelector: MirrorMetadata.mirrorSliceSelector(cluster: clusterName)))
        book.slices = Dictionary(slices.items.map { ($0.metadata.key, $0) }, uniquingKeysWith: { $1 })
      } catch let error as KubeError where error.isNotFound {
        // A cluster without EndpointSlices: no mirror slices.
        book.slices = [:]
      }
      federatedKeys = try await loadFederated(&book)
    } catch {
      logger.warning("repair could not list the mirrors in this cluster; trying again later", metadata: ["error": "\(error)"])
      return
    }
    let before = (book.created, book.updated, book.deleted)
    var keys = Set(caches.services.store.keys).union(federatedKeys)
    // Endpoint mirrors belong to their headless mirror (reconciled with it); one whose headless mirror is
    // gone is an orphan.
    var endpointMirrors: [String: String] = [:]
    for (key, service) in book.services { if let parent = service.metadata.labels?[MirrorMetadata.headlessMirrorLabel] { endpointMirrors[key] = parent } }
    for (key, endpoints) in book.endpoints { if let parent = endpoints.metadata.labels?[MirrorMetadata.headlessMirrorLabel] { endpointMirrors[key] = parent } }
    for slice in book.slices.values { if let parent = slice.metadata.labels?[MirrorMetadata.headlessMirrorLabel] { endpointMirrors[Self.mirrorKey(of: slice)] = parent } }
    for (key, parent) in endpointMirrors.sorted(by: { $0.key < $1.key }) {
      let namespace = String(key[..<(key.firstIndex(of: "/") ?? key.endIndex)])
      if book.services["\(namespace)/\(parent)"] == nil { await deleteMirror(key, &book) }
    }
    for mirrorKey in Set(book.services.keys).union(book.endpoints.keys).union(book.slices.values.map(Self.mirrorKey(of:)))
    where endpointMirrors[mirrorKey] == nil {
      if let remote = remoteKey(ofMirror: mirrorKey) {
        keys.insert(remote)
      } else {
        // Labelled as this Link's mirror, but no mirror name: an orphan of nothing.
        await deleteMirror(mirrorKey, &book)
      }
    }
    for key in keys.sorted() {
      if Task.isCancelled { return }
      await reconcile(key, &book, planner: planner, caches: caches)
    }
    let created = book.created - before.0
    let updated = book.updated - before.1
    let deleted = book.deleted - before.2
    let metadata: Logger.Metadata = [
      "mirrors": "\(book.services.count)", "objects_created": "\(created)", "objects_updated": "\(updated)",
      "mirrors_deleted": "\(deleted)",
    ]
    if created + updated + deleted > 0 {
      logger.notice("repaired mirrors", metadata: metadata)
    } else {
      logger.debug("mirrors checked, nothing to repair", metadata: metadata)
    }
  }

  /// Brings the mirror of one remote service (`namespace/name`), and this Link's part of its federated service,
  /// in line with the remote and the Link.
  func reconcile(_ remoteKey: String, _ book: inout Book, planner: MirrorPlanner, caches: Caches) async {
    await reconcileMirror(remoteKey, &book, planner: planner, caches: caches)
    await reconcileFederated(
      remoteKey, remote: caches.services.store.get(key: remoteKey), &book, planner: planner, caches: caches)
  }

  func reconcileMirror(_ remoteKey: String, _ book: inout Book, planner: MirrorPlanner, caches: Caches) async {
    defer {
      let count = book.services.count
      shared.withLock { $0.mirroredCount = count }
    }
    guard let slash = remoteKey.firstIndex(of: "/") else { return }
    let namespace = String(remoteKey[..<slash])
    let name = String(remoteKey[remoteKey.index(after: slash)...])
    let mirrorKey = "\(namespace)/\(planner.settings.mirrorName(of: name))"
    if book.missing[namespace]?.remove(remoteKey) != nil, book.missing[namespace]?.isEmpty == true {
      book.missing[namespace] = nil
    }
    let remote = caches.services.store.get(key: remoteKey)
    do {
      if let remote, planner.settings.exports(remote) {
        let mirrorName = planner.settings.mirrorName(of: name)
        guard mirrorName.utf8.count <= 63 else {
          book.failures[remoteKey] = "mirror name '\(mirrorName)' is longer than 63 characters"
          return
        }
        guard caches.namespaces.store.get(key: namespace) != nil else {
          throw MulticlusterError.namespaceMissing("namespace '\(namespace)' does not exist in this cluster")
        }
        let alive = shared.withLock { $0.probe?.alive ?? true }
        let remoteReady = caches.remoteReady(namespace: namespace, name: name)
        let hostnames = MirrorPlanner.isHeadless(remote) ? remoteHostnames(caches, namespace: namespace, name: name) : []
        if !hostnames.isEmpty {
          try await reconcileHeadless(
            remote, hostnames: hostnames, mirrorKey: mirrorKey, &book, planner: planner, caches: caches, alive: alive)
          book.failures[remoteKey] = nil
          return
        }
        try await replaceIfHeadlessChanged(mirrorKey, headless: false, &book)
        try await ensure(planner.service(for: remote), key: mirrorKey, in: \.services, &book)
        await deleteEndpointMirrors(of: mirrorKey, keeping: [], &book)
        switch caches.localAPI {
        case .endpointSlices:
          try await ensureSlices(
            planner.endpointSlices(for: remote, remoteReady: remoteReady, gatewayAlive: alive), mirror: mirrorKey, &book)
          try await deleteEndpoints(of: mirrorKey, &book)
        case .endpoints:
          try await ensure(
            planner.endpoints(for: remote, remoteReady: remoteReady, gatewayAlive: alive),
            key: mirrorKey, in: \.endpoints, &book)
          try await ensureSlices([], mirror: mirrorKey, &book)
        }
      } else if book.services[mirrorKey] != nil || book.endpoints[mirrorKey] != nil
        || book.slices.values.contains(where: { Self.mirrorKey(of: $0) == mirrorKey })
      {
        await deleteMirror(mirrorKey, &book)
      }
      book.failures[remoteKey] = nil
    } catch let error as MulticlusterError where error.code == .namespaceMissing {
      book.missing[namespace, default: []].insert(remoteKey)
      book.failures[remoteKey] = nil
    } catch {
      if book.failures[remoteKey] == nil {
        logger.warning("could not write a mirror; retrying", metadata: ["service": "\(remoteKey)", "error": "\(error)"])
      }
      book.failures[remoteKey] = "\(error)"
    }
  }

  /// Whether a mirror object is an endpoint mirror (of a headless mirror).
  static func isEndpointMirror(_ metadata: ObjectMeta) -> Bool {
    metadata.labels?[MirrorMetadata.headlessMirrorLabel] != nil
  }

  /// A headless remote service with named endpoints: the headless mirror, an endpoint mirror per hostname
  /// (created first: the headless mirror's endpoints are their cluster IPs), and no other endpoint mirror.
  func reconcileHeadless(
    _ remote: KubeService, hostnames: [MirrorPlanner.HostnameEndpoint], mirrorKey: String, _ book: inout Book,
    planner: MirrorPlanner, caches: Caches, alive: Bool
  ) async throws {
    let namespace = remote.namespace ?? "default"
    try await replaceIfHeadlessChanged(mirrorKey, headless: true, &book)
    try await ensure(planner.headlessService(for: remote), key: mirrorKey, in: \.services, &book)
    var members: [MirrorPlanner.EndpointMirror] = []
    var wanted: Set<String> = []
    for endpoint in hostnames {
      let name = planner.endpointMirrorName(hostname: endpoint.hostname)
      guard name.utf8.count <= 63 else {
        logger.warning("endpoint mirror name longer than 63 characters; skipped", metadata: ["name": "\(name)"])
        continue
      }
      let key = "\(namespace)/\(name)"
      wanted.insert(key)
      try await ensure(planner.endpointMirrorService(for: remote, hostname: endpoint.hostname), key: key, in: \.services, &book)
      switch caches.localAPI {
      case .endpointSlices:
        try await ensureSlices(
          planner.endpointMirrorSlices(for: remote, hostname: endpoint.hostname, ready: endpoint.ready, gatewayAlive: alive),
          mirror: key, &book)
        try await deleteEndpoints(of: key, &book)
      case .endpoints:
        try await ensure(
          planner.endpointMirrorEndpoints(for: remote, hostname: endpoint.hostname, ready: endpoint.ready, gatewayAlive: alive),
          key: key, in: \.endpoints, &book)
        try await ensureSlices([], mirror: key, &book)
      }
      let clusterIP = book.services[key]?.spec?.clusterIP
      members.append(.init(hostname: endpoint.hostname, clusterIP: clusterIP == "None" ? nil : clusterIP, ready: endpoint.ready))
    }
    switch caches.localAPI {
    case .endpointSlices:
      try await ensureSlices(planner.headlessSlices(for: remote, members: members, gatewayAlive: alive), mirror: mirrorKey, &book)
      try await deleteEndpoints(of: mirrorKey, &book)
    case .endpoints:
      try await ensure(
        planner.headlessEndpoints(for: remote, members: members, gatewayAlive: alive), key: mirrorKey, in: \.endpoints, &book)
      try await ensureSlices([], mirror: mirrorKey, &book)
    }
    await deleteEndpointMirrors(of: mirrorKey, keeping: wanted, &book)
  }

  /// A mirror Service cannot change between headless and ClusterIP (clusterIP is immutable): deletes it so
  /// it is created anew.
  func replaceIfHeadlessChanged(_ mirrorKey: String, headless: Bool, _ book: inout Book) async throws {
    guard let current = book.services[mirrorKey], MirrorPlanner.isHeadless(current) != headless else { return }
    do {
      try await localClient.delete(KubeService.self, name: current.name, namespace: current.namespace)
    } catch let error as KubeError where error.isNotFound {}
    book.services[mirrorKey] = nil
    metrics.kubeWrite(clusterName, verb: "delete", success: true)
    logger.info("mirror changes between headless and ClusterIP; re-creating it", metadata: ["mirror": "\(mirrorKey)"])
  }

  /// Deletes the endpoint mirrors of headless mirror `mirrorKey` except `keeping`.
  func deleteEndpointMirrors(of mirrorKey: String, keeping: Set<String>, _ book: inout Book) async {
    guard let slash = mirrorKey.firstIndex(of: "/") else { return }
    let namespace = String(mirrorKey[..<slash])
    let name = String(mirrorKey[mirrorKey.index(after: slash)...])
    var keys = Set<String>()
    for (key, service) in book.services where service.namespace == namespace
      && service.metadata.labels?[MirrorMetadata.headlessMirrorLabel] == name { keys.insert(key) }
    for (key, endpoints) in book.endpoints where endpoints.namespace == namespace
      && endpoints.metadata.labels?[MirrorMetadata.headlessMirrorLabel] == name { keys.insert(key) }
    for slice in book.slices.values where slice.namespace == namespace
      && slice.metadata.labels?[MirrorMetadata.headlessMirrorLabel] == name { keys.insert(Self.mirrorKey(of: slice)) }
    for key in keys.subtracting(keeping).sorted() { await deleteMirror(key, &book) }
  }

  /// Whether a local object carries this Link's mirror labels.
  func isMirror(_ metadata: ObjectMeta) -> Bool {
    (metadata.labels?[MirrorMetadata.mirroredServiceLabel] == "true"
      && metadata.labels?[MirrorMetadata.clusterNameLabel] == clusterName)
      || metadata.labels?[MirrorMetadata.federatedClusterLabel] == clusterName
  }

  /// Creates or updates one mirror object so it says what `desired` says.
  func ensure<R: MirrorObject>(
    _ desired: R, key: String, in path: WritableKeyPath<Book, [String: R]>, _ book: inout Book
  ) async throws {
    if let current = book[keyPath: path][key] {
      guard !R.matches(current, desired) else { return }
      book[keyPath: path][key] = try await write(R.applying(desired, to: current), desired: desired)
      book.updated += 1
      return
    }
    do {
      book[keyPath: path][key] = try await localClient.create(desired)
      metrics.kubeWrite(clusterName, verb: "create", success: true)
      book.created += 1
    } catch let error as KubeError where error.isAlreadyExists {
      let existing = try await localClient.get(R.self, name: desired.name, namespace: desired.namespace)
      guard isMirror(existing.metadata) else {
        throw MulticlusterError.nameConflict(
          "\(R.kind) \(key) exists and is not a mirror of '\(clusterName)'; it is left alone")
      }
      book[keyPath: path][key] = existing
      if !R.matches(existing, desired) {
        book[keyPath: path][key] = try await write(R.applying(desired, to: existing), desired: desired)
        book.updated += 1
      }
    } catch let error as KubeError where error.isNotFound {
      throw MulticlusterError.namespaceMissing("namespace '\(desired.namespace ?? "")' does not exist in this cluster")
    } catch {
      metrics.kubeWrite(clusterName, verb: "create", success: false)
      throw error
    }
  }

  /// PUTs `updated`; on a conflict re-reads and re-applies `desired`; when the object vanished, creates it.
  func write<R: MirrorObject>(_ updated: R, desired: R) async throws -> R {
    do {
      let result: R
      do {
        result = try await localClient.update(updated)
      } catch let error as KubeError where error.isConflict {
        result = try await localClient.update(R.self, name: desired.name, namespace: desired.namespace) {
          $0 = R.applying(desired, to: $0)
        }
      } catch let error as KubeError where error.isNotFound {
        result = try await localClient.create(desired)
      }
      metrics.kubeWrite(clusterName, verb: "update", success: true)
      return result
    } catch {
      metrics.kubeWrite(clusterName, verb: "update", success: false)
      throw error
    }
  }

  /// `namespace/<service>` of the mirror a slice belongs to (its `kubernetes.io/service-name` label).
  static func mirrorKey(of slice: EndpointSlice) -> String {
    "\(slice.namespace ?? "default")/\(slice.metadata.labels?[EndpointSlice.serviceNameLabel] ?? slice.name)"
  }

  /// Brings the slices of one mirror to `desired`: creates or updates those, deletes the mirror's others.
  func ensureSlices(_ desired: [EndpointSlice], mirror mirrorKey: String, _ book: inout Book) async throws {
    for slice in desired {
      try await ensure(slice, key: slice.metadata.key, in: \.slices, &book)
    }
    let wanted = Set(desired.map(\.metadata.key))
    for (key, slice) in book.slices where Self.mirrorKey(of: slice) == mirrorKey && !wanted.contains(key) {
      do {
        try await localClient.delete(EndpointSlice.self, name: slice.name, namespace: slice.namespace)
      } catch let error as KubeError where error.isNotFound {}
      book.slices[key] = nil
      metrics.kubeWrite(clusterName, verb: "delete", success: true)
    }
  }

  /// Deletes a mirror's Endpoints when it has some (left from `endpointsAPI = .endpoints`).
  func deleteEndpoints(of mirrorKey: String, _ book: inout Book) async throws {
    guard let endpoints = book.endpoints[mirrorKey] else { return }
    do {
      try await localClient.delete(Endpoints.self, name: endpoints.name, namespace: endpoints.namespace)
    } catch let error as KubeError where error.isNotFound {}
    book.endpoints[mirrorKey] = nil
    metrics.kubeWrite(clusterName, verb: "delete", success: true)
  }

  /// Deletes a mirror's Service, Endpoints and EndpointSlices (any may already be gone).
  func deleteMirror(_ mirrorKey: String, _ book: inout Book) async {
    guard let slash = mirrorKey.firstIndex(of: "/") else { return }
    if let service = book.services[mirrorKey], !Self.isEndpointMirror(service.metadata) {
      await deleteEndpointMirrors(of: mirrorKey, keeping: [], &book)
    }
    let namespace = String(mirrorKey[..<slash])
    let name = String(mirrorKey[mirrorKey.index(after: slash)...])
    do {
      if book.services[mirrorKey] != nil {
        do { try await localClient.delete(KubeService.self, name: name, namespace: namespace) } catch let error as KubeError where error.isNotFound {}
        book.services[mirrorKey] = nil
      }
      if book.endpoints[mirrorKey] != nil {
        do { try await localClient.delete(Endpoints.self, name: name, namespace: namespace) } catch let error as KubeError where error.isNotFound {}
        book.endpoints[mirrorKey] = nil
      }
      try await ensureSlices([], mirror: mirrorKey, &book)
      metrics.kubeWrite(clusterName, verb: "delete", success: true)
      book.deleted += 1
      logger.info("deleted mirror", metadata: ["mirror": "\(mirrorKey)"])
    } catch {
      metrics.kubeWrite(clusterName, verb: "delete", success: false)
      logger.warning("could not delete a mirror; retrying at the next repair", metadata: ["mirror": "\(mirrorKey)", "error": "\(error)"])
    }
  }

  /// Makes the state of the book visible: the status's mirror list and `MirrorsReady`, the metrics.
  func publish(_ book: Book) {
    let mirrored = book.services.keys.sorted()
    let changed = shared.withLock { s -> Bool in
      defer {
        s.mirrored = mirrored
        s.mirroredCount = mirrored.count
      }
      return s.mirrored != mirrored
    }
    metrics.mirroredServices(clusterName, mirrored.count)
    publishFederated(book)
    if changed { heartbeatSignal.notify() }
    if !book.missing.isEmpty {
      let namespaces = book.missing.keys.sorted()
      let waiting = book.missing.values.flatMap { $0 }.sorted()
      setCondition(
        ConditionType.mirrorsReady, false, reason: MulticlusterError.Code.namespaceMissing.reason,
        message: "namespace\(namespaces.count == 1 ? "" : "s") \(namespaces.joined(separator: ", ")) "
          + "\(namespaces.count == 1 ? "does" : "do") not exist in this cluster; waiting to mirror \(Self.list(waiting))")
    } else if !book.failures.isEmpty {
      let conflict = book.failures.values.contains { $0.hasPrefix(MulticlusterError.Code.nameConflict.reason) }
      let details = book.failures.sorted { $0.key < $1.key }.prefix(3).map { "\($0.key): \($0.value)" }
      setCondition(
        ConditionType.mirrorsReady, false, reason: conflict ? MulticlusterError.Code.nameConflict.reason : "MirrorWriteFailed",
        message: "\(book.failures.count) mirror\(book.failures.count == 1 ? "" : "s") could not be written (retrying): "
          + details.joined(separator: "; "))
    } else {
      setCondition(
        ConditionType.mirrorsReady, true, reason: "Mirrored",
        message: "\(mirrored.count) service\(mirrored.count == 1 ? "" : "s") mirrored")
    }
    if changed { statusSignal.notify() }
  }

  static func list(_ items: [String], limit: Int = 5) -> String {
    let shown = items.prefix(limit).joined(separator: ", ")
    return items.count > limit ? "\(shown) and \(items.count - limit) more" : shown
  }
}

/// The kinds of mirror object, for the generic write path.
protocol MirrorObject: KubeResource {
  static func matches(_ current: Self, _ desired: Self) -> Bool
  static func applying(_ desired: Self, to current: Self) -> Self
}

extension KubeService: MirrorObject {
  static func matches(_ current: Self, _ desired: Self) -> Bool { MirrorPlanner.matches(current, desired) }
  static func applying(_ desired: Self, to current: Self) -> Self { MirrorPlanner.applying(desired, to: current) }
}

extension Endpoints: MirrorObject {
  static func matches(_ current: Self, _ desired: Self) -> Bool { MirrorPlanner.matches(current, desired) }
  static func applying(_ desired: Self, to current: Self) -> Self { MirrorPlanner.applying(desired, to: current) }
}

extension EndpointSlice: MirrorObject {
  static func matches(_ current: Self, _ desired: Self) -> Bool { MirrorPlanner.matches(current, desired) }
  static func applying(_ desired: Self, to current: Self) -> Self { MirrorPlanner.applying(desired, to: current) }
}
