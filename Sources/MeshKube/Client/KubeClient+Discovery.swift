public import Foundation
import NIOHTTP1

/// Which API a component reads (and, for the service mirror, writes) a Service's endpoints through.
///
/// `endpointSlices` (`discovery.k8s.io/v1`, the default) is what Kubernetes treats as the source of
/// truth since 1.21: every slice of a service, joined by the `kubernetes.io/service-name` label, with
/// per-endpoint conditions, zones and hints, and no 1,000-address cap. `endpoints` (`v1` Endpoints) is
/// for clusters that predate slices; it is deprecated in Kubernetes 1.33 and truncated at 1,000
/// addresses (`endpoints.kubernetes.io/over-capacity: truncated`).
public enum EndpointsAPI: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
  case endpoints
  case endpointSlices = "endpointslices"

  public var description: String { rawValue }

  /// Parses `endpoints` or `endpointslices` (case-insensitive); nil for anything else.
  public init?(argument: String) {
    self.init(rawValue: argument.lowercased())
  }
}

extension KubeClient {
  /// Whether the API server serves resource type `R` (its group/version lists `R.plural`). A group or
  /// version the server does not know (404) is `false`; any other failure (transport, 401, 403, ...) is
  /// thrown, so a caller never mistakes an unreachable server for an old one.
  public func serves<R: KubeResource>(_ type: R.Type) async throws -> Bool {
    let path = R.apiPrefix
    let data: Data
    do {
      data = try await send(.GET, path: path)
    } catch let error as KubeError where error.isNotFound {
      return false
    }
    let json = try JSONValue.parse(data)
    let resources = json["resources"]?.arrayValue ?? []
    return resources.contains { $0["name"]?.stringValue == R.plural }
  }

  /// `preferred` when the server serves it; `.endpoints` when `preferred` is `.endpointSlices` and the
  /// server does not serve `discovery.k8s.io/v1` EndpointSlices (a cluster older than 1.21).
  public func endpointsAPI(preferring preferred: EndpointsAPI) async throws -> EndpointsAPI {
    guard preferred == .endpointSlices else { return preferred }
    return try await serves(EndpointSlice.self) ? .endpointSlices : .endpoints
  }
}
