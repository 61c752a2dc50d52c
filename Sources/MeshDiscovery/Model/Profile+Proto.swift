public import MeshAPI
public import MeshCore
import SwiftProtobuf

extension Profile {
  /// The wire form.
  public var proto: Swiftmesh_Destination_DestinationProfile {
    var profile = Swiftmesh_Destination_DestinationProfile()
    profile.fullyQualifiedName = fullyQualifiedName
    profile.routes = routes.map(\.proto)
    if let retryBudget {
      var budget = Swiftmesh_Destination_RetryBudget()
      budget.retryRatio = Float(retryBudget.retryRatio)
      budget.minRetriesPerSecond = UInt32(clamping: retryBudget.minRetriesPerSecond)
      budget.ttl = Google_Protobuf_Duration(rounding: retryBudget.ttl)
      profile.retryBudget = budget
    }
    profile.dstOverrides = destinationOverrides.map { dst in
      var weighted = Swiftmesh_Destination_WeightedDst()
      weighted.authority = dst.authority.description
      weighted.weight = dst.weight
      return weighted
    }
    profile.opaqueProtocol = opaqueProtocol
    return profile
  }

  /// Reads the wire form; a malformed override authority is an error naming it.
  public init(proto profile: Swiftmesh_Destination_DestinationProfile) throws(DiscoveryError) {
    var overrides: [WeightedDestination] = []
    for dst in profile.dstOverrides {
      do {
        overrides.append(WeightedDestination(authority: try Authority(dst.authority), weight: dst.weight))
      } catch {
        throw .invalidResponse("invalid dst_override authority '\(dst.authority)': \(error.message)")
      }
    }
    self.init(
      fullyQualifiedName: profile.fullyQualifiedName,
      routes: try profile.routes.map { route throws(DiscoveryError) in try Route(proto: route) },
      retryBudget: profile.hasRetryBudget
        ? RetryBudget(
          // The wire carries a float: round to 6 decimals so 0.2 stays 0.2.
          retryRatio: (Double(profile.retryBudget.retryRatio) * 1_000_000).rounded() / 1_000_000,
          minRetriesPerSecond: Int(profile.retryBudget.minRetriesPerSecond),
          ttl: Duration(profile.retryBudget.ttl))
        : nil,
      destinationOverrides: overrides,
      opaqueProtocol: profile.opaqueProtocol)
  }
}

extension Route {
  var proto: Swiftmesh_Destination_Route {
    var route = Swiftmesh_Destination_Route()
    route.condition = condition.proto
    route.responseClasses = responseClasses.map { responseClass in
      var proto = Swiftmesh_Destination_ResponseClass()
      proto.condition = responseClass.condition.proto
      proto.isFailure = responseClass.isFailure
      return proto
    }
    route.metricsLabels = metricsLabels
    route.isRetryable = isRetryable
    if let timeout { route.timeout = Google_Protobuf_Duration(rounding: timeout) }
    return route
  }

  init(proto route: Swiftmesh_Destination_Route) throws(DiscoveryError) {
    self.init(
      name: route.metricsLabels["route"] ?? "",
      condition: try RequestMatch(proto: route.condition),
      responseClasses: try route.responseClasses.map { c throws(DiscoveryError) in
        ResponseClass(condition: try ResponseMatch(proto: c.condition), isFailure: c.isFailure)
      },
      isRetryable: route.isRetryable,
      timeout: route.hasTimeout ? Duration(route.timeout) : nil,
      metricsLabels: route.metricsLabels)
  }
}

extension RequestMatch {
  var proto: Swiftmesh_Destination_RequestMatch {
    var match = Swiftmesh_Destination_RequestMatch()
    switch self {
    case .all(let matches):
      var seq = Swiftmesh_Destination_RequestMatch.Seq()
      seq.matches = matches.map(\.proto)
      match.all = seq
    case .any(let matches):
      var seq = Swiftmesh_Destination_RequestMatch.Seq()
      seq.matches = matches.map(\.proto)
      match.any = seq
    case .not(let inner): match.not = inner.proto
    case .pathRegex(let regex): match.pathRegex = regex
    case .method(let method): match.method = method
    }
    return match
  }

  init(proto match: Swiftmesh_Destination_RequestMatch) throws(DiscoveryError) {
    switch match.match {
    case .all(let seq): self = .all(try seq.matches.map { m throws(DiscoveryError) in try RequestMatch(proto: m) })
    case .any(let seq): self = .any(try seq.matches.map { m throws(DiscoveryError) in try RequestMatch(proto: m) })
    case .not(let inner): self = .not(try RequestMatch(proto: inner))
    case .pathRegex(let regex): self = .pathRegex(regex)
    case .method(let method): self = .method(method)
    case nil: throw .invalidResponse("route condition without a match")
    }
  }
}

extension ResponseMatch {
  var proto: Swiftmesh_Destination_ResponseMatch {
    var match = Swiftmesh_Destination_ResponseMatch()
    switch self {
    case .all(let matches):
      var seq = Swiftmesh_Destination_ResponseMatch.Seq()
      seq.matches = matches.map(\.proto)
      match.all = seq
    case .any(let matches):
      var seq = Swiftmesh_Destination_ResponseMatch.Seq()
      seq.matches = matches.map(\.proto)
      match.any = seq
    case .not(let inner): match.not = inner.proto
    case .status(let min, let max):
      var range = Swiftmesh_Destination_HttpStatusRange()
      range.min = UInt32(clamping: min ?? 0)
      range.max = UInt32(clamping: max ?? 0)
      match.status = range
    }
    return match
  }

  init(proto match: Swiftmesh_Destination_ResponseMatch) throws(DiscoveryError) {
    switch match.match {
    case .all(let seq): self = .all(try seq.matches.map { m throws(DiscoveryError) in try ResponseMatch(proto: m) })
    case .any(let seq): self = .any(try seq.matches.map { m throws(DiscoveryError) in try ResponseMatch(proto: m) })
    case .not(let inner): self = .not(try ResponseMatch(proto: inner))
    case .status(let range):
      self = .status(min: range.min == 0 ? nil : Int(range.min), max: range.max == 0 ? nil : Int(range.max))
    case nil: throw .invalidResponse("response class condition without a match")
    }
  }
}
