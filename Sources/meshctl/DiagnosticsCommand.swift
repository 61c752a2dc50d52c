import ArgumentParser
import Foundation
import Logging
import MeshCore
import MeshDiscovery

/// `meshctl diagnostics`: what the control plane answers, for debugging.
struct DiagnosticsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "diagnostics",
    abstract: "Ask the control plane what it knows.",
    subcommands: [Endpoints.self, ProfileCommand.self])

  enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
  }

  struct Common: ParsableArguments {
    @Option(help: "The destination service, HOST:PORT.")
    var destination: String = "127.0.0.1:8086"
    @Option(name: .shortAndLong, help: "Output format: table or json.")
    var output: OutputFormat = .table
    @Option(help: "Seconds to wait for the first answer.")
    var timeout: Double = 10
    @Argument(help: "The authority to resolve, e.g. web.emojivoto.svc.cluster.local:8080.")
    var authority: String

    func parsed() throws -> (destination: Authority, authority: Authority) {
      let destination: Authority
      let authority: Authority
      do { destination = try Authority(self.destination) } catch {
        throw ValidationError("--destination '\(self.destination)': \(error.message)")
      }
      do { authority = try Authority(self.authority) } catch {
        throw ValidationError("authority '\(self.authority)': \(error.message)")
      }
      return (destination, authority)
    }
  }

  struct Endpoints: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "endpoints", abstract: "Print the endpoints the destination service resolves an authority to.")
    @OptionGroup var common: Common

    func run() async throws {
      let (destination, authority) = try common.parsed()
      let set = try await firstAnswer(destination: destination, timeout: common.timeout, what: "endpoints of \(authority)") {
        $0.endpoints(for: authority)
      }
      switch common.output {
      case .json: try printJSON(EndpointsJSON(authority: authority, set: set))
      case .table:
        guard set.exists else {
          print("\(authority): the destination service does not know this name")
          return
        }
        guard !set.endpoints.isEmpty else {
          print("\(authority): no endpoints")
          return
        }
        // CLUSTER: the linked cluster behind a gateway endpoint (mirrors, federated services), else local.
        var rows = [["ADDRESS", "WEIGHT", "IDENTITY", "PROTOCOL", "AUTHORITY_OVERRIDE", "CLUSTER"]]
        for e in set.endpoints {
          rows.append([
            e.address.description, "\(e.weight)", e.tlsIdentity?.description ?? "-", e.protocolHint.description,
            e.authorityOverride?.description ?? "-", e.metricLabels["target_cluster"] ?? "local",
          ])
        }
        printTable(rows)
      }
    }
  }

  struct ProfileCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "profile", abstract: "Print the profile (routes, retry budget, traffic split) of an authority.")
    @OptionGroup var common: Common

    func run() async throws {
      let (destination, authority) = try common.parsed()
      let profile = try await firstAnswer(destination: destination, timeout: common.timeout, what: "profile of \(authority)") {
        $0.profile(for: authority)
      }
      switch common.output {
      case .json: try printJSON(ProfileJSON(profile))
      case .table:
        print("NAME: \(profile.fullyQualifiedName.isEmpty ? "-" : profile.fullyQualifiedName)")
        if let budget = profile.retryBudget {
          print("RETRY BUDGET: ratio \(budget.retryRatio), min \(budget.minRetriesPerSecond)/s, ttl \(budget.ttl)")
        }
        if !profile.destinationOverrides.isEmpty {
          print("TRAFFIC SPLIT:")
          var rows = [["AUTHORITY", "WEIGHT"]]
          for dst in profile.destinationOverrides { rows.append([dst.authority.description, "\(dst.weight)"]) }
          printTable(rows, indent: "  ")
        }
        guard !profile.routes.isEmpty else {
          print("ROUTES: none")
          return
        }
        print("ROUTES:")
        var rows = [["NAME", "CONDITION", "RETRYABLE", "TIMEOUT", "RESPONSE_CLASSES"]]
        for route in profile.routes {
          rows.append([
            route.name, describe(route.condition), route.isRetryable ? "yes" : "no",
            route.timeout.map { "\($0)" } ?? "-",
            route.responseClasses.isEmpty ? "-" : route.responseClasses.map(describe).joined(separator: ";"),
          ])
        }
        printTable(rows, indent: "  ")
      }
    }
  }
}

