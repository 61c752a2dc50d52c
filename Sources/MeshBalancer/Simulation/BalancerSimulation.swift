/// A discrete-event simulation of a client balancing over endpoints, one of them slow, to
/// compare P2C over Peak-EWMA with round robin and uniform random. No real time passes: the
/// P2C balancer runs on a ``ManualBalancerClock`` set to the simulated time of each event.
///
/// Model: requests arrive as a Poisson process at ``Configuration/requestsPerSecond``. Each
/// endpoint serves ``Configuration/concurrency`` requests at once, first come first served
/// (a request waits for the earliest free worker), with service times uniform in
/// `0.5 ... 1.5` times the endpoint's mean (``Configuration/serviceTime``, times
/// ``Configuration/slowdown`` for the slow endpoints). Latency is arrival to completion.
/// Every request succeeds.
public enum BalancerSimulation {
  /// The load-balancing strategy under test.
  public enum Strategy: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// ``P2CBalancer`` (power of two choices over Peak-EWMA).
    case p2cPeakEWMA = "p2c-peak-ewma"
    /// Endpoints in turn.
    case roundRobin = "round-robin"
    /// A uniformly random endpoint.
    case random = "random"

    public var description: String { self.rawValue }
  }

  /// The simulated system and offered load.
  public struct Configuration: Sendable {
    /// Endpoints in total. Default: 10.
    public var endpoints: Int
    /// How many of them (the last ones) are slow. Default: 1.
    public var slowEndpoints: Int
    /// How much slower the slow endpoints serve. Default: 10.
    public var slowdown: Double
    /// Mean service time of a normal endpoint. Default: 10 ms.
    public var serviceTime: Duration
    /// Requests each endpoint serves in parallel. Default: 4.
    public var concurrency: Int
    /// Offered load, Poisson arrivals. Default: 300/s (the slow endpoint alone can serve 40/s,
    /// so round robin and random load it to about 75 %; the fast ones are nearly idle).
    public var requestsPerSecond: Double
    /// Requests simulated. Default: 30 000 (100 s of simulated time at the default load).
    public var requests: Int
    /// Seed for arrivals, service times and the balancers. Default: 1.
    public var seed: UInt64

    /// Creates the documented defaults.
    public init() {
      self.endpoints = 10
      self.slowEndpoints = 1
      self.slowdown = 10
      self.serviceTime = .milliseconds(10)
      self.concurrency = 4
      self.requestsPerSecond = 300
      self.requests = 30_000
      self.seed = 1
    }

    /// The documented defaults.
    public static var defaults: Self { Self() }

    /// The documented defaults, then changed by `configure`.
    public static func defaults(configure: (inout Self) -> Void) -> Self {
      var configuration = Self()
      configure(&configuration)
      return configuration
    }
  }

  /// What one strategy achieved.
  public struct Result: Hashable, Sendable {
    public var strategy: Strategy
    public var requests: Int
    /// Median latency.
    public var p50: Duration
    /// 99th percentile latency.
    public var p99: Duration
    /// Largest latency.
    public var max: Duration
    /// Fraction of requests (0...1) sent to the slow endpoints.
    public var slowShare: Double
  }

  /// Runs every strategy on the same arrivals and service-time draws.
  public static func compare(_ configuration: Configuration = .defaults) -> [Result] {
    Strategy.allCases.map { self.run($0, configuration: configuration) }
  }

  /// Runs one strategy.
  public static func run(_ strategy: Strategy, configuration: Configuration = .defaults) -> Result {
    precondition(configuration.endpoints > 0 && configuration.concurrency > 0 && configuration.requests > 0)
    precondition(configuration.requestsPerSecond > 0)
    var workload = BalancerRandom(seed: configuration.seed)
    let meanInterarrival = 1e9 / configuration.requestsPerSecond
    let serviceTime = Double(configuration.serviceTime.clampedNanoseconds)
    let firstSlow = configuration.endpoints - min(max(configuration.slowEndpoints, 0), configuration.endpoints)

    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<Int>(
      endpoints: 0..<configuration.endpoints,
      configuration: .defaults { $0.seed = configuration.seed &+ 1 },
      clock: clock
    )
    var chooser = BalancerRandom(seed: configuration.seed &+ 2)
    var nextInTurn = 0

    // Per endpoint and worker: when the worker is next free (ns).
    var freeAt = [[UInt64]](
      repeating: [UInt64](repeating: 0, count: configuration.concurrency),
      count: configuration.endpoints
    )
    var completions = EventQueue()
    var latencies = [UInt64]()
    latencies.reserveCapacity(configuration.requests)
    var slowRequests = 0
    var now: UInt64 = 0

    for _ in 0..<configuration.requests {
      // Exponential inter-arrival time; 1 - unit is in (0, 1].
      now += UInt64(-naturalLog(1 - workload.nextUnit()) * meanInterarrival)
      let service = UInt64(serviceTime * (0.5 + workload.nextUnit()))

      if strategy == .p2cPeakEWMA {
        // Responses that arrived before this request feed the estimates first.
        while let due = completions.popFirst(notAfter: now) {
          clock.set(nanoseconds: due.time)
          due.request.ticket.take()?.complete(.success)
        }
        clock.set(nanoseconds: now)
      }

      let endpoint: Int
      var request: InFlightRequest? = nil
      switch strategy {
      case .p2cPeakEWMA:
        // Endpoints are never ejected here (no failures), so a pick cannot fail.
        let ticket = try! balancer.pick()
        endpoint = ticket.endpoint
        request = InFlightRequest(ticket)
      case .roundRobin:
        endpoint = nextInTurn
        nextInTurn = (nextInTurn + 1) % configuration.endpoints
      case .random:
        endpoint = Int.random(in: 0..<configuration.endpoints, using: &chooser)
      }

      let slow = endpoint >= firstSlow
      if slow { slowRequests += 1 }
      let serviceHere = slow ? UInt64(Double(service) * configuration.slowdown) : service
      // FIFO with `concurrency` workers: the earliest free worker takes the request.
      var worker = 0
      for candidate in 1..<configuration.concurrency where freeAt[endpoint][candidate] < freeAt[endpoint][worker] {
        worker = candidate
      }
      let start = Swift.max(now, freeAt[endpoint][worker])
      let done = start + serviceHere
      freeAt[endpoint][worker] = done
      latencies.append(done - now)
      if let request {
        completions.insert(.init(time: done, request: request))
      }
    }
    while let due = completions.popFirst(notAfter: .max) {
      clock.set(nanoseconds: due.time)
      due.request.ticket.take()?.complete(.success)
    }

    latencies.sort()
    func percentile(_ fraction: Double) -> Duration {
      let rank = Int((fraction * Double(latencies.count)).rounded(.up)) - 1
      return .nanoseconds(Int64(latencies[Swift.min(Swift.max(rank, 0), latencies.count - 1)]))
    }
    return Result(
      strategy: strategy,
      requests: configuration.requests,
      p50: percentile(0.5),
      p99: percentile(0.99),
      max: .nanoseconds(Int64(latencies.last!)),
      slowShare: Double(slowRequests) / Double(configuration.requests)
    )
  }
}

