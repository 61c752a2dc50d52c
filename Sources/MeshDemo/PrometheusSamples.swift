/// Samples read from a Prometheus text exposition (what a proxy's /metrics serves).
package struct PrometheusSample: Sendable, Hashable {
  package var name: String
  package var labels: [String: String]
  package var value: Double
}

package enum PrometheusText {
  /// Parses the sample lines of `text` (comments and malformed lines are skipped). A sample line is
  /// `name[{labels}] value [timestamp]`; the timestamp, when there is one, is ignored.
  package static func parse(_ text: String) -> [PrometheusSample] {
    var samples: [PrometheusSample] = []
    for line in text.split(separator: "\n") {
      let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
      guard !trimmed.isEmpty, !trimmed.hasPrefix("#") else { continue }
      let name: Substring
      var labels: [String: String] = [:]
      let rest: Substring
      if let brace = trimmed.firstIndex(where: { $0 == "{" || $0 == " " || $0 == "\t" }), trimmed[brace] == "{" {
        name = trimmed[..<brace]
        guard let close = closingBrace(in: trimmed, after: brace) else { continue }
        labels = Self.labels(trimmed[trimmed.index(after: brace)..<close])
        rest = trimmed[trimmed.index(after: close)...]
      } else {
        guard let space = trimmed.firstIndex(where: { $0 == " " || $0 == "\t" }) else { continue }
        name = trimmed[..<space]
        rest = trimmed[space...]
      }
      let fields = rest.split(whereSeparator: { $0 == " " || $0 == "\t" })
      guard !name.isEmpty, (1...2).contains(fields.count), let value = number(fields[0]) else { continue }
      samples.append(PrometheusSample(name: String(name), labels: labels, value: value))
    }
    return samples
  }

  /// The `}` closing the label set that opens at `open`, skipping quoted label values.
  static func closingBrace(in line: Substring, after open: Substring.Index) -> Substring.Index? {
    var index = line.index(after: open)
    var quoted = false
    while index < line.endIndex {
      let character = line[index]
      if quoted, character == "\\" {
        index = line.index(after: index)
        if index < line.endIndex { index = line.index(after: index) }
        continue
      }
      if character == "\"" { quoted.toggle() }
      if !quoted, character == "}" { return index }
      index = line.index(after: index)
    }
    return nil
  }

  /// A sample value: a float, or `+Inf`, `-Inf`, `NaN` as the exposition format writes them.
  static func number(_ text: Substring) -> Double? {
    switch text {
    case "+Inf": .infinity
    case "-Inf": -.infinity
    case "NaN": .nan
    default: Double(text)
    }
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
  package static func quantile(_ q: Double, buckets: [(upperBound: Double, count: Double)]) -> Double? {
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
