import Foundation
import Synchronization
import MeshCore
import MeshKube
import MeshKubeLocal
import MeshMulticluster
import MeshTLS
import Testing
import _MeshTestSupport

@Suite("Gateway probe over mutual TLS")
struct GatewayProbeTests {
  /// Fast probes: every 200 ms, 1 s timeout, dead after 3 failures.
  static let fastProbe = Link.ProbeSpec(path: "/ready", port: nil, period: "200ms", timeout: "1s", failureThreshold: 3)

  @Test("One probe: 2xx over mTLS is a latency; a wrong identity, a 404 and a closed port are clear errors")
  func singleProbes() async throws {
    let pki = try TestPKI()
    let tls = try mirrorTLS(pki)
    let gateway = try await TestGateway(pki: pki)
    let latency = try await GatewayProbe.probe(
      host: "127.0.0.1", port: gateway.port, path: "/ready", identity: Identities.gateway, tls: tls, timeout: .seconds(5))
    #expect(latency > .zero && latency < .seconds(5))
    #expect(gateway.clientIdentities.contains(Identities.mirror), "the gateway saw the mirror's identity: mutual TLS")

    do {
      _ = try await GatewayProbe.probe(
        host: "127.0.0.1", port: gateway.port, path: "/ready", identity: Identities.other, tls: tls, timeout: .seconds(5))
      Issue.record("a probe expecting another identity succeeded")
    } catch {
      #expect(error.code == .gatewayIdentityMismatch)
      #expect(error.message.contains("expected \(Identities.other)"), "\(error)")
      #expect(error.message.contains(Identities.gateway.description), "\(error)")
    }
    do {
      _ = try await GatewayProbe.probe(
        host: "127.0.0.1", port: gateway.port, path: "/nope", identity: Identities.gateway, tls: tls, timeout: .seconds(5))
      Issue.record("a 404 counted as alive")
    } catch {
      #expect(error.code == .gatewayProbeFailed)
      #expect(error.message.contains("404"), "\(error)")
    }
    await gateway.stop()
    do {
      _ = try await GatewayProbe.probe(
        host: "127.0.0.1", port: gateway.port, path: "/ready", identity: Identities.gateway, tls: tls, timeout: .seconds(5))
      Issue.record("a closed port counted as alive")
    } catch {
      #expect(error.code == .gatewayProbeFailed)
    }
  }

  @Test("Gateway down: not alive after failureThreshold x period, mirror endpoints not ready; back up: alive and ready")
  func gatewayDownAndUp() async throws {
    let pki = try TestPKI()
    let port = try await StablePorts.free()
    let gateways = GatewayBox()
    gateways.set(try await TestGateway(pki: pki, port: port))
    try await withClusters { east, west, group in
      try west.addService("api")
      try east.linkTo(
        west, gatewayAddresses: ["127.0.0.1"], gatewayIdentity: Identities.gateway.description,
        probe: Link.ProbeSpec(path: "/ready", port: port, period: "200ms", timeout: "1s", failureThreshold: 3))
      let metrics = MirrorMetrics()
      let controller = supervisor(for: east, tls: try mirrorTLS(pki), metrics: metrics)
      let admin = MirrorAdminServer(address: try Authority("127.0.0.1:0"), metrics: metrics, logger: testLogger) {
        controller.reports
      }
      let handles = [start(controller, in: &group), start(admin, in: &group)]
      defer { for h in handles { h.stop() } }
      let adminPort = try await admin.port()

      try await eventually("alive and ready") {
        east.condition("west", "GatewayAlive")?.status == "True"
          && east.state.get(Endpoints.self, name: "api-west", namespace: "default")?.subsets?.first?.addresses?.map(\.ip)
            == ["127.0.0.1"]
      }
      var reports: [GatewayReport] = []
      try await eventually("/gateways reports west alive with 1 service") {
        let answer = try await httpGet(port: adminPort, "/gateways")
        reports = try JSONDecoder().decode([GatewayReport].self, from: Data(answer.body.utf8))
        return reports.first?.alive == true && reports.first?.numServices == 1
      }
      let report = try #require(reports.first)
      #expect(report.cluster == "west" && report.alive == true && report.numServices == 1 && report.probed)
      #expect(report.latencyP50 != nil && report.latencyP99 != nil)
      let table = GatewayReport.table(reports)
      #expect(table.hasPrefix("CLUSTER  ALIVE  ADDRESSES  NUM_SVC  LATENCY_P50  LATENCY_P95  LATENCY_P99\n"), "\(table)")
      #expect(table.contains("west     True   1/1        1"), "\(table)")

      await gateways.stop()
      let stopped = ContinuousClock.now
      try await eventually("dead and not ready", timeout: .seconds(10)) {
        east.condition("west", "GatewayAlive")?.status == "False"
          && east.state.get(Endpoints.self, name: "api-west", namespace: "default")?.subsets?.first?.notReadyAddresses?
            .map(\.ip) == ["127.0.0.1"]
      }
      // 3 x 200 ms (+10 % jitter) plus the failed probes themselves: well under the bound, generous for CI.
      #expect(ContinuousClock.now - stopped < .seconds(8))
      #expect(east.state.get(Endpoints.self, name: "api-west", namespace: "default")?.subsets?.first?.addresses == nil)
      #expect(east.condition("west", "GatewayAlive")?.reason == "GatewayProbeFailed")
      let dead = try JSONDecoder().decode([GatewayReport].self, from: Data(try await httpGet(port: adminPort, "/gateways").body.utf8))
      #expect(dead.first?.alive == false)
      let text = String(decoding: metrics.exposition(), as: UTF8.self)
      #expect(text.contains("gateway_alive{target_cluster_name=\"west\"} 0"), "\(text)")
      #expect(text.contains("gateway_probes_total{target_cluster_name=\"west\",success=\"false\"}"), "\(text)")
      #expect(text.contains("gateway_probe_latency_ms_bucket{target_cluster_name=\"west\""), "\(text)")

      gateways.set(try await TestGateway(pki: pki, port: port))
      try await eventually("alive and ready again") {
        east.condition("west", "GatewayAlive")?.status == "True"
          && east.state.get(Endpoints.self, name: "api-west", namespace: "default")?.subsets?.first?.addresses?.map(\.ip)
            == ["127.0.0.1"]
      }
      #expect(String(decoding: metrics.exposition(), as: UTF8.self).contains("gateway_alive{target_cluster_name=\"west\"} 1"))
    }
    await gateways.stop()
  }

