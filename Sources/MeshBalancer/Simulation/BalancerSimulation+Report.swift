extension BalancerSimulation {
  /// A plain-text table of `results` with p50, p99 and max latency in milliseconds, the slow
  /// endpoints' share of requests, and each strategy's p99 as a multiple of the first row's.
  public static func table(_ results: [Result]) -> String {
    let header = ["strategy", "p50 ms", "p99 ms", "max ms", "slow share", "p99 / first"]
    let baseline = results.first.map { milliseconds($0.p99) } ?? 1
    var rows = [header]
    for result in results {
      let p99 = milliseconds(result.p99)
      rows.append([
        result.strategy.rawValue,
        fixed(milliseconds(result.p50), decimals: 1),
        fixed(p99, decimals: 1),
        fixed(milliseconds(result.max), decimals: 1),
        fixed(result.slowShare * 100, decimals: 2) + " %",
        fixed(baseline > 0 ? p99 / baseline : 0, decimals: 2) + "x",
      ])
    }
    var widths = [Int](repeating: 0, count: header.count)
    for row in rows {
      for (column, cell) in row.enumerated() {
        widths[column] = Swift.max(widths[column], cell.count)
      }
    }
    var lines: [String] = []
    for (number, row) in rows.enumerated() {
      var line = ""
      for (column, cell) in row.enumerated() {
        let padding = String(repeating: " ", count: widths[column] - cell.count)
        // Left-align the names, right-align the numbers.
        line += column == 0 ? cell + padding : "  " + padding + cell
      }
      lines.append(line)
      if number == 0 {
        lines.append(String(repeating: "-", count: line.count))
      }
    }
    return lines.joined(separator: "\n")
  }

  static func milliseconds(_ duration: Duration) -> Double {
    Double(duration.clampedNanoseconds) / 1e6
  }

  /// `value` with exactly `decimals` digits after the point, without Foundation.
  static func fixed(_ value: Double, decimals: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    guard scaled < 9e18 else { return "\(value)" }
    let integer = UInt64(scaled)
    let whole = integer / UInt64(scale)
    let fraction = String(integer % UInt64(scale))
    let sign = value < 0 && integer != 0 ? "-" : ""
    if decimals == 0 { return sign + String(whole) }
    return sign + String(whole) + "." + String(repeating: "0", count: decimals - fraction.count) + fraction
  }
}
