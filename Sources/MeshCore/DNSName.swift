/// DNS label and name rules (RFC 1123) shared by identity names, trust domains and authorities.
enum DNSName {
  /// Returns nil when `label` is a valid lowercase RFC 1123 label, or the reason it is not.
  static func labelProblem(_ label: Substring, allowingUnderscores: Bool = false) -> String? {
    let bytes = label.utf8
    if bytes.isEmpty { return "empty label" }
    if bytes.count > 63 { return "label '\(label)' is longer than 63 characters" }
    for byte in bytes {
      let ok = (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
        || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "-")
        || (allowingUnderscores && byte == UInt8(ascii: "_"))
      if !ok { return "label '\(label)' has a character other than a-z, 0-9 and '-'" }
    }
    if bytes.first == UInt8(ascii: "-") || bytes.last == UInt8(ascii: "-") {
      return "label '\(label)' starts or ends with '-'"
    }
    return nil
  }

  /// Returns nil when `name` is a valid lowercase DNS name, or the reason it is not.
  /// Labels are checked where they stand in `name`: nothing is copied unless there is a problem to name.
  static func nameProblem(_ name: String, allowingUnderscores: Bool = false) -> String? {
    let bytes = name.utf8
    if bytes.isEmpty { return "empty name" }
    if bytes.count > 253 { return "name is longer than 253 characters" }
    var start = bytes.startIndex
    while true {
      let end = bytes[start...].firstIndex(of: UInt8(ascii: ".")) ?? bytes.endIndex
      if let problem = labelProblem(name[start..<end], allowingUnderscores: allowingUnderscores) { return problem }
      guard end < bytes.endIndex else { return nil }
      start = bytes.index(after: end)
    }
  }
}
