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

  /// Whether `name` is a valid lowercase DNS name (RFC 1123), in one pass over its bytes.
  static func isValidName(_ name: String, allowingUnderscores: Bool) -> Bool {
    var name = name
    return name.withUTF8 { bytes in
      guard !bytes.isEmpty, bytes.count <= 253 else { return false }
      var labelLength = 0
      var previous = UInt8(ascii: ".")
      for byte in bytes {
        if byte == UInt8(ascii: ".") {
          guard labelLength > 0, previous != UInt8(ascii: "-") else { return false }
          labelLength = 0
        } else {
          let ok = (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
            || (byte == UInt8(ascii: "-") && labelLength > 0)
            || (allowingUnderscores && byte == UInt8(ascii: "_"))
          guard ok else { return false }
          labelLength += 1
          guard labelLength <= 63 else { return false }
        }
        previous = byte
      }
      return labelLength > 0 && previous != UInt8(ascii: "-")
    }
  }

  /// Returns nil when `name` is a valid lowercase DNS name, or the reason it is not.
  /// Labels are checked where they stand in `name`: nothing is copied unless there is a problem to name.
  static func nameProblem(_ name: String, allowingUnderscores: Bool = false) -> String? {
    // Every request's Host is checked: one pass over the bytes decides, and only a name with a problem is
    // walked again to name it.
    if isValidName(name, allowingUnderscores: allowingUnderscores) { return nil }
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
