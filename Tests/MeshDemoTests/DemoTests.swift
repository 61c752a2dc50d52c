import Foundation
import Logging
import MeshDemo
import MeshMulticluster
import Testing
import _MeshTestSupport

@Suite("meshctl demo", .serialized)
struct DemoTests {
  static func quietLogger() -> Logger {
    var logger = Logger(label: "test.demo")
    logger.logLevel = .critical
    return logger
  }

  /// Runs the demo in this process and returns its summary as `--output json` prints it, decoded back.
  static func runDemo(_ configure: (inout DemoOptions) -> Void) async throws -> (DemoSummary, [String: Any]) {
    var options = DemoOptions()
    configure(&options)
    let summary = try await Demo.run(options, logger: quietLogger(), say: { _ in })
    let data = try JSONEncoder().encode(summary)
    let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    return (try JSONDecoder().decode(DemoSummary.self, from: data), json)
  }

  @Test("200 requests split 50/50: both clusters answer, both leaves 100 % over mTLS, west's gateway alive")
  func split() async throws {
    let (summary, json) = try await Self.runDemo {
      $0.requests = 200
      $0.split = 50
    }
    #expect(json["ok"] as? Bool == true, "\(json)")
    #expect(summary.succeeded == 200)
    #expect(summary.mutualTLSResponses >= 200)
    let east = summary.byCluster["east"] ?? 0
    let west = summary.byCluster["west"] ?? 0
    #expect(east + west == 200)
    #expect((50...150).contains(west), "west served \(west) of 200 at a 50 % split")
    let leaves = Dictionary(uniqueKeysWithValues: summary.leaves.map { ($0.name, $0) })
    #expect(leaves["backend"]?.successRate == 1.0)
    #expect(leaves["backend-west"]?.successRate == 1.0)
    #expect((leaves["backend"]?.requests ?? 0) + (leaves["backend-west"]?.requests ?? 0) == 200)
    #expect(leaves["backend-west"]?.tlsRequests == leaves["backend-west"]?.requests)
    // The tap of the client proxy: the first three requests, each req, rsp and end.
    #expect(summary.tap.count == 9, "\(summary.tap)")
    #expect(summary.tap.filter { $0.hasPrefix("req ") }.count == 3, "\(summary.tap)")
    let gateway = try #require(summary.gateways.first { $0.cluster == "west" })
    #expect(gateway.alive == true)
    #expect(gateway.numServices >= 1)
    #expect(gateway.latencyP50 != nil)
    // Clusters without any v1 Endpoints: backends, mirrors and discovery all on EndpointSlices.
    #expect(summary.endpointObjects["Endpoints"] == 0, "\(summary.endpointObjects)")
    // One backend slice per cluster, and one mirror slice per cluster (IPv4 gateway).
    #expect(summary.endpointObjects["EndpointSlice"] == 4, "\(summary.endpointObjects)")
    // `meshctl multicluster check` passes in both clusters: 9 ticks each (the CRD, this cluster's anchor, the
    // Link's spec, credentials, anchors compared, mirror controller, gateway, mirror endpoints, orphans).
    #expect(summary.multiclusterCheck.filter { $0.hasPrefix("east: √ ") }.count == 9, "\(summary.multiclusterCheck)")
    #expect(summary.multiclusterCheck.filter { $0.hasPrefix("west: √ ") }.count == 9, "\(summary.multiclusterCheck)")
    #expect(summary.multiclusterCheck.contains { $0.hasPrefix("east: √ trust anchor (west): both clusters use anchor sha256:") })
  }

  @Test("the meshctl binary: `meshctl demo --requests 100 --output json` prints the summary and exits 0")
  func binary() async throws {
    let meshctl = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
      .appendingPathComponent("meshctl").path
    guard FileManager.default.isExecutableFile(atPath: meshctl) else {
      Issue.record("meshctl is not built next to the test bundle (\(meshctl)); `swift build` builds it")
      return
    }
    let out = try await Subprocess.run("timeout", ["120", meshctl, "demo", "--requests", "100", "--split", "30", "--output", "json"])
    #expect(out.status == 0, "\(out.stderr.suffix(2000))")
    let summary = try JSONDecoder().decode(DemoSummary.self, from: Data(out.stdout.utf8))
    #expect(summary.ok)
    #expect(summary.succeeded == 100)
    #expect(Set(summary.leaves.map(\.name)) == ["backend", "backend-west"])
    #expect(out.stderr.contains("progress: 100/100 done"), "progress lines go to stderr with JSON output")
    #expect(summary.leaves.allSatisfy { $0.latencyP50 != nil && $0.tlsRequests == $0.requests })
  }

