import Crypto
public import Foundation
public import Logging
import MeshCore
public import MeshKube
import NIOHTTP1
import SwiftASN1
import X509

/// `meshctl multicluster check`: is this cluster's multi-cluster setup healthy? Each check gives a tick or a
/// cross with what was found and, on a cross, a hint. Works from the source cluster's API alone: Links, their
/// credentials Secrets (which also reach each target), the mirrors, the trust anchor each cluster publishes
/// (ConfigMap `swiftmesh-identity-trust-roots`, key `ca.crt`), and the heartbeat Lease each Link's mirror
/// renews (which carries its gateway report).
public enum MulticlusterCheck {
  /// The ConfigMap a cluster publishes its trust anchor(s) in, key `ca.crt` (PEM).
  public static let trustRootsConfigMap = "swiftmesh-identity-trust-roots"
  public static let trustRootsKey = "ca.crt"

  public struct Options: Sendable {
    /// Namespace of the Links (and of the trust-roots ConfigMap copy the gateway and mirror mount).
    public var namespace = MirrorMetadata.multiclusterNamespace
    /// The control plane's namespace, where the trust-roots ConfigMap is looked for first.
    public var controlPlaneNamespace = "swiftmesh"
    /// Connection timeout towards each target's API server.
    public var connectTimeout: Duration = .seconds(5)
    public var now: @Sendable () -> Date = { Date() }
    public init() {}
  }

  /// One check's outcome.
  public struct Result: Codable, Sendable, Hashable {
    /// What is checked (`trust anchor`, `gateway`, ...).
    public var check: String
    /// The Link it concerns (nil for a cluster-wide check).
    public var link: String?
    public var ok: Bool
    /// What was found.
    public var detail: String
    /// What to do about a cross.
    public var hint: String?

    public init(check: String, link: String? = nil, ok: Bool, detail: String, hint: String? = nil) {
      self.check = check
      self.link = link
      self.ok = ok
      self.detail = detail
      self.hint = hint
    }

    /// `√ <check>: <detail>` or `× <check>: <detail>` and `    hint: <hint>`.
    public var line: String {
      let subject = link.map { "\(check) (\($0))" } ?? check
      var text = "\(ok ? "√" : "×") \(subject): \(detail)"
      if !ok, let hint { text += "\n    hint: \(hint)" }
      return text
    }
  }