/// Runs a resolver until its first snapshot of `watch`, or fails after `timeout` seconds.
private func firstAnswer<Value: Sendable>(
  destination: Authority, timeout: Double, what: String,
  _ watch: @escaping @Sendable (Resolver) -> AsyncThrowingStream<Value, any Error>
) async throws -> Value {
  var logger = Logger(label: "meshctl.diagnostics")
  logger.logLevel = .error
  let resolver = try Resolver(
    configuration: .defaults {
      $0.host = destination.host
      $0.port = destination.port
      $0.maxBackoff = .seconds(1)
    },
    logger: logger)
  return try await withThrowingTaskGroup(of: Value?.self) { group in
    group.addTask {
      try await resolver.run()
      return nil
    }
    group.addTask {
      for try await value in watch(resolver) { return value }
      throw DiagnosticsFailure("\(what): the stream ended without an answer")
    }
    group.addTask {
      try await Task.sleep(for: .seconds(timeout))
      throw DiagnosticsFailure("timed out after \(timeout) s waiting for the \(what) from \(destination)")
    }
    defer { group.cancelAll() }
    while let result = try await group.next() {
      if let value = result { return value }
    }
    throw DiagnosticsFailure("\(what): the resolver stopped without an answer")
  }
}

/// A failure at run time (exit status 1, no usage text).
private struct DiagnosticsFailure: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// Prints rows as columns separated by two spaces, each as wide as its widest cell.
private func printTable(_ rows: [[String]], indent: String = "") {
  guard let columns = rows.map(\.count).max() else { return }
  var widths = Array(repeating: 0, count: columns)
  for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
  for row in rows {
    let cells = row.enumerated().map { i, cell in
      i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
    }
    print(indent + cells.joined(separator: "  "))
  }
}

private func printJSON<T: Encodable>(_ value: T) throws {
  let encoder = JSONEncoder()
  encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
  print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

private func describe(_ match: RequestMatch) -> String {
  switch match {
  case .all(let m): "all(\(m.map(describe).joined(separator: ",")))"
  case .any(let m): "any(\(m.map(describe).joined(separator: ",")))"
  case .not(let m): "not(\(describe(m)))"
  case .pathRegex(let regex): "path=~\(regex)"
  case .method(let method): "method=\(method)"
  }
}

private func describe(_ match: ResponseMatch) -> String {
  switch match {
  case .all(let m): "all(\(m.map(describe).joined(separator: ",")))"
  case .any(let m): "any(\(m.map(describe).joined(separator: ",")))"
  case .not(let m): "not(\(describe(m)))"
  case .status(let min, let max): "status \(min.map(String.init) ?? "")-\(max.map(String.init) ?? "")"
  }
}

private func describe(_ responseClass: ResponseClass) -> String {
  "\(describe(responseClass.condition))=>\(responseClass.isFailure ? "failure" : "success")"
}

private struct EndpointsJSON: Encodable {
  struct Row: Encodable {
    var address: String
    var weight: UInt32
    var identity: String?
    var `protocol`: String
    var authorityOverride: String?
    var metricLabels: [String: String]
  }
  var authority: String
  var exists: Bool
  var endpoints: [Row]
  init(authority: Authority, set: EndpointSet) {
    self.authority = authority.description
    self.exists = set.exists
    self.endpoints = set.endpoints.map {
      Row(
        address: $0.address.description, weight: $0.weight, identity: $0.tlsIdentity?.description,
        protocol: $0.protocolHint.description, authorityOverride: $0.authorityOverride?.description,
        metricLabels: $0.metricLabels)
    }
  }
}

private struct ProfileJSON: Encodable {
  struct RouteRow: Encodable {
    var name: String
    var condition: String
    var isRetryable: Bool
    var timeoutSeconds: Double?
    var responseClasses: [String]
  }
  struct Budget: Encodable {
    var retryRatio: Double
    var minRetriesPerSecond: Int
    var ttlSeconds: Double
  }
  struct Split: Encodable {
    var authority: String
    var weight: UInt32
  }
  var fullyQualifiedName: String
  var routes: [RouteRow]
  var retryBudget: Budget?
  var dstOverrides: [Split]
  var opaqueProtocol: Bool
  init(_ p: Profile) {
    fullyQualifiedName = p.fullyQualifiedName
    routes = p.routes.map {
      RouteRow(
        name: $0.name, condition: describe($0.condition), isRetryable: $0.isRetryable,
        timeoutSeconds: $0.timeout.map(seconds), responseClasses: $0.responseClasses.map(describe))
    }
    retryBudget = p.retryBudget.map {
      Budget(retryRatio: $0.retryRatio, minRetriesPerSecond: $0.minRetriesPerSecond, ttlSeconds: seconds($0.ttl))
    }
    dstOverrides = p.destinationOverrides.map { Split(authority: $0.authority.description, weight: $0.weight) }
    opaqueProtocol = p.opaqueProtocol
  }
}

private func seconds(_ d: Duration) -> Double {
  Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}
