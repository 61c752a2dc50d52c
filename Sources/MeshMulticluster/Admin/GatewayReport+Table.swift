import Foundation

extension GatewayReport {
  /// `CLUSTER ALIVE ADDRESSES NUM_SVC LATENCY_P50 LATENCY_P95 LATENCY_P99`, aligned. ADDRESSES is
  /// `<answering>/<in use>` (the gateway's IPs, names resolved), or the number in use when not probed.
  public static func table(_ reports: [GatewayReport]) -> String {
    func latency(_ value: Double?) -> String {
      guard let value else { return "-" }
      return value < 10 ? String(format: "%.1fms", value) : "\(Int(value.rounded()))ms"
    }
    var rows = [["CLUSTER", "ALIVE", "ADDRESSES", "NUM_SVC", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"]]
    for r in reports {
      let alive = r.probed ? (r.alive.map { $0 ? "True" : "False" } ?? "Unknown") : "NotProbed"
      let total = r.addresses.map { "\($0.count)" } ?? "-"
      let addresses = r.aliveAddresses.map { "\($0)/\(total)" } ?? total
      rows.append([r.cluster, alive, addresses, "\(r.numServices)", latency(r.latencyP50), latency(r.latencyP95), latency(r.latencyP99)])
    }
    guard let columns = rows.map(\.count).max() else { return "" }
    var widths = Array(repeating: 0, count: columns)
    for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
    var out = ""
    for row in rows {
      let cells = row.enumerated().map { i, cell in
        i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
      }
      out += cells.joined(separator: "  ") + "\n"
    }
    return out
  }
}
