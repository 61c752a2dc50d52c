public import Foundation
public import MeshKube

/// Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`), which kubectl's
/// typed commands send: `kubectl create namespace | serviceaccount | secret generic | configmap | token`.
///
/// The encoding is the `k8s\0` magic, then a `runtime.Unknown` (type meta + the object's own protobuf bytes).
/// Only kinds whose every field is understood here are decoded; anything else, and any field this decoder
/// does not know, is refused with a clear error, so nothing a client sent is silently dropped.
public enum KubeProtobuf {
  public static let contentType = "application/vnd.kubernetes.protobuf"
  static let magic: [UInt8] = [0x6B, 0x38, 0x73, 0x00]

  /// The kinds decoded, by `apiVersion/kind`.
  public static let kinds = [
    "v1/Namespace", "v1/ServiceAccount", "v1/Secret", "v1/ConfigMap", "authentication.k8s.io/v1/TokenRequest",
    "authorization.k8s.io/v1/SelfSubjectAccessReview", "authentication.k8s.io/v1/SelfSubjectReview",
  ]

  public struct DecodeError: Error, CustomStringConvertible {
    public var description: String
  }

  /// Decodes a protobuf request body to the JSON form the server stores.
  public static func decode(_ body: Data) throws(DecodeError) -> JSONValue {
    let bytes = [UInt8](body)
    guard bytes.count >= 4, Array(bytes.prefix(4)) == magic else {
      throw DecodeError(description: "not a Kubernetes protobuf body (no k8s\\0 prefix)")
    }
    var apiVersion = ""
    var kind = ""
    var raw: [UInt8] = []
    for field in try fields(bytes[4...], in: "runtime.Unknown") {
      switch field.number {
      case 1:
        for meta in try fields(try field.bytes()[...], in: "TypeMeta") {
          switch meta.number {
          case 1: apiVersion = try meta.string()
          case 2: kind = try meta.string()
          default: break
          }
        }
      case 2: raw = try field.bytes()
      case 3:
        let encoding = try field.string()
        guard encoding.isEmpty else { throw DecodeError(description: "content encoding '\(encoding)' is not supported") }
      default: break
      }
    }
    var object: [String: JSONValue] = ["apiVersion": .string(apiVersion), "kind": .string(kind)]
    let label = "\(apiVersion)/\(kind)"
    for field in try fields(raw[...], in: kind) {
      switch (label, field.number) {
      case (_, 1): object["metadata"] = try objectMeta(try field.bytes())
      case ("v1/Namespace", 2):
        var finalizers: [JSONValue] = []
        for spec in try fields(try field.bytes()[...], in: "NamespaceSpec") {
          guard spec.number == 1 else { throw unknown(spec.number, in: "NamespaceSpec") }
          finalizers.append(.string(try spec.string()))
        }
        if !finalizers.isEmpty { object["spec"] = ["finalizers": .array(finalizers)] }
      case ("v1/Namespace", 3): break  // status: the server's to set
      case ("v1/ServiceAccount", 4): object["automountServiceAccountToken"] = .bool(try field.varint() != 0)
      case ("v1/Secret", 2), ("v1/Secret", 4), ("v1/ConfigMap", 2), ("v1/ConfigMap", 3):
        let key =
          label == "v1/Secret" ? (field.number == 2 ? "data" : "stringData") : (field.number == 2 ? "data" : "binaryData")
        let (name, value) = try mapEntry(try field.bytes())
        let binary = key == "binaryData" || (label == "v1/Secret" && key == "data")
        var map = object[key]?.objectValue ?? [:]
        map[name] = .string(binary ? Data(value).base64EncodedString() : String(decoding: value, as: UTF8.self))
        object[key] = .object(map)
      case ("v1/Secret", 3): object["type"] = .string(try field.string())
      case ("v1/Secret", 5), ("v1/ConfigMap", 4): object["immutable"] = .bool(try field.varint() != 0)
      case ("authentication.k8s.io/v1/TokenRequest", 2): object["spec"] = try tokenRequestSpec(try field.bytes())
      case ("authentication.k8s.io/v1/TokenRequest", 3): break  // status: the server's to set
      case ("authorization.k8s.io/v1/SelfSubjectAccessReview", 2): object["spec"] = try accessReviewSpec(try field.bytes())
      case ("authorization.k8s.io/v1/SelfSubjectAccessReview", 3): break  // status: the server's to set
      case ("authentication.k8s.io/v1/SelfSubjectReview", 2): break  // status: the server's to set
      default:
        guard kinds.contains(label) else {
          throw DecodeError(
            description: "protobuf bodies are understood for \(kinds.joined(separator: ", ")) only, not \(label): "
              + "send JSON (kubectl apply does)")
        }
        throw unknown(field.number, in: kind)
      }
    }
    return .object(object)
  }

  static func objectMeta(_ bytes: [UInt8]) throws(DecodeError) -> JSONValue {
    var meta: [String: JSONValue] = [:]
    for field in try fields(bytes[...], in: "ObjectMeta") {
      switch field.number {
      case 1: meta["name"] = .string(try field.string())
      case 2: meta["generateName"] = .string(try field.string())
      case 3: meta["namespace"] = .string(try field.string())
      case 4, 5, 6, 7, 8, 9, 10, 17: break  // selfLink, uid, resourceVersion, generation, timestamps, managedFields
      case 11, 12:
        let key = field.number == 11 ? "labels" : "annotations"
        let (name, value) = try mapEntry(try field.bytes())
        var map = meta[key]?.objectValue ?? [:]
        map[name] = .string(String(decoding: value, as: UTF8.self))
        meta[key] = .object(map)
      default: throw unknown(field.number, in: "ObjectMeta")
      }
    }
    return .object(meta)
  }

