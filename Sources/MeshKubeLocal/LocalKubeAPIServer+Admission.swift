import Foundation
import Logging
import MeshKube
import NIOCore
import NIOHTTP1

/// Mutating admission, as the real server does it for CREATE: every stored MutatingWebhookConfiguration
/// whose rules, namespace selector and object selector match is called in name order with an
/// `admission.k8s.io/v1` AdmissionReview over HTTPS (trusting its `caBundle`, within `timeoutSeconds`), and
/// its JSON patch applied. A webhook that cannot be called, or answers nonsense, fails the request when its
/// `failurePolicy` is `Fail` (the default) and is skipped when it is `Ignore`; a webhook that denies fails it.
extension LocalKubeAPIServer {
  static let webhookGroup = "admissionregistration.k8s.io"

  /// The object as the matching webhooks patched it, and the warnings they gave.
  func admit(_ object: JSONValue, type t: ResourceType, version: String, namespace: String?,
             user: UserInfo) async throws(APIStatusError) -> (JSONValue, [String]) {
    guard let configurations = try? state.list(group: Self.webhookGroup, resource: "mutatingwebhookconfigurations").items,
      !configurations.isEmpty
    else { return (object, []) }
    let namespaceLabels = namespace.flatMap { try? state.get(resource: "namespaces", name: $0) }
      .map { Self.labels($0) } ?? [:]
    var object = object
    var warnings: [String] = []
    for configuration in configurations {
      for webhook in configuration["webhooks"]?.arrayValue ?? [] {
        guard Self.matches(webhook, type: t, version: version, namespaced: namespace != nil,
                           namespaceLabels: namespaceLabels, objectLabels: Self.labels(object))
        else { continue }
        let name = webhook["name"]?.stringValue ?? "(unnamed)"
        do {
          let answer = try await call(webhook, object: object, type: t, version: version, namespace: namespace, user: user)
          object = answer.object
          warnings += answer.warnings
        } catch let failure as WebhookFailure {
          switch failure {
          case .denied(let status):
            throw status
          case .failed(let reason):
            if webhook["failurePolicy"]?.stringValue == "Ignore" {
              logger.notice("webhook failed; ignored (failurePolicy Ignore)", metadata: ["webhook": "\(name)", "reason": "\(reason)"])
              continue
            }
            throw APIStatusError(code: 500, reason: "InternalError",
                                 message: "Internal error occurred: failed calling webhook \"\(name)\": \(reason)")
          }
        } catch {
          throw APIStatusError(code: 500, reason: "InternalError", message: "Internal error occurred: webhook \"\(name)\": \(error)")
        }
      }
    }
    return (object, warnings)
  }

  enum WebhookFailure: Error {
    /// The webhook answered `allowed: false`.
    case denied(APIStatusError)
    /// It could not be called or its answer is unusable: `failurePolicy` decides.
    case failed(String)
  }

  /// Whether a webhook's rules and selectors cover a CREATE of this object.
  static func matches(_ webhook: JSONValue, type t: ResourceType, version: String, namespaced: Bool,
                      namespaceLabels: [String: String], objectLabels: [String: String]) -> Bool {
    func covers(_ rule: JSONValue, _ field: String, _ value: String) -> Bool {
      let items = rule[field]?.arrayValue?.compactMap(\.stringValue) ?? []
      return items.contains("*") || items.contains(value) || (field == "resources" && items.contains("*/*"))
    }
    let ruleMatches = (webhook["rules"]?.arrayValue ?? []).contains { rule in
      let scope = rule["scope"]?.stringValue ?? "*"
      return covers(rule, "operations", "CREATE") && covers(rule, "apiGroups", t.group)
        && covers(rule, "apiVersions", version) && covers(rule, "resources", t.plural)
        && (scope == "*" || scope == (namespaced ? "Namespaced" : "Cluster"))
    }
    guard ruleMatches else { return false }
    func selects(_ field: String, _ labels: [String: String]) -> Bool {
      guard let json = webhook[field], json != .null else { return true }
      guard let selector = try? json.decoded(as: LabelSelector.self) else { return false }
      return selector.matches(labels)
    }
    return (!namespaced || selects("namespaceSelector", namespaceLabels)) && selects("objectSelector", objectLabels)
  }

