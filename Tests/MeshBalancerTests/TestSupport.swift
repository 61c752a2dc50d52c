@testable import MeshBalancer

/// A held ticket whose request outlives the statement that picked it.
final class HeldTicket: @unchecked Sendable {
  var ticket: BalancerTicket<String>?

  init(_ ticket: consuming BalancerTicket<String>) {
    self.ticket = consume ticket
  }

  var endpoint: String? { self.ticket?.endpoint }
}

extension P2CBalancer where Endpoint == String {
  /// A balancer on a manual clock with a fixed seed.
  static func forTesting(
    _ endpoints: [String] = [],
    clock: ManualBalancerClock,
    seed: UInt64 = 7,
    configure: (inout BalancerConfiguration) -> Void = { _ in }
  ) -> P2CBalancer<String> {
    let configuration = BalancerConfiguration.defaults {
      $0.seed = seed
      configure(&$0)
    }
    return P2CBalancer(endpoints: endpoints, configuration: configuration, clock: clock)
  }

  /// Picks and holds the ticket.
  func hold() throws -> HeldTicket {
    HeldTicket(try self.pick())
  }

  /// Picks, completes with `outcome` after `latency`, returns the endpoint.
  @discardableResult
  func request(_ outcome: RequestOutcome, latency: Duration = .zero, clock: ManualBalancerClock) throws -> String {
    let ticket = try self.pick()
    let endpoint = ticket.endpoint
    clock.advance(by: latency)
    ticket.complete(outcome)
    return endpoint
  }
}

extension Duration {
  var nanosecondsForTesting: UInt64 {
    let (seconds, attoseconds) = self.components
    return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
  }
}
