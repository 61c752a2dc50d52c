// Thin wrappers over the platform C library: the standard library has no `exp`, `log` or
// `clock_gettime`.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#elseif canImport(Android)
import Android
#endif

/// `e^x` from the platform's C math library (the standard library has no `exp`).
@inline(__always)
func naturalExp(_ x: Double) -> Double {
  exp(x)
}

/// `ln(x)` from the platform's C math library.
@inline(__always)
func naturalLog(_ x: Double) -> Double {
  log(x)
}

#if canImport(Glibc) || canImport(Musl) || canImport(Android)
/// `CLOCK_MONOTONIC` in nanoseconds (cheaper than `ContinuousClock` arithmetic on the pick path).
@inline(__always)
func monotonicNanoseconds() -> UInt64? {
  var time = timespec()
  guard clock_gettime(CLOCK_MONOTONIC, &time) == 0 else { return nil }
  return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
}
#else
@inline(__always)
func monotonicNanoseconds() -> UInt64? {
  nil
}
#endif
