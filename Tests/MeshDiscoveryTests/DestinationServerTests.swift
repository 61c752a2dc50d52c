import GRPCCore
import MeshAPI
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import MeshKubeLocal
import Testing
import _MeshTestSupport

@Suite("Destination server, end to end")
struct DestinationServerTests {
  let path = "web.app.svc.cluster.local:8080"

  @Test(
    "scaling endpoints 1 -> 5 -> 2 sends exactly those adds and removes (propagation time: DiscoveryBenchmark)",
    arguments: EndpointsAPI.allCases)
  func scaling(api: EndpointsAPI) async throws {
    try await withDiscovery(endpointsAPI: api) { kube, server, port in
      let state = kube.state
      try state.create(service("web", "app"))
      for ip in ips(1...5) { try state.create(pod(podName("web", ip), "app", serviceAccount: "web", meshed: true)) }
      try publish("web", "app", ips: ips(1...1), api: api, in: state)
      try await eventually("the server's informers hold web") { informersHold(server, "web", "app", api: api) }
      try await withDestinationClient(port: port) { client in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let log = recordUpdates(client, path: path, in: &group)
          try await eventually("the first add", timeout: .seconds(10)) { log.items.count >= 1 }
          guard case .add(let first) = log.items[0] else {
            Issue.record("first message is \(log.items[0]), expected an add")
            return
          }
          #expect(first.map(\.address.description) == ["10.1.0.1:8080"])
          let identity = try IdentityName("web.app.serviceaccount.identity.swiftmesh.cluster.local")
          #expect(first[0].tlsIdentity == identity)
          #expect(first[0].protocolHint == .http2)
          #expect(first[0].weight == 10_000)
          #expect(first[0].metricLabels["pod"] == "web-1")

          try publish("web", "app", ips: ips(1...5), api: api, in: state)
          try await eventually("the scale-up add", timeout: .seconds(10)) { log.items.count >= 2 }
          #expect(log.items[1] == .add(try ips(2...5).map { ip in
            Endpoint(
              address: try Authority(host: ip, port: 8080), tlsIdentity: identity, protocolHint: .http2,
              metricLabels: ["namespace": "app", "service": "web", "pod": podName("web", ip), "serviceaccount": "web"],
              opaqueInboundPort: 4143)
          }))

          try publish("web", "app", ips: ips(1...2), api: api, in: state)
          try await eventually("the scale-down remove", timeout: .seconds(10)) { log.items.count >= 3 }
          #expect(log.items[2] == .remove(try ["10.1.0.3:8080", "10.1.0.4:8080", "10.1.0.5:8080"].map(authority)))

          try publish("web", "app", ips: [], api: api, in: state)
          try await eventually("no_endpoints after scaling to zero", timeout: .seconds(10)) { log.items.count >= 4 }
          #expect(log.items[3] == .noEndpoints(exists: true))
          #expect(log.items.count == 4, "unexpected extra messages: \(log.items)")
          group.cancelAll()
        }
      }
    }
  }

  @Test("a service without ready endpoints starts with no_endpoints(exists: true); a deleted one gets exists: false")
  func emptyAndDeleted() async throws {
    try await withDiscovery { kube, server, port in
      try kube.state.create(service("web", "app"))
      try await withDestinationClient(port: port) { client in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let log = recordUpdates(client, path: path, in: &group)
          try await eventually("the first message") { log.items.count >= 1 }
          #expect(log.items[0] == .noEndpoints(exists: true))
          try kube.state.delete(KubeService.self, name: "web", namespace: "app")
          try await eventually("exists: false after the delete") { log.items.count >= 2 }
          #expect(log.items[1] == .noEndpoints(exists: false))
          group.cancelAll()
        }
      }
    }
  }

  @Test("malformed paths get INVALID_ARGUMENT naming the path; unknown names get exists: false")
  func badInput() async throws {
    try await withDiscovery { kube, server, port in
      try await withDestinationClient(port: port) { client in
        for bad in ["", "web.app.svc.cluster.local", "web.app.svc.cluster.local:http", "web.app.svc.cluster.local:99999", ":8080"] {
          var request = Swiftmesh_Destination_GetDestination()
          request.path = bad
          let error = await #expect(throws: RPCError.self, "path '\(bad)'") {
            try await client.get(request: ClientRequest(message: request)) { response in
              for try await _ in response.messages {}
            }
          }
          #expect(error?.code == .invalidArgument, "path '\(bad)': \(String(describing: error))")
          #expect(error?.message.contains("'\(bad)'") == true, "message should name '\(bad)': \(error?.message ?? "")")
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
          let unknownNamespace = recordUpdates(client, path: "web.nowhere.svc.cluster.local:8080", in: &group)
          let unknownService = recordUpdates(client, path: "nothing.default.svc.cluster.local:80", in: &group)
          let outside = recordUpdates(client, path: "example.com:443", in: &group)
          try await eventually("three first messages") {
            unknownNamespace.items.count >= 1 && unknownService.items.count >= 1 && outside.items.count >= 1
          }
          #expect(unknownNamespace.items == [.noEndpoints(exists: false)])
          #expect(unknownService.items == [.noEndpoints(exists: false)])
          #expect(outside.items == [.noEndpoints(exists: false)])
          group.cancelAll()
        }
      }
    }
  }

  @Test("many subscribers to one service share one publisher, dropped with the last subscriber", arguments: EndpointsAPI.allCases)
  func sharedPublisher(api: EndpointsAPI) async throws {
    try await withDiscovery(endpointsAPI: api) { kube, server, port in
      try kube.state.create(service("web", "app"))
      try publish("web", "app", ips: ips(1...3), pods: false, api: api, in: kube.state)
      try await eventually("the server's informers hold web") { informersHold(server, "web", "app", api: api) }
      try await withDestinationClient(port: port) { client in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let logs = (0..<25).map { _ in recordUpdates(client, path: path, in: &group) }
          try await eventually("25 subscribers with their first message") {
            logs.allSatisfy { !$0.items.isEmpty } && server.statistics.endpointSubscribers == 25
          }
          #expect(server.statistics.endpointPublishers == 1)
          #expect(server.statistics.endpointPublishersCreated == 1)
          try publish("web", "app", ips: ips(1...4), pods: false, api: api, in: kube.state)
          try await eventually("every subscriber sees the new address") { logs.allSatisfy { $0.items.count == 2 } }
          #expect(logs.allSatisfy { $0.items[1] == .add([Endpoint(address: try! authority("10.1.0.4:8080"), metricLabels: ["namespace": "app", "service": "web"])]) })
          group.cancelAll()
        }
      }
      try await eventually("the publisher is dropped with its subscribers") { server.statistics.endpointPublishers == 0 }
    }
  }
}
