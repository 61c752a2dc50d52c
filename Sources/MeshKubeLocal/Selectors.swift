public import MeshKube
import Foundation

/// A parsed `labelSelector` query: `=`, `==`, `!=`, `in`, `notin`, `key` (exists), `!key`.
struct LabelQuery: Sendable {
  enum Term: Sendable {
    case equals(String, String)
    case notEquals(String, String)
    case isIn(String, Set<String>)
    case notIn(String, Set<String>)
    case exists(String)
    case doesNotExist(String)
  }
  var terms: [Term] = []

  init(_ text: String?) throws(APIStatusError) {
    guard let text, !text.trimmingCharacters(in: .whitespaces).isEmpty else { return }
    for raw in Self.splitTopLevel(text) {
      let term = raw.trimmingCharacters(in: .whitespaces)
      if term.isEmpty { continue }
      if term.hasPrefix("!") {
        terms.append(.doesNotExist(String(term.dropFirst()).trimmingCharacters(in: .whitespaces)))
      } else if let r = term.range(of: " notin ") ?? term.range(of: " in ") {
        let key = term[..<r.lowerBound].trimmingCharacters(in: .whitespaces)
        let rest = term[r.upperBound...].trimmingCharacters(in: .whitespaces)
        guard rest.hasPrefix("("), rest.hasSuffix(")") else {
          throw APIStatusError.badRequest("unable to parse requirement: '\(term)': values must be in parentheses")
        }
        let values = Set(rest.dropFirst().dropLast().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        terms.append(term[r].contains("notin") ? .notIn(key, values) : .isIn(key, values))
      } else if let r = term.range(of: "!=") {
        terms.append(.notEquals(term[..<r.lowerBound].trimmingCharacters(in: .whitespaces),
                                term[r.upperBound...].trimmingCharacters(in: .whitespaces)))
      } else if let r = term.range(of: "==") ?? term.range(of: "=") {
        terms.append(.equals(term[..<r.lowerBound].trimmingCharacters(in: .whitespaces),
                             term[r.upperBound...].trimmingCharacters(in: .whitespaces)))
      } else if term.contains(" ") || term.contains("(") {
        throw APIStatusError.badRequest("unable to parse requirement: '\(term)'")
      } else {
        terms.append(.exists(term))
      }
    }
  }

  static func splitTopLevel(_ text: String) -> [String] {
    var parts: [String] = []
    var depth = 0
    var current = ""
    for ch in text {
      if ch == "(" { depth += 1 } else if ch == ")" { depth -= 1 }
      if ch == ",", depth == 0 {
        parts.append(current)
        current = ""
      } else {
        current.append(ch)
      }
    }
    parts.append(current)
    return parts
  }

  func matches(_ labels: [String: String]) -> Bool {
    for term in terms {
      switch term {
      case .equals(let k, let v): if labels[k] != v { return false }
      case .notEquals(let k, let v): if labels[k] == v { return false }
      case .isIn(let k, let vs): guard let v = labels[k], vs.contains(v) else { return false }
      case .notIn(let k, let vs): if let v = labels[k], vs.contains(v) { return false }
      case .exists(let k): if labels[k] == nil { return false }
      case .doesNotExist(let k): if labels[k] != nil { return false }
      }
    }
    return true
  }

  func matches(_ object: JSONValue) -> Bool {
    if terms.isEmpty { return true }
    var labels: [String: String] = [:]
    for (k, v) in object["metadata"]?["labels"]?.objectValue ?? [:] { labels[k] = v.stringValue }
    return matches(labels)
  }
}

/// A parsed `fieldSelector`: `metadata.name` and `metadata.namespace` with `=`, `==`, `!=`.
struct FieldQuery: Sendable {
  var terms: [(field: String, value: String, equal: Bool)] = []

  init(_ text: String?) throws(APIStatusError) {
    guard let text, !text.isEmpty else { return }
    for raw in text.split(separator: ",") {
      let term = String(raw)
      let op: String = term.contains("!=") ? "!=" : term.contains("==") ? "==" : "="
      guard let r = term.range(of: op) else {
        throw APIStatusError.badRequest("invalid field selector '\(term)'")
      }
      let field = term[..<r.lowerBound].trimmingCharacters(in: .whitespaces)
      guard field == "metadata.name" || field == "metadata.namespace" else {
        throw APIStatusError.badRequest("field label not supported: \(field)")
      }
      terms.append((field, term[r.upperBound...].trimmingCharacters(in: .whitespaces), op != "!="))
    }
  }

  func matches(_ object: JSONValue) -> Bool {
    for t in terms {
      let actual = object["metadata"]?[t.field == "metadata.name" ? "name" : "namespace"]?.stringValue ?? ""
      if (actual == t.value) != t.equal { return false }
    }
    return true
  }
}
