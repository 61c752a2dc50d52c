import GRPCCore
import MeshAPI
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import MeshKubeLocal
import Testing
import _MeshTestSupport

/// `Get` by `<ip>:<port>`, as a transparent proxy asks by a connection's original destination.
@Suite("Destination server: destinations by IP address")
struct AddressDestinationTests {
  @Test("a path with an IP is an address; a ClusterIP gives its Service's endpoints, a pod IP that pod alone, anything else nothing; ports are opaque by annotation")
  func byAddress() async throws {
    #expect(try DestinationTarget.parse("10.96.0.10:80", clusterDomain: "cluster.local") == .address(try Authority("10.96.0.10:80")))
    #expect(try DestinationTarget.parse("[fd00::1]:80", clusterDomain: "cluster.local") == .address(try Authority("[fd00::1]:80")))
    try await withDiscovery(endpointsAPI: .endpointSlices) { kube, server, port in
      let state = kube.state
      var web = service("web", "app", ports: [("http", 80, 8080), ("db", 5432, 5432), ("cache", 7000, 7000)])
      web.spec?.clusterIP = "10.96.0.42"
      web.metadata.annotations = [OpaquePorts.annotation: "7000"]
      try state.create(web)
      for ip in ips(1...2) {
        var member = pod(podName("web", ip), "app", serviceAccount: "web", meshed: true)
        member.status = .init(phase: "Running", podIP: ip)
        try state.create(member)
      }
      try publish("web", "app", ips: ips(1...2), api: .endpointSlices, in: state)
      try await eventually("the server's informers hold web") { informersHold(server, "web", "app", api: .endpointSlices) }
      let identity = try IdentityName("web.app.serviceaccount.identity.swiftmesh.cluster.local")
      try await withDestinationClient(port: port) { client in
        try await withThrowingTaskGroup(of: Void.self) { group in
          let byClusterIP = recordUpdates(client, path: "10.96.0.42:80", in: &group)
          let byPodIP = recordUpdates(client, path: "10.1.0.2:9090", in: &group)
          let unknown = recordUpdates(client, path: "10.96.0.99:80", in: &group)
          try await eventually("three first answers", timeout: .seconds(10)) {
            byClusterIP.items.count >= 1 && byPodIP.items.count >= 1 && unknown.items.count >= 1
          }
          guard case .add(let service) = byClusterIP.items[0], case .add(let single) = byPodIP.items[0] else {
            Issue.record("expected adds: \(byClusterIP.items) \(byPodIP.items)")
            return
          }
          #expect(service.map(\.address.description) == ["10.1.0.1:8080", "10.1.0.2:8080"])
          #expect(service.allSatisfy { $0.tlsIdentity == identity && $0.opaqueInboundPort == 4143 })
          #expect(single.map(\.address.description) == ["10.1.0.2:9090"])
          #expect(single.first?.tlsIdentity == identity && single.first?.metricLabels["pod"] == "web-2")
          #expect(unknown.items[0] == .noEndpoints(exists: false))
          group.cancelAll()
        }
        // Profiles: the annotation makes 7000 opaque and replaces the default list (5432 is not).
        for (path, opaque) in [("10.96.0.42:7000", true), ("10.96.0.42:5432", false), ("10.96.0.42:80", false)] {
          var request = Swiftmesh_Destination_GetDestination()
          request.path = path
          let profile = try await client.getProfile(request: ClientRequest(message: request)) { response in
            for try await message in response.messages { return message }
            throw TestFailure("no profile for \(path)")
          }
          #expect(profile.opaqueProtocol == opaque, "\(path)")
          #expect(profile.fullyQualifiedName == "web.app.svc.cluster.local", "\(path)")
        }
      }
    }
  }

  @Test("opaque ports: the annotation replaces the default list, appProtocol decides without it, else the default list")
  func opaquePorts() {
    #expect(OpaquePorts.isOpaque(port: 6379, servicePort: nil, annotations: nil))
    #expect(!OpaquePorts.isOpaque(port: 80, servicePort: nil, annotations: nil))
    #expect(!OpaquePorts.isOpaque(port: 6379, servicePort: nil, annotations: [OpaquePorts.annotation: "7000-7010"]))
    #expect(OpaquePorts.isOpaque(port: 7005, servicePort: nil, annotations: [OpaquePorts.annotation: "7000-7010"]))
    var port = KubeService.Port(name: "x", port: 9000)
    port.appProtocol = "tcp"
    #expect(OpaquePorts.isOpaque(port: 9000, servicePort: port, annotations: nil))
    port.appProtocol = "kubernetes.io/h2c"
    #expect(!OpaquePorts.isOpaque(port: 9000, servicePort: port, annotations: nil))
    port.appProtocol = "http"
    #expect(!OpaquePorts.isOpaque(port: 3306, servicePort: port, annotations: nil))
  }
}
