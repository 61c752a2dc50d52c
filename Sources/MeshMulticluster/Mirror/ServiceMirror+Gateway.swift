import Logging
import MeshCore
import MeshKube
import Synchronization

extension ServiceMirror {
  /// Keeps the gateway's IP addresses current for one session: every `gatewayResolveInterval`, and at once when
  /// the target's gateway Service changes, the Link changes, or a probe of some address fails. Chooses the
  /// entries (the gateway Service's published addresses when the Link follows it and it publishes any, else the
  /// Link's), resolves the names, and when the set of IPs changed hands it to the planner (every mirror is
  /// re-planned) and to the probe. A name that stops resolving keeps its last known IPs; the `GatewayResolved`
  /// condition says which names and entries are a problem.
  func resolveGateway(initial: LinkSettings, caches: Caches, probe: GatewayProbe?) async {
    var book = GatewayAddressBook()
    var settings = initial
    var entries = link.spec.gatewayAddresses ?? []
    var inEffect: [String]?
    // The gateway Service comes with the target's Services; a target that does not answer in time still gets
    // the Link's addresses (and the Service's once it answers).
    let deadline = ContinuousClock.now + configuration.remoteConnectTimeout
    while !caches.services.store.hasSynced && ContinuousClock.now < deadline {
      do { try await Task.sleep(for: .milliseconds(20)) } catch { return }
    }
    while !Task.isCancelled {
      let current = link
      if let fresh = try? LinkSettings(link: current), fresh.targetClusterName == settings.targetClusterName {
        settings = fresh
        entries = current.spec.gatewayAddresses ?? []
      }
      var published: [String]?
      if settings.followGatewayService,
        let service = caches.services.store.get(
          key: "\(settings.linkNamespace)/\(MirrorMetadata.gatewayServiceName)")
      {
        published = GatewayValues(service: service).addresses
      }
      book.choose(link: entries, service: published)
      let names = book.names
      let results = await withTaskGroup(of: (String, Result<[String], GatewayResolutionError>).self) { group in
        for name in names {
          group.addTask { (name, await self.resolve(name)) }
        }
        var out: [(String, Result<[String], GatewayResolutionError>)] = []
        for await result in group { out.append(result) }
        return out
      }
      if Task.isCancelled { return }
      for (name, result) in results {
        let wasUnresolved = book.unresolved[name] != nil
        book.record(name, result)
        switch result {
        case .failure(let failure) where !wasUnresolved:
          logger.warning(
            "gateway name does not resolve; keeping its last known addresses",
            metadata: ["name": "\(name)", "error": "\(failure.reason)", "kept": "\(book.lastKnown[name]?.joined(separator: ",") ?? "none")"])
        case .success where wasUnresolved:
          logger.notice("gateway name resolves again", metadata: ["name": "\(name)"])
        default:
          break
        }
      }
      let condition = book.condition
      setCondition(ConditionType.gatewayResolved, condition.status, reason: condition.reason, message: condition.message)
      let ips = book.ips
      if ips != inEffect {
        if inEffect != nil {
          logger.notice(
            "gateway addresses changed; rewriting every mirror's endpoints",
            metadata: ["from": "\(inEffect?.joined(separator: ",") ?? "-")", "to": "\(ips.joined(separator: ","))"])
        }
        shared.withLock { $0.gatewayIPs = ips }
        if let probe, let identity = settings.gatewayIdentity {
          probe.retarget(.init(addresses: ips, identity: identity, settings: settings.probe))
        }
        if inEffect != nil { queue.everything() }
        inEffect = ips
        heartbeatSignal.notify()
      }
      _ = await resolveSignal.wait(timeout: configuration.gatewayResolveInterval)
    }
  }

  /// Resolves one name through the configured resolver, within `gatewayResolveTimeout`; keeps only IPs.
  func resolve(_ name: String) async -> Result<[String], GatewayResolutionError> {
    let resolver = configuration.resolver
    let timeout = configuration.gatewayResolveTimeout
    return await withTaskGroup(of: Result<[String], GatewayResolutionError>?.self) { group in
      group.addTask {
        do {
          let answers = try await resolver.resolve(name)
          let ips = answers.filter { if case .ip = try? GatewayAddress(parsing: $0) { true } else { false } }
          return ips.isEmpty ? .failure(GatewayResolutionError(name: name, reason: "no IP address in the answer")) : .success(ips)
        } catch let error as GatewayResolutionError {
          return .failure(error)
        } catch {
          return .failure(GatewayResolutionError(name: name, reason: "\(error)"))
        }
      }
      group.addTask {
        do { try await Task.sleep(for: timeout) } catch { return nil }
        return .failure(GatewayResolutionError(name: name, reason: "no answer within \(timeout)"))
      }
      let first = await group.next() ?? nil
      group.cancelAll()
      return first ?? .failure(GatewayResolutionError(name: name, reason: "resolution cancelled"))
    }
  }

  /// Waits until the session's first resolution has set the gateway's IPs.
  func waitForGatewayIPs() async -> Bool {
    while shared.withLock({ $0.gatewayIPs == nil }) {
      do { try await Task.sleep(for: .milliseconds(20)) } catch { return false }
    }
    return true
  }
}
