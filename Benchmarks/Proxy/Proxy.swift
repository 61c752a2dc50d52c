// The proxy's cost per request (package-benchmark): `swift package --package-path Benchmarks benchmark --target ProxyBenchmarks`.
//
// One process holds a small HTTP/1.1 backend, a keep-alive HTTP/1.1 client and, for the proxied rows, a
// `MeshProxy` (plaintext outbound; and the mTLS pair: client proxy -> mutual TLS over HTTP/2 -> server
// proxy). Each iteration is one request and its response. The `direct` row is the same client and backend
// without a proxy, measured in the same run: a proxied row minus `direct` is what the proxy costs per
// request (instructions, mallocs, syscalls, CPU), the numbers to judge a hot-path change by.

import Benchmark
import Logging
import MeshCore
import MeshIdentity
import MeshProxy
import MeshTLS
import NIOCore
import NIOHTTP1
import NIOPosix
import _MeshTestSupport

let benchmarks: @Sendable () -> Void = {
  let metrics: [BenchmarkMetric] = [
    .wallClock, .throughput, .cpuTotal, .instructions, .mallocCountTotal, .syscalls, .contextSwitches,
  ]
  // Allocations per request are deterministic: the checked-in thresholds (Benchmarks/Thresholds, written by
  // `swift package --package-path Benchmarks --allow-writing-to-package-directory benchmark thresholds update
  // --target ProxyBenchmarks --path "$PWD/Benchmarks/Thresholds"`, then kept to `mallocCountTotal`) fail
  // `benchmark thresholds check --target ProxyBenchmarks --path "$PWD/Benchmarks/Thresholds"` when a request
  // costs more than 2 above them. The names have no '/' or ' ': package-benchmark writes such names with '_'
  // but reads them as they are.
  let configuration = Benchmark.Configuration(
    metrics: metrics, scalingFactor: .kilo, maxDuration: .seconds(5), maxIterations: 20,
    thresholds: [.mallocCountTotal: .init(absolute: [.p90: 2_000])])  // per 1,000 requests (scalingFactor .kilo)

  Benchmark("HTTP1-request-direct", configuration: configuration) { benchmark in
    let backend = try await TestHTTPServer(name: "backend")
    try await measure(benchmark, port: backend.port, authority: "127.0.0.1:\(backend.port)")
    await backend.stop()
  }

  Benchmark("HTTP1-request-one-proxy-plaintext", configuration: configuration) { benchmark in
    let backend = try await TestHTTPServer(name: "backend")
    let authority = try Authority("backend.default.svc.cluster.local:80")
    let discovery = InMemoryDiscovery([
      authority: EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: backend.port))])
    ])
    try await withProxy(tls: nil, discovery: discovery, application: 1) { proxy in
      try await measure(benchmark, port: try await proxy.boundPorts().outbound, authority: authority.description)
    }
    await backend.stop()
  }

  Benchmark("HTTP1-request-mTLS-pair", configuration: configuration) { benchmark in
    let backend = try await TestHTTPServer(name: "backend")
    let pki = try TestPKI()
    let authority = try Authority("backend.default.svc.cluster.local:80")
    let serverTLS = try MeshTLS(material: try pki.workload(.test("backend")), trustAnchors: [pki.anchor.certificate])
    let clientTLS = try MeshTLS(material: try pki.workload(.test("web")), trustAnchors: [pki.anchor.certificate])
    try await withProxy(tls: serverTLS, discovery: InMemoryDiscovery(), application: backend.port) { server in
      let inbound = try await server.boundPorts().inbound
      let discovery = InMemoryDiscovery([
        authority: EndpointSet(
          exists: true,
          endpoints: [
            Endpoint(address: try Authority(host: "127.0.0.1", port: inbound), tlsIdentity: .test("backend"), protocolHint: .http2)
          ])
      ])
      try await withProxy(tls: clientTLS, discovery: discovery, application: 1) { client in
        try await measure(benchmark, port: try await client.boundPorts().outbound, authority: authority.description)
      }
    }
    await backend.stop()
  }
}

/// Warms up, then sends one request per scaled iteration on one keep-alive connection.
func measure(_ benchmark: Benchmark, port: Int, authority: String) async throws {
  let client = try await KeepAliveClient(port: port, authority: authority)
  for _ in 0..<2_000 { try await client.get() }
  benchmark.startMeasurement()
  for _ in benchmark.scaledIterations { try await client.get() }
  benchmark.stopMeasurement()
  try await client.close()
}

/// A proxy on loopback ports chosen by the OS (`withSingleProxy`, as the tests run one), forwarding inbound
/// requests to the local application at `application`.
func withProxy(
  tls: MeshTLS?, discovery: InMemoryDiscovery, application: Int, _ body: (MeshProxy) async throws -> Void
) async throws {
  try await withSingleProxy(
    tls: tls, discovery: discovery, label: "benchmark.proxy",
    configure: { $0.applicationAddress = try! Authority(host: "127.0.0.1", port: application) }, body)
}

/// An HTTP/1.1 client on one keep-alive connection: `get()` sends a request and waits for its response.
final class KeepAliveClient: Sendable {
  private let channel: any Channel
  private let handler: ResponseWaiter
  private let head: HTTPRequestHead

  init(port: Int, authority: String) async throws {
    let handler = ResponseWaiter()
    channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .channelOption(.tcpOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHTTPClientHandlers()
          try channel.pipeline.syncOperations.addHandler(handler)
        }
      }
      .connect(host: "127.0.0.1", port: port).get()
    self.handler = handler
    var headers = HTTPHeaders()
    headers.add(name: "host", value: authority)
    head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: headers)
  }

  func get() async throws {
    let promise = channel.eventLoop.makePromise(of: Void.self)
    let handler = self.handler
    let head = self.head
    let channel = self.channel
    channel.eventLoop.execute {
      handler.pending = promise
      channel.write(HTTPClientRequestPart.head(head), promise: nil)
      channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
    }
    try await promise.futureResult.get()
  }

  func close() async throws { try await channel.close() }

  /// Completes the pending request's promise at the end of its response (a non-200 fails it).
  final class ResponseWaiter: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    var pending: EventLoopPromise<Void>?
    var status: HTTPResponseStatus = .ok

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      switch unwrapInboundIn(data) {
      case .head(let head): status = head.status
      case .body: break
      case .end:
        let promise = pending
        pending = nil
        if status == .ok {
          promise?.succeed()
        } else {
          promise?.fail(BenchmarkFailure("status \(status.code)"))
        }
      }
    }

    func channelInactive(context: ChannelHandlerContext) {
      pending?.fail(BenchmarkFailure("connection closed"))
      pending = nil
    }
  }
}

struct BenchmarkFailure: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