  /// Runs every check against the cluster `local` reaches.
  public static func run(local: KubeClient, options: Options = Options(), logger: Logger) async -> [Result] {
    var results: [Result] = []
    // The Link CRD.
    do {
      guard try await local.serves(Link.self) else {
        results.append(
          Result(
            check: "Link CRD", ok: false, detail: "\(Link.plural).\(Link.group) is not served by \(local.config.server)",
            hint: "install the CRDs: kubectl apply -f 00-crds.yaml (the Kubernetes manifests)"))
        return results
      }
      results.append(Result(check: "Link CRD", ok: true, detail: "\(Link.plural).\(Link.group) is installed"))
    } catch {
      results.append(
        Result(
          check: "Link CRD", ok: false, detail: "cannot ask \(local.config.server): \(error)",
          hint: "check --kubeconfig and --context, and that the API server answers"))
      return results
    }
    let links: [Link]
    do {
      links = try await local.listAll(Link.self, namespace: options.namespace).items.sorted { $0.name < $1.name }
    } catch {
      results.append(
        Result(check: "Links", ok: false, detail: "cannot list Links in \(options.namespace): \(error)", hint: "check RBAC"))
      return results
    }
    if links.isEmpty {
      results.append(
        Result(
          check: "Links", ok: false, detail: "no Link in namespace \(options.namespace)",
          hint: "link a cluster: meshctl multicluster link --cluster-name NAME --kubeconfig TARGET | kubectl apply -f -"))
    }
    let localAnchors = await anchors(of: local, options: options)
    switch localAnchors {
    case .success(let found):
      results.append(
        Result(
          check: "trust anchor", ok: true,
          detail: "this cluster publishes \(describe(found.fingerprints)) in \(found.place)"))
    case .failure(let problem):
      results.append(
        Result(
          check: "trust anchor", ok: false, detail: "this cluster: \(problem.message)",
          hint: "publish the anchor: kubectl -n \(options.controlPlaneNamespace) create configmap \(trustRootsConfigMap) --from-file=\(trustRootsKey)=ca/ca.crt"))
    }

    var targets: [String: KubeClient] = [:]
    var clusterNames: Set<String> = []
    for link in links {
      let name = link.name
      clusterNames.insert(link.spec.targetClusterName)
      // The Link's spec.
      let settings: LinkSettings
      do {
        settings = try LinkSettings(link: link)
      } catch {
        results.append(
          Result(
            check: "Link spec", link: name, ok: false, detail: error.message,
            hint: "fix the Link: kubectl -n \(options.namespace) edit link \(name)"))
        continue
      }
      if settings.invalidGatewayAddresses.isEmpty {
        results.append(
          Result(
            check: "Link spec", link: name, ok: true,
            detail: "target \(settings.targetClusterName), gateway \(settings.gatewayAddresses.joined(separator: ",")) port \(settings.gatewayPort)"))
      } else {
        results.append(
          Result(
            check: "Link spec", link: name, ok: false,
            detail: settings.invalidGatewayAddresses.joined(separator: "; ") + "; in use: \(settings.gatewayAddresses.joined(separator: ","))",
            hint: "remove or correct the entry in spec.gatewayAddresses"))
      }
      // The credentials reach the target and may read what the mirror needs.
      let target: KubeClient?
      do {
        let connected = try await ServiceMirror.connect(
          settings, localClient: local, connectTimeout: options.connectTimeout, logger: logger)
        target = connected.client
        targets[name] = connected.client
      } catch {
        target = nil
        results.append(
          Result(
            check: "target credentials", link: name, ok: false, detail: "\(error.code.reason): \(error.message)",
            hint: "re-create the Secret: meshctl multicluster link --cluster-name \(settings.targetClusterName) --kubeconfig TARGET | kubectl apply -f -"))
      }
      if let target {
        results.append(await credentialsCheck(target, link: name, settings: settings))
        results.append(await trustAnchorCheck(target, link: name, local: localAnchors, options: options))
      }
      // The mirror controller, and the gateway as it sees it.
      let heartbeat = await heartbeat(of: link, local: local, options: options)
      results.append(contentsOf: heartbeat)
      results.append(await endpointsCheck(local, link: name, cluster: settings.targetClusterName))
    }
    results.append(await orphansCheck(local, links: links, targets: targets))
    for client in targets.values { try? await client.shutdown() }
    return results
  }

  // MARK: - Checks

  static func credentialsCheck(_ target: KubeClient, link: String, settings: LinkSettings) async -> Result {
    do {
      _ = try await target.list(KubeService.self, options: ListOptions(limit: 1))
    } catch {
      return Result(
        check: "target credentials", link: link, ok: false,
        detail: "the target's API server at \(target.config.server) refused or did not answer: \(error)",
        hint: "check that the target is reachable from this cluster and the token in the Secret is valid")
    }
    var denied: [String] = []
    let needs: [(group: String, resource: String)] = [
      ("", "services"), ("", "endpoints"), ("discovery.k8s.io", "endpointslices"),
    ]
    for need in needs {
      for verb in ["list", "watch"] {
        do {
          if try await !allowed(target, verb: verb, group: need.group, resource: need.resource) {
            denied.append("\(verb) \(need.group.isEmpty ? "" : "\(need.group)/")\(need.resource)")
          }
        } catch {
          denied.append("\(verb) \(need.resource) (review failed: \(error))")
        }
      }
    }
    if !denied.isEmpty {
      return Result(
        check: "target credentials", link: link, ok: false,
        detail: "the Secret's identity may not \(denied.joined(separator: ", ")) in \(settings.targetClusterName)",
        hint: "bind the swiftmesh-remote-mirror ClusterRole (02-rbac.yaml) to the account whose token the Secret holds")
    }
    return Result(
      check: "target credentials", link: link, ok: true,
      detail: "reach \(target.config.server) and may list/watch services, endpoints and endpointslices")
  }

