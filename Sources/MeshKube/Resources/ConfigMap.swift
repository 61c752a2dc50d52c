/// A ConfigMap (`v1`): string data by key (the mesh reads the published trust anchor from one).
public struct ConfigMap: KubeResource {
  public static let apiVersion = "v1"
  public static let kind = "ConfigMap"
  public static let plural = "configmaps"
  public static let namespaced = true
  public var metadata: ObjectMeta
  public var data: [String: String]?
  public init(metadata: ObjectMeta, data: [String: String]? = nil) {
    self.metadata = metadata
    self.data = data
  }
}
