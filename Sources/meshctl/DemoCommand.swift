import ArgumentParser
import Foundation
import Logging
import MeshDemo
import MeshMulticluster

/// `meshctl demo`: the whole mission on one machine.
struct DemoCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "demo",
    abstract: "Run two clusters (east, west) on this machine and split backend traffic between them.",
    discussion: """
      Starts, in this process: two embedded Kubernetes API servers; per cluster an identity service (its own \
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
  @Flag(help: "Keep everything running after the report (prints kubeconfigs and ports); interrupt to stop.")
  var keepRunning = false
  @Option(help: "Directory for the kubeconfigs and the trust anchor (default: a new temporary directory).")
  var directory: String?
  @Option(name: [.short, .customLong("output")], help: "Report format: text or json.")
  var output: String = "text"
  @Option(help: "Log level of the components (trace, debug, info, notice, warning, error).")
  var logLevel: String = "error"

  func validate() throws {
    guard (1...1_000_000).contains(requests) else { throw ValidationError("--requests must be 1...1000000") }
    guard (0...100).contains(split) else { throw ValidationError("--split must be a percentage, 0...100") }
    guard (1...256).contains(concurrency) else { throw ValidationError("--concurrency must be 1...256") }
    guard ["text", "json"].contains(output) else { throw ValidationError("--output must be text or json") }
    guard !(failover && stopGateway) else { throw ValidationError("--failover and --stop-gateway exclude each other") }
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
    options.keepRunning = keepRunning
    options.directory = directory
    let json = output == "json"
    // Progress goes to stderr with JSON output, so stdout holds the summary alone.
    let say: @Sendable (String) -> Void = { line in
      if json {
        FileHandle.standardError.write(Data((line + "\n").utf8))
      } else {
        print(line)
      }
    }
    let summary = try await Demo.run(options, logger: logger, say: say)
    if json {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
      print(String(decoding: try encoder.encode(summary), as: UTF8.self))
    } else {
      print("")
      print("responses by cluster: " + summary.byCluster.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
        .joined(separator: ", ") + " (\(summary.succeeded)/\(summary.requests) succeeded)")
      print("")
      print("meshctl stat ts backend (east's client proxy, one row per split leaf):")
      print(StatTable.render(summary.leaves, nameHeader: "LEAF"), terminator: "")
      print("")
      print("meshctl multicluster gateways (east):")
      print(GatewayReport.table(summary.gateways), terminator: "")
      for event in summary.failover { print(event) }
      print("")
      print(
        summary.ok
          ? "OK: every request succeeded over mutual TLS (\(summary.mutualTLSResponses) mTLS responses)."
          : "NOT OK: \(summary.failed) of \(summary.requests) requests failed; \(summary.mutualTLSResponses) went over mTLS.")
    }
    if !summary.ok { throw ExitCode(1) }
  }
}
