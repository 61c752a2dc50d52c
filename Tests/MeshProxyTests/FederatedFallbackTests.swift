import MeshBalancer
import MeshCore
import NIOCore
import NIOEmbedded
import Testing

@testable import MeshProxy

/// A federated service's endpoint set holds the local endpoints and, flagged as fallbacks, the linked
/// clusters' gateways: the proxy decides local affinity per request.
@Suite("Federated services: local affinity in the proxy")
struct FederatedFallbackTests {
  static let local = Endpoint(address: try! Authority("10.1.0.1:8080"))
  static let gateway: Endpoint = {
    var endpoint = Endpoint(
      address: try! Authority("192.0.2.10:4143"), authorityOverride: try! Authority("backend.default.svc.cluster.local:8080"),
      metricLabels: ["target_cluster": "west"])
    endpoint.isFallback = true
    return endpoint
  }()

  func pick(_ destination: Destination, on loop: EmbeddedEventLoop) throws -> TicketBox {
    let target = try destination.target(on: loop, deadline: .now() + .seconds(1)).wait()
    guard case .endpoint(let ticket) = target else { throw TestFailure("no endpoint: \(target)") }
    return ticket
  }

  struct TestFailure: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }

  @Test("local while it answers; the gateway once failure accrual ejects it (before readiness changes); home again when a probe succeeds")
  func failsOverAndComesHome() async throws {
    let loop = EmbeddedEventLoop()
    let destination = Destination(authority: try Authority("backend-federated.default.svc.cluster.local:8080"))
    destination.apply(EndpointSet(exists: true, endpoints: [Self.local, Self.gateway]))
    for _ in 0..<50 {
      let ticket = try pick(destination, on: loop)
      #expect(ticket.endpoint == Self.local)
      ticket.complete(.success)
    }
    // The local backend dies; discovery has not noticed yet. Seven failures in a row eject it.
    for _ in 0..<7 {
      let ticket = try pick(destination, on: loop)
      #expect(ticket.endpoint == Self.local)
      ticket.complete(.failure)
    }
    for _ in 0..<20 {
      let ticket = try pick(destination, on: loop)
      #expect(ticket.endpoint == Self.gateway, "fails over to the linked cluster's gateway")
      ticket.complete(.success)
    }
    #expect(destination.canServe)
    // After the ejection's back-off (1 s, up to 50 % jitter) a request probes the local endpoint again; it
    // answers, and traffic is home.
    let deadline = ContinuousClock.now + .seconds(5)
    var home = false
    while !home && ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(100))
      let ticket = try pick(destination, on: loop)
      home = ticket.endpoint == Self.local
      ticket.complete(.success)
    }
    #expect(home, "a probe went to the local endpoint")
    for _ in 0..<20 {
      let ticket = try pick(destination, on: loop)
      #expect(ticket.endpoint == Self.local)
      ticket.complete(.success)
    }
  }

  @Test("without a local endpoint the gateways serve; an update that brings one back moves traffic home at once")
  func onlyFallbacks() throws {
    let loop = EmbeddedEventLoop()
    let destination = Destination(authority: try Authority("backend-federated.default.svc.cluster.local:8080"))
    destination.apply(EndpointSet(exists: true, endpoints: [Self.gateway]))
    let remote = try pick(destination, on: loop)
    #expect(remote.endpoint == Self.gateway)
    remote.complete(.success)
    destination.apply(EndpointSet(exists: true, endpoints: [Self.local, Self.gateway]))
    let local = try pick(destination, on: loop)
    #expect(local.endpoint == Self.local)
    local.complete(.success)
  }
}