  /// A SelfSubjectAccessReview through `client`.
  static func allowed(_ client: KubeClient, verb: String, group: String, resource: String) async throws -> Bool {
    let review: JSONValue = [
      "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
      "spec": ["resourceAttributes": ["verb": .string(verb), "group": .string(group), "resource": .string(resource)]],
    ]
    let data = try await client.send(
      .POST, path: "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body: review)
    let answer = try JSONValue.parse(data)
    if case .bool(let allowed)? = answer["status"]?["allowed"] { return allowed }
    return false
  }

  struct PublishedAnchors: Sendable {
    var fingerprints: [String]
    var place: String
  }

  /// Why a published trust anchor cannot be compared.
  public struct AnchorProblem: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
  }

  /// The SHA-256 fingerprints of the certificates in a cluster's trust-roots ConfigMap (the control plane's
  /// namespace first, then the multicluster namespace).
  static func anchors(of client: KubeClient, options: Options) async -> Swift.Result<PublishedAnchors, AnchorProblem> {
    var tried: [String] = []
    for namespace in [options.controlPlaneNamespace, options.namespace] where !tried.contains("\(namespace)/\(trustRootsConfigMap)") {
      let place = "\(namespace)/\(trustRootsConfigMap)"
      tried.append(place)
      let map: ConfigMap
      do {
        map = try await client.get(ConfigMap.self, name: trustRootsConfigMap, namespace: namespace)
      } catch let error as KubeError where error.isNotFound {
        continue
      } catch {
        return .failure(AnchorProblem(message: "cannot read ConfigMap \(place): \(error)"))
      }
      guard let pem = map.data?[trustRootsKey], !pem.isEmpty else {
        return .failure(AnchorProblem(message: "ConfigMap \(place) has no '\(trustRootsKey)' key"))
      }
      do {
        return .success(PublishedAnchors(fingerprints: try fingerprints(pem: pem), place: "ConfigMap \(place)"))
      } catch {
        return .failure(AnchorProblem(message: "ConfigMap \(place): \(error.message)"))
      }
    }
    return .failure(AnchorProblem(message: "no ConfigMap \(tried.joined(separator: " or ")) (key \(trustRootsKey))"))
  }

  /// SHA-256 fingerprints (lower-case hex) of the certificates in `pem`; each must parse as X.509.
  public static func fingerprints(pem: String) throws(AnchorProblem) -> [String] {
    var out: [String] = []
    var body: String?
    for rawLine in pem.split(whereSeparator: \.isNewline) {
      let line = rawLine.trimmingCharacters(in: .whitespaces)
      if line == "-----BEGIN CERTIFICATE-----" {
        body = ""
      } else if line == "-----END CERTIFICATE-----" {
        guard let text = body, let der = Data(base64Encoded: text) else {
          throw AnchorProblem(message: "certificate \(out.count + 1) is not valid base64")
        }
        do { _ = try Certificate(derEncoded: Array(der)) } catch {
          throw AnchorProblem(message: "certificate \(out.count + 1) is not a valid X.509 certificate")
        }
        out.append(SHA256.hash(data: der).map { String(format: "%02x", $0) }.joined())
        body = nil
      } else if body != nil {
        body! += line
      }
    }
    guard !out.isEmpty else { throw AnchorProblem(message: "no PEM certificate in '\(trustRootsKey)'") }
    return out
  }

  static func describe(_ fingerprints: [String]) -> String {
    let short = fingerprints.map { "sha256:\($0.prefix(16))" }.joined(separator: ", ")
    return fingerprints.count == 1 ? "anchor \(short)" : "anchors \(short)"
  }