/// A simulated request in flight, owning its ticket until its completion event.
private final class InFlightRequest {
  var ticket: BalancerTicket<Int>?

  init(_ ticket: consuming BalancerTicket<Int>) {
    self.ticket = consume ticket
  }
}

/// A binary min-heap of completion events by time (ties in insertion order).
private struct EventQueue {
  struct Event {
    var time: UInt64
    var sequence: UInt64 = 0
    var request: InFlightRequest

    init(time: UInt64, request: InFlightRequest) {
      self.time = time
      self.request = request
    }

    func precedes(_ other: Self) -> Bool {
      (self.time, self.sequence) < (other.time, other.sequence)
    }
  }

  private var heap: [Event] = []
  private var inserted: UInt64 = 0

  mutating func insert(_ event: Event) {
    var event = event
    event.sequence = self.inserted
    self.inserted += 1
    self.heap.append(event)
    var child = self.heap.count - 1
    while child > 0 {
      let parent = (child - 1) / 2
      guard self.heap[child].precedes(self.heap[parent]) else { break }
      self.heap.swapAt(child, parent)
      child = parent
    }
  }

  /// Removes and returns the earliest event if it is due at or before `time`.
  mutating func popFirst(notAfter time: UInt64) -> Event? {
    guard let first = self.heap.first, first.time <= time else { return nil }
    let last = self.heap.removeLast()
    if !self.heap.isEmpty {
      self.heap[0] = last
      var parent = 0
      while true {
        let left = 2 * parent + 1
        let right = left + 1
        var smallest = parent
        if left < self.heap.count, self.heap[left].precedes(self.heap[smallest]) { smallest = left }
        if right < self.heap.count, self.heap[right].precedes(self.heap[smallest]) { smallest = right }
        if smallest == parent { break }
        self.heap.swapAt(parent, smallest)
        parent = smallest
      }
    }
    return first
  }
}
