@testable import MeshBalancer
import Testing

/// Expected values were computed by hand with python3 (`math.exp`), not with this code.
@Suite("Peak-EWMA load")
struct PeakEWMATests {
  static let ms: UInt64 = 1_000_000
  static let s: UInt64 = 1_000_000_000

  /// |actual - expected| within 1 ns (the arithmetic is on nanoseconds as Double).
  func close(_ actual: Double, _ expected: Double) -> Bool {
    abs(actual - expected) < 1
  }

  @Test("a slower observation replaces the estimate at once (the peak)")
  func peak() {
    var ewma = PeakEWMA(initial: 30e6, decay: 10e9, now: 0)
    ewma.observe(rtt: 50 * Self.ms, at: 1 * Self.s)
    #expect(ewma.estimate == 50e6)
    #expect(ewma.updatedAt == 1 * Self.s)
  }

  @Test("a faster observation blends in with weight exp(-elapsed/decay): 50 ms, then 20 ms 2 s later on a 10 s window gives 44.5619 ms")
  func blend() {
    var ewma = PeakEWMA(initial: 30e6, decay: 10e9, now: 0)
    ewma.observe(rtt: 50 * Self.ms, at: 1 * Self.s)
    ewma.observe(rtt: 20 * Self.ms, at: 3 * Self.s)
    // 50e6 * exp(-0.2) + 20e6 * (1 - exp(-0.2))
    #expect(close(ewma.estimate, 44_561_922.592_339_45))
  }

  @Test("reading the cost decays the estimate towards zero and multiplies by pending + 1: 44.5619 ms after 5 s with 2 pending costs 81.0845 ms")
  func costDecays() {
    var ewma = PeakEWMA(initial: 30e6, decay: 10e9, now: 0)
    ewma.observe(rtt: 50 * Self.ms, at: 1 * Self.s)
    ewma.observe(rtt: 20 * Self.ms, at: 3 * Self.s)
    let cost = ewma.cost(pending: 2, at: 8 * Self.s)
    // 44561922.59233945 * exp(-0.5) * 3
    #expect(close(cost, 81_084_516.923_984_86))
    #expect(close(ewma.estimate, 27_028_172.307_994_95))
    #expect(ewma.updatedAt == 8 * Self.s)
  }

  @Test("the default RTT decays while unobserved: 30 ms becomes 18.1959 ms after 5 s")
  func defaultDecays() {
    var ewma = PeakEWMA(initial: 30e6, decay: 10e9, now: 0)
    #expect(ewma.cost(pending: 0, at: 0) == 30e6)
    // 30e6 * exp(-0.5)
    #expect(close(ewma.decayedEstimate(at: 5 * Self.s), 18_195_919.791_379))
  }

  @Test("a read counts as an update, as in tower: the next observation's weight uses the time since the read")
  func readResetsElapsed() {
    var read = PeakEWMA(initial: 30e6, decay: 10e9, now: 0)
    // 30e6 * exp(-0.2)
    #expect(close(read.decayedEstimate(at: 2 * Self.s), 24_561_922.592_339_456))
    read.observe(rtt: 10 * Self.ms, at: 4 * Self.s)
    // 24561922.592339456 * exp(-0.2) + 10e6 * (1 - exp(-0.2))
    #expect(close(read.estimate, 21_922_293.850_289_36))

    var unread = PeakEWMA(initial: 30e6, decay: 10e9, now: 0)
    unread.observe(rtt: 10 * Self.ms, at: 4 * Self.s)
    // 30e6 * exp(-0.4) + 10e6 * (1 - exp(-0.4))
    #expect(close(unread.estimate, 23_406_400.920_712_788))
  }

  @Test("an observation at the same instant as the last update keeps the estimate (weight 1)")
  func zeroElapsed() {
    var ewma = PeakEWMA(initial: 30e6, decay: 10e9, now: 5 * Self.s)
    ewma.observe(rtt: 1 * Self.ms, at: 5 * Self.s)
    #expect(ewma.estimate == 30e6)
  }

  @Test("a clock reading earlier than the last update neither decays nor moves the update time back")
  func clockBackwards() {
    var ewma = PeakEWMA(initial: 30e6, decay: 10e9, now: 5 * Self.s)
    #expect(ewma.decayedEstimate(at: 4 * Self.s) == 30e6)
    #expect(ewma.updatedAt == 5 * Self.s)
  }

  @Test("a cancellation only raises the estimate: its elapsed time is a lower bound on the RTT")
  func cancellationIsALowerBound() {
    var ewma = PeakEWMA(initial: 30e6, decay: 10e9, now: 0)
    ewma.observeLowerBound(5 * Self.ms, at: 2 * Self.s)
    #expect(ewma.estimate == 30e6)
    #expect(ewma.updatedAt == 0)
    ewma.observeLowerBound(80 * Self.ms, at: 3 * Self.s)
    #expect(ewma.estimate == 80e6)
  }

  @Test("tower's compound decay example: 20 ms default, 1 s window, two 200 ms requests")
  func towerCompoundDecay() {
    // Tower's test: loads of 400 ms and 200 ms after the two responses; below 100 ms 1 s later.
    var ewma = PeakEWMA(initial: 20e6, decay: 1e9, now: 0)
    #expect(ewma.cost(pending: 0, at: 0) == 20e6)
    #expect(ewma.cost(pending: 1, at: 100 * Self.ms) > 20e6)
    #expect(ewma.cost(pending: 2, at: 200 * Self.ms) > 40e6)
    ewma.observe(rtt: 200 * Self.ms, at: 300 * Self.ms)
    #expect(ewma.cost(pending: 1, at: 300 * Self.ms) == 400e6)
    ewma.observe(rtt: 200 * Self.ms, at: 400 * Self.ms)
    #expect(ewma.cost(pending: 0, at: 400 * Self.ms) == 200e6)
    #expect(ewma.cost(pending: 0, at: 1_400 * Self.ms) < 100e6)
    #expect(ewma.cost(pending: 0, at: 11_400 * Self.ms) < 100e3)
  }
}
