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
