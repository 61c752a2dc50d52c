public import Foundation

/// A namespace (`v1`, cluster-scoped).
public struct Namespace: KubeResource {
  public static let apiVersion = "v1"
  public static let kind = "Namespace"
  public static let plural = "namespaces"
  public static let namespaced = false
  public var metadata: ObjectMeta
  public init(metadata: ObjectMeta) { self.metadata = metadata }
}

/// A Service (`v1`).
public struct KubeService: KubeResource {
  public static let apiVersion = "v1"
  public static let kind = "Service"
  public static let plural = "services"
  public static let namespaced = true
  public var metadata: ObjectMeta
  public var spec: Spec?

  public struct Spec: Codable, Sendable, Hashable {
    public var type: String?
    public var selector: [String: String]?
    public var ports: [Port]?
    public var clusterIP: String?
    public var clusterIPs: [String]?
    public var externalName: String?
    public init(type: String? = nil, selector: [String: String]? = nil, ports: [Port]? = nil, clusterIP: String? = nil) {
      self.type = type
      self.selector = selector
      self.ports = ports
      self.clusterIP = clusterIP
    }
  }
  public struct Port: Codable, Sendable, Hashable {
    public var name: String?
    public var port: Int
    public var targetPort: IntOrString?
    public var `protocol`: String?
    public var appProtocol: String?
    public init(name: String? = nil, port: Int, targetPort: IntOrString? = nil, protocol: String? = nil) {
      self.name = name
      self.port = port
      self.targetPort = targetPort
      self.protocol = `protocol`
    }
  }
  public init(metadata: ObjectMeta, spec: Spec? = nil) {
    self.metadata = metadata
    self.spec = spec
  }
}

/// Kubernetes' `IntOrString` (e.g. a port number or a port name).
public enum IntOrString: Codable, Sendable, Hashable {
  case int(Int)
  case string(String)
  public init(from decoder: any Decoder) throws {
    let c = try decoder.singleValueContainer()
    if let i = try? c.decode(Int.self) { self = .int(i) } else { self = .string(try c.decode(String.self)) }
  }
  public func encode(to encoder: any Encoder) throws {
    var c = encoder.singleValueContainer()
    switch self {
    case .int(let i): try c.encode(i)
    case .string(let s): try c.encode(s)
    }
  }
}

/// Endpoints (`v1`): the addresses behind a Service.
public struct Endpoints: KubeResource {
  public static let apiVersion = "v1"
  public static let kind = "Endpoints"
  public static let plural = "endpoints"
  public static let namespaced = true
  public var metadata: ObjectMeta
  public var subsets: [Subset]?

  public struct Subset: Codable, Sendable, Hashable {
    public var addresses: [Address]?
    public var notReadyAddresses: [Address]?
    public var ports: [Port]?
    public init(addresses: [Address]? = nil, notReadyAddresses: [Address]? = nil, ports: [Port]? = nil) {
      self.addresses = addresses
      self.notReadyAddresses = notReadyAddresses
      self.ports = ports
    }
  }
  public struct Address: Codable, Sendable, Hashable {
    public var ip: String
    public var hostname: String?
    public var nodeName: String?
    public var targetRef: ObjectReference?
    public init(ip: String, hostname: String? = nil, nodeName: String? = nil, targetRef: ObjectReference? = nil) {
      self.ip = ip
      self.hostname = hostname
      self.nodeName = nodeName
      self.targetRef = targetRef
    }
  }
  public struct Port: Codable, Sendable, Hashable {
    public var name: String?
    public var port: Int
    public var `protocol`: String?
    public init(name: String? = nil, port: Int, protocol: String? = nil) {
      self.name = name
      self.port = port
      self.protocol = `protocol`
    }
  }
  public init(metadata: ObjectMeta, subsets: [Subset]? = nil) {
    self.metadata = metadata
    self.subsets = subsets
  }
}

/// A reference to another object (`targetRef`).
public struct ObjectReference: Codable, Sendable, Hashable {
  public var kind: String?
  public var namespace: String?
  public var name: String?
  public var uid: String?
  public init(kind: String? = nil, namespace: String? = nil, name: String? = nil, uid: String? = nil) {
    self.kind = kind
    self.namespace = namespace
    self.name = name
    self.uid = uid
  }
}

