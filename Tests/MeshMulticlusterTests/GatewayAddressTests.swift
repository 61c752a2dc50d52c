import Foundation
import MeshCore
import MeshKube
import MeshKubeLocal
@testable import MeshMulticluster
import Synchronization
import Testing
import _MeshTestSupport

/// A resolver the test controls: names map to IPs; an unmapped name does not resolve.
final class TestResolver: GatewayResolver {
  private let names = Mutex<[String: [String]]>([:])
  private let calls = Mutex<[String: Int]>([:])

  init(_ initial: [String: [String]] = [:]) { names.withLock { $0 = initial } }

  func set(_ name: String, _ ips: [String]?) { names.withLock { $0[name] = ips } }
  func lookups(of name: String) -> Int { calls.withLock { $0[name] ?? 0 } }

  func resolve(_ name: String) async throws -> [String] {
    calls.withLock { $0[name, default: 0] += 1 }
    guard let ips = names.withLock({ $0[name] }) else {
      throw GatewayResolutionError(name: name, reason: "NXDOMAIN (test resolver)")
    }
    return ips
  }
}

extension Cluster {
  /// The ready (or all) addresses of mirror `name`'s EndpointSlices, sorted.
  func sliceAddresses(_ name: String, ready: Bool? = true) -> [String] {
    let slices = (try? state.list(EndpointSlice.self)) ?? []
    return slices.filter {
      $0.namespace == "default" && $0.metadata.labels?[EndpointSlice.serviceNameLabel] == name
    }.flatMap { slice in
      slice.endpoints.filter { ready == nil || ($0.conditions?.ready ?? true) == ready }.flatMap(\.addresses)
    }.sorted()
  }

  /// Publishes the target's gateway Service (no addresses in its spec or annotations unless given).
  func addGatewayService(annotations: [String: String] = [:]) throws {
    let service = KubeService(
      metadata: ObjectMeta(
        name: MirrorMetadata.gatewayServiceName, namespace: MirrorMetadata.multiclusterNamespace,
        annotations: annotations),
      spec: .init(type: "LoadBalancer", ports: [.init(name: MirrorMetadata.gatewayPortName, port: 4143)]))
    try state.create(service)
  }

  /// Sets the gateway Service's `status.loadBalancer.ingress` (as a load-balancer controller would).
  func setGatewayIngress(_ ingress: [JSONValue]) throws {
    _ = try state.patch(
      resource: "services", namespace: MirrorMetadata.multiclusterNamespace, name: MirrorMetadata.gatewayServiceName,
      patch: ["status": ["loadBalancer": ["ingress": .array(ingress)]]])
  }
}

@Suite("Gateway addresses: IPs and DNS names, the gateway Service followed")
struct GatewayAddressTests {
  @Test("Entries are IPs or DNS names; anything else is named with the reason")
  func parsing() throws {
    #expect(try GatewayAddress(parsing: "192.0.2.10") == .ip("192.0.2.10"))
    #expect(try GatewayAddress(parsing: " 2001:db8::1 ") == .ip("2001:db8::1"))
    #expect(try GatewayAddress(parsing: "a1b2-123.elb.us-east-1.amazonaws.com.") == .name("a1b2-123.elb.us-east-1.amazonaws.com"))
    #expect(try GatewayAddress(parsing: "Gateway.West.Example") == .name("gateway.west.example"))
    for bad in ["", "not an address!", "999.1.2.3", "http://gw.example:80", "gw..example", "-gw.example", "1.2.3.4:4143"] {
      #expect(throws: MulticlusterError.self, "'\(bad)'") { try GatewayAddress(parsing: bad) }
    }
    let mixed = GatewayAddress.parse(["192.0.2.10", "gw.example", "not an address!", "192.0.2.10"])
    #expect(mixed.addresses == [.ip("192.0.2.10"), .name("gw.example")])
    #expect(mixed.problems.count == 1 && mixed.problems[0].contains("'not an address!' is neither an IP address nor a DNS name"))

    // A Link with a name and garbage is valid (the garbage is reported); only garbage is not.
    let link = PlannerTests.link { $0.gatewayAddresses = ["gw.example", "not an address!"] }
    let settings = try LinkSettings(link: link)
    #expect(settings.gatewayAddresses == ["gw.example"])
    #expect(settings.invalidGatewayAddresses.count == 1)
    #expect(settings.followGatewayService)
    // The planner uses IPs only until names are resolved.
    #expect(MirrorPlanner(settings: settings).gatewayIPs.isEmpty)
  }

