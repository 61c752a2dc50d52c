/// Go duration strings as Kubernetes resources spell them (`"250ms"`, `"10s"`, `"1m30s"`, `"1.5s"`, `"0"`):
/// the ServiceProfile's timeouts and retry budget, the Link's probe settings.
package enum GoDuration {
  /// What is wrong with a duration; the message names the text.
  package struct Problem: Error, Sendable {
    package var message: String
  }

  private static let units: [(String, Duration)] = [
    ("ns", .nanoseconds(1)), ("us", .microseconds(1)), ("µs", .microseconds(1)), ("ms", .milliseconds(1)),
    ("s", .seconds(1)), ("m", .seconds(60)), ("h", .seconds(3600)),
  ]

  package static func parse(_ text: String) throws(Problem) -> Duration {
    var rest = Substring(text.trimmingSpaces)
    func problem(_ what: String) -> Problem { Problem(message: "invalid duration '\(text)': \(what)") }
    guard !rest.isEmpty else { throw problem("empty") }
    if rest == "0" { return .zero }
    var total = Duration.zero
    while !rest.isEmpty {
      let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
      guard !number.isEmpty, let value = Double(number) else { throw problem("expected a number at '\(rest)'") }
      rest = rest.dropFirst(number.count)
      // The first unit that matches: "ms" stands before "m" in `units`.
      guard let (unit, scale) = units.first(where: { rest.hasPrefix($0.0) })
      else { throw problem("missing or unknown unit at '\(rest)' (use ns, us, ms, s, m, h)") }
      rest = rest.dropFirst(unit.count)
      total += scale * value
    }
    return total
  }
}

extension String {
  package var trimmingSpaces: String {
    String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
  }
}
