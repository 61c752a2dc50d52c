public import Foundation
public import MeshCore

/// Local-mode token authentication: a file with one `TOKEN SERVICEACCOUNT NAMESPACE` per line; `#` starts a
/// comment. Re-read on each `reload()`.
public struct TokenFileValidator: TokenValidator {
  private let tokens: [String: ServiceAccountRef]

  public init(entries: [String: ServiceAccountRef]) {
    self.tokens = entries
  }

  /// Parses the file's text; errors name the line.
  public init(contents: String, source: String = "token file") throws(MeshError) {
    var tokens: [String: ServiceAccountRef] = [:]
    for (number, rawLine) in contents.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
      let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
      if fields.isEmpty { continue }
      guard fields.count == 3 else {
        throw .invalidConfiguration(
          "\(source) line \(number + 1): expected 'TOKEN SERVICEACCOUNT NAMESPACE', found \(fields.count) field(s)")
      }
      let account = ServiceAccountRef(name: String(fields[1]), namespace: String(fields[2]))
      do {
        _ = try IdentityName(serviceAccount: account.name, namespace: account.namespace)
      } catch {
        throw .invalidConfiguration("\(source) line \(number + 1): \(error.message)")
      }
      if tokens[String(fields[0])] != nil {
        throw .invalidConfiguration("\(source) line \(number + 1): token is listed twice")
      }
      tokens[String(fields[0])] = account
    }
    self.tokens = tokens
  }

  public init(path: String) throws(MeshError) {
    try self.init(contents: PEMFiles.readText(path), source: path)
  }

  public var count: Int { tokens.count }

  public func validate(token: String) async throws -> ServiceAccountRef {
    let trimmed = token.trimmingCharacters(in: .whitespacesAndNewlines)
    guard let account = tokens[trimmed] else {
      throw MeshError.unauthenticated("token is not known to the identity service")
    }
    return account
  }
}
