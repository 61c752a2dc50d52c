import MeshCore
@testable import MeshDestination
import MeshDiscovery
import MeshKube
import Testing

@Suite("Translators and parsing")
struct TranslatorTests {
  let translator = EndpointTranslator(trustDomain: .clusterLocal, controlPlaneNamespace: "swiftmesh")

  @Test("destination paths: services, unknown names, and malformed input naming the path")
  func paths() throws {
    #expect(try DestinationTarget.parse("web.app.svc.cluster.local:8080", clusterDomain: "cluster.local")
      == .service(namespace: "app", name: "web", port: 8080))
    #expect(try DestinationTarget.parse("WEB.app.svc.cluster.local.:80", clusterDomain: "cluster.local")
      == .service(namespace: "app", name: "web", port: 80))
    #expect(try DestinationTarget.parse("web.app.svc.example.org:80", clusterDomain: "cluster.local")
      == .unknown(try Authority("web.app.svc.example.org:80")))
    for bad in ["", "web", "web.app.svc.cluster.local:", "web:x", "web:70000", "web:0", ":80"] {
      let error = #expect(throws: DiscoveryError.self) { try DestinationTarget.parse(bad, clusterDomain: "cluster.local") }
      #expect(error?.code == .invalidPath)
      #expect(error?.message.contains("'\(bad)'") == true, "\(error?.message ?? "")")
    }
  }

  @Test("service port -> targetPort -> Endpoints port by name, number, or the only one")
  func ports() {
    let named = KubeService.Port(name: "http", port: 80, targetPort: .int(8080))
    let unnamed = KubeService.Port(name: nil, port: 80, targetPort: .int(8080))
    let byNameTarget = KubeService.Port(name: nil, port: 80, targetPort: .string("web"))
    let ports = [Endpoints.Port(name: "admin", port: 9990), Endpoints.Port(name: "http", port: 8080)]
    #expect(EndpointTranslator.endpointsPort(ports, servicePort: named, requested: 80) == 8080)
    #expect(EndpointTranslator.endpointsPort(ports, servicePort: unnamed, requested: 80) == 8080)
    #expect(EndpointTranslator.endpointsPort([.init(name: "web", port: 3000)], servicePort: byNameTarget, requested: 80) == 3000)
    #expect(EndpointTranslator.endpointsPort([.init(name: nil, port: 3000)], servicePort: unnamed, requested: 80) == 3000)
    #expect(EndpointTranslator.endpointsPort([.init(name: "grpc", port: 3000)], servicePort: named, requested: 80) == nil)
    #expect(EndpointTranslator.endpointsPort(ports, servicePort: nil, requested: 9990) == 9990)
  }

  @Test("only meshed pods get an identity and the h2 hint; not-ready addresses are left out")
  func identities() throws {
    let svc = service("web", "app")
    var eps = endpoints("web", "app", ips: ["10.0.0.1", "10.0.0.2"])
    eps.subsets![0].notReadyAddresses = [.init(ip: "10.0.0.3")]
    let pods = [
      "web-1": pod("web-1", "app", serviceAccount: "web", meshed: true),
      "web-2": pod("web-2", "app", serviceAccount: "web", meshed: false),
    ]
    let set = translator.endpointSet(service: svc, endpoints: eps, port: 8080, pod: { pods[$1] })
    #expect(set.exists)
    #expect(set.endpoints.map(\.address.description) == ["10.0.0.1:8080", "10.0.0.2:8080"])
    #expect(set.endpoints[0].tlsIdentity?.description == "web.app.serviceaccount.identity.swiftmesh.cluster.local")
    #expect(set.endpoints[0].protocolHint == .http2)
    #expect(set.endpoints[1].tlsIdentity == nil)
    #expect(set.endpoints[1].protocolHint == .unknown)
    #expect(translator.endpointSet(service: nil, endpoints: eps, port: 8080, pod: { _, _ in nil }) == .doesNotExist)
    #expect(translator.endpointSet(service: svc, endpoints: nil, port: 8080, pod: { _, _ in nil }) == EndpointSet(exists: true))
  }

  @Test("split weights are normalised to ten-thousandths")
  func weights() throws {
    let t = ProfileTranslator(clusterDomain: "cluster.local")
    let split = TrafficSplit(
      metadata: ObjectMeta(name: "s", namespace: "app"),
      spec: .init(service: "web", backends: [.init(service: "a", weight: 1), .init(service: "b", weight: 1), .init(service: "c", weight: 1)]))
    let (profile, problems) = t.profile(namespace: "app", service: "web", port: 80, serviceProfile: nil, split: split)
    #expect(problems.isEmpty)
    #expect(profile.destinationOverrides.map(\.weight).reduce(0, +) == 10_000)
    #expect(profile.destinationOverrides.map(\.authority.host) == ["a.app.svc.cluster.local", "b.app.svc.cluster.local", "c.app.svc.cluster.local"])
    var zero = split
    zero.spec.backends = [.init(service: "a", weight: 0)]
    let (plain, found) = t.profile(namespace: "app", service: "web", port: 80, serviceProfile: nil, split: zero)
    #expect(plain.destinationOverrides.isEmpty)
    #expect(found.count == 1)
  }

  @Test("Go durations", arguments: [("250ms", Duration.milliseconds(250)), ("10s", .seconds(10)), ("1m30s", .seconds(90)), ("1.5s", .milliseconds(1500)), ("0", .zero)])
  func durations(text: String, expected: Duration) throws {
    #expect(try GoDuration.parse(text) == expected)
  }

  @Test("bad Go durations name the text", arguments: ["", "10", "ms", "5x"])
  func badDurations(text: String) {
    #expect {
      try GoDuration.parse(text)
    } throws: { error in
      (error as? GoDuration.Problem)?.message.contains("'\(text)'") == true
    }
  }
}