  @Test("A gateway identity that does not match the gateway's certificate: GatewayIdentityMismatch, endpoints not ready")
  func wrongIdentity() async throws {
    let pki = try TestPKI()
    let gateway = try await TestGateway(pki: pki, identity: Identities.other)
    try await withClusters { east, west, group in
      try west.addService("api")
      try east.linkTo(
        west, gatewayAddresses: ["127.0.0.1"], gatewayIdentity: Identities.gateway.description,
        probe: Link.ProbeSpec(path: "/ready", port: gateway.port, period: "200ms", timeout: "1s", failureThreshold: 2))
      let controller = start(supervisor(for: east, tls: try mirrorTLS(pki)), in: &group)
      defer { controller.stop() }
      try await eventually("GatewayAlive False, GatewayIdentityMismatch") {
        let c = east.condition("west", "GatewayAlive")
        return c?.status == "False" && c?.reason == "GatewayIdentityMismatch"
      }
      let message = east.condition("west", "GatewayAlive")?.message ?? ""
      #expect(message.contains("expected \(Identities.gateway)") && message.contains(Identities.other.description), "\(message)")
      try await eventually("endpoints not ready") {
        east.state.get(Endpoints.self, name: "api-west", namespace: "default")?.subsets?.first?.notReadyAddresses != nil
      }
    }
    await gateway.stop()
  }

  @Test("Without identity material the gateway is not probed, counts as alive, and the condition says so")
  func probeDisabled() async throws {
    try await withClusters { east, west, group in
      try west.addService("api")
      try east.linkTo(west, gatewayIdentity: Identities.gateway.description)
      let controller = start(supervisor(for: east, tls: nil), in: &group)
      defer { controller.stop() }
      try await eventually("ProbeDisabled and ready endpoints") {
        east.condition("west", "GatewayAlive")?.reason == "ProbeDisabled"
          && east.state.get(Endpoints.self, name: "api-west", namespace: "default")?.subsets?.first?.addresses != nil
      }
      #expect(east.condition("west", "GatewayAlive")?.status == "Unknown")
    }
  }
}

/// The gateway a test currently runs, so it is stopped however the test ends.
final class GatewayBox: Sendable {
  private let current = Mutex<TestGateway?>(nil)
  func set(_ gateway: TestGateway) { current.withLock { $0 = gateway } }
  func stop() async {
    let gateway = current.withLock { g -> TestGateway? in
      defer { g = nil }
      return g
    }
    await gateway?.stop()
  }
}
