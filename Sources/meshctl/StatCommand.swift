import ArgumentParser
import AsyncHTTPClient
import Foundation
import MeshDemo
import NIOCore
import NIOHTTP1

/// `meshctl stat`: golden signals read from proxies' Prometheus endpoints.
struct StatCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "stat",
    abstract: "Success rate, RPS and latency percentiles from mesh proxies' /metrics.",
    discussion: """
      KIND is svc (outbound traffic by destination service), ts APEX (the leaves of the traffic split of \
      service APEX), deploy (inbound traffic by authority) or client (inbound traffic by caller identity). \
      RPS is measured over --window seconds between two scrapes (0: counts since start, no RPS).
      """)

  @Argument(help: "svc | ts | deploy | client")
  var kind: String
  @Argument(help: "For ts: the apex service (name, or name.namespace).")
  var name: String?
  @Option(name: .customLong("admin"), parsing: .upToNextOption, help: "Proxy admin addresses HOST:PORT (one or more).")
  var admins: [String] = ["127.0.0.1:4191"]
  @Option(help: "Namespace of the apex service for ts.")
  var namespace = "default"
  @Option(help: "Cluster domain, for the apex authority.")
  var clusterDomain = "cluster.local"
  @Option(help: "Seconds between two scrapes for RPS; 0 reads once.")
  var window: Double = 0
  @Option(name: [.short, .customLong("output")], help: "table or json")
  var output = "table"

  func validate() throws {
    guard ["svc", "ts", "deploy", "client"].contains(kind) else {
      throw ValidationError("unknown kind '\(kind)': use svc, ts, deploy or client")
    }
    if kind == "ts", name == nil { throw ValidationError("stat ts needs the apex service: meshctl stat ts backend") }
    guard ["table", "json"].contains(output) else { throw ValidationError("--output must be table or json") }
  }

  func run() async throws {
    let client = HTTPClient(eventLoopGroupProvider: .singleton)
    do {
      let first = try await scrapeAll(client)
      var samples = first
      var seconds: Double? = nil
      if window > 0 {
        try await Task.sleep(for: .milliseconds(Int(window * 1000)))
        let second = try await scrapeAll(client)
        samples = Self.difference(second, first)
        seconds = window
      }
      let rows: [StatRow]
      switch kind {
      case "ts":
        let apex = name!.contains(".") ? name! : "\(name!).\(namespace)"
        rows = StatTable.rows(
          samples, direction: "outbound", authority: "\(apex).svc.\(clusterDomain):80", groupBy: "dst_service",
          window: seconds)
      case "deploy": rows = StatTable.rows(samples, direction: "inbound", groupBy: "authority", window: seconds)
      case "client": rows = StatTable.rows(samples, direction: "inbound", groupBy: "client_id", window: seconds)
      default: rows = StatTable.rows(samples, direction: "outbound", groupBy: "dst_service", window: seconds)
      }
      if output == "json" {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(rows), as: UTF8.self))
      } else {
        print(StatTable.render(rows, nameHeader: kind == "ts" ? "LEAF" : "NAME"), terminator: "")
      }
    } catch {
      try? await client.shutdown()
      throw error
    }
    try await client.shutdown()
  }

  private func scrapeAll(_ client: HTTPClient) async throws -> [PrometheusSample] {
    var samples: [PrometheusSample] = []
    for admin in admins {
      let url = admin.hasPrefix("http") ? admin : "http://\(admin)/metrics"
      let response: HTTPClientResponse
      do {
        response = try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
      } catch {
        throw ValidationError("cannot read \(url): \(error)")
      }
      guard response.status == .ok else { throw ValidationError("\(url) answered \(response.status)") }
      samples += PrometheusText.parse(String(buffer: try await response.body.collect(upTo: 32 << 20)))
    }
    return samples
  }

  /// Counter increase between two scrapes, sample by sample.
  static func difference(_ later: [PrometheusSample], _ earlier: [PrometheusSample]) -> [PrometheusSample] {
    var before: [String: Double] = [:]
    func key(_ s: PrometheusSample) -> String { s.name + s.labels.sorted { $0.key < $1.key }.description }
    for sample in earlier { before[key(sample), default: 0] += sample.value }
    return later.map { sample in
      var changed = sample
      changed.value = max(0, sample.value - (before[key(sample)] ?? 0))
      return changed
    }
  }
}
