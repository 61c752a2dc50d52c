import ArgumentParser
import Foundation
import Logging
import MeshDemo
import MeshMulticluster
import UnixSignals

/// `meshctl demo`: the whole mission on one machine.
struct DemoCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "demo",
    abstract: "Run two clusters (east, west) on this machine and split backend traffic between them.",
    discussion: """
      Starts, in this process (or with --processes, each as its own executable: meshctl dev kube-api, \
      mesh-controller identity|destination, mesh-proxy, mesh-mirror, meshctl dev backend): two embedded Kubernetes API servers; per cluster an identity service (its own \
      issuer under one shared trust anchor), a destination service, a gateway and a backend behind its inbound \
      proxy; a service mirror in each cluster linked to the other; a client proxy in east. Exports backend, \
      applies TrafficSplit backend -> {backend, backend-west}, sends requests through the client's proxy and \
      prints who answered, the split leaves' golden signals and the gateways. Exit status 0 only if every \
      request succeeded over mutual TLS.
      """)

  @Option(help: "Requests to send through east's client proxy.")
  var requests = 1000
  @Option(help: "Percent of backend traffic split to backend-west.")
  var split = 50
  @Option(help: "Requests in flight at once.")
  var concurrency = 8
  @Flag(help: "Stop west's gateway half-way; once its probe finds it dead, shift the split to the live leaf.")
  var failover = false
  @Flag(help: "Stop west's gateway half-way and leave the split as it is.")
  var stopGateway = false
  @Flag(help: "After the load: backend joins backend-federated in east and west; a stream stays in east, moves to west when east's backend is not ready, and comes home.")
  var federated = false
  @Flag(help: "After the load: a headless db (db-0, db-1) in west, reached from east by each pod's name (db-0.db-west...). Not with --processes.")
  var headless = false
  @Flag(help: "Keep everything running after the report (prints kubeconfigs and ports); interrupt to stop.")
  var keepRunning = false
  @Option(help: "Directory for the kubeconfigs and the trust anchor (default: a new temporary directory, removed after a successful run).")
  var directory: String?
  @Flag(help: "Run each component as its own executable, as in a real deployment (needs `swift build` first).")
  var processes = false
  @Option(help: "Where the executables are for --processes (default: next to this meshctl).")
  var binDir: String?
  @Option(name: [.short, .customLong("output")], help: "Report format: text or json.")
  var output: String = "text"
  @Option(help: "Log level of the components (trace, debug, info, notice, warning, error).")
  var logLevel: String = "error"

  func validate() throws {
    guard (1...1_000_000).contains(requests) else { throw ValidationError("--requests must be 1...1000000") }
    guard (0...100).contains(split) else { throw ValidationError("--split must be a percentage, 0...100") }
    guard (1...256).contains(concurrency) else { throw ValidationError("--concurrency must be 1...256") }
    guard ["text", "json"].contains(output) else { throw ValidationError("--output must be text or json") }
    guard binDir == nil || processes else { throw ValidationError("--bin-dir goes with --processes") }
    guard !(failover && stopGateway) else { throw ValidationError("--failover and --stop-gateway exclude each other") }
    guard !(headless && processes) else { throw ValidationError("--headless runs with the in-process runtime only") }
    guard !((federated || headless) && (failover || stopGateway)) else {
      throw ValidationError("--federated and --headless need west's gateway: they exclude --failover and --stop-gateway")
    }
  }

  func run() async throws {
    let level = Logger.Level(rawValue: logLevel) ?? .error
    LoggingSystem.bootstrap { label in
      var handler = StreamLogHandler.standardError(label: label)
      handler.logLevel = level
      return handler
    }
    let logger = Logger(label: "meshctl.demo")
    var options = DemoOptions()
    options.requests = requests
    options.split = split
    options.concurrency = concurrency
    options.failover = failover
    options.stopGateway = stopGateway
    options.federated = federated
    options.headless = headless
    options.keepRunning = keepRunning
    options.directory = directory
    options.processes = processes
    options.binDirectory = binDir
    let json = output == "json"
    // Progress goes to stderr with JSON output, so stdout holds the summary alone.
    let say: @Sendable (String) -> Void = { line in
      if json {
        FileHandle.standardError.write(Data((line + "\n").utf8))
      } else {
        print(line)
      }
    }
    // The report is printed as soon as the load is done (with --keep-running, before the demo waits).
    let report: @Sendable (DemoSummary) -> Void = { summary in Self.printReport(summary, json: json) }
    // SIGINT/SIGTERM (the way out of --keep-running) cancel the demo, which then stops everything it
    // started, component processes included, before meshctl exits.
    let demoOptions = options
    let outcome = try await withThrowingTaskGroup(of: DemoSummary?.self) { group -> DemoSummary? in
      group.addTask { try await Demo.run(demoOptions, logger: logger, say: say, report: report) }
      group.addTask {
        for await signal in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
          say("\(signal): stopping the demo")
          return nil
        }
        return nil
      }
      defer { group.cancelAll() }
      if let summary = try await group.next() ?? nil { return summary }
      // Interrupted: the demo is cancelled and stops what it started; its own result no longer matters
      // unless it had finished.
      group.cancelAll()
      return (try? await group.next()) ?? nil
    }
    guard let summary = outcome else { throw ExitCode(130) }
    if !summary.ok { throw ExitCode(1) }
  }

  static func printReport(_ summary: DemoSummary, json: Bool) {
    if json {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
      print(String(decoding: (try? encoder.encode(summary)) ?? Data("{}".utf8), as: UTF8.self))
    } else {
      print("")
      print("responses by cluster: " + summary.byCluster.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
        .joined(separator: ", ") + " (\(summary.succeeded)/\(summary.requests) succeeded)")
      print("")
      print("meshctl stat ts backend (east's client proxy, one row per split leaf):")
      print(StatTable.render(summary.leaves, nameHeader: "LEAF"), terminator: "")
      print("")
      if !summary.tap.isEmpty {
        print("meshctl tap (east's client proxy, the first requests):")
        for line in summary.tap { print("  " + line) }
        print("")
      }
      print("meshctl multicluster gateways (east):")
      print(GatewayReport.table(summary.gateways), terminator: "")
      for event in summary.failover { print(event) }
      if !summary.headless.isEmpty {
        print("")
        for line in summary.headless { print(line) }
      }
      if !summary.federated.isEmpty {
        print("")
        for line in summary.federated { print(line) }
      }
      print("")
      print(
        summary.ok
          ? "OK: every request succeeded over mutual TLS (\(summary.mutualTLSResponses) mTLS responses)."
          : "NOT OK: \(summary.failed) of \(summary.requests) requests failed; \(summary.mutualTLSResponses) went over mTLS.")
    }
    fflush(nil)
  }
}