  @Test("The address book: last known IPs survive a failed lookup; the Service's addresses replace the Link's")
  func book() {
    var book = GatewayAddressBook()
    book.choose(link: ["192.0.2.10", "gw.example"], service: nil)
    #expect(book.names == ["gw.example"])
    book.record("gw.example", .success(["192.0.2.20", "192.0.2.21"]))
    #expect(book.ips == ["192.0.2.10", "192.0.2.20", "192.0.2.21"])
    #expect(book.condition.status && book.condition.reason == "Resolved")
    book.record("gw.example", .failure(GatewayResolutionError(name: "gw.example", reason: "NXDOMAIN")))
    #expect(book.ips == ["192.0.2.10", "192.0.2.20", "192.0.2.21"], "last known IPs are kept")
    #expect(!book.condition.status && book.condition.reason == "GatewayNameNotResolved")
    #expect(book.condition.message.contains("keeping its last known addresses 192.0.2.20,192.0.2.21"), "\(book.condition)")
    book.choose(link: ["192.0.2.10"], service: ["lb.example", "192.0.2.99"])
    #expect(book.names == ["lb.example"] && book.lastKnown.isEmpty, "a name no longer in use is forgotten")
    #expect(book.ips == ["192.0.2.99"])
    #expect(book.condition.message.contains("from the target's gateway Service"))
    book.choose(link: ["nothing usable!"], service: nil)
    #expect(book.ips.isEmpty)
    #expect(book.condition.reason == "NoGatewayAddress")
  }

  @Test("A round probes every address: one of two answering is alive with 1/2, and the failure asks for a resolution")
  func probeEveryAddress() async throws {
    let pki = try TestPKI()
    let gateway = try await TestGateway(pki: pki)
    let failures = Mutex(0)
    let probe = GatewayProbe(
      clusterName: "west",
      target: .init(
        addresses: ["127.0.0.1", "127.0.0.3"], identity: Identities.gateway,
        settings: try ProbeSettings(.init(path: "/ready", port: gateway.port, period: "100ms", timeout: "1s", failureThreshold: 2))),
      tls: try mirrorTLS(pki), metrics: MirrorMetrics(), logger: testLogger,
      onAddressFailure: { failures.withLock { $0 += 1 } })
    let results = await GatewayProbe.round(probe.target, tls: try mirrorTLS(pki))
    #expect(results.map(\.0) == ["127.0.0.1", "127.0.0.3"])
    let outcome = GatewayProbe.outcome(results)
    #expect((try? outcome.get()) != nil, "one live address makes the round a success")
    probe.record(outcome, target: probe.target, results: results)
    #expect(probe.snapshot.alive == true)
    #expect(probe.snapshot.aliveAddresses == 1 && probe.snapshot.addresses.count == 2)

    try await withThrowingTaskGroup(of: Void.self) { group in
      let handle = start(probe, in: &group)
      try await eventually("a failed address reported") { failures.withLock { $0 } >= 2 }
      handle.stop()
    }
    #expect(probe.snapshot.alive == true && probe.snapshot.aliveAddresses == 1)
    await gateway.stop()
  }

