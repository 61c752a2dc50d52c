// Discovery benchmark: 1,000 services x 10 endpoints in the embedded Kubernetes API, 100 subscribers
// (gRPC Get streams) on one service; measures the time from an Endpoints change to the moment every
// subscriber has received the update (p50 / p99 over the iterations), and the process's VmRSS (the
// destination server, the embedded API server and the subscribers share this process).
//
// Usage: swift run --package-path Benchmarks -c release DiscoveryBenchmark [services=1000] [endpoints=10] [subscribers=100] [iterations=200]
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import MeshAPI
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import MeshKubeLocal
import Synchronization

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let serviceCount = arguments.count > 0 ? arguments[0] : 1000
let endpointsPerService = arguments.count > 1 ? arguments[1] : 10
let subscriberCount = arguments.count > 2 ? arguments[2] : 100
let iterations = arguments.count > 3 ? arguments[3] : 200
let timeoutPerChange = Duration.seconds(10)

func vmRSSKiB() -> Int {
  guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
  for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
  }
  return -1
}

func ip(_ service: Int, _ index: Int) -> String { "10.\(100 + service / 250).\(service % 250).\(index + 1)" }

func makeEndpoints(_ service: Int, count: Int, extra: Int? = nil) -> Endpoints {
  var addresses = (0..<count).map { Endpoints.Address(ip: ip(service, $0)) }
  if let extra { addresses.append(Endpoints.Address(ip: "10.200.\(extra / 250).\(extra % 250 + 1)")) }
  return Endpoints(
    metadata: ObjectMeta(name: "svc-\(service)", namespace: "bench"),
    subsets: [.init(addresses: addresses, ports: [.init(name: "http", port: 8080)])])
}

/// Arrival bookkeeping: for each iteration, how many subscribers have seen its address, and when the last did.
final class Arrivals: Sendable {
  struct State {
    var seen: [String: Int] = [:]
    var completed: [String: ContinuousClock.Instant] = [:]
  }
  let state = Mutex(State())
  let subscribers: Int
  init(subscribers: Int) { self.subscribers = subscribers }
  func saw(_ address: String) {
    let now = ContinuousClock.now
    state.withLock { s in
      s.seen[address, default: 0] += 1
      if s.seen[address] == subscribers { s.completed[address] = now }
    }
  }
  func completion(of address: String) -> ContinuousClock.Instant? { state.withLock { $0.completed[address] } }
  var firstMessages: Int { state.withLock { $0.seen["initial", default: 0] } }
}

func percentile(_ sorted: [Duration], _ p: Double) -> Duration {
  guard !sorted.isEmpty else { return .zero }
  return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
}

func ms(_ d: Duration) -> String {
  String(format: "%.2f ms", Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
}

var logger = Logger(label: "bench.discovery")
logger.logLevel = .error
let state = LocalKubeState()
print("populating \(serviceCount) services x \(endpointsPerService) endpoints ...")
for s in 0..<serviceCount {
  try state.create(
    KubeService(
      metadata: ObjectMeta(name: "svc-\(s)", namespace: "bench"),
      spec: .init(ports: [.init(name: "http", port: 8080, targetPort: .int(8080))])))
  try state.create(makeEndpoints(s, count: endpointsPerService))
}
let rssBefore = vmRSSKiB()
let api = LocalKubeAPIServer(state: state, logger: logger)
let target = "svc-0.bench.svc.cluster.local:8080"

try await withThrowingTaskGroup(of: Void.self) { group in
  group.addTask { try await api.run() }
  let kube = try KubeClient(config: try await api.clientConfig())
  let server = DestinationServer(
    configuration: .defaults { $0.host = "127.0.0.1"; $0.port = 0; $0.endpointsAPI = .endpoints }, client: kube, logger: logger)
  group.addTask { try await server.run() }
  let port = try await server.listeningPort
  print("destination server on 127.0.0.1:\(port); VmRSS after sync: \(vmRSSKiB()) KiB (before the servers: \(rssBefore) KiB)")

  let arrivals = Arrivals(subscribers: subscriberCount)
  try await withGRPCClient(
    transport: .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
  ) { grpc in
    let client = Swiftmesh_Destination_Destination.Client(wrapping: grpc)
    try await withThrowingTaskGroup(of: Void.self) { subscribers in
      for _ in 0..<subscriberCount {
        subscribers.addTask {
          var request = Swiftmesh_Destination_GetDestination()
          request.path = target
          try await client.get(request: ClientRequest(message: request)) { response in
            var first = true
            for try await message in response.messages {
              if first {
                arrivals.saw("initial")
                first = false
                continue
              }
              if case .add(let set) = message.update { for addr in set.addrs { arrivals.saw(addr.addr.ip) } }
            }
          }
        }
      }
      let deadline = ContinuousClock.now + .seconds(60)
      while arrivals.firstMessages < subscriberCount {
        guard ContinuousClock.now < deadline else { fatalError("subscribers did not all get their first message") }
        try await Task.sleep(for: .milliseconds(5))
      }
      print("\(subscriberCount) subscribers connected; publishers: \(server.statistics.endpointPublishers); VmRSS: \(vmRSSKiB()) KiB")

      var latencies: [Duration] = []
      for i in 0..<iterations {
        let endpoints = makeEndpoints(0, count: endpointsPerService, extra: i)
        let address = endpoints.subsets![0].addresses!.last!.ip
        var update = endpoints
        update.metadata.resourceVersion = state.get(Endpoints.self, name: "svc-0", namespace: "bench")?.metadata.resourceVersion
        let start = ContinuousClock.now
        try state.update(update)
        let deadline = start + timeoutPerChange
        while arrivals.completion(of: address) == nil {
          guard ContinuousClock.now < deadline else { fatalError("iteration \(i): not every subscriber saw \(address)") }
          try await Task.sleep(for: .milliseconds(1))  // bounded poll; the timestamp is taken by the subscriber
        }
        latencies.append(arrivals.completion(of: address)! - start)
      }
      latencies.sort()
      print("Endpoints change -> all \(subscriberCount) subscribers updated, over \(iterations) changes:")
      print("  p50 \(ms(percentile(latencies, 0.5)))  p99 \(ms(percentile(latencies, 0.99)))  max \(ms(latencies.last ?? .zero))")
      print("VmRSS at the end: \(vmRSSKiB()) KiB")
      subscribers.cancelAll()
    }
  }
  try await kube.shutdown()
  api.stop()
  group.cancelAll()
}
