/// A small, fast, seedable pseudo-random generator (xoshiro256**, seeded through SplitMix64).
///
/// Not cryptographic: it only spreads load. Used on the pick path because it never allocates,
/// never takes a lock and never calls into the kernel.
struct BalancerRandom: RandomNumberGenerator, Sendable {
  private var s0: UInt64
  private var s1: UInt64
  private var s2: UInt64
  private var s3: UInt64

  /// Creates a generator whose sequence is fully determined by `seed`.
  init(seed: UInt64) {
    var splitMix = seed
    func next() -> UInt64 {
      splitMix &+= 0x9E37_79B9_7F4A_7C15
      var z = splitMix
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return z ^ (z >> 31)
    }
    self.s0 = next()
    self.s1 = next()
    self.s2 = next()
    self.s3 = next()
  }

  /// Creates a generator seeded from the system's random source.
  init() {
    var system = SystemRandomNumberGenerator()
    self.init(seed: system.next())
  }

  mutating func next() -> UInt64 {
    let result = (self.s1 &* 5).rotatedLeft(by: 7) &* 9
    let t = self.s1 << 17
    self.s2 ^= self.s0
    self.s3 ^= self.s1
    self.s1 ^= self.s2
    self.s0 ^= self.s3
    self.s2 ^= t
    self.s3 = self.s3.rotatedLeft(by: 45)
    return result
  }

  /// A uniformly distributed value in `0..<1`.
  mutating func nextUnit() -> Double {
    Double(self.next() >> 11) * 0x1.0p-53
  }
}

extension UInt64 {
  @inline(__always)
  fileprivate func rotatedLeft(by amount: UInt64) -> UInt64 {
    (self << amount) | (self >> (64 - amount))
  }
}