  static func trustAnchorCheck(
    _ target: KubeClient, link: String, local: Swift.Result<PublishedAnchors, AnchorProblem>, options: Options
  ) async -> Result {
    let remote = await anchors(of: target, options: options)
    switch (local, remote) {
    case (_, .failure(let problem)):
      return Result(
        check: "trust anchor", link: link, ok: false, detail: "the target: \(problem.message)",
        hint: "publish the anchor in the target: kubectl -n \(options.controlPlaneNamespace) create configmap \(trustRootsConfigMap) --from-file=\(trustRootsKey)=ca/ca.crt (and let the Secret's account get it)")
    case (.failure, .success(let found)):
      return Result(
        check: "trust anchor", link: link, ok: false,
        detail: "the target publishes \(describe(found.fingerprints)), this cluster none to compare with",
        hint: "publish this cluster's anchor (see the trust anchor check above)")
    case (.success(let mine), .success(let theirs)):
      let shared = Set(mine.fingerprints).intersection(theirs.fingerprints)
      if shared.isEmpty {
        return Result(
          check: "trust anchor", link: link, ok: false,
          detail: "the target publishes \(describe(theirs.fingerprints)), this cluster \(describe(mine.fingerprints)): no anchor in common, so mutual TLS through the gateway fails",
          hint: "both clusters' issuers must chain to one trust anchor: re-issue the target's issuer from this anchor (meshctl identity issuer --ca-dir ...)")
      }
      let note = Set(mine.fingerprints) == Set(theirs.fingerprints) ? "" : " (the bundles differ otherwise: a rotation in progress?)"
      return Result(
        check: "trust anchor", link: link, ok: true,
        detail: "both clusters use \(describe(shared.sorted()))\(note)")
    }
  }