  static func tokenRequestSpec(_ bytes: [UInt8]) throws(DecodeError) -> JSONValue {
    var audiences: [JSONValue] = []
    var spec: [String: JSONValue] = [:]
    for field in try fields(bytes[...], in: "TokenRequestSpec") {
      switch field.number {
      case 1: audiences.append(.string(try field.string()))
      case 4: spec["expirationSeconds"] = .int(Int64(bitPattern: try field.varint()))
      case 3:
        // boundObjectRef: the token would die with that object, which this server does not track.
        throw DecodeError(description: "TokenRequest.spec.boundObjectRef is not supported by the embedded API server")
      default: throw unknown(field.number, in: "TokenRequestSpec")
      }
    }
    spec["audiences"] = .array(audiences)
    return .object(spec)
  }

  /// `SelfSubjectAccessReviewSpec`: resource attributes (1) or non-resource attributes (2). Field and label
  /// selectors (8, 9) narrow a check; they are dropped, so the answer is the broader (stricter) one.
  static func accessReviewSpec(_ bytes: [UInt8]) throws(DecodeError) -> JSONValue {
    var spec: [String: JSONValue] = [:]
    for field in try fields(bytes[...], in: "SelfSubjectAccessReviewSpec") {
      switch field.number {
      case 1:
        var attributes: [String: JSONValue] = [:]
        let names = [1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource", 6: "subresource", 7: "name"]
        for a in try fields(try field.bytes()[...], in: "ResourceAttributes") {
          if let name = names[a.number] {
            attributes[name] = .string(try a.string())
          } else if a.number != 8, a.number != 9 {
            throw unknown(a.number, in: "ResourceAttributes")
          }
        }
        spec["resourceAttributes"] = .object(attributes)
      case 2:
        var attributes: [String: JSONValue] = [:]
        for a in try fields(try field.bytes()[...], in: "NonResourceAttributes") {
          switch a.number {
          case 1: attributes["path"] = .string(try a.string())
          case 2: attributes["verb"] = .string(try a.string())
          default: throw unknown(a.number, in: "NonResourceAttributes")
          }
        }
        spec["nonResourceAttributes"] = .object(attributes)
      default: throw unknown(field.number, in: "SelfSubjectAccessReviewSpec")
      }
    }
    return .object(spec)
  }

  static func mapEntry(_ bytes: [UInt8]) throws(DecodeError) -> (String, [UInt8]) {
    var key = ""
    var value: [UInt8] = []
    for field in try fields(bytes[...], in: "map entry") {
      switch field.number {
      case 1: key = try field.string()
      case 2: value = try field.bytes()
      default: throw unknown(field.number, in: "map entry")
      }
    }
    return (key, value)
  }

  static func unknown(_ number: Int, in message: String) -> DecodeError {
    DecodeError(description: "protobuf field \(number) of \(message) is not supported by the embedded API server; send JSON")
  }

  struct Field {
    var number: Int
    var wireType: Int
    var payload: ArraySlice<UInt8>
    var value: UInt64

    func bytes() throws(DecodeError) -> [UInt8] {
      guard wireType == 2 else { throw DecodeError(description: "field \(number): expected bytes, got wire type \(wireType)") }
      return Array(payload)
    }
    func string() throws(DecodeError) -> String {
      let raw = try bytes()
      guard let text = String(validating: raw, as: UTF8.self) else {
        throw DecodeError(description: "field \(number): not UTF-8")
      }
      return text
    }
    func varint() throws(DecodeError) -> UInt64 {
      guard wireType == 0 else { throw DecodeError(description: "field \(number): expected a varint, got wire type \(wireType)") }
      return value
    }
  }

  /// The fields of one protobuf message, in order.
  static func fields(_ bytes: ArraySlice<UInt8>, in message: String) throws(DecodeError) -> [Field] {
    var result: [Field] = []
    var index = bytes.startIndex
    func varint() throws(DecodeError) -> UInt64 {
      var value: UInt64 = 0
      var shift: UInt64 = 0
      while true {
        guard index < bytes.endIndex, shift < 64 else {
          throw DecodeError(description: "truncated or overlong varint in \(message)")
        }
        let byte = bytes[index]
        index += 1
        value |= UInt64(byte & 0x7F) << shift
        if byte & 0x80 == 0 { return value }
        shift += 7
      }
    }
    while index < bytes.endIndex {
      let key = try varint()
      let number = Int(key >> 3)
      let wireType = Int(key & 7)
      guard number > 0 else { throw DecodeError(description: "field number 0 in \(message)") }
      switch wireType {
      case 0:
        result.append(Field(number: number, wireType: 0, payload: [], value: try varint()))
      case 2:
        let length = try varint()
        guard length <= UInt64(bytes.endIndex - index) else {
          throw DecodeError(description: "field \(number) of \(message) runs past the end of the body")
        }
        let end = index + Int(length)
        result.append(Field(number: number, wireType: 2, payload: bytes[index..<end], value: 0))
        index = end
      case 1, 5:
        let size = wireType == 1 ? 8 : 4
        guard bytes.endIndex - index >= size else { throw DecodeError(description: "truncated field \(number) of \(message)") }
        index += size
        result.append(Field(number: number, wireType: wireType, payload: [], value: 0))
      default:
        throw DecodeError(description: "wire type \(wireType) of field \(number) in \(message) is not supported")
      }
    }
    return result
  }
}
