public import Foundation

/// A standard condition (`status.conditions[]`).
public struct Condition: Codable, Sendable, Hashable {
  public var type: String
  public var status: String
  public var reason: String?
  public var message: String?
  public var lastTransitionTime: String?
  public var observedGeneration: Int64?
  public init(type: String, status: String, reason: String? = nil, message: String? = nil, lastTransitionTime: String? = nil) {
    self.type = type
    self.status = status
    self.reason = reason
    self.message = message
    self.lastTransitionTime = lastTransitionTime
  }
}

/// A Link to another cluster (`multicluster.swiftmesh.io/v1alpha1`): what the service mirror follows.
public struct Link: KubeResource {
  public static let apiVersion = "multicluster.swiftmesh.io/v1alpha1"
  public static let kind = "Link"
  public static let plural = "links"
  public static let namespaced = true
  public var metadata: ObjectMeta
  public var spec: Spec
  public var status: Status?

  public struct Spec: Codable, Sendable, Hashable {
    public var targetClusterName: String
    public var targetClusterDomain: String?
    /// Name of the Secret holding the target cluster's kubeconfig.
    public var clusterCredentialsSecret: String?
    public var gatewayAddresses: [String]?
    public var gatewayPort: Int?
    public var gatewayIdentity: String?
    public var probeSpec: ProbeSpec?
    /// Which target services to mirror.
    public var selector: LabelSelector?
    public init(targetClusterName: String, targetClusterDomain: String? = nil, clusterCredentialsSecret: String? = nil,
                gatewayAddresses: [String]? = nil, gatewayPort: Int? = nil, gatewayIdentity: String? = nil,
                probeSpec: ProbeSpec? = nil, selector: LabelSelector? = nil) {
      self.targetClusterName = targetClusterName
      self.targetClusterDomain = targetClusterDomain
      self.clusterCredentialsSecret = clusterCredentialsSecret
      self.gatewayAddresses = gatewayAddresses
      self.gatewayPort = gatewayPort
      self.gatewayIdentity = gatewayIdentity
      self.probeSpec = probeSpec
      self.selector = selector
    }
  }
  /// The gateway probe: `period` and `timeout` are Go durations (`"3s"`).
  public struct ProbeSpec: Codable, Sendable, Hashable {
    public var path: String?
    public var port: Int?
    public var period: String?
    public var timeout: String?
    public var failureThreshold: Int?
    public init(path: String? = nil, port: Int? = nil, period: String? = nil, timeout: String? = nil, failureThreshold: Int? = nil) {
      self.path = path
      self.port = port
      self.period = period
      self.timeout = timeout
      self.failureThreshold = failureThreshold
    }
  }
  public struct Status: Codable, Sendable, Hashable {
    public var mirroredServices: [String]?
    public var conditions: [Condition]?
    public init(mirroredServices: [String]? = nil, conditions: [Condition]? = nil) {
      self.mirroredServices = mirroredServices
      self.conditions = conditions
    }
  }
  public init(metadata: ObjectMeta, spec: Spec, status: Status? = nil) {
    self.metadata = metadata
    self.spec = spec
    self.status = status
  }
}

/// Per-route policy for a service (`policy.swiftmesh.io/v1alpha2`, shaped like Linkerd's ServiceProfile).
public struct ServiceProfile: KubeResource {
  public static let apiVersion = "policy.swiftmesh.io/v1alpha2"
  public static let kind = "ServiceProfile"
  public static let plural = "serviceprofiles"
  public static let namespaced = true
  public var metadata: ObjectMeta
  public var spec: Spec