  /// The heartbeat Lease and Link status: is the mirror running and ready; the gateway as it probes it.
  static func heartbeat(of link: Link, local: KubeClient, options: Options) async -> [Result] {
    let name = link.name
    let leaseName = MirrorMetadata.heartbeatLeaseName(link: name)
    let namespace = link.namespace ?? options.namespace
    let lease: Lease
    do {
      lease = try await local.get(Lease.self, name: leaseName, namespace: namespace)
    } catch {
      let what = (error as? KubeError)?.isNotFound == true ? "no heartbeat Lease \(namespace)/\(leaseName)" : "cannot read Lease \(namespace)/\(leaseName): \(error)"
      return [
        Result(
          check: "mirror controller", link: name, ok: false, detail: "\(what): no mirror controller runs for this Link",
          hint: "start the mirror controller (mesh-mirror; kubectl -n \(options.namespace) rollout status deploy/swiftmesh-mirror) and check its log"),
        Result(
          check: "gateway", link: name, ok: false, detail: "unknown: no mirror controller probes it",
          hint: "start the mirror controller first"),
      ]
    }
    let now = options.now()
    let duration = Double(lease.spec?.leaseDurationSeconds ?? 30)
    let renewed = lease.spec?.renewTime.flatMap(ServiceMirror.parseTime)
    let age = renewed.map { now.timeIntervalSince($0) }
    let holder = lease.spec?.holderIdentity ?? "?"
    guard let age, age <= duration else {
      let when = age.map { "last renewed \(Int($0.rounded()))s ago (it renews every \(Int(duration / 3))s)" } ?? "never renewed"
      return [
        Result(
          check: "mirror controller", link: name, ok: false,
          detail: "the heartbeat of \(holder) is stale: \(when); the mirror controller stopped",
          hint: "restart the mirror controller (kubectl -n \(options.namespace) rollout restart deploy/swiftmesh-mirror) and check its log"),
        Result(
          check: "gateway", link: name, ok: false, detail: "unknown: no running mirror controller probes it",
          hint: "start the mirror controller first"),
      ]
    }
    var results: [Result] = []
    let conditions = Dictionary((link.status?.conditions ?? []).map { ($0.type, $0) }, uniquingKeysWith: { $1 })
    let needed = [
      ServiceMirror.ConditionType.linkValid, ServiceMirror.ConditionType.credentialsReady,
      ServiceMirror.ConditionType.targetReachable,
    ]
    let failing = needed.compactMap { type -> String? in
      guard let condition = conditions[type] else { return "\(type) not reported yet" }
      return condition.status == "True" ? nil : "\(type)=\(condition.status) (\(condition.reason ?? "")): \(condition.message ?? "")"
    }
    if let federated = conditions[ServiceMirror.ConditionType.federatedReady], federated.status == "False" {
      results.append(
        Result(
          check: "federated services", link: name, ok: false,
          detail: "\(federated.reason ?? ""): \(federated.message ?? "")",
          hint: "give the member the same ports in every cluster, or remove its \(MirrorMetadata.federatedLabel) label"))
    }
    if failing.isEmpty {
      results.append(
        Result(
          check: "mirror controller", link: name, ok: true,
          detail: "running (\(holder), heartbeat \(Int(age.rounded()))s ago) and ready"))
    } else {
      results.append(
        Result(
          check: "mirror controller", link: name, ok: false,
          detail: "running (\(holder)) but not ready: \(failing.joined(separator: "; "))",
          hint: "see kubectl -n \(namespace) get link \(name) -o yaml, and the mirror controller's log"))
    }
    // The gateway, from the report the heartbeat carries.
    guard let text = lease.metadata.annotations?[MirrorMetadata.gatewayReportAnnotation],
      let report = try? JSONDecoder().decode(GatewayReport.self, from: Data(text.utf8))
    else {
      results.append(
        Result(
          check: "gateway", link: name, ok: false, detail: "the heartbeat carries no gateway report",
          hint: "upgrade the mirror controller"))
      return results
    }
    guard let inUse = report.addresses else {
      results.append(
        Result(
          check: "gateway", link: name, ok: false,
          detail: "the mirror controller has not resolved the gateway's addresses yet (starting, or the target does not answer)",
          hint: "wait a moment and run the check again; see the Link's GatewayResolved condition"))
      return results
    }
    if inUse.isEmpty {
      let condition = conditions[ServiceMirror.ConditionType.gatewayResolved]
      results.append(
        Result(
          check: "gateway", link: name, ok: false,
          detail: "no usable gateway address: \(condition?.message ?? "nothing resolved")",
          hint: "fix spec.gatewayAddresses or the target's gateway Service, or the DNS name they give"))
      return results
    }
    if let resolved = conditions[ServiceMirror.ConditionType.gatewayResolved], resolved.status == "False" {
      results.append(
        Result(
          check: "gateway addresses", link: name, ok: false, detail: "\(resolved.reason ?? ""): \(resolved.message ?? "")",
          hint: "fix the entry in spec.gatewayAddresses or the gateway Service, or the DNS record of the name"))
    }
    let addresses = inUse.joined(separator: ",")
    let latency = report.latencyP50.map { String(format: "p50 %.1fms", $0) } ?? "no latency yet"
    switch (report.probed, report.alive) {
    case (false, _):
      results.append(
        Result(
          check: "gateway", link: name, ok: true,
          detail: "not probed (the Link names no gatewayIdentity, or the mirror has no identity); addresses \(addresses)"))
    case (true, true?):
      let answering = report.aliveAddresses.map { "\($0)/\(report.addresses?.count ?? 0) addresses answer" } ?? ""
      results.append(
        Result(check: "gateway", link: name, ok: true, detail: "alive at \(addresses), \(answering), \(latency)"))
    case (true, false?):
      results.append(
        Result(
          check: "gateway", link: name, ok: false,
          detail: "dead at \(addresses): \(report.lastError ?? "probes fail")",
          hint: "check the target's gateway (its pod, its load balancer, and the probe port and path of the Link)"))
    case (true, nil):
      results.append(
        Result(
          check: "gateway", link: name, ok: false, detail: "no probe finished yet at \(addresses)",
          hint: "wait a probe period and run the check again"))
    }
    return results
  }