  @Test("--failover: west's gateway stops half-way; the probe finds it dead, the split moves, every request succeeds")
  func failover() async throws {
    let (summary, _) = try await Self.runDemo {
      $0.requests = 300
      $0.split = 50
      $0.failover = true
    }
    #expect(summary.ok, "\(summary)")
    #expect(summary.succeeded == 300)
    #expect(summary.failover.contains { $0.contains("stopped") })
    #expect(summary.failover.contains { $0.hasPrefix("failover:") }, "\(summary.failover)")
    #expect(summary.gateways.first { $0.cluster == "west" }?.alive == false)
    #expect((summary.byCluster["west"] ?? 0) > 0, "west served the first half")
  }

  // MARK: --processes

  /// The executables `swift build` put next to the test bundle (meshctl, mesh-controller, mesh-proxy, ...).
  static var binDirectory: String { URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path }

  /// The processes whose working directory is `directory` (the demo starts each component there).
  static func processes(workingIn directory: String) -> [String] {
    let resolved = URL(fileURLWithPath: directory).resolvingSymlinksInPath().path
    let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return pids.filter { pid in
      guard Int(pid) != nil, let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd")
      else { return false }
      return cwd == resolved || cwd == directory
    }.map { pid in
      let cmdline = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
      return "\(pid): " + String(decoding: cmdline.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
    }
  }

  static func meshctl() throws -> String {
    let path = "\(binDirectory)/meshctl"
    guard FileManager.default.isExecutableFile(atPath: path) else {
      throw MeshDemoTestError("meshctl is not built next to the test bundle (\(path)); `swift build` builds it")
    }
    return path
  }

  @Test("--headless: west's StatefulSet-style db (db-0, db-1) reached from east's client proxy by each pod's name, through west's gateway: each name reaches that pod")
  func headless() async throws {
    let (summary, _) = try await Self.runDemo {
      $0.requests = 20
      $0.headless = true
    }
    #expect(summary.ok, "\(summary.headless)")
    #expect(
      summary.headless == [
        "headless: db-0.db-west.default.svc.cluster.local: 10/10 answered by db-0 in west",
        "headless: db-1.db-west.default.svc.cluster.local: 10/10 answered by db-1 in west",
      ], "\(summary.headless)")
  }

  @Test("--federated: backend-federated keeps a stream in east, moves it to west through the gateway when east's backend is not ready, and brings it home; nothing fails")
  func federated() async throws {
    let (summary, _) = try await Self.runDemo {
      $0.requests = 50
      $0.federated = true
    }
    #expect(summary.ok, "\(summary.federated)")
    #expect(summary.federated.first == "federated: 20 requests in a row answered by east while east's backend is ready", "\(summary.federated)")
    #expect(summary.federated.contains { $0.hasPrefix("east's backend not ready: the stream moved to west through its gateway after ") }, "\(summary.federated)")
    #expect(summary.federated.contains { $0.hasPrefix("east's backend ready again: traffic came home after ") }, "\(summary.federated)")
    #expect(summary.federated.last?.hasSuffix(" 0 failed") == true, "\(summary.federated)")
  }

