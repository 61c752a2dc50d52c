import Foundation
import MeshCore

/// The namespaces, RBAC, identity and destination.
extension Values {
  var namespaces: [ManifestObject] {
    [
      ManifestObject(
        apiVersion: "v1", kind: "Namespace", name: Self.controlPlaneNamespace,
        // The injector's webhook skips namespaces with this label: the control plane is never injected.
        labels: ["swiftmesh.io/is-control-plane": "true"],
        comment: [
          "The control plane's namespace (part of every identity name: ...serviceaccount.identity.swiftmesh.<trust-domain>).",
          "Labelled so the proxy injector's webhook leaves its pods alone.",
        ],
        body: ""),
      ManifestObject(
        apiVersion: "v1", kind: "Namespace", name: Self.multiclusterNamespace,
        comment: ["The multi-cluster namespace: the gateway, the service mirror, Links and their credentials Secrets."],
        body: ""),
      ManifestObject(
        apiVersion: "v1", kind: "ConfigMap", name: "swiftmesh-config", namespace: Self.controlPlaneNamespace,
        comment: ["What `meshctl install` was given, for whoever upgrades or debugs this installation."],
        body: (["data:"] + YAML.mapping(
          [
            "clusterName": clusterName, "clusterDomain": options.clusterDomain, "trustDomain": trustDomain.name,
            "imageRegistry": options.imageRegistry, "version": options.version,
            "highAvailability": options.highAvailability ? "true" : "false",
          ], indent: 2)).joined(separator: "\n")),
    ]
  }

  var rbac: [ManifestObject] {
    let ns = Self.controlPlaneNamespace, mc = Self.multiclusterNamespace
    return [
      serviceAccount(
        "swiftmesh-identity", namespace: ns,
        comment: [
          "ServiceAccounts and what each component may do with the Kubernetes API. The ServiceAccount names are",
          "part of the components' mesh identities, e.g. \(identity("swiftmesh-gateway", mc)).",
        ]),
      serviceAccount("swiftmesh-destination", namespace: ns),
      serviceAccount("swiftmesh-injector", namespace: ns),
      serviceAccount("swiftmesh-gateway", namespace: mc),
      serviceAccount("swiftmesh-mirror", namespace: mc),
      serviceAccount(
        "swiftmesh-remote-mirror", namespace: mc,
        comment: [
          "The account a *source* cluster's mirror uses to read this (target) cluster: put its token in the kubeconfig",
          "given to `meshctl multicluster link --kubeconfig`.",
        ]),
    ] + clusterRole(
      "swiftmesh-identity", boundTo: ns,
      comment: ["identity: reviews service-account tokens (TokenReview) when it authenticates workloads with Kubernetes tokens."],
      rules: [Rule(group: "authentication.k8s.io", ["tokenreviews"], verbs: ["create"])])
      + clusterRole(
        "swiftmesh-destination", boundTo: ns, comment: ["destination: watches what it answers Get and GetProfile from."],
        rules: [
          Rule(group: "", ["services", "endpoints", "pods"], verbs: Rule.read),
          Rule(group: "discovery.k8s.io", ["endpointslices"], verbs: Rule.read),
          Rule(group: "policy.swiftmesh.io", ["serviceprofiles"], verbs: Rule.read),
          Rule(group: "split.swiftmesh.io", ["trafficsplits"], verbs: Rule.read),
        ])
      + clusterRole(
        "swiftmesh-injector", boundTo: ns,
        comment: [
          "injector: reads the namespace of each pod it is asked about (its swiftmesh.io/inject annotation), and",
          "the trust anchors it writes into injected pods.",
        ],
        rules: [
          Rule(group: "", ["namespaces"], verbs: Rule.read),
          Rule(group: "", ["configmaps"], names: ["swiftmesh-identity-trust-roots"], verbs: ["get"]),
        ])
      + clusterRole(
        "swiftmesh-mirror", boundTo: mc,
        comment: [
          "mirror (in the source cluster): writes mirror Services and EndpointSlices (or Endpoints with",
          "--endpoints-api endpoints) in any namespace, watches namespaces (a mirror waits for its namespace), reads",
          "Links and their credentials Secrets, reports Link status, renews a heartbeat Lease per Link (service-mirror-<link>,",
          "read by `meshctl multicluster check`).",
        ],
        rules: [
          Rule(group: "", ["services", "endpoints"], verbs: Rule.readWrite),
          Rule(group: "discovery.k8s.io", ["endpointslices"], verbs: Rule.readWrite),
          Rule(group: "", ["namespaces"], verbs: Rule.read),
          Rule(group: "", ["secrets"], verbs: Rule.read),
          Rule(group: "multicluster.swiftmesh.io", ["links"], verbs: Rule.read),
          Rule(group: "multicluster.swiftmesh.io", ["links/status"], verbs: ["get", "update", "patch"]),
          Rule(group: "coordination.k8s.io", ["leases"], verbs: ["get", "create", "update", "delete"]),
        ])
      + clusterRole(
        "swiftmesh-remote-mirror", boundTo: mc,
        comment: [
          "remote-mirror (in the target cluster): what a linked source's mirror reads here: Services and",
          "EndpointSlices (or Endpoints) to mirror, and the gateway Service `meshctl multicluster link` reads",
          "(and the mirror follows); `meshctl multicluster check` reads the published trust anchor.",
        ],
        rules: [
          Rule(group: "", ["services", "endpoints"], verbs: Rule.read),
          Rule(group: "discovery.k8s.io", ["endpointslices"], verbs: Rule.read),
          Rule(group: "", ["configmaps"], names: ["swiftmesh-identity-trust-roots"], verbs: ["get"]),
        ])
  }