  /// Every mirror Service of `cluster` has a ready endpoint.
  static func endpointsCheck(_ local: KubeClient, link: String, cluster: String) async -> Result {
    do {
      let options = ListOptions(labelSelector: MirrorMetadata.mirrorSelector(cluster: cluster))
      let services = try await local.listAll(KubeService.self, options: options).items
      if services.isEmpty {
        return Result(check: "mirror endpoints", link: link, ok: true, detail: "no service mirrored yet")
      }
      let servesSlices = (try? await local.serves(EndpointSlice.self)) ?? false
      let slices = servesSlices ? try await local.listAll(EndpointSlice.self, options: options).items : []
      let endpoints = (try? await local.listAll(Endpoints.self, options: options).items) ?? []
      var empty: [String] = []
      for service in services {
        let namespace = service.namespace ?? "default"
        let mine = slices.filter {
          $0.namespace == namespace && $0.metadata.labels?[EndpointSlice.serviceNameLabel] == service.name
        }
        let ready = mine.contains { slice in slice.endpoints.contains { $0.conditions?.ready ?? true } }
          || MirrorPlanner.hasReadyAddress(endpoints.first { $0.namespace == namespace && $0.name == service.name })
        if !ready { empty.append(service.metadata.key) }
      }
      if empty.isEmpty {
        return Result(
          check: "mirror endpoints", link: link, ok: true,
          detail: "\(services.count) mirror\(services.count == 1 ? "" : "s") with ready endpoints")
      }
      return Result(
        check: "mirror endpoints", link: link, ok: false,
        detail: "\(empty.count) of \(services.count) mirrors have no ready endpoint: \(ServiceMirror.list(empty.sorted()))",
        hint: "the remote service has no ready endpoint, or the gateway is dead or has no address (see the gateway check)")
    } catch {
      return Result(
        check: "mirror endpoints", link: link, ok: false, detail: "cannot list the mirrors: \(error)", hint: "check RBAC")
    }
  }

  /// No mirror whose Link is gone, nor whose remote service is gone or no longer exported.
  static func orphansCheck(_ local: KubeClient, links: [Link], targets: [String: KubeClient]) async -> Result {
    let services: [KubeService]
    do {
      services = try await local.listAll(
        KubeService.self, options: ListOptions(labelSelector: "\(MirrorMetadata.mirroredServiceLabel)=true")
      ).items
    } catch {
      return Result(check: "orphaned mirrors", ok: false, detail: "cannot list mirrors: \(error)", hint: "check RBAC")
    }
    let byCluster = Dictionary(links.map { ($0.spec.targetClusterName, $0) }, uniquingKeysWith: { a, _ in a })
    var orphans: [String] = []
    let keys = Set(services.map(\.metadata.key))
    for service in services.sorted(by: { $0.metadata.key < $1.metadata.key }) {
      let cluster = service.metadata.labels?[MirrorMetadata.clusterNameLabel] ?? ""
      if let parent = service.metadata.labels?[MirrorMetadata.headlessMirrorLabel] {
        // An endpoint mirror (of a headless mirror): orphaned when its headless mirror is gone.
        if !keys.contains("\(service.namespace ?? "default")/\(parent)") {
          orphans.append("\(service.metadata.key) (its headless mirror \(parent) is gone)")
        }
        continue
      }
      guard let link = byCluster[cluster] else {
        orphans.append("\(service.metadata.key) (no Link to cluster '\(cluster)')")
        continue
      }
      guard let target = targets[link.name], let settings = try? LinkSettings(link: link) else { continue }
      let suffix = "-\(cluster)"
      guard service.name.hasSuffix(suffix) else {
        orphans.append("\(service.metadata.key) (not named <service>\(suffix))")
        continue
      }
      let remoteName = String(service.name.dropLast(suffix.count))
      let namespace = service.namespace ?? "default"
      do {
        let remote = try await target.get(KubeService.self, name: remoteName, namespace: namespace)
        if !settings.exports(remote) {
          orphans.append("\(service.metadata.key) (\(namespace)/\(remoteName) in \(cluster) is no longer exported)")
        }
      } catch let error as KubeError where error.isNotFound {
        orphans.append("\(service.metadata.key) (\(namespace)/\(remoteName) is gone from \(cluster))")
      } catch {
        continue
      }
    }
    if orphans.isEmpty {
      return Result(check: "orphaned mirrors", ok: true, detail: "none (\(services.count) mirror\(services.count == 1 ? "" : "s") checked)")
    }
    return Result(
      check: "orphaned mirrors", ok: false, detail: "\(orphans.count): \(ServiceMirror.list(orphans))",
      hint: "a running mirror controller deletes orphans at its next repair; otherwise kubectl delete service the mirror")
  }
}
