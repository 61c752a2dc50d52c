import GRPCCore
import MeshAPI
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import MeshKubeLocal
import Testing
import _MeshTestSupport

/// 2,500 distinct IPv4 addresses, `10.2.<i / 250>.<i % 250 + 1>`.
func manyIPs(_ range: Range<Int>) -> [String] { range.map { "10.2.\($0 / 250).\($0 % 250 + 1)" } }

@Suite("Destination server over EndpointSlices, end to end")
struct EndpointSliceServerTests {
  let path = "web.app.svc.cluster.local:8080"

  @Test("2,500 endpoints over three slices are served whole; deleting one slice removes exactly its endpoints")
  func largeService() async throws {
    try await withDiscovery(endpointsAPI: .endpointSlices) { kube, server, port in
      let state = kube.state
      try state.create(service("web", "app"))
      let groups = [manyIPs(0..<1000), manyIPs(1000..<2000), manyIPs(2000..<2500)]
      for (i, group) in groups.enumerated() {
        try state.create(slice("web-\(i)", service: "web", "app", ips: group, pods: false))
      }
      // A slice of another service in the namespace and one of a same-named service elsewhere: not web's.
      try state.create(slice("api-0", service: "api", "app", ips: ["10.9.0.1"], pods: false))
      try state.create(MeshKube.Namespace(metadata: ObjectMeta(name: "other")))
      try state.create(slice("web-0", service: "web", "other", ips: ["10.9.0.2"], pods: false))
      #expect(server.endpointsAPI == .endpointSlices)
      try await withDestinationClient(port: port) { client in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let log = recordUpdates(client, path: path, in: &group)
          let all = Set(try groups.joined().map { try Authority(host: $0, port: 8080) })
          try await eventually("all 2,500 endpoints", timeout: .seconds(20)) { addresses(after: log.items) == all }
          let before = log.items.count

          try state.delete(EndpointSlice.self, name: "web-1", namespace: "app")
          let removed = Set(try groups[1].map { try Authority(host: $0, port: 8080) })
          try await eventually("the remove of web-1's endpoints", timeout: .seconds(20)) { log.items.count > before }
          #expect(log.items[before] == .remove(removed.sorted(by: EndpointSet.precedes)))
          #expect(addresses(after: log.items) == all.subtracting(removed))
          #expect(log.items.count == before + 1, "unexpected extra messages after the delete")
          group.cancelAll()
        }
      }
    }
  }

  @Test("a slice of only terminating-but-serving endpoints is used while nothing is ready, dropped when a ready one appears")
  func drainingSlice() async throws {
    try await withDiscovery(endpointsAPI: .endpointSlices) { kube, server, port in
      let state = kube.state
      try state.create(service("web", "app"))
      try state.create(
        slice(
          "web-old", service: "web", "app", ips: ips(1...2), pods: false,
          conditions: .init(ready: false, serving: true, terminating: true)))
      try await withDestinationClient(port: port) { client in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let log = recordUpdates(client, path: path, in: &group)
          // (The subscription may come before the slice reaches the server's informer: no_endpoints first.)
          try await eventually("the draining endpoints") {
            addresses(after: log.items) == Set(try ["10.1.0.1:8080", "10.1.0.2:8080"].map(authority))
          }
          #expect(log.items.last == .add(try ips(1...2).map { Endpoint(address: try Authority(host: $0, port: 8080), metricLabels: ["namespace": "app", "service": "web"]) }))

          try state.create(slice("web-new", service: "web", "app", ips: ["10.1.0.3"], pods: false))
          try await eventually("the switch to the ready endpoint") { addresses(after: log.items) == [try authority("10.1.0.3:8080")] }
          #expect(log.items.dropFirst().contains(.remove(try ["10.1.0.1:8080", "10.1.0.2:8080"].map(authority))))

          // The ready endpoint goes while the draining ones still serve: they are used again.
          try state.delete(EndpointSlice.self, name: "web-new", namespace: "app")
          try await eventually("the draining endpoints again") {
            addresses(after: log.items) == Set(try ["10.1.0.1:8080", "10.1.0.2:8080"].map(authority))
          }
          // They stop serving: nothing is left.
          try put(
            slice(
              "web-old", service: "web", "app", ips: ips(1...2), pods: false,
              conditions: .init(ready: false, serving: false, terminating: true)), in: state)
          try await eventually("no endpoints") { log.last == .noEndpoints(exists: true) }
          group.cancelAll()
        }
      }
    }
  }

  @Test("a cluster with only slices: meshed pods get identities; Endpoints objects are not needed")
  func onlySlices() async throws {
    try await withDiscovery(endpointsAPI: .endpointSlices) { kube, server, port in
      let state = kube.state
      try state.create(service("web", "app"))
      for ip in ips(1...2) { try state.create(pod(podName("web", ip), "app", serviceAccount: "web", meshed: true)) }
      try state.create(slice("web-abc", service: "web", "app", ips: ips(1...2), zone: "zone-a", nodeName: "node-1"))
      #expect(try state.list(Endpoints.self).isEmpty)
      try await withResolver(port: port) { resolver in
        let sets = try await withThrowingTaskGroup(of: Void.self) { group in
          let sets = record(resolver.endpoints(for: try authority(path)), in: &group)
          try await eventually("both endpoints") { sets.last?.endpoints.count == 2 }
          group.cancelAll()
          return sets
        }
        let first = try #require(sets.last)
        #expect(first.addresses == (try ["10.1.0.1:8080", "10.1.0.2:8080"].map(authority)))
        let identity = try IdentityName("web.app.serviceaccount.identity.swiftmesh.cluster.local")
        #expect(first.endpoints.allSatisfy { $0.tlsIdentity == identity && $0.protocolHint == .http2 })
        #expect(first.endpoints.allSatisfy { $0.metricLabels["zone"] == "zone-a" && $0.metricLabels["node"] == "node-1" })
      }
    }
  }

  @Test("subscribers that send their zone in the context token get the endpoints hinted for it; others get all")
  func topologyHints() async throws {
    try await withDiscovery(endpointsAPI: .endpointSlices) { kube, server, port in
      let state = kube.state
      try state.create(service("web", "app"))
      try state.create(slice("web-a", service: "web", "app", ips: ips(1...2), pods: false, zone: "zone-a", forZones: ["zone-a"]))
      try state.create(slice("web-b", service: "web", "app", ips: ips(3...3), pods: false, zone: "zone-b", forZones: ["zone-b"]))
      try await withDestinationClient(port: port) { client in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let inA = recordUpdates(client, path: path, contextToken: ContextToken(ns: "app", zone: "zone-a").encoded, in: &group)
          let inB = recordUpdates(client, path: path, contextToken: #"{"ns":"app","zone":"zone-b"}"#, in: &group)
          let unknown = recordUpdates(client, path: path, in: &group)
          let zoneA = Set(try ["10.1.0.1:8080", "10.1.0.2:8080"].map(authority))
          let zoneB: Set<Authority> = [try authority("10.1.0.3:8080")]
          try await eventually("each subscriber's set") {
            addresses(after: inA.items) == zoneA && addresses(after: inB.items) == zoneB
              && addresses(after: unknown.items).count == 3
          }
          #expect(server.statistics.endpointPublishers == 3)
          group.cancelAll()
        }
      }
      // The client library sends what its configuration says.
      try await withResolver(port: port, contextToken: ContextToken(zone: "zone-b").encoded) { resolver in
        var iterator = resolver.endpoints(for: try authority(path)).makeAsyncIterator()
        // The server has both slices by now (the raw subscribers above saw them): the first set is complete.
        let first = try #require(try await iterator.next())
        #expect(first.addresses == [try authority("10.1.0.3:8080")])
      }
    }
  }

  @Test("--endpoints-api endpoints reads Endpoints and ignores slices")
  func endpointsMode() async throws {
    try await withDiscovery(endpointsAPI: .endpoints) { kube, server, port in
      let state = kube.state
      try state.create(service("web", "app"))
      try state.create(slice("web-a", service: "web", "app", ips: ips(1...3), pods: false))
      try state.create(endpoints("web", "app", ips: ips(7...7), pods: false))
      #expect(server.endpointsAPI == .endpoints)
      try await withDestinationClient(port: port) { client in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let log = recordUpdates(client, path: path, in: &group)
          try await eventually("the Endpoints' address") { addresses(after: log.items) == [try authority("10.1.0.7:8080")] }
          // The slices were created first: had they been read, their addresses would have come too.
          #expect(log.items.allSatisfy { update in
            if case .add(let endpoints) = update { return endpoints.allSatisfy { $0.address.host == "10.1.0.7" } }
            return true
          })
          group.cancelAll()
        }
      }
    }
  }

  @Test("an API server without discovery.k8s.io/v1: the server falls back to Endpoints")
  func fallback() async throws {
    let old = LocalKubeState(configuration: .defaults { $0.unservedGroups = ["discovery.k8s.io"] })
    try await withDiscovery(endpointsAPI: .endpointSlices, state: old) { kube, server, port in
      let client = try KubeClient(config: kube.config)
      let served = try await client.serves(EndpointSlice.self)
      try await client.shutdown()
      #expect(!served)
      #expect(server.endpointsAPI == .endpoints)
      try kube.state.create(service("web", "app"))
      try kube.state.create(endpoints("web", "app", ips: ips(1...2), pods: false))
      try await withDestinationClient(port: port) { client in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let log = recordUpdates(client, path: path, in: &group)
          try await eventually("the Endpoints' addresses") {
            addresses(after: log.items) == Set(try ["10.1.0.1:8080", "10.1.0.2:8080"].map(authority))
          }
          group.cancelAll()
        }
      }
    }
  }
}
