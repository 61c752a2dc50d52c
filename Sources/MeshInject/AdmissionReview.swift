public import Foundation
public import Logging
import MeshKube

/// The `admission.k8s.io/v1` AdmissionReview exchange of the injection webhook: read the request, decide
/// with the patch builder, answer with the request's `uid`, `allowed: true` and the JSON patch (base64) or
/// no patch. Pure but for the namespace lookup, which a caller supplies.
public struct AdmissionReviewHandler: Sendable {
  /// An HTTP answer: status code, content type and body.
  public struct Answer: Sendable, Hashable {
    public var status: Int
    public var contentType: String
    public var body: Data
  }

  public let injector: PodInjector
  /// The annotations of a namespace, by name (the webhook reads them from the API server).
  public let namespaceAnnotations: @Sendable (String) async throws -> [String: String]
  let logger: Logger

  public init(injector: PodInjector, logger: Logger,
              namespaceAnnotations: @escaping @Sendable (String) async throws -> [String: String]) {
    self.injector = injector
    self.logger = logger
    self.namespaceAnnotations = namespaceAnnotations
  }

  /// The answer to one review body: 200 with a review, 400 with the reason when the review is malformed,
  /// 500 when the namespace cannot be read (the API server then applies the webhook's failurePolicy).
  public func answer(_ body: Data) async -> Answer {
    let request: Request
    do {
      request = try Request(body)
    } catch {
      logger.notice("malformed AdmissionReview", metadata: ["reason": "\(error)"])
      return Self.text(400, "malformed AdmissionReview: \(error)")
    }
    var metadata: Logger.Metadata = [
      "uid": "\(request.uid)", "namespace": "\(request.namespace)", "name": "\(request.name)",
    ]
    guard request.operation == "CREATE", request.kind == "Pod" else {
      logger.debug("not a pod creation: admitted as it is", metadata: metadata)
      return Self.review(uid: request.uid, patch: nil)
    }
    let annotations: [String: String]
    do {
      annotations = try await namespaceAnnotations(request.namespace)
    } catch {
      logger.error("cannot read the pod's namespace", metadata: metadata.merging(["error": "\(error)"]) { $1 })
      return Self.text(500, "cannot read namespace \(request.namespace): \(error)")
    }
    do {
      switch try injector.decide(request.object, namespaceAnnotations: annotations) {
      case .skip(let reason):
        metadata["reason"] = "\(reason)"
        logger.info("not injected", metadata: metadata)
        return Self.review(uid: request.uid, patch: nil)
      case .inject(let patch):
        logger.info("injected", metadata: metadata)
        return Self.review(uid: request.uid, patch: patch)
      }
    } catch {
      metadata["reason"] = "\(error)"
      logger.warning("not injected: bad configuration", metadata: metadata)
      return Self.review(uid: request.uid, patch: nil, warnings: ["swiftmesh: proxy not injected: \(error)"])
    }
  }

  /// What the webhook reads of a review's request.
  struct Request {
    var uid: String
    var kind: String
    var operation: String
    var namespace: String
    var name: String
    var object: JSONValue

    init(_ body: Data) throws(InjectError) {
      let review: JSONValue
      do { review = try JSONValue.parse(body) } catch {
        throw InjectError.invalidInput("the body is not JSON (\(body.count) bytes)")
      }
      guard review["apiVersion"]?.stringValue == "admission.k8s.io/v1", review["kind"]?.stringValue == "AdmissionReview" else {
        throw InjectError.invalidInput(
          "expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got "
            + "\(review["apiVersion"]?.stringValue ?? "none") \(review["kind"]?.stringValue ?? "none")")
      }
      guard let request = review["request"]?.objectValue else { throw InjectError.invalidInput("no request") }
      guard let uid = request["uid"]?.stringValue, !uid.isEmpty else { throw InjectError.invalidInput("request.uid is missing") }
      guard let operation = request["operation"]?.stringValue else { throw InjectError.invalidInput("request.operation is missing") }
      guard let kind = request["kind"]?["kind"]?.stringValue else { throw InjectError.invalidInput("request.kind.kind is missing") }
      let object = request["object"] ?? .null
      if operation == "CREATE", object.objectValue == nil {
        throw InjectError.invalidInput("request.object of a CREATE is not an object")
      }
      self.uid = uid
      self.kind = kind
      self.operation = operation
      namespace = request["namespace"]?.stringValue ?? object["metadata"]?["namespace"]?.stringValue ?? "default"
      name = request["name"]?.stringValue ?? PodInjector.name(object)
      self.object = object
    }
  }

  static func review(uid: String, patch: JSONPatch?, warnings: [String] = []) -> Answer {
    var response: [String: JSONValue] = ["uid": .string(uid), "allowed": true]
    if let patch {
      response["patchType"] = "JSONPatch"
      response["patch"] = .string(patch.json.serialized().base64EncodedString())
    }
    if !warnings.isEmpty { response["warnings"] = .array(warnings.map { .string($0) }) }
    let review: JSONValue = ["apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": .object(response)]
    return Answer(status: 200, contentType: "application/json", body: review.serialized())
  }

  static func text(_ status: Int, _ message: String) -> Answer {
    Answer(status: status, contentType: "text/plain; charset=utf-8", body: Data((message + "\n").utf8))
  }
}
