/// One Kubernetes object of a rendered manifest: what names it, and its YAML.
public struct ManifestObject: Sendable, Hashable {
  public var apiVersion: String
  public var kind: String
  public var name: String
  /// Nil for cluster-scoped kinds.
  public var namespace: String?
  /// Labels besides `app.kubernetes.io/part-of: swiftmesh`, which every object carries.
  public var labels: [String: String] = [:]
  public var annotations: [String: String] = [:]
  /// Comment lines printed above the object (without `# `).
  public var comment: [String] = []
  /// The YAML after `metadata` (`spec:`, `data:`, `rules:`, ...), starting at column 0.
  public var body: String
  /// Whether the object holds this installation's key material (a private key, or a certificate that
  /// varies with the keys): `Examples/kubernetes` leaves such objects out.
  public var carriesKeyMaterial = false

  /// The object as one YAML document (no `---`).
  public var yaml: String {
    var lines = comment.map { "# \($0)" }
    lines.append("apiVersion: \(apiVersion)")
    lines.append("kind: \(kind)")
    lines.append("metadata:")
    lines.append("  name: \(YAML.scalar(name))")
    if let namespace { lines.append("  namespace: \(YAML.scalar(namespace))") }
    lines.append("  labels:")
    lines += YAML.mapping(labels.merging(["app.kubernetes.io/part-of": "swiftmesh"]) { mine, _ in mine }, indent: 4)
    if !annotations.isEmpty {
      lines.append("  annotations:")
      lines += YAML.mapping(annotations, indent: 4)
    }
    return (lines.joined(separator: "\n") + "\n" + body).trimmingTrailingNewlines() + "\n"
  }

  /// The object reduced to what names it, as `kubectl delete -f -` reads it.
  public var referenceYAML: String {
    var lines = ["apiVersion: \(apiVersion)", "kind: \(kind)", "metadata:", "  name: \(YAML.scalar(name))"]
    if let namespace { lines.append("  namespace: \(YAML.scalar(namespace))") }
    return lines.joined(separator: "\n") + "\n"
  }
}

/// The little YAML writing the manifests need: scalars quoted when YAML would read them as something else
/// than the string they are, mappings with sorted keys, indentation.
enum YAML {
  /// `value` as a YAML scalar: plain when every YAML reader (1.1 as kubectl's, or 1.2) reads it back as
  /// this string, else double-quoted. Plain takes letters, digits and `./-_=:@`, but nothing that could
  /// read as a boolean, null, number, date or time, and no leading or trailing indicator.
  static func scalar(_ value: String) -> String {
    let safe = value.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "./-_=:@".contains($0)) }
    let reserved = ["true", "false", "yes", "no", "on", "off", "y", "n", "null", "="].contains(value.lowercased())
    // A leading digit, sign or dot may read as a number, a date or a sexagesimal time; dotted numbers with
    // two dots or more (versions, IPv4 addresses) cannot.
    let dotted = value.allSatisfy { $0.isNumber || $0 == "." } && value.filter { $0 == "." }.count >= 2
    let numeric = value.first.map { $0.isNumber || "+.".contains($0) } ?? true
    let negative = value.first == "-" && (value.dropFirst().first.map { $0.isNumber || $0 == "." } ?? true)
    if safe && !reserved && (!numeric || dotted) && !negative && value.first != ":" && value.last != ":" {
      return value
    }
    var quoted = "\""
    for character in value.unicodeScalars {
      switch character {
      case "\"": quoted += "\\\""
      case "\\": quoted += "\\\\"
      case "\n": quoted += "\\n"
      default: quoted.unicodeScalars.append(character)
      }
    }
    return quoted + "\""
  }

  /// `key: value` lines, keys sorted, at `indent` spaces.
  static func mapping(_ values: [String: String], indent: Int) -> [String] {
    let pad = String(repeating: " ", count: indent)
    return values.sorted { $0.key < $1.key }.map { "\(pad)\(scalar($0.key)): \(scalar($0.value))" }
  }

  /// A flow sequence of scalars: `["a", "b"]`.
  static func flow(_ values: [String]) -> String {
    "[" + values.map { "\"\($0)\"" }.joined(separator: ", ") + "]"
  }

  /// `text` (lines) indented by `count` spaces; empty lines stay empty.
  static func indent(_ text: String, _ count: Int) -> String {
    let pad = String(repeating: " ", count: count)
    return text.split(separator: "\n", omittingEmptySubsequences: false)
      .map { $0.isEmpty ? "" : pad + $0 }
      .joined(separator: "\n")
  }

  /// A literal block scalar (`|`) holding `text`, its lines at `indent` spaces.
  static func block(_ text: String, indent: Int) -> String {
    "|\n" + self.indent(text.trimmingTrailingNewlines(), indent)
  }
}

extension String {
  func trimmingTrailingNewlines() -> String {
    var text = self
    while text.hasSuffix("\n") { text.removeLast() }
    return text
  }
}