  @Test("A gateway name resolving to 127.0.0.1 is probed and mirrored; a new answer moves every mirror within one resolution period, without a restart")
  func nameFollowed() async throws {
    let pki = try TestPKI()
    let port = try await StablePorts.free()
    let first = try await TestGateway(pki: pki, host: "127.0.0.1", port: port)
    let second = try await TestGateway(pki: pki, host: "127.0.0.2", port: port)
    let resolver = TestResolver(["gw.west.example": ["127.0.0.1"]])
    let period = Duration.milliseconds(600)
    try await withClusters { east, west, group in
      try west.addService("api")
      try west.addService("web")
      try east.linkTo(
        west, gatewayAddresses: ["gw.west.example"], gatewayIdentity: Identities.gateway.description,
        probe: Link.ProbeSpec(path: "/ready", port: port, period: "200ms", timeout: "1s", failureThreshold: 3))
      let controller = supervisor(for: east, tls: try mirrorTLS(pki)) {
        $0.endpointsAPI = .endpointSlices
        $0.resolver = resolver
        $0.gatewayResolveInterval = period
      }
      let handle = start(controller, in: &group)
      defer { handle.stop() }

      try await eventually("mirrors at 127.0.0.1, gateway alive") {
        east.sliceAddresses("api-west") == ["127.0.0.1"] && east.sliceAddresses("web-west") == ["127.0.0.1"]
          && east.condition("west", "GatewayAlive")?.status == "True"
      }
      let resolved = try #require(east.condition("west", "GatewayResolved"))
      #expect(resolved.status == "True" && resolved.reason == "Resolved")
      #expect(resolved.message?.contains("gw.west.example -> 127.0.0.1") == true, "\(resolved)")
      #expect(first.clientIdentities.contains(Identities.mirror), "the probe went to the resolved address")
      let mirror = try #require(controller.mirrors["\(MirrorMetadata.multiclusterNamespace)/west"])
      let serviceUID = try east.mirrors(of: "west")["default/api-west"]?.metadata.uid

      // The name now resolves elsewhere: the mirrors follow within one period (plus the writes).
      resolver.set("gw.west.example", ["127.0.0.2"])
      let changed = ContinuousClock.now
      try await eventually("mirrors at 127.0.0.2", timeout: .seconds(5)) {
        east.sliceAddresses("api-west") == ["127.0.0.2"] && east.sliceAddresses("web-west") == ["127.0.0.2"]
      }
      let took = ContinuousClock.now - changed
      #expect(took < period + .milliseconds(900), "moved after \(took), the resolution period is \(period)")
      #expect(controller.mirrors["\(MirrorMetadata.multiclusterNamespace)/west"] === mirror, "the same mirror, not restarted")
      #expect(try east.mirrors(of: "west")["default/api-west"]?.metadata.uid == serviceUID, "the mirror Service was kept")
      try await eventually("the probe follows the new address") {
        second.clientIdentities.contains(Identities.mirror) && mirror.report.addresses == ["127.0.0.2"]
          && mirror.report.aliveAddresses == 1
      }
      #expect(east.condition("west", "GatewayAlive")?.status == "True")

      // Several IPs for the name: every one is used.
      resolver.set("gw.west.example", ["127.0.0.1", "127.0.0.2"])
      try await eventually("mirrors at both addresses", timeout: .seconds(5)) {
        east.sliceAddresses("api-west") == ["127.0.0.1", "127.0.0.2"]
      }
      try await eventually("both addresses answer the probe") { mirror.report.aliveAddresses == 2 }
      #expect(GatewayReport.table([mirror.report]).contains("True   2/2"), "\(GatewayReport.table([mirror.report]))")
    }
    await first.stop()
    await second.stop()
  }

  @Test("The target's gateway Service is followed: load-balancer ingress ip, then hostname, then externalIPs, then the annotation")
  func gatewayServiceFollowed() async throws {
    let resolver = TestResolver(["lb-2.west.example": ["192.0.2.55", "192.0.2.56"]])
    try await withClusters { east, west, group in
      try west.addService("api")
      try west.addGatewayService()
      try west.setGatewayIngress([["ip": "192.0.2.44"]])
      try east.linkTo(west, gatewayAddresses: ["192.0.2.10"])
      // A long period: what moves the mirrors below is the Service's change, not the timer.
      let controller = supervisor(for: east) {
        $0.endpointsAPI = .endpointSlices
        $0.resolver = resolver
        $0.gatewayResolveInterval = .seconds(60)
      }
      let handle = start(controller, in: &group)
      defer { handle.stop() }

      try await eventually("mirror at the Service's ingress IP, not the Link's; the condition says where from") {
        east.sliceAddresses("api-west") == ["192.0.2.44"]
          && east.condition("west", "GatewayResolved")?.message?.contains("from the target's gateway Service") == true
      }

      // The load balancer is replaced by one that publishes a DNS name.
      var changed = ContinuousClock.now
      try west.setGatewayIngress([["hostname": "lb-2.west.example"]])
      try await eventually("mirror at the new load balancer's IPs", timeout: .seconds(5)) {
        east.sliceAddresses("api-west") == ["192.0.2.55", "192.0.2.56"]
      }
      #expect(ContinuousClock.now - changed < .seconds(3), "followed at once, not after the 60 s period")

      // No load balancer: spec.externalIPs.
      changed = ContinuousClock.now
      try west.state.mergePatch(
        KubeService.self, name: MirrorMetadata.gatewayServiceName, namespace: MirrorMetadata.multiclusterNamespace,
        patch: ["spec": ["externalIPs": ["192.0.2.77"]], "status": ["loadBalancer": ["ingress": .null]]])
      try await eventually("mirror at the external IP", timeout: .seconds(5)) {
        east.sliceAddresses("api-west") == ["192.0.2.77"]
      }
      // Neither: the annotation.
      try west.state.mergePatch(
        KubeService.self, name: MirrorMetadata.gatewayServiceName, namespace: MirrorMetadata.multiclusterNamespace,
        patch: [
          "spec": ["externalIPs": .null],
          "metadata": ["annotations": [MirrorMetadata.gatewayAddressesAnnotation: "192.0.2.88, lb-2.west.example"]],
        ])
      try await eventually("mirror at the annotation's addresses", timeout: .seconds(5)) {
        east.sliceAddresses("api-west") == ["192.0.2.55", "192.0.2.56", "192.0.2.88"]
      }
      // A Link that keeps its own addresses.
      try east.state.mergePatch(
        Link.self, name: "west", namespace: MirrorMetadata.multiclusterNamespace,
        patch: ["metadata": ["annotations": [MirrorMetadata.followGatewayServiceAnnotation: "false"]]])
      try await eventually("back at the Link's address", timeout: .seconds(5)) {
        east.sliceAddresses("api-west") == ["192.0.2.10"]
          && east.condition("west", "GatewayResolved")?.message?.contains("from the Link") == true
      }
      #expect(ContinuousClock.now - changed < .seconds(30))
    }
  }

