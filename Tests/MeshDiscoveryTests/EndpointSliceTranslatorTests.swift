import MeshAPI
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import Testing

@Suite("Endpoint translation from EndpointSlices")
struct EndpointSliceTranslatorTests {
  let translator = EndpointTranslator(trustDomain: .clusterLocal, controlPlaneNamespace: "swiftmesh")
  let web = service("web", "app")

  func set(
    _ slices: [EndpointSlice], zone: String? = nil, service: KubeService? = nil, pods: [Pod] = [],
    problems: ProblemSink = ProblemSink()
  ) -> EndpointSet {
    translator.endpointSet(
      service: service ?? web, slices: slices, port: 8080, zone: zone,
      pod: { namespace, name in pods.first { $0.namespace == namespace && $0.name == name } },
      problem: { problems.messages.append($0) })
  }

  final class ProblemSink: @unchecked Sendable {
    var messages: [String] = []
  }

  @Test("every slice of a service counts; a missing service does not exist; no slices is an empty set")
  func joinsSlices() throws {
    let a = slice("web-a", service: "web", "app", ips: ips(1...3))
    let b = slice("web-b", service: "web", "app", ips: ips(4...5))
    #expect(set([a, b]).addresses == (try ips(1...5).map { try Authority(host: $0, port: 8080) }))
    #expect(translator.endpointSet(service: nil, slices: [a], port: 8080, pod: { _, _ in nil }) == .doesNotExist)
    #expect(set([]) == EndpointSet(exists: true))
  }

  @Test("not ready and not serving: dropped; ready unset: served (unknown counts as ready)")
  func readiness() throws {
    let notReady = slice("web-a", service: "web", "app", ips: ["10.1.0.1"], conditions: .init(ready: false, serving: false))
    let unknown = slice("web-b", service: "web", "app", ips: ["10.1.0.2"], conditions: nil)
    #expect(set([notReady, unknown]).addresses == [try authority("10.1.0.2:8080")])
  }

  @Test("serving-but-terminating endpoints are served only while no endpoint is ready")
  func terminatingFallback() throws {
    let draining = slice(
      "web-old", service: "web", "app", ips: ips(1...2),
      conditions: .init(ready: false, serving: true, terminating: true))
    let gone = slice(
      "web-dead", service: "web", "app", ips: ["10.1.0.9"],
      conditions: .init(ready: false, serving: false, terminating: true))
    #expect(set([draining, gone]).addresses == (try ["10.1.0.1:8080", "10.1.0.2:8080"].map(authority)))
    let fresh = slice("web-new", service: "web", "app", ips: ["10.1.0.3"])
    #expect(set([draining, gone, fresh]).addresses == [try authority("10.1.0.3:8080")])
  }

  @Test("an address in two slices (a move between slices) is one endpoint, ready winning")
  func duplicateAcrossSlices() throws {
    let old = slice("web-a", service: "web", "app", ips: ["10.1.0.1"], conditions: .init(ready: false, serving: true, terminating: true))
    let new = slice("web-b", service: "web", "app", ips: ["10.1.0.1", "10.1.0.2"])
    let result = set([old, new])
    #expect(result.endpoints.count == 2)
    #expect(result.addresses == (try ["10.1.0.1:8080", "10.1.0.2:8080"].map(authority)))
  }

  @Test("dual stack: the IPv4 and the IPv6 slice are both served; FQDN slices are skipped")
  func dualStack() throws {
    let v4 = slice("web-v4", service: "web", "app", ips: ["10.1.0.1"], pods: false)
    let v6 = slice("web-v6", service: "web", "app", ips: ["fd00::1"], addressType: "IPv6", pods: false)
    let fqdn = slice("web-fqdn", service: "web", "app", ips: ["web.example.com"], addressType: "FQDN", pods: false)
    let result = set([v4, v6, fqdn])
    #expect(Set(result.addresses.map(\.description)) == ["10.1.0.1:8080", "[fd00::1]:8080"])
    // The wire form carries the IPv6 literal without brackets, and reads back to the same endpoint.
    let v6Endpoint = try #require(result.endpoints.first { $0.address.host == "fd00::1" })
    #expect(v6Endpoint.proto.addr.ip == "fd00::1")
    #expect(try Endpoint(proto: v6Endpoint.proto) == v6Endpoint)
  }

