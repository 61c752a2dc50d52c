import Foundation
import Yams

/// Manifests as `kubectl apply -f` reads them: multi-document YAML, or JSON (one value or several in a row),
/// each document a JSON value; and back to YAML or JSON.
public enum KubeManifest {
  /// A manifest that does not parse, naming where.
  public struct ParseError: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String
  }

  /// The non-empty documents of `text` (JSON when it starts with `{` or `[`, else YAML). Duplicate keys are
  /// an error, as for kubectl.
  public static func documents(_ text: String, source: String = "input") throws(ParseError) -> [JSONValue] {
    let trimmed = text.drop { $0.isWhitespace }
    if trimmed.first == "{" || trimmed.first == "[" {
      return try jsonDocuments(Data(trimmed.utf8), source: source)
    }
    var result: [JSONValue] = []
    do {
      let parser = try Parser(yaml: text)
      while let node = try parser.nextRoot() {
        let value = try self.value(node, at: "\(source) document \(result.count + 1)")
        if value != .null { result.append(value) }
      }
    } catch let error as ParseError {
      throw error
    } catch {
      throw ParseError(description: "\(source): not YAML: \(error)")
    }
    return result
  }

  /// A YAML node as a JSON value, scalars by the tag the YAML resolver gave them (a quoted "true" stays a string).
  static func value(_ node: Node, at path: String) throws(ParseError) -> JSONValue {
    switch node {
    case .mapping(let mapping):
      var object: [String: JSONValue] = [:]
      for (key, member) in mapping {
        guard let name = key.string else { throw ParseError(description: "\(path): a key that is not a string") }
        guard object[name] == nil else { throw ParseError(description: "\(path): duplicate key '\(name)'") }
        object[name] = try value(member, at: "\(path).\(name)")
      }
      return .object(object)
    case .sequence(let sequence):
      var items: [JSONValue] = []
      for (index, item) in sequence.enumerated() { items.append(try value(item, at: "\(path)[\(index)]")) }
      return .array(items)
    case .scalar:
      switch Tag.Name(rawValue: node.tag.description) {
      case .null: return .null
      case .bool: return node.bool.map(JSONValue.bool) ?? .string(node.string ?? "")
      case .int: return node.int.map { .int(Int64($0)) } ?? .string(node.string ?? "")
      case .float: return node.float.map(JSONValue.double) ?? .string(node.string ?? "")
      default: return .string(node.string ?? "")
      }
    }
  }

  /// One or more JSON values in a row (what `kubectl get -o json` and `meshctl inject -o json` print).
  static func jsonDocuments(_ data: Data, source: String) throws(ParseError) -> [JSONValue] {
    if let single = try? JSONValue.parse(data) { return single == .null ? [] : [single] }
    // Split at the top-level ends of values, outside strings.
    var result: [JSONValue] = []
    var depth = 0
    var inString = false
    var escaped = false
    var start = data.startIndex
    for index in data.indices {
      let byte = data[index]
      if inString {
        if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
        continue
      }
      switch byte {
      case UInt8(ascii: "\""): inString = true
      case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
      case UInt8(ascii: "}"), UInt8(ascii: "]"):
        depth -= 1
        if depth == 0 {
          let chunk = data[start...index]
          do { result.append(try JSONValue.parse(Data(chunk))) } catch {
            throw ParseError(description: "\(source) document \(result.count + 1): not JSON: \(error)")
          }
          start = data.index(after: index)
        }
      default: break
      }
    }
    guard depth == 0, data[start...].allSatisfy({ [9, 10, 13, 32].contains($0) }) else {
      throw ParseError(description: "\(source) document \(result.count + 1): not JSON (unbalanced brackets)")
    }
    return result
  }

  /// Documents as YAML (keys sorted, `apiVersion` and `kind` first), separated by `---`. Multi-line strings
  /// (certificates) are literal blocks; strings a YAML reader would take for another type are quoted.
  public static func yaml(_ documents: [JSONValue]) throws -> String {
    try documents.map { try serialize(node: node($0, top: true), width: -1) }.joined(separator: "---\n")
  }

  static func node(_ value: JSONValue, top: Bool = false) -> Node {
    switch value {
    case .null: return Node("null")
    case .bool(let b): return Node(b ? "true" : "false")
    case .int(let i): return Node(String(i))
    case .double(let d): return Node(String(d))
    case .string(let s): return .scalar(s.contains("\n") ? Node.Scalar(s, Tag(.str), .literal) : s.represented())
    case .array(let items): return .sequence(Node.Sequence(items.map { node($0) }))
    case .object(let members):
      let first = top ? ["apiVersion", "kind"] : []
      let keys = first.filter { members[$0] != nil } + members.keys.filter { !first.contains($0) }.sorted()
      return .mapping(Node.Mapping(keys.map { (Node.scalar($0.represented()), node(members[$0]!)) }))
    }
  }

  /// Documents as indented JSON, one after another (keys sorted).
  public static func json(_ documents: [JSONValue]) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return try documents.map { String(decoding: try encoder.encode($0), as: UTF8.self) + "\n" }.joined()
  }
}