  @Test("`meshctl demo --processes --failover --output json`: every component its own executable; split, failover, all stopped")
  func processes() async throws {
    let directory = try TemporaryDirectory(prefix: "demo-processes")
    defer { directory.remove() }
    let out = try await Subprocess.run(
      "timeout",
      [
        "180", try Self.meshctl(), "demo", "--processes", "--requests", "300", "--split", "50", "--failover",
        "--directory", directory.path, "--output", "json",
      ])
    #expect(out.status == 0, "\(out.stderr.suffix(3000))")
    let summary = try JSONDecoder().decode(DemoSummary.self, from: Data(out.stdout.utf8))
    #expect(summary.ok, "\(summary)")
    #expect(summary.mode == "processes")
    #expect(
      summary.multiclusterCheck.count == 18 && summary.multiclusterCheck.allSatisfy { $0.contains(": √ ") },
      "the check passes with every component a process: \(summary.multiclusterCheck)")
    #expect(summary.succeeded == 300)
    #expect(summary.mutualTLSResponses >= 300)
    #expect((summary.byCluster["east"] ?? 0) > 0 && (summary.byCluster["west"] ?? 0) > 0, "\(summary.byCluster)")
    #expect(summary.leaves.allSatisfy { $0.successRate == 1.0 && $0.tlsRequests == $0.requests }, "\(summary.leaves)")
    // Stopping the west gateway process was seen by east's mesh-mirror process, and the split moved.
    #expect(summary.failover.contains { $0.hasPrefix("failover:") }, "\(summary.failover)")
    #expect(summary.gateways.first { $0.cluster == "west" }?.alive == false, "\(summary.gateways)")
    // Each component ran as a process, with its own log, and none is left running.
    for component in [
      "east-api", "east-identity", "east-destination", "east-backend", "east-backend-proxy", "east-gateway",
      "east-mirror", "east-web-proxy", "west-api", "west-identity", "west-destination", "west-backend",
      "west-backend-proxy", "west-gateway", "west-mirror",
    ] {
      #expect(FileManager.default.fileExists(atPath: directory.file("\(component).log")), "no \(component).log")
    }
    #expect(out.stderr.contains("stopped every component process"))
    // `meshctl tap` against the client mesh-proxy's --tap saw the first three requests whole.
    #expect(summary.tap.count == 9, "\(summary.tap)")
    #expect(summary.tap.filter { $0.hasPrefix("end ") && $0.contains(":status=200") }.count == 3, "\(summary.tap)")
    #expect(FileManager.default.fileExists(atPath: directory.file("east-tap.log")))
    // The identity services reviewed the workloads' service-account tokens with their cluster's API.
    let identityLog = try String(contentsOfFile: directory.file("east-identity.log"), encoding: .utf8)
    #expect(identityLog.contains("authenticating workloads with TokenReview"), "\(identityLog.suffix(1500))")
    #expect(identityLog.contains("identity=web.default.serviceaccount"), "\(identityLog.suffix(1500))")
    let mirrorLog = try String(contentsOfFile: directory.file("east-mirror.log"), encoding: .utf8)
    #expect(!mirrorLog.isEmpty, "east's mesh-mirror logged nothing")
    #expect(Self.processes(workingIn: directory.path).isEmpty, "left running: \(Self.processes(workingIn: directory.path))")
  }

  @Test("--processes: a component that dies at start fails the demo with its log, and every other process is stopped")
  func processDiesAtStart() async throws {
    let directory = try TemporaryDirectory(prefix: "demo-broken")
    defer { directory.remove() }
    let bin = try TemporaryDirectory(prefix: "demo-bin")
    defer { bin.remove() }
    for executable in ["meshctl", "mesh-controller", "mesh-mirror"] {
      try FileManager.default.createSymbolicLink(atPath: bin.file(executable), withDestinationPath: "\(Self.binDirectory)/\(executable)")
    }
    // A mesh-proxy that fails the way a misconfigured one would.
    try "#!/bin/sh\necho \"mesh-proxy: cannot reach the identity service (simulated)\" >&2\nexit 3\n".write(
      toFile: bin.file("mesh-proxy"), atomically: true, encoding: .utf8)
    try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bin.file("mesh-proxy"))
    _ = try Self.meshctl()
    let out = try await Subprocess.run(
      "timeout",
      [
        "120", "\(Self.binDirectory)/meshctl", "demo", "--processes", "--bin-dir", bin.path, "--requests", "10",
        "--directory", directory.path,
      ])
    #expect(out.status != 0)
    #expect(out.status != 124, "timed out instead of failing fast")
    #expect(out.stderr.contains("east-backend-proxy"), "\(out.stderr)")
    #expect(out.stderr.contains("exit status 3"), "\(out.stderr)")
    #expect(out.stderr.contains("cannot reach the identity service (simulated)"), "the log's last lines: \(out.stderr)")
    #expect(Self.processes(workingIn: directory.path).isEmpty, "left running: \(Self.processes(workingIn: directory.path))")
  }

  @Test("--processes with executables that are not built: a clear error naming the missing one, nothing started")
  func processesNotBuilt() async throws {
    let bin = try TemporaryDirectory(prefix: "demo-empty-bin")
    defer { bin.remove() }
    let out = try await Subprocess.run(
      "timeout", ["60", try Self.meshctl(), "demo", "--processes", "--bin-dir", bin.path, "--requests", "10"])
    #expect(out.status != 0)
    #expect(out.stderr.contains("meshctl is not built in \(bin.path)"), "\(out.stderr)")
    #expect(out.stderr.contains("swift build"), "\(out.stderr)")
  }
}

struct MeshDemoTestError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}