  @Test("targetRef gives pod and identity (meshed pods); nodeName and zone become metric labels")
  func podIdentityAndLabels() throws {
    let s = slice("web-a", service: "web", "app", ips: ["10.1.0.1", "10.1.0.2"], zone: "zone-a", nodeName: "node-1")
    let pods = [
      pod("web-1", "app", serviceAccount: "web", meshed: true),
      pod("web-2", "app", serviceAccount: "legacy", meshed: false),
    ]
    let result = set([s], pods: pods)
    let meshed = try #require(result.endpoints.first { $0.address.host == "10.1.0.1" })
    #expect(meshed.tlsIdentity == (try IdentityName("web.app.serviceaccount.identity.swiftmesh.cluster.local")))
    #expect(meshed.protocolHint == .http2)
    #expect(
      meshed.metricLabels == [
        "namespace": "app", "service": "web", "pod": "web-1", "serviceaccount": "web", "node": "node-1", "zone": "zone-a",
      ])
    let plain = try #require(result.endpoints.first { $0.address.host == "10.1.0.2" })
    #expect(plain.tlsIdentity == nil)
    #expect(plain.protocolHint == .unknown)
    #expect(plain.metricLabels["serviceaccount"] == "legacy")
  }

  @Test("the slice port is chosen by the Service port's name, else targetPort; a slice without it adds nothing")
  func ports() throws {
    let svc = service("web", "app", ports: [("http", 80, 8080)])
    let named = slice("web-a", service: "web", "app", ips: ["10.1.0.1"], port: 9090, portName: "http")
    let other = slice("web-b", service: "web", "app", ips: ["10.1.0.2"], port: 7070, portName: "metrics")
    let result = translator.endpointSet(service: svc, slices: [named, other], port: 80, pod: { _, _ in nil })
    #expect(result.addresses == [try authority("10.1.0.1:9090")])
  }

  @Test("zone hints: honoured when the zone is known and every endpoint is hinted; ignored otherwise")
  func zoneHints() throws {
    let a = slice("web-a", service: "web", "app", ips: ips(1...2), zone: "zone-a", forZones: ["zone-a"])
    let b = slice("web-b", service: "web", "app", ips: ips(3...4), zone: "zone-b", forZones: ["zone-b"])
    let all = try ips(1...4).map { try Authority(host: $0, port: 8080) }
    #expect(set([a, b], zone: "zone-a").addresses == Array(all[0...1]))
    #expect(set([a, b], zone: "zone-b").addresses == Array(all[2...3]))
    // Zone unknown (no context token): hints ignored.
    #expect(set([a, b]).addresses == all)
    // No endpoint hinted for the asking zone: everything, rather than nothing.
    #expect(set([a, b], zone: "zone-c").addresses == all)
    // One endpoint without hints (the controller is mid-update or hints are off): hints ignored.
    let unhinted = slice("web-c", service: "web", "app", ips: ["10.1.0.5"], zone: "zone-c")
    #expect(set([a, b, unhinted], zone: "zone-a").addresses.count == 5)
  }

  @Test("a mirror service's slice: gateway identity from the slice annotation, authority override from the service")
  func mirrorSlice() throws {
    let mirror = service(
      "backend-west", "app", ports: [("http", 8080, nil)],
      labels: ["mirror.swiftmesh.io/mirrored-service": "true", "mirror.swiftmesh.io/cluster-name": "west"],
      annotations: ["mirror.swiftmesh.io/remote-svc-fq-name": "backend.app.svc.west.local"])
    let gateway = slice(
      "backend-west", service: "backend-west", "app", ips: ["192.0.2.10"], port: 4143, pods: false,
      annotations: ["mirror.swiftmesh.io/gateway-identity": "swiftmesh-gateway.swiftmesh-multicluster.serviceaccount.identity.swiftmesh.cluster.local"])
    let result = set([gateway], service: mirror)
    let endpoint = try #require(result.endpoints.first)
    #expect(endpoint.address == (try authority("192.0.2.10:4143")))
    #expect(endpoint.tlsIdentity?.description == "swiftmesh-gateway.swiftmesh-multicluster.serviceaccount.identity.swiftmesh.cluster.local")
    #expect(endpoint.authorityOverride == (try authority("backend.app.svc.west.local:8080")))
    #expect(endpoint.metricLabels["target_cluster"] == "west")
  }

  @Test("context tokens: Linkerd-style JSON with a zone is read; empty or opaque tokens carry no zone")
  func contextTokens() {
    #expect(ContextToken(parsing: #"{"ns":"app","nodeName":"node-1","zone":"zone-a"}"#)?.knownZone == "zone-a")
    #expect(ContextToken(parsing: #"{"ns":"app","nodeName":"node-1"}"#)?.knownZone == nil)
    #expect(ContextToken(parsing: "") == nil)
    #expect(ContextToken(parsing: "ns:app") == nil)
    let token = ContextToken(ns: "app", zone: "zone-b")
    #expect(ContextToken(parsing: token.encoded) == token)
  }
}
