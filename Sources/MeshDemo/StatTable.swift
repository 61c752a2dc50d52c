import Foundation

/// One row of `meshctl stat`: the golden signals of one group of traffic, from proxies' metrics.
package struct StatRow: Codable, Sendable, Hashable {
  package var name: String
  package var requests: Int
  package var successRate: Double?
  package var rps: Double?
  package var latencyP50: Double?
  package var latencyP95: Double?
  package var latencyP99: Double?
  /// Requests that went over mutual TLS.
  package var tlsRequests: Int
}

/// Golden signals grouped by a label, as `meshctl stat` and the demo print them.
package enum StatTable {
  /// Rows from `samples` of `direction` traffic (optionally only to `authority`), grouped by `label`
  /// (`dst_service` for services and split leaves, `authority`, `client_id`, ...). `window`: the seconds the
  /// counts cover, for RPS.
  package static func rows(
    _ samples: [PrometheusSample], direction: String = "outbound", authority: String? = nil,
    groupBy label: String = "dst_service", window: Double? = nil
  ) -> [StatRow] {
    func selected(_ sample: PrometheusSample) -> Bool {
      sample.labels["direction"] == direction && (authority == nil || sample.labels["authority"] == authority)
    }
    var total: [String: Double] = [:]
    var success: [String: Double] = [:]
    var tls: [String: Double] = [:]
    var buckets: [String: [Double: Double]] = [:]
    for sample in samples where selected(sample) {
      let key = sample.labels[label] ?? ""
      switch sample.name {
      case "response_total":
        total[key, default: 0] += sample.value
        if sample.labels["classification"] == "success" { success[key, default: 0] += sample.value }
        if sample.labels["tls"] == "true" { tls[key, default: 0] += sample.value }
      case "response_latency_ms_bucket":
        guard let le = sample.labels["le"] else { continue }
        let bound = le == "+Inf" ? Double.infinity : (Double(le) ?? .infinity)
        buckets[key, default: [:]][bound, default: 0] += sample.value
      default:
        continue
      }
    }
    return total.keys.sorted().map { key in
      let count = total[key] ?? 0
      let histogram = (buckets[key] ?? [:]).map { (upperBound: $0.key, count: $0.value) }
      return StatRow(
        name: key.isEmpty ? "-" : key, requests: Int(count),
        successRate: count > 0 ? (success[key] ?? 0) / count : nil,
        rps: window.flatMap { $0 > 0 ? count / $0 : nil },
        latencyP50: PrometheusText.quantile(0.5, buckets: histogram),
        latencyP95: PrometheusText.quantile(0.95, buckets: histogram),
        latencyP99: PrometheusText.quantile(0.99, buckets: histogram),
        tlsRequests: Int(tls[key] ?? 0))
    }
  }

  /// `NAME MESHED SUCCESS RPS LATENCY_P50 LATENCY_P95 LATENCY_P99 TLS`, aligned as Linkerd's `stat`.
  package static func render(_ rows: [StatRow], nameHeader: String = "NAME") -> String {
    func ms(_ value: Double?) -> String { value.map { String(format: "%.0fms", $0) } ?? "-" }
    var table = [[nameHeader, "REQUESTS", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TLS"]]
    for row in rows {
      table.append([
        row.name, "\(row.requests)",
        row.successRate.map { String(format: "%.2f%%", $0 * 100) } ?? "-",
        row.rps.map { String(format: "%.1frps", $0) } ?? "-",
        ms(row.latencyP50), ms(row.latencyP95), ms(row.latencyP99),
        row.requests > 0 ? String(format: "%.0f%%", Double(row.tlsRequests) / Double(row.requests) * 100) : "-",
      ])
    }
    return align(table)
  }

  /// Columns padded to their widest cell, two spaces apart.
  package static func align(_ rows: [[String]]) -> String {
    var widths: [Int] = []
    for row in rows {
      for (index, cell) in row.enumerated() {
        if index == widths.count { widths.append(0) }
        widths[index] = max(widths[index], cell.count)
      }
    }
    return rows.map { row in
      row.enumerated().map { index, cell in
        index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
      }.joined(separator: "  ")
    }.joined(separator: "\n") + "\n"
  }
}
