import Foundation

/// What a proxy says about itself in `GetDestination.context_token`: a JSON object, as Linkerd's
/// proxies send (`{"ns":"emojivoto","nodeName":"node-1","pod":"web-5d9f"}`), plus `zone`, the
/// topology zone of the proxy's node (`topology.kubernetes.io/zone`).
///
/// The destination service uses `zone` to honour EndpointSlice topology hints (`hints.forZones`). A
/// token that is empty, not JSON, or without `zone` leaves the zone unknown, and hints are then ignored
/// (every ready endpoint is served). The service does not look the zone up from `nodeName` (it watches
/// no Nodes): a proxy that wants topology-aware routing sends its zone, e.g. from the downward API.
public struct ContextToken: Codable, Sendable, Hashable {
  /// The proxy's namespace.
  public var ns: String?
  /// The node the proxy runs on.
  public var nodeName: String?
  /// The proxy's pod.
  public var pod: String?
  /// The zone of the proxy's node.
  public var zone: String?

  public init(ns: String? = nil, nodeName: String? = nil, pod: String? = nil, zone: String? = nil) {
    self.ns = ns
    self.nodeName = nodeName
    self.pod = pod
    self.zone = zone
  }

  /// Reads a token; nil when `text` is empty or not a JSON object (such tokens are opaque and ignored).
  public init?(parsing text: String) {
    guard !text.isEmpty, let value = try? JSONDecoder().decode(Self.self, from: Data(text.utf8)) else { return nil }
    self = value
  }

  /// The JSON text to send as `context_token` (keys sorted).
  public var encoded: String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
  }

  /// The zone, when given and not empty.
  public var knownZone: String? { zone.flatMap { $0.isEmpty ? nil : $0 } }
}
