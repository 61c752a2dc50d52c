import Logging
import MeshKube
import Synchronization

extension ServiceMirror {
  /// This Link's part of the federated service of remote service `remoteKey`: the federated Service exists
  /// (created with the remote's ports when missing), its ports match the remote's, and this Link's gateway
  /// slice is there; otherwise (not a member, gone, ports differ) this Link's slices of it are deleted and a
  /// port mismatch is reported (`FederatedReady`). Other mirrors are not affected.
  func reconcileFederated(
    _ remoteKey: String, remote: KubeService?, _ book: inout Book, planner: MirrorPlanner, caches: Caches
  ) async {
    guard let slash = remoteKey.firstIndex(of: "/") else { return }
    let namespace = String(remoteKey[..<slash])
    let name = String(remoteKey[remoteKey.index(after: slash)...])
    let federated = MirrorMetadata.federatedName(of: name)
    let mine = book.federated.filter {
      $0.value.namespace == namespace && $0.value.metadata.labels?[EndpointSlice.serviceNameLabel] == federated
    }
    func dropMine(keeping: Set<String> = []) async throws {
      for (key, slice) in mine where !keeping.contains(key) {
        do {
          try await localClient.delete(EndpointSlice.self, name: slice.name, namespace: slice.namespace)
        } catch let error as KubeError where error.isNotFound {}
        book.federated[key] = nil
        metrics.kubeWrite(clusterName, verb: "delete", success: true)
      }
    }
    do {
      guard let remote, MirrorPlanner.isFederatedMember(remote), caches.namespaces.store.get(key: namespace) != nil else {
        book.federationProblems[remoteKey] = nil
        book.federatedMembers.remove(remoteKey)
        try await dropMine()
        return
      }
      book.federatedMembers.insert(remoteKey)
      var service: KubeService
      do {
        service = try await localClient.get(KubeService.self, name: federated, namespace: namespace)
      } catch let error as KubeError where error.isNotFound {
        do {
          service = try await localClient.create(
            MirrorPlanner.federatedService(name: name, namespace: namespace, ports: remote.spec?.ports ?? []))
          metrics.kubeWrite(clusterName, verb: "create", success: true)
        } catch let error as KubeError where error.isAlreadyExists {
          service = try await localClient.get(KubeService.self, name: federated, namespace: namespace)
        }
      }
      guard service.metadata.labels?[MirrorMetadata.federatedServiceLabel] == "true" else {
        book.federationProblems[remoteKey] =
          "Service \(namespace)/\(federated) exists and is not a federated service; it is left alone"
        try await dropMine()
        return
      }
      let theirs = MirrorPlanner.federationPorts(remote.spec?.ports)
      let ours = MirrorPlanner.federationPorts(service.spec?.ports)
      guard theirs == ours else {
        book.federationProblems[remoteKey] =
          "the ports of \(remoteKey) in '\(clusterName)' (\(theirs.joined(separator: ", "))) differ from those of "
          + "\(namespace)/\(federated) (\(ours.joined(separator: ", "))); '\(clusterName)' is left out of it"
        try await dropMine()
        return
      }
      book.federationProblems[remoteKey] = nil
      let alive = shared.withLock { $0.probe?.alive ?? true }
      let desired = planner.federatedSlices(
        for: remote, remoteReady: caches.remoteReady(namespace: namespace, name: name), gatewayAlive: alive)
      for slice in desired {
        try await ensure(slice, key: slice.metadata.key, in: \.federated, &book)
      }
      try await dropMine(keeping: Set(desired.map(\.metadata.key)))
    } catch {
      book.federationProblems[remoteKey] = "could not write this Link's part of \(namespace)/\(federated) (retrying): \(error)"
      book.failures[remoteKey] = book.failures[remoteKey] ?? "\(error)"
    }
  }

  /// Loads this Link's federated slices (at a repair) and the remote keys they stand for.
  func loadFederated(_ book: inout Book) async throws -> Set<String> {
    do {
      let slices = try await localClient.listAll(
        EndpointSlice.self,
        options: ListOptions(labelSelector: "\(MirrorMetadata.federatedClusterLabel)=\(clusterName)"))
      book.federated = Dictionary(slices.items.map { ($0.metadata.key, $0) }, uniquingKeysWith: { $1 })
    } catch let error as KubeError where error.isNotFound {
      book.federated = [:]
    }
    var keys = Set<String>()
    for slice in book.federated.values {
      guard let service = slice.metadata.labels?[EndpointSlice.serviceNameLabel], service.hasSuffix("-federated")
      else { continue }
      keys.insert("\(slice.namespace ?? "default")/\(service.dropLast("-federated".count))")
    }
    return keys
  }

  /// The `FederatedReady` condition from the book.
  func publishFederated(_ book: Book) {
    if !book.federationProblems.isEmpty {
      let mismatch = book.federationProblems.values.contains { $0.contains("differ from those of") }
      let details = book.federationProblems.sorted { $0.key < $1.key }.prefix(3).map(\.value)
      setCondition(
        ConditionType.federatedReady, false, reason: mismatch ? "FederatedPortMismatch" : "FederatedWriteFailed",
        message: details.joined(separator: "; "))
    } else if !book.federatedMembers.isEmpty {
      let count = book.federatedMembers.count
      setCondition(
        ConditionType.federatedReady, true, reason: "Federated",
        message: "\(count) federated service\(count == 1 ? "" : "s") include '\(clusterName)'")
    }
  }
}
