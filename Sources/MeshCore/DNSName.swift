/// DNS label and name rules (RFC 1123) shared by identity names, trust domains and authorities.
enum DNSName {
  /// Returns nil when `label` is a valid lowercase RFC 1123 label, or the reason it is not.
  static func labelProblem(_ label: Substring) -> String? {
    if label.isEmpty { return "empty label" }
    if label.utf8.count > 63 { return "label '\(label)' is longer than 63 characters" }
    for byte in label.utf8 {
      let ok = (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
        || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "-")
      if !ok { return "label '\(label)' has a character other than a-z, 0-9 and '-'" }
    }
    if label.first == "-" || label.last == "-" { return "label '\(label)' starts or ends with '-'" }
    return nil
  }

  /// Returns nil when `name` is a valid lowercase DNS name, or the reason it is not.
  static func nameProblem(_ name: String) -> String? {
    if name.isEmpty { return "empty name" }
    if name.utf8.count > 253 { return "name is longer than 253 characters" }
    for label in name.split(separator: ".", omittingEmptySubsequences: false) {
      if let problem = labelProblem(label) { return problem }
    }
    return nil
  }
}