  /// One RBAC policy rule.
  struct Rule {
    static let read = ["get", "list", "watch"]
    static let readWrite = read + ["create", "update", "patch", "delete"]

    var group: String
    var resources: [String]
    var names: [String]?
    var verbs: [String]

    init(group: String, _ resources: [String], names: [String]? = nil, verbs: [String]) {
      self.group = group
      self.resources = resources
      self.names = names
      self.verbs = verbs
    }

    var yaml: String {
      var lines = ["- apiGroups: \(YAML.flow([group]))", "  resources: \(YAML.flow(resources))"]
      if let names { lines.append("  resourceNames: \(YAML.flow(names))") }
      lines.append("  verbs: \(YAML.flow(verbs))")
      return lines.joined(separator: "\n")
    }
  }

  /// A ClusterRole with `rules` and its binding to the same-named ServiceAccount.
  func clusterRole(_ name: String, boundTo namespace: String, comment: [String], rules: [Rule]) -> [ManifestObject] {
    [
      ManifestObject(
        apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", name: name, comment: comment,
        body: (["rules:"] + rules.map(\.yaml)).joined(separator: "\n")),
      ManifestObject(
        apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRoleBinding", name: name,
        body: """
          roleRef:
            apiGroup: rbac.authorization.k8s.io
            kind: ClusterRole
            name: \(name)
          subjects:
          - kind: ServiceAccount
            name: \(name)
            namespace: \(namespace)
          """),
    ]
  }

