import Foundation

/// An RFC 6902 JSON Patch: what an admission webhook answers, what `kubectl patch --type=json` sends, and
/// what the injector builds. Operations apply in order to a copy; the first that fails fails the whole patch.
public struct JSONPatch: Sendable, Hashable, Codable {
  /// One operation (`from` for move and copy, `value` for add, replace and test).
  public struct Operation: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Hashable, Codable {
      case add, remove, replace, move, copy, test
    }
    public var op: Kind
    public var path: String
    public var from: String?
    public var value: JSONValue?

    public init(op: Kind, path: String, from: String? = nil, value: JSONValue? = nil) {
      self.op = op
      self.path = path
      self.from = from
      self.value = value
    }

    public static func add(_ path: String, _ value: JSONValue) -> Self { Self(op: .add, path: path, value: value) }
    public static func replace(_ path: String, _ value: JSONValue) -> Self { Self(op: .replace, path: path, value: value) }
    public static func remove(_ path: String) -> Self { Self(op: .remove, path: path) }
    public static func test(_ path: String, _ value: JSONValue) -> Self { Self(op: .test, path: path, value: value) }
  }

  /// Why a patch could not be decoded or applied; `isTestFailure` tells a failed `test` from a bad path.
  public struct Failure: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String
    public var isTestFailure = false
  }

  public var operations: [Operation]

  public init(_ operations: [Operation]) { self.operations = operations }

  public init(from decoder: any Decoder) throws {
    operations = try decoder.singleValueContainer().decode([Operation].self)
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.singleValueContainer()
    try c.encode(operations)
  }

  /// A patch from its JSON form (an array of operation objects), checking what each operation needs.
  public init(json: JSONValue) throws(Failure) {
    guard case .array(let items) = json else { throw Failure(description: "a JSON patch must be an array of operations") }
    var operations: [Operation] = []
    for (index, item) in items.enumerated() {
      guard let name = item["op"]?.stringValue else { throw Failure(description: "operation \(index): no \"op\"") }
      guard let kind = Operation.Kind(rawValue: name) else {
        throw Failure(description: "operation \(index): unknown op \"\(name)\"")
      }
      guard let path = item["path"]?.stringValue else { throw Failure(description: "operation \(index) (\(name)): no \"path\"") }
      let from = item["from"]?.stringValue
      if kind == .move || kind == .copy, from == nil {
        throw Failure(description: "operation \(index) (\(name)): no \"from\"")
      }
      let value = item.objectValue?["value"]
      if [.add, .replace, .test].contains(kind), value == nil {
        throw Failure(description: "operation \(index) (\(name) \(path)): no \"value\"")
      }
      operations.append(Operation(op: kind, path: path, from: from, value: value))
    }
    self.operations = operations
  }

  /// The patch as a JSON value (an array of operations).
  public var json: JSONValue {
    .array(operations.map { o in
      var object: [String: JSONValue] = ["op": .string(o.op.rawValue), "path": .string(o.path)]
      if let from = o.from { object["from"] = .string(from) }
      if let value = o.value { object["value"] = value }
      return .object(object)
    })
  }

  /// `document` with every operation applied, in order.
  public func applied(to document: JSONValue) throws(Failure) -> JSONValue {
    var result = document
    for o in operations {
      let path = try Self.tokens(o.path)
      switch o.op {
      case .add: try Self.add(o.value ?? .null, at: path, in: &result, pointer: o.path)
      case .remove: _ = try Self.remove(at: path, in: &result, pointer: o.path)
      case .replace:
        _ = try Self.value(at: path, in: result, pointer: o.path)
        _ = try Self.remove(at: path, in: &result, pointer: o.path)
        try Self.add(o.value ?? .null, at: path, in: &result, pointer: o.path)
      case .move:
        let from = o.from ?? ""
        let fromPath = try Self.tokens(from)
        if path.count > fromPath.count, Array(path.prefix(fromPath.count)) == fromPath {
          throw Failure(description: "move from \(from) into its own child \(o.path)")
        }
        let moved = try Self.remove(at: fromPath, in: &result, pointer: from)
        try Self.add(moved, at: path, in: &result, pointer: o.path)
      case .copy:
        let from = o.from ?? ""
        try Self.add(try Self.value(at: try Self.tokens(from), in: result, pointer: from), at: path, in: &result, pointer: o.path)
      case .test:
        let actual = try? Self.value(at: path, in: result, pointer: o.path)
        guard let actual, Self.equal(actual, o.value ?? .null) else {
          throw Failure(
            description: "testing value \(o.path) failed: expected \(String(decoding: (o.value ?? .null).serialized(), as: UTF8.self)), "
              + "found \(actual.map { String(decoding: $0.serialized(), as: UTF8.self) } ?? "nothing")",
            isTestFailure: true)
        }
      }
    }
    return result
  }

  /// Escapes one reference token (`~` -> `~0`, `/` -> `~1`).
  public static func escape(_ token: String) -> String {
    token.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1")
  }

  // MARK: - Pointers (RFC 6901)

  /// The value `pointer` (RFC 6901) names in `document`.
  public static func value(at pointer: String, in document: JSONValue) throws(Failure) -> JSONValue {
    try value(at: try tokens(pointer), in: document, pointer: pointer)
  }

  static func tokens(_ pointer: String) throws(Failure) -> [String] {
    if pointer.isEmpty { return [] }
    guard pointer.hasPrefix("/") else { throw Failure(description: "path \"\(pointer)\" does not start with /") }
    return pointer.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map {
      $0.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
    }
  }

  /// Numbers compare by value (1 equals 1.0), as RFC 6902's test does.
  static func equal(_ a: JSONValue, _ b: JSONValue) -> Bool {
    switch (a, b) {
    case (.int(let x), .double(let y)), (.double(let y), .int(let x)): return Double(x) == y
    case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
    case (.object(let x), .object(let y)):
      return x.count == y.count && x.allSatisfy { key, value in y[key].map { equal(value, $0) } ?? false }
    default: return a == b
    }
  }

  static func index(_ token: String, count: Int, allowEnd: Bool, pointer: String) throws(Failure) -> Int {
    if allowEnd, token == "-" { return count }
    guard let i = Int(token), i >= 0, String(i) == token, i < count || (allowEnd && i == count) else {
      throw Failure(description: "path \(pointer): array index \"\(token)\" is out of range (the array has \(count) elements)")
    }
    return i
  }

  static func value(at path: [String], in document: JSONValue, pointer: String) throws(Failure) -> JSONValue {
    var current = document
    for token in path {
      switch current {
      case .object(let o):
        guard let next = o[token] else { throw Failure(description: "path \(pointer): no member \"\(token)\"") }
        current = next
      case .array(let a):
        current = a[try index(token, count: a.count, allowEnd: false, pointer: pointer)]
      default:
        throw Failure(description: "path \(pointer): \"\(token)\" is below a value that is neither object nor array")
      }
    }
    return current
  }

  static func add(_ value: JSONValue, at path: [String], in document: inout JSONValue, pointer: String) throws(Failure) {
    guard let last = path.last else {
      document = value
      return
    }
    try modify(Array(path.dropLast()), in: &document, pointer: pointer) { (parent: inout JSONValue) throws(Failure) in
      switch parent {
      case .object(var o):
        o[last] = value
        parent = .object(o)
      case .array(var a):
        a.insert(value, at: try index(last, count: a.count, allowEnd: true, pointer: pointer))
        parent = .array(a)
      default:
        throw Failure(description: "path \(pointer): the parent is neither object nor array")
      }
    }
  }

  static func remove(at path: [String], in document: inout JSONValue, pointer: String) throws(Failure) -> JSONValue {
    guard let last = path.last else { throw Failure(description: "cannot remove the whole document") }
    var removed = JSONValue.null
    try modify(Array(path.dropLast()), in: &document, pointer: pointer) { (parent: inout JSONValue) throws(Failure) in
      switch parent {
      case .object(var o):
        guard let old = o.removeValue(forKey: last) else { throw Failure(description: "path \(pointer): no member \"\(last)\" to remove") }
        removed = old
        parent = .object(o)
      case .array(var a):
        removed = a.remove(at: try index(last, count: a.count, allowEnd: false, pointer: pointer))
        parent = .array(a)
      default:
        throw Failure(description: "path \(pointer): the parent is neither object nor array")
      }
    }
    return removed
  }

  /// Runs `change` on the value at `path`, which must exist.
  static func modify(_ path: [String], in document: inout JSONValue, pointer: String,
                     _ change: (inout JSONValue) throws(Failure) -> Void) throws(Failure) {
    guard let first = path.first else { return try change(&document) }
    let rest = Array(path.dropFirst())
    switch document {
    case .object(var o):
      guard var child = o[first] else { throw Failure(description: "path \(pointer): no member \"\(first)\"") }
      o[first] = nil  // one owner while it changes, so the change happens in place
      try modify(rest, in: &child, pointer: pointer, change)
      o[first] = child
      document = .object(o)
    case .array(var a):
      let i = try index(first, count: a.count, allowEnd: false, pointer: pointer)
      var child = a[i]
      try modify(rest, in: &child, pointer: pointer, change)
      a[i] = child
      document = .array(a)
    default:
      throw Failure(description: "path \(pointer): \"\(first)\" is below a value that is neither object nor array")
    }
  }
}
