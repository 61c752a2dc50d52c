public import MeshCore
public import MeshKube
public import MeshDiscovery

/// The endpoint set of a Service from its EndpointSlices (`discovery.k8s.io/v1`).
///
/// - Slices: every slice labelled `kubernetes.io/service-name: <service>` in the service's namespace,
///   whatever their number (the caller passes them; each comes and goes on its own). Address types
///   `IPv4` and `IPv6` are served (a dual-stack service has a slice of each); `FQDN` slices are skipped.
/// - Port: per slice, as for Endpoints (the slice port named like the Service port, else the
///   `targetPort`, else the only port); a slice without the port contributes nothing.
/// - Conditions, as kube-proxy reads them: an endpoint is *ready* when `conditions.ready` is true or
///   unset; *serving* when `conditions.serving` is true (unset: as `ready`); *terminating* when
///   `conditions.terminating` is true. Ready endpoints are served. Only when no slice of the service has
///   a ready endpoint for the port are the serving-and-terminating ones served, so a rolling update or a
///   scale-down drains instead of failing; they are dropped as soon as a ready endpoint appears.
/// - Address: the first of an endpoint's `addresses` (they are fungible, and kube-proxy uses the first);
///   an address listed twice (in two slices during a move) is one endpoint.
/// - `targetRef` to a Pod: the pod's name, service account and identity, as with Endpoints. `nodeName`
///   and `zone` become the metric labels `node` and `zone`.
/// - Topology hints: with `zone` (the zone of the proxy asking, from its context token), when every
///   chosen endpoint carries `hints.forZones` and at least one is hinted for `zone`, only those are
///   served (topology-aware routing, as kube-proxy and Linkerd do); otherwise, and when `zone` is nil,
///   hints are ignored.
/// - Mirror services: the gateway identity comes from the slice's annotation
///   `mirror.swiftmesh.io/gateway-identity` (the service mirror writes it on the slice).
extension EndpointTranslator {
  public static let ipv4AddressType = "IPv4"
  public static let ipv6AddressType = "IPv6"

  public func endpointSet(
    service: KubeService?, slices: [EndpointSlice], port: Int, zone: String? = nil,
    pod: (_ namespace: String, _ name: String) -> Pod?,
    problem: (String) -> Void = { _ in }
  ) -> EndpointSet {
    guard let service else { return .doesNotExist }
    let namespace = service.namespace ?? "default"
    let servicePort = service.spec?.ports?.first { $0.port == port }
    let isMirror = service.metadata.labels?[Self.mirroredServiceLabel] == "true"
    let isFederated = service.metadata.labels?[Self.federatedServiceLabel] == "true"

    struct Candidate {
      var endpoint: Endpoint
      var ready: Bool
      var hintedZones: Set<String>?
      /// Of a federated service: a local member's endpoint (not a linked cluster's gateway).
      var local = true
    }
    var ready: [Authority: Candidate] = [:]
    var terminating: [Authority: Candidate] = [:]
    for slice in slices {
      guard slice.addressType == Self.ipv4AddressType || slice.addressType == Self.ipv6AddressType else { continue }
      let ports = (slice.ports ?? []).compactMap { p in p.port.map { Endpoints.Port(name: p.name, port: $0) } }
      guard let targetPort = Self.endpointsPort(ports, servicePort: servicePort, requested: port) else { continue }
      for item in slice.endpoints {
        let isReady = item.conditions?.ready ?? true
        let isServing = item.conditions?.serving ?? isReady
        let isTerminating = item.conditions?.terminating ?? false
        guard isReady || (isServing && isTerminating) else { continue }
        guard let ip = item.addresses.first else { continue }
        let authority: Authority
        do {
          authority = try Authority(host: ip, port: targetPort)
        } catch {
          problem("endpointslice \(slice.metadata.key): skipping address '\(ip)': \(error.message)")
          continue
        }
        guard authority.isIPAddress else {
          problem("endpointslice \(slice.metadata.key): skipping address '\(ip)': not an IP address")
          continue
        }
        if isReady, ready[authority] != nil { continue }
        if !isReady, ready[authority] != nil || terminating[authority] != nil { continue }
        var endpoint = Endpoint(address: authority, weight: defaultWeight)
        let federatedCluster = isFederated ? slice.metadata.labels?[Self.federatedClusterLabel] : nil
        if let federatedCluster {
          // A linked cluster's gateway: the slice carries the gateway identity and the remote authority.
          mirror(
            &endpoint, service: service, annotations: slice.metadata.annotations,
            source: "federated endpointslice \(slice.metadata.key)", port: port, problem: problem)
          endpoint.metricLabels["target_cluster"] = federatedCluster
        } else if isMirror {
          mirror(
            &endpoint, service: service, annotations: slice.metadata.annotations,
            source: "mirror endpointslice \(slice.metadata.key)", port: port, problem: problem)
        } else {
          local(&endpoint, targetRef: item.targetRef, namespace: namespace, pod: pod, problem: problem)
        }
        if let node = item.nodeName, !node.isEmpty { endpoint.metricLabels["node"] = node }
        if let zone = item.zone, !zone.isEmpty { endpoint.metricLabels["zone"] = zone }
        endpoint.metricLabels["namespace"] = namespace
        endpoint.metricLabels["service"] = service.name
        let hinted = item.hints?.forZones.map { Set($0.map(\.name)) }
        let candidate = Candidate(
          endpoint: endpoint, ready: isReady, hintedZones: hinted?.isEmpty == true ? nil : hinted,
          local: federatedCluster == nil)
        if isReady {
          ready[authority] = candidate
          terminating[authority] = nil
        } else {
          terminating[authority] = candidate
        }
      }
    }
    var chosen = Array((ready.isEmpty ? terminating : ready).values)
    // A federated service prefers its local members: while one is ready, the linked clusters' gateways go
    // along flagged as fallbacks, which proxies use only when no local endpoint can take a request (local
    // affinity decided per request, failing over on failure accrual before readiness changes; traffic comes
    // home when a local endpoint answers again). Without a ready local member, the gateways are the set.
    if isFederated {
      let local = ready.values.filter(\.local)
      if local.isEmpty {
        let draining = terminating.values.filter(\.local)
        chosen = ready.isEmpty ? (draining.isEmpty ? Array(terminating.values) : draining) : Array(ready.values)
      } else {
        chosen = local + ready.values.filter { !$0.local }.map { remote in
          var fallback = remote
          fallback.endpoint.isFallback = true
          return fallback
        }
      }
    }
    var served = chosen
    if let zone, !chosen.isEmpty, chosen.allSatisfy({ $0.hintedZones != nil }) {
      let local = chosen.filter { $0.hintedZones!.contains(zone) }
      if !local.isEmpty { served = local }
    }
    return EndpointSet(exists: true, endpoints: served.map(\.endpoint))
  }
}