/// An EndpointSlice (`discovery.k8s.io/v1`).
public struct EndpointSlice: KubeResource {
  public static let apiVersion = "discovery.k8s.io/v1"
  public static let kind = "EndpointSlice"
  public static let plural = "endpointslices"
  public static let namespaced = true
  public var metadata: ObjectMeta
  public var addressType: String
  public var endpoints: [Endpoint]
  public var ports: [Port]?

  /// The label joining a slice to its Service (`kubernetes.io/service-name`).
  public static let serviceNameLabel = "kubernetes.io/service-name"
  /// The label naming the controller that owns a slice (`endpointslice.kubernetes.io/managed-by`).
  public static let managedByLabel = "endpointslice.kubernetes.io/managed-by"
  /// On Endpoints: `"true"` tells kube's endpointslice-mirroring controller not to mirror them into slices.
  public static let skipMirrorLabel = "endpointslice.kubernetes.io/skip-mirror"

  public struct Endpoint: Codable, Sendable, Hashable {
    public var addresses: [String]
    public var conditions: Conditions?
    public var hostname: String?
    public var nodeName: String?
    public var zone: String?
    public var targetRef: ObjectReference?
    public var hints: Hints?
    public init(
      addresses: [String], conditions: Conditions? = nil, hostname: String? = nil, nodeName: String? = nil,
      zone: String? = nil, targetRef: ObjectReference? = nil, hints: Hints? = nil
    ) {
      self.addresses = addresses
      self.conditions = conditions
      self.hostname = hostname
      self.nodeName = nodeName
      self.zone = zone
      self.targetRef = targetRef
      self.hints = hints
    }
  }
  /// Topology hints: the zones that should consume an endpoint (topology-aware routing).
  public struct Hints: Codable, Sendable, Hashable {
    public var forZones: [ForZone]?
    public init(forZones: [ForZone]? = nil) { self.forZones = forZones }
  }
  public struct ForZone: Codable, Sendable, Hashable {
    public var name: String
    public init(name: String) { self.name = name }
  }
  public struct Conditions: Codable, Sendable, Hashable {
    public var ready: Bool?
    public var serving: Bool?
    public var terminating: Bool?
    public init(ready: Bool? = nil, serving: Bool? = nil, terminating: Bool? = nil) {
      self.ready = ready
      self.serving = serving
      self.terminating = terminating
    }
  }
  public struct Port: Codable, Sendable, Hashable {
    public var name: String?
    public var port: Int?
    public var `protocol`: String?
    public var appProtocol: String?
    public init(name: String? = nil, port: Int? = nil, protocol: String? = nil) {
      self.name = name
      self.port = port
      self.protocol = `protocol`
    }
  }
  public init(metadata: ObjectMeta, addressType: String = "IPv4", endpoints: [Endpoint] = [], ports: [Port]? = nil) {
    self.metadata = metadata
    self.addressType = addressType
    self.endpoints = endpoints
    self.ports = ports
  }
}

/// A Pod (`v1`), modelled as far as the mesh reads it.
public struct Pod: KubeResource {
  public static let apiVersion = "v1"
  public static let kind = "Pod"
  public static let plural = "pods"
  public static let namespaced = true
  public var metadata: ObjectMeta
  public var spec: Spec?
  public var status: Status?

  public struct Spec: Codable, Sendable, Hashable {
    public var serviceAccountName: String?
    public var nodeName: String?
    public var containers: [Container]?
    public init(serviceAccountName: String? = nil, nodeName: String? = nil, containers: [Container]? = nil) {
      self.serviceAccountName = serviceAccountName
      self.nodeName = nodeName
      self.containers = containers
    }
  }
  public struct Container: Codable, Sendable, Hashable {
    public var name: String
    public var image: String?
    public var ports: [ContainerPort]?
    public init(name: String, image: String? = nil, ports: [ContainerPort]? = nil) {
      self.name = name
      self.image = image
      self.ports = ports
    }
  }
  public struct ContainerPort: Codable, Sendable, Hashable {
    public var name: String?
    public var containerPort: Int
    public var `protocol`: String?
    public init(name: String? = nil, containerPort: Int, protocol: String? = nil) {
      self.name = name
      self.containerPort = containerPort
      self.protocol = `protocol`
    }
  }
  public struct Status: Codable, Sendable, Hashable {
    public var phase: String?
    public var podIP: String?
    public var podIPs: [PodIP]?
    public var hostIP: String?
    public init(phase: String? = nil, podIP: String? = nil) {
      self.phase = phase
      self.podIP = podIP
    }
  }
  public struct PodIP: Codable, Sendable, Hashable {
    public var ip: String
    public init(ip: String) { self.ip = ip }
  }
  public init(metadata: ObjectMeta, spec: Spec? = nil, status: Status? = nil) {
    self.metadata = metadata
    self.spec = spec
    self.status = status
  }
}

