/// The bytes a string of hex digits spells, whitespace ignored: how RFC examples and python's `bytes.hex()`
/// print them.
func hexBytes(_ hex: String) -> [UInt8] {
  let digits = Array(hex.filter { !$0.isWhitespace })
  return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
}
