public import AsyncHTTPClient
public import Foundation
public import Logging
public import NIOCore
import NIOFoundationCompat
public import NIOHTTP1
import NIOSSL

/// A Kubernetes REST client over AsyncHTTPClient: typed get/list/create/update/patch/delete and watch.
///
/// Call `shutdown()` when done (it owns its `HTTPClient`).
public final class KubeClient: Sendable {
  public let config: KubeClientConfig
  let http: HTTPClient
  let logger: Logger
  let baseURL: String
  /// Largest response body accepted for non-watch requests.
  let maxBodyBytes = 256 * 1024 * 1024

  /// `connectTimeout` bounds each connection attempt (AsyncHTTPClient retries a refused connection
  /// until it passes, so it is also how fast an unreachable server is reported).
  public init(config: KubeClientConfig, connectTimeout: TimeAmount = .seconds(5),
              logger: Logger = Logger(label: "swiftmesh.kube")) throws {
    self.config = config
    self.logger = logger
    var base = config.server
    while base.hasSuffix("/") { base.removeLast() }
    self.baseURL = base
    var httpConfig = HTTPClient.Configuration()
    httpConfig.timeout = .init(connect: connectTimeout, read: nil)
    httpConfig.httpVersion = .http1Only
    httpConfig.decompression = .disabled
    if base.hasPrefix("https") {
      httpConfig.tlsConfiguration = try Self.tlsConfiguration(config)
    }
    self.http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfig)
  }

  static func tlsConfiguration(_ config: KubeClientConfig) throws -> TLSConfiguration {
    var tls = TLSConfiguration.makeClientConfiguration()
    do {
      if let ca = config.certificateAuthorityPEM {
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca)))
      }
      if let cert = config.clientCertificatePEM, let key = config.clientKeyPEM {
        tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(cert)).map { .certificate($0) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(key), format: .pem))
      }
    } catch {
      throw KubeError.invalidKubeconfig("TLS material for \(config.server) is not valid PEM", cause: error)
    }
    if config.insecureSkipTLSVerify { tls.certificateVerification = .none }
    return tls
  }

  /// Closes the connection pool.
  public func shutdown() async throws {
    try await http.shutdown()
  }

  // MARK: - Typed verbs

  /// GET one object.
  public func get<R: KubeResource>(_ type: R.Type, name: String, namespace: String? = nil) async throws -> R {
    let path = R.collectionPath(namespace: namespace) + "/" + Self.escape(name)
    let data = try await send(.GET, path: path)
    return try decodeObject(R.self, data, context: "GET \(path)")
  }

  /// One page of a list. Pass `options.continue` from the previous page's `metadata.continue`.
  public func list<R: KubeResource>(_ type: R.Type, namespace: String? = nil, options: ListOptions = ListOptions()) async throws -> KubeList<R> {
    let path = R.collectionPath(namespace: namespace)
    let data = try await send(.GET, path: path, query: options.queryItems)
    return try decodeList(R.self, data, context: "GET \(path)")
  }

  /// Every page of a list (following `continue`); the resourceVersion is the first page's.
  public func listAll<R: KubeResource>(_ type: R.Type, namespace: String? = nil, options: ListOptions = ListOptions()) async throws -> KubeList<R> {
    var options = options
    var first = try await list(R.self, namespace: namespace, options: options)
    var next = first.metadata.continue
    while let token = next, !token.isEmpty {
      options.continue = token
      let page = try await list(R.self, namespace: namespace, options: options)
      first.items.append(contentsOf: page.items)
      next = page.metadata.continue
    }
    first.metadata.continue = nil
    return first
  }

  /// POST a new object into `object.metadata.namespace` (or `namespace` when given).
  public func create<R: KubeResource>(_ object: R, namespace: String? = nil) async throws -> R {
    let path = R.collectionPath(namespace: namespace ?? object.metadata.namespace)
    let data = try await send(.POST, path: path, body: try KubeCodec.encode(object))
    return try decodeObject(R.self, data, context: "POST \(path)")
  }

  /// PUT an object back. Throws a `KubeError` with `isConflict` when its resourceVersion is stale:
  /// re-read, re-apply the change, retry (see `update(_:name:namespace:mutate:)`).
  public func update<R: KubeResource>(_ object: R) async throws -> R {
    let path = R.collectionPath(namespace: object.metadata.namespace) + "/" + Self.escape(object.name)
    let data = try await send(.PUT, path: path, body: try KubeCodec.encode(object))
    return try decodeObject(R.self, data, context: "PUT \(path)")
  }

  /// Read-modify-write with retries on 409 Conflict (up to `attempts`).
  public func update<R: KubeResource>(
    _ type: R.Type, name: String, namespace: String? = nil, attempts: Int = 5,
    mutate: (inout R) throws -> Void
  ) async throws -> R {
    var attempt = 0
    while true {
      attempt += 1
      var object = try await get(R.self, name: name, namespace: namespace)
      try mutate(&object)
      do {
        return try await update(object)
      } catch let error as KubeError where error.isConflict && attempt < attempts {
        logger.debug("conflict updating \(R.plural)/\(name), retrying", metadata: ["attempt": "\(attempt)"])
      }
    }
  }

  /// JSON merge patch (`application/merge-patch+json`, RFC 7386).
  public func mergePatch<R: KubeResource>(_ type: R.Type, name: String, namespace: String? = nil, patch: JSONValue) async throws -> R {
    let path = R.collectionPath(namespace: namespace) + "/" + Self.escape(name)
    let data = try await send(.PATCH, path: path, body: patch, contentType: "application/merge-patch+json")
    return try decodeObject(R.self, data, context: "PATCH \(path)")
  }

  /// DELETE an object.
  public func delete<R: KubeResource>(_ type: R.Type, name: String, namespace: String? = nil) async throws {
    let path = R.collectionPath(namespace: namespace) + "/" + Self.escape(name)
    _ = try await send(.DELETE, path: path)
  }

  /// A token for `serviceAccount` from the API server (TokenRequest, what `kubectl create token` does):
  /// bound to `audiences` (none: the API server's own) and valid for `expirationSeconds` (at least 600).
  public func requestToken(
    serviceAccount: String, namespace: String, audiences: [String] = [], expirationSeconds: Int = 3600
  ) async throws -> String {
    let path = ServiceAccount.collectionPath(namespace: namespace) + "/" + Self.escape(serviceAccount) + "/token"
    let body: JSONValue = [
      "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
      "spec": ["audiences": .array(audiences.map { .string($0) }), "expirationSeconds": .int(Int64(expirationSeconds))],
    ]
    let data = try await send(.POST, path: path, body: body)
    let answer: JSONValue
    do { answer = try JSONValue.parse(data) } catch {
      throw KubeError.decoding("TokenRequest for \(namespace)/\(serviceAccount): the answer is not JSON: \(error)")
    }
    guard let token = answer["status"]?["token"]?.stringValue, !token.isEmpty else {
      throw KubeError.decoding("TokenRequest for \(namespace)/\(serviceAccount): the answer has no status.token")
    }
    return token
  }

  // MARK: - Transport

  /// Sends one request and returns the body of a 2xx answer; anything else becomes a `KubeError`.
  public func send(
    _ method: HTTPMethod, path: String, query: [(String, String)] = [], body: JSONValue? = nil,
    contentType: String = "application/json", timeout: TimeAmount = .seconds(60)
  ) async throws -> Data {
    let (status, data) = try await perform(method, path: path, query: query, body: body, contentType: contentType, timeout: timeout)
    guard (200..<300).contains(status) else {
      throw Self.error(status: status, body: data, context: "\(method) \(path)")
    }
    return data
  }

  func makeRequest(_ method: HTTPMethod, path: String, query: [(String, String)], body: JSONValue?, contentType: String) throws -> HTTPClientRequest {
    var url = baseURL + path
    if !query.isEmpty {
      url += "?" + query.map { "\(Self.escape($0.0))=\(Self.escape($0.1))" }.joined(separator: "&")
    }
    var request = HTTPClientRequest(url: url)
    request.method = method
    request.headers.add(name: "Accept", value: "application/json")
    request.headers.add(name: "User-Agent", value: "swiftmesh-meshkube/0.1")
    if let token = try config.currentToken() {
      request.headers.add(name: "Authorization", value: "Bearer \(token)")
    }
    if let body {
      request.headers.add(name: "Content-Type", value: contentType)
      request.body = .bytes(ByteBuffer(data: body.serialized()))
    }
    return request
  }

  func perform(_ method: HTTPMethod, path: String, query: [(String, String)], body: JSONValue?, contentType: String, timeout: TimeAmount) async throws -> (Int, Data) {
    let request = try makeRequest(method, path: path, query: query, body: body, contentType: contentType)
    do {
      let response = try await http.execute(request, timeout: timeout, logger: logger)
      let buffer = try await response.body.collect(upTo: maxBodyBytes)
      return (Int(response.status.code), Data(buffer: buffer))
    } catch let error as KubeError {
      throw error
    } catch is CancellationError {
      throw CancellationError()
    } catch {
      throw KubeError.transport("\(method) \(baseURL)\(path): \(error)", cause: error)
    }
  }

  static func error(status: Int, body: Data, context: String) -> KubeError {
    if let json = try? JSONValue.parse(body), json["kind"]?.stringValue == "Status",
      let decoded = try? json.decoded(as: KubeStatus.self)
    {
      return KubeError.fromStatus(decoded, httpStatus: status, context: context)
    }
    return KubeError.httpFailure(status: status, body: body, context: context)
  }

  func decodeObject<R: KubeResource>(_ type: R.Type, _ data: Data, context: String) throws -> R {
    do {
      return try KubeCodec.decode(R.self, from: data)
    } catch {
      throw KubeError.decoding("\(context): cannot decode \(R.kind): \(Self.describe(error))", cause: error)
    }
  }

  func decodeList<R: KubeResource>(_ type: R.Type, _ data: Data, context: String) throws -> KubeList<R> {
    do {
      let decoder = JSONDecoder()
      let typed = try decoder.decode(TypedListBody<R>.self, from: data)
      let raw = try decoder.decode(RawListBody.self, from: data)
      var items = typed.items ?? []
      for (i, json) in (raw.items ?? []).enumerated() where i < items.count {
        items[i].metadata.originalObject = json
      }
      return KubeList(metadata: raw.metadata ?? ListMeta(), items: items)
    } catch {
      throw KubeError.decoding("\(context): cannot decode \(R.kind)List: \(Self.describe(error))", cause: error)
    }
  }

  static func describe(_ error: any Error) -> String {
    if let error = error as? DecodingError { return Kubeconfig.describe(error) }
    return "\(error)"
  }

  private static let unreserved: CharacterSet = {
    var set = CharacterSet.alphanumerics
    set.insert(charactersIn: "-._~")
    return set
  }()

  static func escape(_ s: String) -> String {
    s.addingPercentEncoding(withAllowedCharacters: unreserved) ?? s
  }
}