  public struct Spec: Codable, Sendable, Hashable {
    public var routes: [Route]?
    public var retryBudget: RetryBudget?
    public init(routes: [Route]? = nil, retryBudget: RetryBudget? = nil) {
      self.routes = routes
      self.retryBudget = retryBudget
    }
  }
  public struct Route: Codable, Sendable, Hashable {
    public var name: String
    public var condition: RequestMatch
    public var responseClasses: [ResponseClass]?
    public var isRetryable: Bool?
    /// A Go duration (`"250ms"`).
    public var timeout: String?
    public init(name: String, condition: RequestMatch, responseClasses: [ResponseClass]? = nil, isRetryable: Bool? = nil, timeout: String? = nil) {
      self.name = name
      self.condition = condition
      self.responseClasses = responseClasses
      self.isRetryable = isRetryable
      self.timeout = timeout
    }
  }
  public final class RequestMatch: Codable, Sendable, Hashable {
    public let method: String?
    public let pathRegex: String?
    public let all: [RequestMatch]?
    public let any: [RequestMatch]?
    public let not: RequestMatch?
    public init(method: String? = nil, pathRegex: String? = nil, all: [RequestMatch]? = nil, any: [RequestMatch]? = nil, not: RequestMatch? = nil) {
      self.method = method
      self.pathRegex = pathRegex
      self.all = all
      self.any = any
      self.not = not
    }
    public static func == (lhs: RequestMatch, rhs: RequestMatch) -> Bool {
      lhs.method == rhs.method && lhs.pathRegex == rhs.pathRegex && lhs.all == rhs.all && lhs.any == rhs.any && lhs.not == rhs.not
    }
    public func hash(into hasher: inout Hasher) {
      hasher.combine(method)
      hasher.combine(pathRegex)
      hasher.combine(all)
      hasher.combine(any)
      hasher.combine(not)
    }
  }
  public struct ResponseClass: Codable, Sendable, Hashable {
    public var condition: ResponseMatch
    public var isFailure: Bool?
    public init(condition: ResponseMatch, isFailure: Bool? = nil) {
      self.condition = condition
      self.isFailure = isFailure
    }
  }
  public struct ResponseMatch: Codable, Sendable, Hashable {
    public var status: StatusRange?
    public init(status: StatusRange? = nil) { self.status = status }
  }
  public struct StatusRange: Codable, Sendable, Hashable {
    public var min: Int?
    public var max: Int?
    public init(min: Int? = nil, max: Int? = nil) {
      self.min = min
      self.max = max
    }
  }
  public struct RetryBudget: Codable, Sendable, Hashable {
    public var retryRatio: Double
    public var minRetriesPerSecond: Int
    /// A Go duration (`"10s"`).
    public var ttl: String
    public init(retryRatio: Double, minRetriesPerSecond: Int, ttl: String) {
      self.retryRatio = retryRatio
      self.minRetriesPerSecond = minRetriesPerSecond
      self.ttl = ttl
    }
  }
  public init(metadata: ObjectMeta, spec: Spec) {
    self.metadata = metadata
    self.spec = spec
  }
}

/// A weighted split of a service's traffic across backends (`split.swiftmesh.io/v1alpha1`).
///
/// Shaped like SMI's `split.smi-spec.io/v1alpha2` TrafficSplit, but in the mesh's own group: SMI is
/// archived, and a cluster that has the SMI CRDs installed (for another mesh) must not see ours.
public struct TrafficSplit: KubeResource {
  public static let apiVersion = "split.swiftmesh.io/v1alpha1"
  public static let kind = "TrafficSplit"
  public static let plural = "trafficsplits"
  public static let namespaced = true
  public var metadata: ObjectMeta
  public var spec: Spec

  public struct Spec: Codable, Sendable, Hashable {
    /// The apex service clients address.
    public var service: String
    public var backends: [Backend]
    public init(service: String, backends: [Backend]) {
      self.service = service
      self.backends = backends
    }
  }
  public struct Backend: Codable, Sendable, Hashable {
    public var service: String
    public var weight: Int
    public init(service: String, weight: Int) {
      self.service = service
      self.weight = weight
    }
  }
  public init(metadata: ObjectMeta, spec: Spec) {
    self.metadata = metadata
    self.spec = spec
  }
}