  @Test("Bad gateway input: an unresolvable name and garbage beside an IP, a name that stops resolving, only an unresolvable name: clear conditions, other mirrors intact")
  func badInput() async throws {
    let resolver = TestResolver(["gw.other.example": ["192.0.2.30"]])
    try await withClusters { east, west, group in
      try west.addService("api")
      // Mixed: a good IP, a name that never resolves, garbage.
      try east.link(
        name: "west", kubeconfig: west.kubeconfig, gatewayAddresses: ["192.0.2.10", "gw.missing.example", "not an address!"])
      // A name that resolves, then stops.
      try east.link(name: "other", kubeconfig: west.kubeconfig, gatewayAddresses: ["gw.other.example"])
      // Only a name that never resolves.
      try east.link(name: "lost", kubeconfig: west.kubeconfig, gatewayAddresses: ["gw.never.example"])
      let controller = supervisor(for: east) {
        $0.endpointsAPI = .endpoints
        $0.resolver = resolver
        $0.gatewayResolveInterval = .milliseconds(300)
      }
      let handle = start(controller, in: &group)
      defer { handle.stop() }
      func ready(_ name: String) -> [String] {
        east.state.get(Endpoints.self, name: name, namespace: "default")?.subsets?.flatMap { $0.addresses ?? [] }.map(\.ip) ?? []
      }

      try await eventually("the good address and the resolved name serve") {
        ready("api-west") == ["192.0.2.10"] && ready("api-other") == ["192.0.2.30"]
      }
      try await eventually("west's condition names both bad entries") {
        east.condition("west", "GatewayResolved")?.status == "False"
      }
      let mixed = try #require(east.condition("west", "GatewayResolved"))
      #expect(mixed.reason == "GatewayNameNotResolved")
      #expect(mixed.message?.contains("'gw.missing.example' does not resolve") == true, "\(mixed)")
      #expect(mixed.message?.contains("'not an address!' is neither an IP address nor a DNS name") == true, "\(mixed)")
      #expect(mixed.message?.contains("gateway addresses in use: 192.0.2.10") == true, "\(mixed)")
      try await eventually("west's mirrors ready despite the bad entries") {
        east.condition("west", "LinkValid")?.status == "True" && east.condition("west", "MirrorsReady")?.status == "True"
      }

      try await eventually("lost: no usable address, mirrored without endpoints") {
        east.condition("lost", "GatewayResolved")?.reason == "NoGatewayAddress"
          && (try? east.mirrorNames(of: "lost")) == ["default/api-lost"]
      }
      #expect(ready("api-lost").isEmpty)
      #expect(east.condition("lost", "GatewayResolved")?.message?.contains("'gw.never.example' does not resolve") == true)

      // gw.other.example stops resolving: its last IPs stay, and the condition says so.
      resolver.set("gw.other.example", nil)
      try await eventually("other: kept its last known addresses") {
        east.condition("other", "GatewayResolved")?.message?.contains("keeping its last known addresses 192.0.2.30") == true
      }
      #expect(ready("api-other") == ["192.0.2.30"])
      #expect(ready("api-west") == ["192.0.2.10"], "the other Links' mirrors are intact")
      // It resolves again, elsewhere.
      resolver.set("gw.other.example", ["192.0.2.31"])
      try await eventually("other: at the new address, Resolved") {
        ready("api-other") == ["192.0.2.31"] && east.condition("other", "GatewayResolved")?.status == "True"
      }
      #expect(resolver.lookups(of: "gw.missing.example") >= 2, "an unresolved name is retried every period")
    }
  }
}