/// Options of a list request.
public struct ListOptions: Sendable, Hashable {
  /// `a=b,c!=d,e in (f,g),h,!i`
  public var labelSelector: String?
  /// `metadata.name=x,metadata.namespace!=y`
  public var fieldSelector: String?
  public var limit: Int?
  public var `continue`: String?
  public var resourceVersion: String?

  public init(labelSelector: String? = nil, fieldSelector: String? = nil, limit: Int? = nil, continue: String? = nil, resourceVersion: String? = nil) {
    self.labelSelector = labelSelector
    self.fieldSelector = fieldSelector
    self.limit = limit
    self.continue = `continue`
    self.resourceVersion = resourceVersion
  }

  var queryItems: [(String, String)] {
    var items: [(String, String)] = []
    if let labelSelector, !labelSelector.isEmpty { items.append(("labelSelector", labelSelector)) }
    if let fieldSelector, !fieldSelector.isEmpty { items.append(("fieldSelector", fieldSelector)) }
    if let limit { items.append(("limit", String(limit))) }
    if let c = `continue`, !c.isEmpty { items.append(("continue", c)) }
    if let resourceVersion { items.append(("resourceVersion", resourceVersion)) }
    return items
  }
}

struct TypedListBody<R: KubeResource>: Decodable {
  var items: [R]?
}

struct RawListBody: Decodable {
  var metadata: ListMeta?
  var items: [JSONValue]?
}
