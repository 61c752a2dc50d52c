import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import MeshKubeLocal
import Testing
import _MeshTestSupport

@Suite("Endpoints of a headless service by hostname")
struct HeadlessEndpointTests {
  @Test("`<hostname>.<service>.<ns>.svc.<domain>` parses as one endpoint of the service; other shapes do not")
  func parsing() throws {
    #expect(
      try DestinationTarget.parse("db-0.db.data.svc.cluster.local:3306", clusterDomain: "cluster.local")
        == .endpoint(namespace: "data", service: "db", hostname: "db-0", port: 3306))
    #expect(
      try DestinationTarget.parse("db.data.svc.cluster.local:3306", clusterDomain: "cluster.local")
        == .service(namespace: "data", name: "db", port: 3306))
    let target = try DestinationTarget.parse("db-0.db.data.svc.cluster.local:3306", clusterDomain: "cluster.local")
    #expect(target.serviceKey == "data/db" && target.port == 3306 && target.namespace == "data")
    if case .unknown = try DestinationTarget.parse("a.b.c.d.svc.cluster.local:80", clusterDomain: "cluster.local") {} else {
      Issue.record("four labels before .svc should not name an endpoint")
    }
  }

  @Test("Get of `db-0.db...` answers only the endpoint with hostname db-0 (slices and Endpoints), and follows it")
  func getByHostname() async throws {
    for api in [EndpointsAPI.endpointSlices, .endpoints] {
      try await withDiscovery(endpointsAPI: api) { kube, _, port in
        let state = kube.state
        var headless = service("db", "data")
        headless.spec?.clusterIP = "None"
        try state.create(headless)
        var named = slice("db-abc", service: "db", "data", ips: ["10.1.0.10", "10.1.0.11"], pods: false)
        named.endpoints[0].hostname = "db-0"
        named.endpoints[1].hostname = "db-1"
        try state.create(named)
        var movedSlice = named
        movedSlice.endpoints[0].addresses = ["10.1.0.20"]
        let moved = movedSlice
        try state.create(
          Endpoints(
            metadata: ObjectMeta(name: "db", namespace: "data"),
            subsets: [
              .init(
                addresses: [.init(ip: "10.1.0.10", hostname: "db-0"), .init(ip: "10.1.0.11", hostname: "db-1")],
                ports: [.init(name: "http", port: 8080, protocol: "TCP")])
            ]))
        try await withDestinationClient(port: port) { client in
          try await withThrowingTaskGroup(of: Void.self) { group in
            let zero = recordUpdates(client, path: "db-0.db.data.svc.cluster.local:8080", in: &group)
            let one = recordUpdates(client, path: "db-1.db.data.svc.cluster.local:8080", in: &group)
            let all = recordUpdates(client, path: "db.data.svc.cluster.local:8080", in: &group)
            try await eventually("\(api): db-0 alone") { addresses(after: zero.items) == [try authority("10.1.0.10:8080")] }
            try await eventually("\(api): db-1 alone") { addresses(after: one.items) == [try authority("10.1.0.11:8080")] }
            try await eventually("\(api): the service has both") {
              addresses(after: all.items) == Set(try ["10.1.0.10:8080", "10.1.0.11:8080"].map(authority))
            }
            // db-0 moves to another IP: its name follows.
            try put(moved, in: state)
            try put(
              Endpoints(
                metadata: ObjectMeta(name: "db", namespace: "data"),
                subsets: [
                  .init(
                    addresses: [.init(ip: "10.1.0.20", hostname: "db-0"), .init(ip: "10.1.0.11", hostname: "db-1")],
                    ports: [.init(name: "http", port: 8080, protocol: "TCP")])
                ]), in: state)
            try await eventually("\(api): db-0 at its new IP") { addresses(after: zero.items) == [try authority("10.1.0.20:8080")] }
            #expect(addresses(after: one.items) == [try authority("10.1.0.11:8080")])
            group.cancelAll()
          }
        }
      }
    }
  }

  @Test("`db-0.db-west...` of a headless mirror answers its endpoint mirror db-0-west: the gateway, with db-0's remote authority and the gateway identity, and follows it")
  func byNameThroughHeadlessMirror() async throws {
    let mirrored = ["mirror.swiftmesh.io/mirrored-service": "true", "mirror.swiftmesh.io/cluster-name": "west"]
    let gateway = "swiftmesh-gateway.swiftmesh-multicluster.serviceaccount.identity.swiftmesh.cluster.local"
    try await withDiscovery(endpointsAPI: .endpointSlices) { kube, _, port in
      let state = kube.state
      // As the service mirror writes them for west's headless db with pod db-0.
      var headless = service("db-west", "default", labels: mirrored)
      headless.spec?.clusterIP = "None"
      try state.create(headless)
      var endpointMirror = service(
        "db-0-west", "default", labels: mirrored.merging(["mirror.swiftmesh.io/headless-mirror-svc-name": "db-west"]) { $1 },
        annotations: ["mirror.swiftmesh.io/remote-svc-fq-name": "db-0.db.default.svc.cluster.local"])
      endpointMirror.spec?.clusterIP = "10.96.0.50"
      try state.create(endpointMirror)
      var parentSlice = slice("db-west-ipv4", service: "db-west", "default", ips: ["10.96.0.50"], pods: false)
      parentSlice.endpoints[0].hostname = "db-0"
      try state.create(parentSlice)
      @Sendable func gatewaySlice(_ ip: String) -> EndpointSlice {
        var gatewaySlice = slice(
          "db-0-west-ipv4", service: "db-0-west", "default", ips: [ip], port: 4143, pods: false,
          annotations: ["mirror.swiftmesh.io/gateway-identity": gateway])
        gatewaySlice.metadata.labels?["mirror.swiftmesh.io/headless-mirror-svc-name"] = "db-west"
        return gatewaySlice
      }
      try state.create(gatewaySlice("192.0.2.10"))
      try await withDestinationClient(port: port) { client in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let log = recordUpdates(client, path: "db-0.db-west.default.svc.cluster.local:8080", in: &group)
          try await eventually("the gateway for db-0") { addresses(after: log.items) == [try authority("192.0.2.10:4143")] }
          guard case .add(let endpoints)? = log.items.last(where: { if case .add = $0 { true } else { false } }) else {
            Issue.record("no add: \(log.items)")
            return
          }
          #expect(endpoints.first?.authorityOverride?.description == "db-0.db.default.svc.cluster.local:8080")
          #expect(endpoints.first?.tlsIdentity?.description == gateway)
          // The gateway moves: the subscription on the headless name follows the endpoint mirror's slice.
          try put(gatewaySlice("192.0.2.11"), in: state)
          try await eventually("the moved gateway") { addresses(after: log.items) == [try authority("192.0.2.11:4143")] }
          group.cancelAll()
        }
      }
    }
  }
}
