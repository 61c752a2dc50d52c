import Logging
public import MeshCore
public import MeshKube
public import MeshDiscovery

/// Turns a Service, its Endpoints and their Pods into the `EndpointSet` of one port. Pure: the
/// caller passes the objects (from informer stores), so it is tested without a cluster. (From
/// EndpointSlices instead: `endpointSet(service:slices:port:zone:pod:problem:)`.)
///
/// - Port: the Service port equal to the requested port; its `targetPort` picks the Endpoints port
///   by the Service port's name (the Endpoints controller names Endpoints ports after Service ports),
///   else by number, else the only port. A port the Service does not declare resolves to Endpoints
///   ports with that number.
/// - Local services: the ready addresses (`addresses`, not `notReadyAddresses`). A Pod is *meshed*
///   when it has the annotation `swiftmesh.io/inject: enabled` or carries the label `swiftmesh.io/proxy`
///   (which the injector sets); a meshed pod's endpoint gets the identity of its service account and
///   protocol hint h2. Others get neither (plaintext, unknown protocol).
/// - Mirror services (label `mirror.swiftmesh.io/mirrored-service: "true"`): the Endpoints (or slices)
///   hold the remote gateway; its identity comes from their annotation
///   `mirror.swiftmesh.io/gateway-identity`, the authority override is
///   `<mirror.swiftmesh.io/remote-svc-fq-name>:<port>`, and the metric labels name the target.
public struct EndpointTranslator: Sendable {
  public static let injectAnnotation = "swiftmesh.io/inject"
  public static let proxyLabel = "swiftmesh.io/proxy"
  public static let mirroredServiceLabel = "mirror.swiftmesh.io/mirrored-service"
  public static let clusterNameLabel = "mirror.swiftmesh.io/cluster-name"
  public static let remoteFQNameAnnotation = "mirror.swiftmesh.io/remote-svc-fq-name"
  public static let gatewayIdentityAnnotation = "mirror.swiftmesh.io/gateway-identity"
  /// On an endpoint mirror `<hostname>-<cluster>` (and its slices): the headless mirror it belongs to.
  public static let headlessMirrorLabel = "mirror.swiftmesh.io/headless-mirror-svc-name"
  /// On a federated service `<name>-federated` (and its slices): `"true"`.
  public static let federatedServiceLabel = "mirror.swiftmesh.io/federated-service"
  /// On a federated service's slice that points at a linked cluster's gateway: that cluster.
  public static let federatedClusterLabel = "mirror.swiftmesh.io/federated-cluster"

  public var trustDomain: TrustDomain
  public var controlPlaneNamespace: String
  public var defaultWeight: UInt32
  /// The inbound port of meshed pods' proxies (`mesh-proxy --inbound`, 4143 as injected), where opaque
  /// connections go.
  public var proxyInboundPort: Int

  public init(
    trustDomain: TrustDomain, controlPlaneNamespace: String, defaultWeight: UInt32 = Endpoint.defaultWeight,
    proxyInboundPort: Int = 4143
  ) {
    self.trustDomain = trustDomain
    self.controlPlaneNamespace = controlPlaneNamespace
    self.defaultWeight = defaultWeight
    self.proxyInboundPort = proxyInboundPort
  }

  /// The endpoint set of `service` port `port`; `problem` hears about data that had to be skipped.
  public func endpointSet(
    service: KubeService?, endpoints: Endpoints?, port: Int,
    pod: (_ namespace: String, _ name: String) -> Pod?,
    problem: (String) -> Void = { _ in }
  ) -> EndpointSet {
    guard let service else { return .doesNotExist }
    guard let endpoints else { return EndpointSet(exists: true) }
    let namespace = service.namespace ?? "default"
    let servicePort = service.spec?.ports?.first { $0.port == port }
    let isMirror = service.metadata.labels?[Self.mirroredServiceLabel] == "true"
    var result: [Authority: Endpoint] = [:]
    for subset in endpoints.subsets ?? [] {
      guard let targetPort = Self.endpointsPort(subset.ports ?? [], servicePort: servicePort, requested: port) else {
        continue
      }
      for address in subset.addresses ?? [] {
        let authority: Authority
        do {
          authority = try Authority(host: address.ip, port: targetPort)
        } catch {
          problem("endpoints \(namespace)/\(service.name): skipping address '\(address.ip)': \(error.message)")
          continue
        }
        var endpoint = Endpoint(address: authority, weight: defaultWeight)
        if isMirror {
          mirror(
            &endpoint, service: service, annotations: endpoints.metadata.annotations,
            source: "mirror endpoints \(endpoints.metadata.key)", port: port, problem: problem)
        } else {
          local(&endpoint, targetRef: address.targetRef, namespace: namespace, pod: pod, problem: problem)
        }
        endpoint.metricLabels["namespace"] = namespace
        endpoint.metricLabels["service"] = service.name
        result[authority] = endpoint
      }
    }
    return EndpointSet(exists: true, endpoints: Array(result.values))
  }

