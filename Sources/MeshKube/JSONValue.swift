public import Foundation

/// A JSON document as a value: how unmodelled fields survive a read-modify-write, how the embedded
/// server stores objects, and what a JSON merge patch (RFC 7386) is applied to.
public enum JSONValue: Sendable, Hashable, Codable {
  case null
  case bool(Bool)
  case int(Int64)
  case double(Double)
  case string(String)
  case array([JSONValue])
  case object([String: JSONValue])

  public init(from decoder: any Decoder) throws {
    let c = try decoder.singleValueContainer()
    if c.decodeNil() { self = .null }
    else if let b = try? c.decode(Bool.self) { self = .bool(b) }
    else if let i = try? c.decode(Int64.self) { self = .int(i) }
    else if let d = try? c.decode(Double.self) { self = .double(d) }
    else if let s = try? c.decode(String.self) { self = .string(s) }
    else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
    else { self = .object(try c.decode([String: JSONValue].self)) }
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.singleValueContainer()
    switch self {
    case .null: try c.encodeNil()
    case .bool(let b): try c.encode(b)
    case .int(let i): try c.encode(i)
    case .double(let d): try c.encode(d)
    case .string(let s): try c.encode(s)
    case .array(let a): try c.encode(a)
    case .object(let o): try c.encode(o)
    }
  }

  /// Member `key` of an object, or nil.
  public subscript(key: String) -> JSONValue? {
    get { if case .object(let o) = self { return o[key] } else { return nil } }
    set {
      guard case .object(var o) = self else { return }
      o[key] = newValue
      self = .object(o)
    }
  }

  public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
  public var objectValue: [String: JSONValue]? { if case .object(let o) = self { o } else { nil } }
  public var arrayValue: [JSONValue]? { if case .array(let a) = self { a } else { nil } }
  public var intValue: Int64? {
    switch self {
    case .int(let i): i
    case .double(let d): Int64(exactly: d)
    default: nil
    }
  }

  /// Decodes JSON bytes.
  public static func parse(_ data: Data) throws -> JSONValue {
    try JSONDecoder().decode(JSONValue.self, from: data)
  }

  /// Compact JSON bytes (keys sorted, so equal values serialise equally).
  public func serialized() -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return (try? encoder.encode(self)) ?? Data("null".utf8)
  }

  /// Converts a Codable value to a JSON value.
  public static func encoding(_ value: some Encodable) throws -> JSONValue {
    try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(value))
  }

  /// Decodes a Codable value from this JSON value.
  public func decoded<T: Decodable>(as type: T.Type) throws -> T {
    try JSONDecoder().decode(T.self, from: serialized())
  }

  /// RFC 7386 JSON merge patch: `patch` applied to `self`. `null` members delete; objects merge
  /// recursively; anything else replaces.
  public func mergePatched(with patch: JSONValue) -> JSONValue {
    guard case .object(let patchObject) = patch else { return patch }
    var result = objectValue ?? [:]
    for (key, value) in patchObject {
      if case .null = value {
        result[key] = nil
      } else {
        result[key] = (result[key] ?? .null).mergePatched(with: value)
      }
    }
    return .object(result)
  }

  /// `self` with every member of `original` it lacks added back, recursively through objects —
  /// except below keys in `wholeMapKeys`, where `self` owns the whole map (labels, annotations, ...).
  public func preservingUnknownFields(from original: JSONValue, wholeMapKeys: Set<String>) -> JSONValue {
    guard case .object(var mine) = self, case .object(let theirs) = original else { return self }
    for (key, value) in theirs {
      if let existing = mine[key] {
        if wholeMapKeys.contains(key) { continue }
        mine[key] = existing.preservingUnknownFields(from: value, wholeMapKeys: wholeMapKeys)
      } else {
        mine[key] = value
      }
    }
    return .object(mine)
  }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
  ExpressibleByDictionaryLiteral, ExpressibleByArrayLiteral, ExpressibleByNilLiteral
{
  public init(stringLiteral value: String) { self = .string(value) }
  public init(integerLiteral value: Int64) { self = .int(value) }
  public init(booleanLiteral value: Bool) { self = .bool(value) }
  public init(dictionaryLiteral elements: (String, JSONValue)...) {
    self = .object(Dictionary(elements, uniquingKeysWith: { $1 }))
  }
  public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
  public init(nilLiteral: ()) { self = .null }
}