  var identity: [ManifestObject] {
    let ns = Self.controlPlaneNamespace
    let workload = Workload(
      name: "swiftmesh-identity", namespace: ns,
      comment: [
        "The identity service (`mesh-controller identity`): signs workload certificates with this cluster's issuer.",
        "Workloads authenticate with their Kubernetes service-account tokens (projected, audience",
        "identity.swiftmesh.io), which it checks with the API server's TokenReview.",
        "Its own identity is \(identity("swiftmesh-identity", ns)).",
      ],
      scales: true,
      container: Container(
        name: "identity", image: options.image("mesh-controller"), command: "mesh-controller",
        args: [
          "identity", "--issuer-dir=/var/run/swiftmesh/issuer", "--token-review", "--audience=identity.swiftmesh.io",
          "--listen=0.0.0.0:8080", "--trust-domain=\(trustDomain.name)", "--control-plane-namespace=\(ns)",
          "--certificate-lifetime=86400", "--log-level=info",
        ],
        ports: [("grpc-identity", 8080)], probe: .tcp(port: "grpc-identity"), cpuRequest: "50m", memoryLimit: "256Mi",
        volumeMounts: [("issuer", "/var/run/swiftmesh/issuer")]),
      volumes: """
        - name: issuer
          secret:
            secretName: swiftmesh-identity-issuer
        """)
    return [issuerSecret, trustRoots(namespace: ns), trustRoots(namespace: Self.multiclusterNamespace), deployment(workload)]
      + disruptionBudget(workload)
      + [service("swiftmesh-identity", namespace: ns, selecting: "swiftmesh-identity", ports: [("grpc-identity", 8080)])]
  }

  /// The issuer's certificate and key, and the anchor, as `mesh-controller identity --issuer-dir` reads them.
  var issuerSecret: ManifestObject {
    let issuer = material?.issuer
    return ManifestObject(
      apiVersion: "v1", kind: "Secret", name: "swiftmesh-identity-issuer", namespace: Self.controlPlaneNamespace,
      comment: ["This cluster's issuer (from --issuer-dir), signed by the shared trust anchor."],
      body: Self.secretBody([
        "ca.crt": issuer?.anchorPEM ?? "", "issuer.crt": issuer?.certificatePEM ?? "", "issuer.key": issuer?.keyPEM ?? "",
      ]),
      carriesKeyMaterial: true)
  }

  /// The shared trust anchor: what the gateway and the mirror verify peers with (in swiftmesh-multicluster),
  /// and what this cluster publishes for `meshctl multicluster check` (in swiftmesh).
  func trustRoots(namespace: String) -> ManifestObject {
    ManifestObject(
      apiVersion: "v1", kind: "ConfigMap", name: "swiftmesh-identity-trust-roots", namespace: namespace,
      comment: namespace == Self.controlPlaneNamespace
        ? ["The trust anchor this cluster publishes (`meshctl multicluster check` compares it across clusters)."]
        : ["The trust anchor the gateway and the mirror verify their peers with."],
      body: "data:\n  ca.crt: " + YAML.block(material?.issuer.anchorPEM ?? "", indent: 4),
      carriesKeyMaterial: true)
  }

  /// A Secret's `type` and `data`: each value base64-encoded, keys sorted.
  static func secretBody(type: String = "Opaque", _ values: [String: String]) -> String {
    (["type: \(type)", "data:"]
      + values.sorted { $0.key < $1.key }.map { "  \($0.key): \(Data($0.value.utf8).base64EncodedString())" })
      .joined(separator: "\n")
  }

  var destination: [ManifestObject] {
    let ns = Self.controlPlaneNamespace
    let workload = Workload(
      name: "swiftmesh-destination", namespace: ns,
      comment: [
        "The destination service (`mesh-controller destination`): endpoints and profiles for proxies, fed by the",
        "cluster's API (in-cluster credentials of the swiftmesh-destination ServiceAccount). It reads EndpointSlices",
        "(the default; by itself v1 Endpoints on clusters older than 1.21), as the mirror writes them.",
      ],
      scales: true,
      container: Container(
        name: "destination", image: options.image("mesh-controller"), command: "mesh-controller",
        args: [
          "destination", "--listen=0.0.0.0:8086", "--cluster-domain=\(options.clusterDomain)",
          "--trust-domain=\(trustDomain.name)", "--control-plane-namespace=\(ns)", "--endpoints-api=endpointslices",
          "--log-level=info",
        ],
        ports: [("grpc-dst", 8086)], probe: .tcp(port: "grpc-dst"), cpuRequest: "100m", memoryLimit: "512Mi"))
    return [deployment(workload)] + disruptionBudget(workload)
      + [service("swiftmesh-destination", namespace: ns, selecting: "swiftmesh-destination", ports: [("grpc-dst", 8086)])]
  }
}
