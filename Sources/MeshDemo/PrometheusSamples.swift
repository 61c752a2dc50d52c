/// Samples read from a Prometheus text exposition (what a proxy's /metrics serves).
public struct PrometheusSample: Sendable, Hashable {
  public var name: String
  public var labels: [String: String]
  public var value: Double
}

public enum PrometheusText {
  /// Parses the sample lines of `text` (comments and malformed lines are skipped).
  public static func parse(_ text: String) -> [PrometheusSample] {
    var samples: [PrometheusSample] = []
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
      guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
      let series = line[..<space]
      if let brace = series.firstIndex(of: "{"), series.hasSuffix("}") {
        let name = String(series[..<brace])
        let body = series[series.index(after: brace)..<series.index(before: series.endIndex)]
        samples.append(PrometheusSample(name: name, labels: labels(body), value: value))
      } else {
        samples.append(PrometheusSample(name: String(series), labels: [:], value: value))
      }
    }
    return samples
  }

  /// `a="x",b="y\"z"` → labels.
  static func labels(_ body: Substring) -> [String: String] {
    var result: [String: String] = [:]
    var index = body.startIndex
    while index < body.endIndex {
      guard let equals = body[index...].firstIndex(of: "=") else { break }
      let key = body[index..<equals].trimmingLeadingCommas()
      var cursor = body.index(after: equals)
      guard cursor < body.endIndex, body[cursor] == "\"" else { break }
      cursor = body.index(after: cursor)
      var value = ""
      while cursor < body.endIndex, body[cursor] != "\"" {
        if body[cursor] == "\\", body.index(after: cursor) < body.endIndex {
          cursor = body.index(after: cursor)
          value.append(body[cursor] == "n" ? "\n" : body[cursor])
        } else {
          value.append(body[cursor])
        }
        cursor = body.index(after: cursor)
      }
      result[key] = value
      index = cursor < body.endIndex ? body.index(after: cursor) : cursor
    }
    return result
  }

  /// The `q` quantile (0...1) of a Prometheus histogram given as (upper bound, cumulative count) pairs,
  /// interpolated linearly inside the bucket as `histogram_quantile` does. Nil without observations.
  public static func quantile(_ q: Double, buckets: [(upperBound: Double, count: Double)]) -> Double? {
    let sorted = buckets.sorted { $0.upperBound < $1.upperBound }
    guard let total = sorted.last?.count, total > 0 else { return nil }
    let rank = q * total
    var previousBound = 0.0
    var previousCount = 0.0
    for bucket in sorted {
      if bucket.count >= rank {
        if bucket.upperBound == .infinity { return previousBound }
        let inBucket = bucket.count - previousCount
        guard inBucket > 0 else { return bucket.upperBound }
        return previousBound + (bucket.upperBound - previousBound) * (rank - previousCount) / inBucket
      }
      previousBound = bucket.upperBound
      previousCount = bucket.count
    }
    return previousBound
  }
}

extension Substring {
  fileprivate func trimmingLeadingCommas() -> String {
    String(self.drop(while: { $0 == "," || $0 == " " }))
  }
}
