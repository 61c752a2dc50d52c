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
    let gateway = try #require(summary.gateways.first { $0.cluster == "west" })
    #expect(gateway.alive == true)
    #expect(gateway.numServices >= 1)
    #expect(gateway.latencyP50 != nil)
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
}
