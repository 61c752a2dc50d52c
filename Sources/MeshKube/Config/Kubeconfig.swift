public import Foundation
import Yams

/// A parsed kubeconfig (possibly several files merged as kubectl merges `KUBECONFIG`).
public struct Kubeconfig: Sendable {
  /// A named entry and where it came from, for error messages (`users[0]` of `/x`).
  struct Entry<Value: Sendable>: Sendable {
    var value: Value
    var file: String
    var index: Int
  }
  var clusters: [String: Entry<ClusterFields>] = [:]
  var users: [String: Entry<UserFields>] = [:]
  var contexts: [String: Entry<ContextFields>] = [:]
  /// `current-context`, from the first file that sets it.
  public private(set) var currentContext: String?
  var currentContextFile: String?
  /// The files merged, in order.
  public private(set) var files: [String] = []

  struct ClusterFields: Codable, Sendable {
    var server: String?
    var certificateAuthority: String?
    var certificateAuthorityData: String?
    var insecureSkipTLSVerify: Bool?
    var tlsServerName: String?
    enum CodingKeys: String, CodingKey {
      case server
      case certificateAuthority = "certificate-authority"
      case certificateAuthorityData = "certificate-authority-data"
      case insecureSkipTLSVerify = "insecure-skip-tls-verify"
      case tlsServerName = "tls-server-name"
    }
  }
  struct UserFields: Codable, Sendable {
    var clientCertificate: String?
    var clientCertificateData: String?
    var clientKey: String?
    var clientKeyData: String?
    var token: String?
    var tokenFile: String?
    enum CodingKeys: String, CodingKey {
      case clientCertificate = "client-certificate"
      case clientCertificateData = "client-certificate-data"
      case clientKey = "client-key"
      case clientKeyData = "client-key-data"
      case token
      case tokenFile
    }
  }
  struct ContextFields: Codable, Sendable {
    var cluster: String?
    var user: String?
    var namespace: String?
  }
  struct File: Codable {
    struct NamedCluster: Codable { var name: String?; var cluster: ClusterFields? }
    struct NamedUser: Codable { var name: String?; var user: UserFields? }
    struct NamedContext: Codable { var name: String?; var context: ContextFields? }
    var clusters: [NamedCluster]?
    var users: [NamedUser]?
    var contexts: [NamedContext]?
    var currentContext: String?
    enum CodingKeys: String, CodingKey {
      case clusters, users, contexts
      case currentContext = "current-context"
    }
  }

  public init() {}

  /// Reads and merges `paths` in order; the first file to define a name (or `current-context`) wins.
  public static func load(paths: [String]) throws -> Kubeconfig {
    var config = Kubeconfig()
    for path in paths {
      guard let data = FileManager.default.contents(atPath: path) else {
        throw KubeError.invalidKubeconfig("kubeconfig \(path): cannot read the file")
      }
      try config.merge(yaml: String(decoding: data, as: UTF8.self), path: path)
    }
    return config
  }

  /// Parses one kubeconfig document. `path` names it in errors and anchors relative file paths.
  public static func parse(yaml: String, path: String = "<memory>") throws -> Kubeconfig {
    var config = Kubeconfig()
    try config.merge(yaml: yaml, path: path)
    return config
  }

  /// Adds the entries of another file that are not defined yet (kubectl's merge rule).
  public mutating func merge(yaml: String, path: String) throws {
    let file: File
    do {
      file = try YAMLDecoder().decode(File.self, from: yaml)
    } catch let error as DecodingError {
      throw KubeError.invalidKubeconfig("kubeconfig \(path): \(Self.describe(error))")
    } catch {
      throw KubeError.invalidKubeconfig("kubeconfig \(path): not valid YAML: \(error)")
    }
    files.append(path)
    let base = URL(fileURLWithPath: path).deletingLastPathComponent().path
    func absolute(_ p: String?) -> String? {
      guard let p, !p.isEmpty else { return p }
      return p.hasPrefix("/") || path == "<memory>" ? p : "\(base)/\(p)"
    }
    for (i, c) in (file.clusters ?? []).enumerated() {
      guard let name = c.name, !name.isEmpty else {
        throw KubeError.invalidKubeconfig("kubeconfig \(path): clusters[\(i)].name: missing")
      }
      var fields = c.cluster ?? ClusterFields()
      fields.certificateAuthority = absolute(fields.certificateAuthority)
      if clusters[name] == nil { clusters[name] = Entry(value: fields, file: path, index: i) }
    }
    for (i, u) in (file.users ?? []).enumerated() {
      guard let name = u.name, !name.isEmpty else {
        throw KubeError.invalidKubeconfig("kubeconfig \(path): users[\(i)].name: missing")
      }
      var fields = u.user ?? UserFields()
      fields.clientCertificate = absolute(fields.clientCertificate)
      fields.clientKey = absolute(fields.clientKey)
      fields.tokenFile = absolute(fields.tokenFile)
      if users[name] == nil { users[name] = Entry(value: fields, file: path, index: i) }
    }
    for (i, c) in (file.contexts ?? []).enumerated() {
      guard let name = c.name, !name.isEmpty else {
        throw KubeError.invalidKubeconfig("kubeconfig \(path): contexts[\(i)].name: missing")
      }
      if contexts[name] == nil { contexts[name] = Entry(value: c.context ?? ContextFields(), file: path, index: i) }
    }
    if currentContext == nil, let current = file.currentContext, !current.isEmpty {
      currentContext = current
      currentContextFile = path
    }
  }