  static func labels(_ object: JSONValue) -> [String: String] {
    (object["metadata"]?["labels"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
  }

  /// Calls one webhook and returns the object with its patch applied, and the webhook's warnings.
  func call(_ webhook: JSONValue, object: JSONValue, type t: ResourceType, version: String, namespace: String?,
            user: UserInfo) async throws -> (object: JSONValue, warnings: [String]) {
    let (config, path) = try webhookEndpoint(webhook)
    let timeout = max(1, min(30, webhook["timeoutSeconds"]?.intValue ?? 10))
    let uid = UUID().uuidString.lowercased()
    let gvk: JSONValue = ["group": .string(t.group), "version": .string(version), "kind": .string(t.kind)]
    let gvr: JSONValue = ["group": .string(t.group), "version": .string(version), "resource": .string(t.plural)]
    var request: [String: JSONValue] = [
      "uid": .string(uid), "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
      "operation": "CREATE", "object": object, "oldObject": .null, "dryRun": false,
      "userInfo": ["username": .string(user.name), "groups": .array(user.groups.map { .string($0) })],
      "options": ["apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"],
    ]
    if let namespace { request["namespace"] = .string(namespace) }
    if let name = object["metadata"]?["name"]?.stringValue { request["name"] = .string(name) }
    let review: JSONValue = ["apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": .object(request)]

    let client: KubeClient
    do { client = try KubeClient(config: config, connectTimeout: .seconds(timeout), logger: logger) } catch {
      throw WebhookFailure.failed("\(error)")
    }
    let data: Data
    do {
      data = try await client.send(.POST, path: path, body: review, timeout: .seconds(timeout))
      try? await client.shutdown()
    } catch {
      try? await client.shutdown()
      throw WebhookFailure.failed("Post \"\(config.server)\(path)\": \(error)")
    }
    guard let answer = try? JSONValue.parse(data), let response = answer["response"] else {
      throw WebhookFailure.failed("the answer is not an AdmissionReview with a response")
    }
    guard response["uid"]?.stringValue == uid else {
      throw WebhookFailure.failed("expected response.uid=\"\(uid)\", got \"\(response["uid"]?.stringValue ?? "")\"")
    }
    guard response["allowed"] == .bool(true) else {
      let status = response["status"]
      let code = Int(status?["code"]?.intValue ?? 400)
      throw WebhookFailure.denied(APIStatusError(
        code: code, reason: status?["reason"]?.stringValue ?? "BadRequest",
        message: "admission webhook \"\(webhook["name"]?.stringValue ?? "")\" denied the request: \(status?["message"]?.stringValue ?? "without explanation")"))
    }
    let warnings = response["warnings"]?.arrayValue?.compactMap(\.stringValue) ?? []
    guard let encoded = response["patch"]?.stringValue else { return (object, warnings) }
    guard response["patchType"]?.stringValue == "JSONPatch" else {
      throw WebhookFailure.failed("patchType \(response["patchType"]?.stringValue ?? "(none)") is not JSONPatch")
    }
    guard let bytes = Data(base64Encoded: encoded), let json = try? JSONValue.parse(bytes) else {
      throw WebhookFailure.failed("the patch is not base64 JSON")
    }
    do {
      return (try JSONPatch(json: json).applied(to: object), warnings)
    } catch {
      throw WebhookFailure.failed("the patch does not apply: \(error)")
    }
  }

  /// Where a webhook is reached: its `url`, or its `service` through that Service's first endpoint (this
  /// server resolves no cluster DNS, so the webhook's certificate must cover the endpoint's address), trusting
  /// `caBundle`.
  func webhookEndpoint(_ webhook: JSONValue) throws -> (KubeClientConfig, String) {
    guard let clientConfig = webhook["clientConfig"] else { throw WebhookFailure.failed("no clientConfig") }
    var caPEM: Data?
    if let bundle = clientConfig["caBundle"]?.stringValue, !bundle.isEmpty {
      guard let decoded = Data(base64Encoded: bundle) else { throw WebhookFailure.failed("caBundle is not base64") }
      caPEM = decoded
    }
    if let url = clientConfig["url"]?.stringValue {
      guard let components = URLComponents(string: url), components.scheme == "https", let host = components.host else {
        throw WebhookFailure.failed("clientConfig.url \(url) is not an https URL")
      }
      let port = components.port.map { ":\($0)" } ?? ""
      let bracketed = host.contains(":") ? "[\(host)]" : host
      var path = components.percentEncodedPath
      if let query = components.percentEncodedQuery { path += "?" + query }
      return (KubeClientConfig(server: "https://\(bracketed)\(port)", certificateAuthorityPEM: caPEM), path)
    }
    guard let service = clientConfig["service"], let name = service["name"]?.stringValue,
      let namespace = service["namespace"]?.stringValue
    else { throw WebhookFailure.failed("clientConfig has neither url nor service") }
    let port = service["port"]?.intValue ?? 443
    let serviceObject = try? state.get(resource: "services", namespace: namespace, name: name)
    let servicePort = serviceObject?["spec"]?["ports"]?.arrayValue?.first { $0["port"]?.intValue == port }
    guard let servicePort else { throw WebhookFailure.failed("service \(namespace)/\(name) has no port \(port)") }
    let target = servicePort["targetPort"]?.intValue ?? port
    let endpoints = try? state.get(resource: "endpoints", namespace: namespace, name: name)
    let subset = endpoints?["subsets"]?.arrayValue?.first
    guard let ip = subset?["addresses"]?.arrayValue?.first?["ip"]?.stringValue else {
      throw WebhookFailure.failed("service \(namespace)/\(name) has no endpoints")
    }
    let endpointPort = (subset?["ports"]?.arrayValue ?? []).first { $0["port"]?.intValue == target }?["port"]?.intValue ?? target
    let host = ip.contains(":") ? "[\(ip)]" : ip
    return (KubeClientConfig(server: "https://\(host):\(endpointPort)", certificateAuthorityPEM: caPEM),
            service["path"]?.stringValue ?? "/")
  }
}
