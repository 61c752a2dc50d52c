package import MeshKube
import MeshKubeLocal
import MeshMulticluster
import NIOHTTP1

/// The service accounts and ClusterRoles of `Examples/kubernetes/02-rbac.yaml` that the demo's components use
/// the Kubernetes API with, so a permission the manifests forget fails the demo as it would fail on a real
/// cluster. (A test checks that these rules are the manifests' rules.)
package enum ComponentAccess: String, CaseIterable, Sendable {
  /// Reviews workloads' tokens (TokenReview).
  case identity = "swiftmesh-identity"
  /// Watches what it answers Get and GetProfile from.
  case destination = "swiftmesh-destination"
  /// The service mirror, in its own cluster.
  case mirror = "swiftmesh-mirror"
  /// What a linked source's mirror reads in the target cluster.
  case remoteMirror = "swiftmesh-remote-mirror"

  /// The service account's name, also the ClusterRole's and the ClusterRoleBinding's.
  package var name: String { rawValue }

  package var namespace: String {
    switch self {
    case .identity, .destination: "swiftmesh"
    case .mirror, .remoteMirror: MirrorMetadata.multiclusterNamespace
    }
  }

  /// The ClusterRole's rules.
  package var rules: [JSONValue] {
    func rule(_ groups: [String], _ resources: [String], _ verbs: [String]) -> JSONValue {
      [
        "apiGroups": .array(groups.map { .string($0) }), "resources": .array(resources.map { .string($0) }),
        "verbs": .array(verbs.map { .string($0) }),
      ]
    }
    let read = ["get", "list", "watch"]
    switch self {
    case .identity:
      return [rule(["authentication.k8s.io"], ["tokenreviews"], ["create"])]
    case .destination:
      return [
        rule([""], ["services", "endpoints", "pods"], read),
        rule(["discovery.k8s.io"], ["endpointslices"], read),
        rule([ServiceProfile.group], [ServiceProfile.plural], read),
        rule([TrafficSplit.group], [TrafficSplit.plural], read),
      ]
    case .mirror:
      return [
        rule([""], ["services", "endpoints"], read + ["create", "update", "patch", "delete"]),
        rule(["discovery.k8s.io"], ["endpointslices"], read + ["create", "update", "patch", "delete"]),
        rule([""], ["namespaces"], read),
        rule([""], ["secrets"], read),
        rule([Link.group], [Link.plural], read),
        rule([Link.group], ["\(Link.plural)/status"], ["get", "update", "patch"]),
        rule([Lease.group], [Lease.plural], ["get", "create", "update", "delete"]),
      ]
    case .remoteMirror:
      var trustRoots = rule([""], ["configmaps"], ["get"])
      trustRoots["resourceNames"] = [.string(MulticlusterCheck.trustRootsConfigMap)]
      return [
        rule([""], ["services", "endpoints"], read), rule(["discovery.k8s.io"], ["endpointslices"], read), trustRoots,
      ]
    }
  }

  /// Creates (or keeps) the namespace, the ServiceAccount, its ClusterRole and ClusterRoleBinding through an
  /// admin `client`, and returns an API token for the account (TokenRequest, the API server's audience).
  package func grant(through client: KubeClient, expirationSeconds: Int = 48 * 3600) async throws -> String {
    func ignoringExisting(_ create: () async throws -> Void) async throws {
      do { try await create() } catch let error as KubeError where error.isAlreadyExists {}
    }
    try await ignoringExisting { _ = try await client.create(MeshKube.Namespace(metadata: ObjectMeta(name: namespace))) }
    try await ignoringExisting {
      _ = try await client.create(ServiceAccount(metadata: ObjectMeta(name: name, namespace: namespace)))
    }
    let labels: JSONValue = ["app.kubernetes.io/part-of": "swiftmesh"]
    let rbac = "/apis/rbac.authorization.k8s.io/v1"
    try await ignoringExisting {
      _ = try await client.send(
        .POST, path: "\(rbac)/clusterroles",
        body: [
          "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
          "metadata": ["name": .string(name), "labels": labels], "rules": .array(rules),
        ])
    }
    try await ignoringExisting {
      _ = try await client.send(
        .POST, path: "\(rbac)/clusterrolebindings",
        body: [
          "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
          "metadata": ["name": .string(name), "labels": labels],
          "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": .string(name)],
          "subjects": [["kind": "ServiceAccount", "name": .string(name), "namespace": .string(namespace)]],
        ])
    }
    return try await client.requestToken(serviceAccount: name, namespace: namespace, expirationSeconds: expirationSeconds)
  }
}

extension KubeClientConfig {
  /// The same server and CA with `token` instead of these credentials.
  func with(token: String) -> KubeClientConfig {
    KubeClientConfig(
      server: server, certificateAuthorityPEM: certificateAuthorityPEM, token: token,
      insecureSkipTLSVerify: insecureSkipTLSVerify, tlsServerName: tlsServerName, namespace: namespace)
  }

  /// A one-context kubeconfig document for this server and CA with `token`.
  func kubeconfigYAML(token: String, contextName: String) -> String {
    LocalKubeAPIServer.kubeconfigYAML(
      server: server, token: token, caPEM: certificateAuthorityPEM, insecureSkipTLSVerify: insecureSkipTLSVerify,
      contextName: contextName)
  }
}