/// A Secret (`v1`); `data` values are bytes (base64 on the wire).
public struct Secret: KubeResource {
  public static let apiVersion = "v1"
  public static let kind = "Secret"
  public static let plural = "secrets"
  public static let namespaced = true
  public var metadata: ObjectMeta
  public var type: String?
  public var data: [String: Data]?
  public var stringData: [String: String]?
  public init(metadata: ObjectMeta, type: String? = nil, data: [String: Data]? = nil) {
    self.metadata = metadata
    self.type = type
    self.data = data
  }
}

/// A ServiceAccount (`v1`).
public struct ServiceAccount: KubeResource {
  public static let apiVersion = "v1"
  public static let kind = "ServiceAccount"
  public static let plural = "serviceaccounts"
  public static let namespaced = true
  public var metadata: ObjectMeta
  public init(metadata: ObjectMeta) { self.metadata = metadata }
}

/// A Lease (`coordination.k8s.io/v1`), for leader election.
public struct Lease: KubeResource {
  public static let apiVersion = "coordination.k8s.io/v1"
  public static let kind = "Lease"
  public static let plural = "leases"
  public static let namespaced = true
  public var metadata: ObjectMeta
  public var spec: Spec?

  public struct Spec: Codable, Sendable, Hashable {
    public var holderIdentity: String?
    public var leaseDurationSeconds: Int?
    /// RFC 3339 with microseconds (`MicroTime`).
    public var acquireTime: String?
    public var renewTime: String?
    public var leaseTransitions: Int?
    public init(holderIdentity: String? = nil, leaseDurationSeconds: Int? = nil, acquireTime: String? = nil,
                renewTime: String? = nil, leaseTransitions: Int? = nil) {
      self.holderIdentity = holderIdentity
      self.leaseDurationSeconds = leaseDurationSeconds
      self.acquireTime = acquireTime
      self.renewTime = renewTime
      self.leaseTransitions = leaseTransitions
    }
  }
  public init(metadata: ObjectMeta, spec: Spec? = nil) {
    self.metadata = metadata
    self.spec = spec
  }
}

/// A TokenReview (`authentication.k8s.io/v1`): create-only; the answer is in `status`.
public struct TokenReview: KubeResource {
  public static let apiVersion = "authentication.k8s.io/v1"
  public static let kind = "TokenReview"
  public static let plural = "tokenreviews"
  public static let namespaced = false
  public var metadata: ObjectMeta
  public var spec: Spec
  public var status: Status?

  public struct Spec: Codable, Sendable, Hashable {
    public var token: String
    public var audiences: [String]?
    public init(token: String, audiences: [String]? = nil) {
      self.token = token
      self.audiences = audiences
    }
  }
  public struct Status: Codable, Sendable, Hashable {
    public var authenticated: Bool?
    public var user: UserInfo?
    public var audiences: [String]?
    public var error: String?
    public init(authenticated: Bool?, user: UserInfo? = nil, error: String? = nil) {
      self.authenticated = authenticated
      self.user = user
      self.error = error
    }
  }
  public struct UserInfo: Codable, Sendable, Hashable {
    public var username: String?
    public var uid: String?
    public var groups: [String]?
    public init(username: String? = nil, uid: String? = nil, groups: [String]? = nil) {
      self.username = username
      self.uid = uid
      self.groups = groups
    }
  }
  public init(metadata: ObjectMeta = ObjectMeta(), spec: Spec, status: Status? = nil) {
    self.metadata = metadata
    self.spec = spec
    self.status = status
  }
}
