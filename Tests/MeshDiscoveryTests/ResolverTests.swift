import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import MeshKubeLocal
import Testing
import _MeshTestSupport

@Suite("Resolver against the destination server, end to end")
struct ResolverTests {
  @Test("the destination given by host name (localhost), as in a cluster's manifests, resolves like an address")
  func hostName() async throws {
    try await withDiscovery { kube, server, port in
      try kube.state.create(service("web", "app"))
      try kube.state.create(endpoints("web", "app", ips: ["10.1.0.7"], pods: false))
      try await withResolver(host: "localhost", port: port) { resolver in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let snapshots = record(resolver.endpoints(for: try authority("web.app.svc.cluster.local:8080")), in: &group)
          try await eventually("web's endpoints through localhost") { snapshots.last?.endpoints.count == 1 }
          #expect(snapshots.last?.endpoints.first?.address == (try authority("10.1.0.7:8080")))
          group.cancelAll()
        }
      }
    }
  }

  @Test("a mirror service resolves to the gateway address with the gateway identity and the authority override")
  func mirror() async throws {
    try await withDiscovery { kube, server, port in
      let gatewayIdentity = "swiftmesh-gateway.swiftmesh-multicluster.serviceaccount.identity.swiftmesh.cluster.local"
      try kube.state.create(
        service(
          "backend-west", "app",
          labels: ["mirror.swiftmesh.io/mirrored-service": "true", "mirror.swiftmesh.io/cluster-name": "west"],
          annotations: ["mirror.swiftmesh.io/remote-svc-fq-name": "backend.app.svc.cluster.local"]))
      try kube.state.create(
        endpoints(
          "backend-west", "app", ips: ["192.168.7.10"], port: 4143, pods: false,
          annotations: ["mirror.swiftmesh.io/gateway-identity": gatewayIdentity]))
      try await withResolver(port: port) { resolver in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let snapshots = record(resolver.endpoints(for: try authority("backend-west.app.svc.cluster.local:8080")), in: &group)
          try await eventually("the mirror's endpoints") { snapshots.last?.endpoints.count == 1 }
          let endpoint = try #require(snapshots.last?.endpoints.first)
          #expect(endpoint.address == (try authority("192.168.7.10:4143")))
          #expect(endpoint.tlsIdentity == (try IdentityName(gatewayIdentity)))
          #expect(endpoint.authorityOverride == (try authority("backend.app.svc.cluster.local:8080")))
          #expect(endpoint.protocolHint == .http2)
          #expect(endpoint.metricLabels["target_cluster"] == "west")
          #expect(endpoint.metricLabels["target_service"] == "backend")
          #expect(endpoint.metricLabels["target_service_namespace"] == "app")
          group.cancelAll()
        }
      }
    }
  }

  @Test("changing a TrafficSplit's weights pushes a new profile; deleting it returns to the plain profile")
  func trafficSplit() async throws {
    try await withDiscovery { kube, server, port in
      for name in ["web", "web-v1", "web-v2"] { try kube.state.create(service(name, "app")) }
      try await withResolver(port: port) { resolver in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let profiles = record(resolver.profile(for: try authority("web.app.svc.cluster.local:8080")), in: &group)
          try await eventually("the plain profile") { profiles.items.count == 1 }
          let plain = try #require(profiles.last)
          #expect(plain.fullyQualifiedName == "web.app.svc.cluster.local")
          #expect(plain.destinationOverrides.isEmpty)
          #expect(plain.retryBudget == .default)

          let v1 = try authority("web-v1.app.svc.cluster.local:8080")
          let v2 = try authority("web-v2.app.svc.cluster.local:8080")
          var split = TrafficSplit(
            metadata: ObjectMeta(name: "web-split", namespace: "app"),
            spec: .init(service: "web", backends: [.init(service: "web-v1", weight: 900), .init(service: "web-v2", weight: 100)]))
          try kube.state.create(split)
          try await eventually("the split profile") { profiles.items.count == 2 }
          #expect(profiles.last?.destinationOverrides == [.init(authority: v1, weight: 9000), .init(authority: v2, weight: 1000)])

          split.spec.backends = [.init(service: "web-v1", weight: 1), .init(service: "web-v2", weight: 3)]
          try put(split, in: kube.state)
          try await eventually("the re-weighted profile") { profiles.items.count == 3 }
          #expect(profiles.last?.destinationOverrides == [.init(authority: v1, weight: 2500), .init(authority: v2, weight: 7500)])

          try kube.state.delete(TrafficSplit.self, name: "web-split", namespace: "app")
          try await eventually("the plain profile again") { profiles.items.count == 4 }
          #expect(profiles.last == plain)
          group.cancelAll()
        }
      }
    }
  }

  @Test("a ServiceProfile route with an invalid regex is dropped and reported; the other routes are served")
  func invalidRegex() async throws {
    try await withDiscovery { kube, server, port in
      try kube.state.create(service("web", "app"))
      try kube.state.create(
        ServiceProfile(
          metadata: ObjectMeta(name: "web.app.svc.cluster.local", namespace: "app"),
          spec: .init(routes: [
            .init(name: "broken", condition: .init(method: "GET", pathRegex: "/books/(unclosed")),
            .init(
              name: "books", condition: .init(method: "get", pathRegex: "/books/[0-9]+"),
              responseClasses: [.init(condition: .init(status: .init(min: 500, max: 599)), isFailure: true)],
              isRetryable: true, timeout: "250ms"),
          ])))
      try await withResolver(port: port) { resolver in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let profiles = record(resolver.profile(for: try authority("web.app.svc.cluster.local:8080")), in: &group)
          // The server may answer before its informer has the ServiceProfile (an empty profile first, then
          // the routes as an update, as a destination service streams them).
          try await eventually("the profile's routes") { profiles.last?.routes.isEmpty == false }
          let profile = try #require(profiles.last)
          #expect(profile.routes.map(\.name) == ["books"])
          let route = try #require(profile.routes.first)
          #expect(route.condition == .all([.method("GET"), .pathRegex("/books/[0-9]+")]))
          #expect(route.isRetryable)
          #expect(route.timeout == .milliseconds(250))
          #expect(route.responseClasses == [.init(condition: .status(min: 500, max: 599), isFailure: true)])
          #expect(server.problems.map(\.route) == ["broken"])
          #expect(server.problems.first?.message.contains("/books/(unclosed") == true)
          #expect(server.statistics.problemsReported == 1)
          group.cancelAll()
        }
      }
    }
  }

  @Test("after a destination server restart the resolver reconnects and converges, serving the last endpoints meanwhile")
  func restart() async throws {
    try await withKube { kube in
      try kube.state.create(service("web", "app"))
      try kube.state.create(endpoints("web", "app", ips: ips(1...2), pods: false))
      let web = try authority("web.app.svc.cluster.local:8080")
      try await withThrowingTaskGroup(of: Void.self) { group in
        let (first, firstClient) = try kube.destinationServer()
        let firstHandle = start(first, in: &group)
        let port = try await first.listeningPort
        try await withResolver(port: port) { resolver in
          try await withThrowingTaskGroup(of: Void.self) { inner in
            let snapshots = record(resolver.endpoints(for: web), in: &inner)
            try await eventually("two endpoints") { snapshots.last?.endpoints.count == 2 }

            firstHandle.stop()
            try await eventually("the resolver notices the broken stream") { resolver.statistics.streamsBroken >= 1 }
            try kube.state.update(
              { () -> Endpoints in
                var e = endpoints("web", "app", ips: ips(1...3), pods: false)
                e.metadata.resourceVersion = kube.state.get(Endpoints.self, name: "web", namespace: "app")?.metadata.resourceVersion
                return e
              }())
            // Meanwhile a new consumer still gets the last known set at once.
            let late = record(resolver.endpoints(for: web), in: &inner)
            try await eventually("the last known set for a new consumer", timeout: .seconds(10)) { late.items.count == 1 }
            #expect(late.items.first?.endpoints.count == 2)

            let (second, secondClient) = try kube.destinationServer(port: port)
            let secondHandle = start(second, in: &inner)
            try await eventually("convergence on three endpoints") {
              snapshots.last?.endpoints.count == 3 && late.last?.endpoints.count == 3
            }
            #expect(snapshots.items.allSatisfy { $0.exists && !$0.endpoints.isEmpty }, "an empty set was emitted: \(snapshots.items)")
            #expect(snapshots.items.map(\.endpoints.count) == [2, 3])
            #expect(resolver.statistics.streamsOpened >= 2)
            secondHandle.stop()
            inner.cancelAll()
            try await secondClient.shutdown()
          }
        }
        try await firstClient.shutdown()
        group.cancelAll()
      }
    }
  }
}
