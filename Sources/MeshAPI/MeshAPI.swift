/// The control-plane APIs of SwiftMesh. The message and service types live in `Generated/`, produced from
/// `Protos/*.proto` by `Scripts/generate-protos.sh`.
public enum MeshAPI {
  /// Default port of the identity service.
  public static let defaultIdentityPort = 8080
  /// Default port of the destination service.
  public static let defaultDestinationPort = 8086
}