  /// Context names defined, sorted.
  public var contextNames: [String] { contexts.keys.sorted() }

  /// The client configuration for `context` (default: `current-context`), with every reference
  /// checked and every `-data` field decoded; errors name the file and the field.
  public func resolve(context requested: String? = nil) throws -> KubeClientConfig {
    let where_ = files.joined(separator: ":")
    guard let contextName = requested ?? currentContext else {
      throw KubeError.invalidKubeconfig("kubeconfig \(where_): current-context is not set and no context was given")
    }
    guard let context = contexts[contextName] else {
      let source = requested != nil ? "--context" : "current-context (in \(currentContextFile ?? where_))"
      throw KubeError.invalidKubeconfig(
        "kubeconfig \(where_): \(source) names context '\(contextName)' which is not defined")
    }
    let cf = context.file
    guard let clusterName = context.value.cluster, !clusterName.isEmpty else {
      throw KubeError.invalidKubeconfig("kubeconfig \(cf): contexts[\(context.index)].context.cluster: missing")
    }
    guard let cluster = clusters[clusterName] else {
      throw KubeError.invalidKubeconfig(
        "kubeconfig \(cf): context '\(contextName)' names cluster '\(clusterName)' which is not defined")
    }
    var user: Entry<UserFields>?
    if let userName = context.value.user, !userName.isEmpty {
      guard let u = users[userName] else {
        throw KubeError.invalidKubeconfig(
          "kubeconfig \(cf): context '\(contextName)' names user '\(userName)' which is not defined")
      }
      user = u
    }
    let clusterField = "kubeconfig \(cluster.file): clusters[\(cluster.index)].cluster"
    guard let server = cluster.value.server, !server.isEmpty else {
      throw KubeError.invalidKubeconfig("\(clusterField).server: missing")
    }
    guard let url = URL(string: server), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil
    else {
      throw KubeError.invalidKubeconfig("\(clusterField).server: '\(server)' is not an http(s) URL")
    }
    var config = KubeClientConfig(
      server: server, insecureSkipTLSVerify: cluster.value.insecureSkipTLSVerify ?? false,
      tlsServerName: cluster.value.tlsServerName, namespace: context.value.namespace)
    config.certificateAuthorityPEM = try Self.bytes(
      data: cluster.value.certificateAuthorityData, file: cluster.value.certificateAuthority,
      field: clusterField, dataKey: "certificate-authority-data", fileKey: "certificate-authority")
    if let user {
      let userField = "kubeconfig \(user.file): users[\(user.index)].user"
      config.clientCertificatePEM = try Self.bytes(
        data: user.value.clientCertificateData, file: user.value.clientCertificate,
        field: userField, dataKey: "client-certificate-data", fileKey: "client-certificate")
      config.clientKeyPEM = try Self.bytes(
        data: user.value.clientKeyData, file: user.value.clientKey,
        field: userField, dataKey: "client-key-data", fileKey: "client-key")
      if (config.clientCertificatePEM == nil) != (config.clientKeyPEM == nil) {
        let missing = config.clientKeyPEM == nil ? "client-key" : "client-certificate"
        throw KubeError.invalidKubeconfig("\(userField).\(missing): missing (client certificate and key go together)")
      }
      config.token = user.value.token
      if let tokenFile = user.value.tokenFile {
        guard FileManager.default.fileExists(atPath: tokenFile) else {
          throw KubeError.invalidKubeconfig("\(userField).tokenFile: '\(tokenFile)' does not exist")
        }
        config.tokenFile = tokenFile
      }
    }
    return config
  }

  private static func bytes(data: String?, file: String?, field: String, dataKey: String, fileKey: String) throws -> Data? {
    if let data, !data.isEmpty {
      let cleaned = data.filter { !$0.isWhitespace }
      guard let decoded = Data(base64Encoded: cleaned) else {
        throw KubeError.invalidKubeconfig("\(field).\(dataKey): not base64")
      }
      return decoded
    }
    if let file, !file.isEmpty {
      guard let contents = FileManager.default.contents(atPath: file) else {
        throw KubeError.invalidKubeconfig("\(field).\(fileKey): cannot read '\(file)'")
      }
      return contents
    }
    return nil
  }

  static func describe(_ error: DecodingError) -> String {
    func path(_ keys: [any CodingKey]) -> String {
      var out = ""
      for key in keys {
        if let i = key.intValue { out += "[\(i)]" } else { out += out.isEmpty ? key.stringValue : ".\(key.stringValue)" }
      }
      return out.isEmpty ? "<root>" : out
    }
    switch error {
    case .typeMismatch(let type, let ctx): return "\(path(ctx.codingPath)): expected \(type)"
    case .valueNotFound(let type, let ctx): return "\(path(ctx.codingPath)): missing \(type)"
    case .keyNotFound(let key, let ctx): return "\(path(ctx.codingPath + [key])): missing"
    case .dataCorrupted(let ctx): return "\(path(ctx.codingPath)): \(ctx.debugDescription)"
    @unknown default: return "\(error)"
    }
  }
}
