/// Why an object could not be injected or read: a config annotation with a bad value, an object that is not
/// what its kind says, a manifest or review that does not parse.
public struct InjectError: Error, Sendable, Hashable, CustomStringConvertible {
  private enum Code: Hashable, Sendable {
    case invalidAnnotation, invalidObject, invalidInput
  }
  private let code: Code
  /// What was wrong, naming the value.
  public let message: String

  private init(_ code: Code, _ message: String) {
    self.code = code
    self.message = message
  }

  /// A `config.swiftmesh.io/` annotation that is unknown or has a bad value.
  public static func invalidAnnotation(_ message: String) -> Self { Self(.invalidAnnotation, message) }
  /// An object whose shape does not fit its kind (e.g. a Deployment without `spec.template.spec`).
  public static func invalidObject(_ message: String) -> Self { Self(.invalidObject, message) }
  /// Input that does not parse (a manifest, an AdmissionReview).
  public static func invalidInput(_ message: String) -> Self { Self(.invalidInput, message) }

  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
  public func hash(into hasher: inout Hasher) { hasher.combine(code) }
  public var description: String { message }
}
