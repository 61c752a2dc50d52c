/// Parses Go duration strings as Kubernetes resources spell them (`"250ms"`, `"1m30s"`, `"10s"`).
enum GoDuration {
  /// The duration, or a message naming what is wrong with `text`.
  static func parse(_ text: String) -> Result<Duration, DiscoveryError> {
    var rest = Substring(text.trimmingCharactersInSpaces)
    guard !rest.isEmpty else { return .failure(.invalidProfile("invalid duration '\(text)': empty")) }
    if rest == "0" { return .success(.zero) }
    var total = Duration.zero
    let units: [(String, Duration)] = [
      ("ns", .nanoseconds(1)), ("us", .microseconds(1)), ("µs", .microseconds(1)), ("ms", .milliseconds(1)),
      ("s", .seconds(1)), ("m", .seconds(60)), ("h", .seconds(3600)),
    ]
    while !rest.isEmpty {
      let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
      guard !number.isEmpty, let value = Double(number) else {
        return .failure(.invalidProfile("invalid duration '\(text)': expected a number at '\(rest)'"))
      }
      rest = rest.dropFirst(number.count)
      // Longest unit first: "ms" before "m".
      guard let (unit, scale) = units.sorted(by: { $0.0.count > $1.0.count }).first(where: { rest.hasPrefix($0.0) }) else {
        return .failure(.invalidProfile("invalid duration '\(text)': missing or unknown unit at '\(rest)'"))
      }
      rest = rest.dropFirst(unit.count)
      total += scale * value
    }
    return .success(total)
  }
}

extension String {
  var trimmingCharactersInSpaces: String {
    String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
  }
}