  /// The endpoint set of one pod reached by its IP (`address`, the pod IP and the port asked for): that pod
  /// alone, with its identity when it is meshed.
  public func endpointSet(
    pod: Pod, address: Authority, defaultNamespace: String, problem: (String) -> Void = { _ in }
  ) -> EndpointSet {
    let namespace = pod.namespace ?? defaultNamespace
    var endpoint = Endpoint(address: address, weight: defaultWeight)
    local(
      &endpoint, targetRef: ObjectReference(kind: "Pod", namespace: namespace, name: pod.name), namespace: namespace,
      pod: { _, _ in pod }, problem: problem)
    endpoint.metricLabels["namespace"] = namespace
    return EndpointSet(exists: true, endpoints: [endpoint])
  }

  func local(
    _ endpoint: inout Endpoint, targetRef: ObjectReference?, namespace: String,
    pod lookup: (String, String) -> Pod?, problem: (String) -> Void
  ) {
    guard let ref = targetRef, ref.kind == "Pod", let name = ref.name,
      let pod = lookup(ref.namespace ?? namespace, name)
    else { return }
    endpoint.metricLabels["pod"] = name
    let serviceAccount = pod.spec?.serviceAccountName ?? "default"
    endpoint.metricLabels["serviceaccount"] = serviceAccount
    guard Self.isMeshed(pod) else { return }
    do {
      endpoint.tlsIdentity = try IdentityName(
        serviceAccount: serviceAccount, namespace: pod.namespace ?? namespace,
        controlPlaneNamespace: controlPlaneNamespace, trustDomain: trustDomain)
      endpoint.protocolHint = .http2
      endpoint.opaqueInboundPort = proxyInboundPort
    } catch {
      problem("pod \(pod.metadata.key): no identity: \(error.message)")
    }
  }

  /// `annotations` are those of the mirror's Endpoints or EndpointSlice (`source` names it in problems).
  func mirror(
    _ endpoint: inout Endpoint, service: KubeService, annotations: [String: String]?, source: String, port: Int,
    problem: (String) -> Void
  ) {
    let key = service.metadata.key
    if let identity = annotations?[Self.gatewayIdentityAnnotation], !identity.isEmpty {
      do {
        endpoint.tlsIdentity = try IdentityName(identity)
        endpoint.protocolHint = .http2
      } catch {
        problem("\(source): gateway identity not used: \(error.message)")
      }
    }
    // The slice's remote name first (a federated service has one per linked cluster), else the service's.
    let remoteName = annotations?[Self.remoteFQNameAnnotation] ?? service.metadata.annotations?[Self.remoteFQNameAnnotation]
    if let remote = remoteName, !remote.isEmpty {
      do {
        endpoint.authorityOverride = try Authority(host: remote, port: port)
      } catch {
        problem("mirror service \(key): authority override not used: \(error.message)")
      }
      let labels = remote.split(separator: ".", omittingEmptySubsequences: false)
      if labels.count >= 2 {
        endpoint.metricLabels["target_service"] = String(labels[0])
        endpoint.metricLabels["target_service_namespace"] = String(labels[1])
      }
    }
    if let cluster = service.metadata.labels?[Self.clusterNameLabel] {
      endpoint.metricLabels["target_cluster"] = cluster
    }
  }

  /// Whether a pod runs the mesh proxy (see the type's documentation).
  public static func isMeshed(_ pod: Pod) -> Bool {
    pod.metadata.annotations?[injectAnnotation] == "enabled" || pod.metadata.labels?[proxyLabel] != nil
  }

  /// The Endpoints port number for a Service port (see the type's documentation).
  static func endpointsPort(_ ports: [Endpoints.Port], servicePort: KubeService.Port?, requested: Int) -> Int? {
    guard let servicePort else { return ports.first { $0.port == requested }?.port }
    if let name = servicePort.name, !name.isEmpty, let match = ports.first(where: { $0.name == name }) {
      return match.port
    }
    switch servicePort.targetPort {
    case .int(let number)?:
      if let match = ports.first(where: { $0.port == number }) { return match.port }
    case .string(let name)?:
      if let match = ports.first(where: { $0.name == name }) { return match.port }
    case nil:
      if let match = ports.first(where: { $0.port == servicePort.port }) { return match.port }
    }
    // An unnamed Service port and a single Endpoints port: that one.
    return ports.count == 1 && (servicePort.name ?? "").isEmpty ? ports[0].port : nil
  }
}
