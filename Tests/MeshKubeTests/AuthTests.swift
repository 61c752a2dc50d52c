import Foundation
import MeshCore
import MeshKube
import MeshKubeLocal
import NIOHTTP1
import Testing
import _MeshTestSupport

/// The embedded server's HTTPS, authentication and RBAC, judged by curl, kubectl and the project's client.
@Suite("TLS, authentication and RBAC")
struct AuthTests {
  /// Writes the server's CA and admin kubeconfig into a temporary directory for the tools.
  struct Files {
    let dir: URL
    let ca: String
    let kubeconfig: String

    init(_ server: LocalKubeAPIServer) async throws {
      dir = try temporaryDirectory()
      ca = dir.appendingPathComponent("ca.crt").path
      kubeconfig = dir.appendingPathComponent("kubeconfig").path
      try #require(try server.certificateAuthorityPEM()).write(toFile: ca, atomically: true, encoding: .utf8)
      try await server.kubeconfigYAML().write(toFile: kubeconfig, atomically: true, encoding: .utf8)
    }

    func kubectl(_ args: [String], kubeconfig: String? = nil) async throws -> _MeshTestSupport.Subprocess.Output {
      try await _MeshTestSupport.Subprocess.run(
        kubectlPath, ["--kubeconfig", kubeconfig ?? self.kubeconfig, "--cache-dir", dir.appendingPathComponent("cache").path] + args)
    }

    /// `curl` verifying the server with the CA: the HTTP status, then the body.
    func curl(_ url: String, token: String? = nil, header: String? = nil) async throws -> (status: Int, body: String) {
      var args = ["-s", "--max-time", "10", "--cacert", ca, "-w", "\n%{http_code}"]
      if let token { args += ["-H", "Authorization: Bearer \(token)"] }
      if let header { args += ["-H", header] }
      let out = try await _MeshTestSupport.Subprocess.run("curl", args + [url])
      #expect(out.status == 0, "curl \(url): \(out)")
      let lines = out.stdout.split(separator: "\n", omittingEmptySubsequences: false)
      return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    func remove() { try? FileManager.default.removeItem(at: dir) }
  }

  static let curlAvailable = _MeshTestSupport.Subprocess.which("curl") != nil

  /// A service account in `namespace` and an API token for it (TokenRequest with the API's audience).
  static func account(_ name: String, _ namespace: String, _ server: LocalKubeAPIServer, _ admin: KubeClient) async throws -> String {
    if server.state.get(MeshKube.Namespace.self, name: namespace) == nil {
      try server.state.create(MeshKube.Namespace(metadata: ObjectMeta(name: namespace)))
    }
    try server.state.create(ServiceAccount(metadata: ObjectMeta(name: name, namespace: namespace)))
    return try await admin.requestToken(serviceAccount: name, namespace: namespace)
  }

  @Test("curl: 401 with a Status without a token on /api/v1/secrets, 200 on /readyz; the CA verifies the server", .enabled(if: curlAvailable))
  func curlAnonymous() async throws {
    try await withServer { server, _ in
      let files = try await Files(server)
      defer { files.remove() }
      let url = try await server.url()
      #expect(url.hasPrefix("https://127.0.0.1:"))
      let secrets = try await files.curl("\(url)/api/v1/secrets")
      #expect(secrets.status == 401)
      let status = try JSONValue.parse(Data(secrets.body.utf8))
      #expect(status["kind"] == "Status")
      #expect(status["reason"] == "Unauthorized")
      #expect(status["code"] == .int(401))
      for path in ["/readyz", "/healthz", "/livez", "/version"] {
        #expect(try await files.curl("\(url)\(path)").status == 200, "\(path)")
      }
      #expect(try await files.curl("\(url)/readyz").body == "ok")
      #expect(try await files.curl("\(url)/api").status == 401, "discovery needs credentials")
      #expect(try await files.curl("\(url)/api/v1/secrets", token: try server.state.credentials().adminToken).status == 200)
      // Without the CA, curl does not trust the server.
      let untrusted = try await _MeshTestSupport.Subprocess.run("curl", ["-s", "--max-time", "10", "\(url)/readyz"])
      #expect(untrusted.status == 60, "curl without --cacert: \(untrusted)")
    }
  }

  @Test("kubectl over TLS with the written kubeconfig: its request log shows https", .enabled(if: kubectlAvailable))
  func kubectlOverTLS() async throws {
    try await withServer { server, _ in
      let files = try await Files(server)
      defer { files.remove() }
      let config = try String(contentsOfFile: files.kubeconfig, encoding: .utf8)
      #expect(config.contains("certificate-authority-data:"))
      #expect(!config.contains("insecure-skip-tls-verify"))
      let raw = try await files.kubectl(["-v=6", "get", "--raw", "/api"])
      #expect(raw.status == 0, "\(raw)")
      #expect(raw.stderr.contains("GET \(try await server.url())/api"), "\(raw.stderr)")
      #expect(raw.stdout.contains("APIVersions"))
      let whoami = try await files.kubectl(["get", "namespaces", "-o", "name"])
      #expect(whoami.stdout.contains("namespace/default"), "\(whoami)")
    }
  }

  /// kubectl auth can-i, as each service account of Examples/kubernetes (impersonated by the admin), after
  /// applying its namespaces and RBAC: what the roles grant, and nothing more.
  @Test("kubectl auth can-i --as each component matches the roles in Examples/kubernetes", .enabled(if: kubectlAvailable))
  func canIMatchesExampleRoles() async throws {
    try await withServer { server, admin in
      let files = try await Files(server)
      defer { files.remove() }
      for file in ["01-namespaces.yaml", "02-rbac.yaml"] {
        let apply = try await files.kubectl(["apply", "-f", ExampleManifestsTests.directory.appendingPathComponent(file).path])
        #expect(apply.status == 0, "kubectl apply -f \(file): \(apply)")
      }
      let mirror = "system:serviceaccount:swiftmesh-multicluster:swiftmesh-mirror"
      let remote = "system:serviceaccount:swiftmesh-multicluster:swiftmesh-remote-mirror"
      let destination = "system:serviceaccount:swiftmesh:swiftmesh-destination"
      let identity = "system:serviceaccount:swiftmesh:swiftmesh-identity"
      let gateway = "system:serviceaccount:swiftmesh-multicluster:swiftmesh-gateway"
      let checks: [(user: String, args: [String], allowed: Bool)] = [
        (mirror, ["list", "secrets", "-n", "swiftmesh-multicluster"], true),
        (mirror, ["watch", "links.multicluster.swiftmesh.io", "-n", "swiftmesh-multicluster"], true),
        (mirror, ["patch", "links.multicluster.swiftmesh.io", "--subresource=status", "-n", "swiftmesh-multicluster"], true),
        (mirror, ["update", "links.multicluster.swiftmesh.io", "-n", "swiftmesh-multicluster"], false),
        (mirror, ["create", "services", "-n", "default"], true),
        (mirror, ["delete", "endpoints", "-n", "default"], true),
        (mirror, ["create", "secrets", "-n", "swiftmesh-multicluster"], false),
        (mirror, ["watch", "namespaces"], true),
        (mirror, ["create", "namespaces"], false),
        (remote, ["list", "services", "--all-namespaces"], true),
        (remote, ["watch", "endpoints", "-n", "default"], true),
        (remote, ["list", "secrets", "-n", "swiftmesh-multicluster"], false),
        (remote, ["create", "services", "-n", "default"], false),
        (destination, ["watch", "trafficsplits.split.swiftmesh.io", "--all-namespaces"], true),
        (destination, ["get", "serviceprofiles.policy.swiftmesh.io", "-n", "default"], true),
        (destination, ["list", "pods", "-n", "default"], true),
        (destination, ["list", "secrets", "-n", "default"], false),
        (destination, ["create", "services", "-n", "default"], false),
        (identity, ["create", "tokenreviews.authentication.k8s.io"], true),
        (identity, ["list", "services", "-n", "default"], false),
        (gateway, ["list", "secrets", "-n", "swiftmesh-multicluster"], false),
        (gateway, ["get", "services", "-n", "default"], false),
      ]
      for check in checks {
        let out = try await files.kubectl(["auth", "can-i"] + check.args + ["--as=\(check.user)"])
        #expect(out.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == (check.allowed ? "yes" : "no"),
                "kubectl auth can-i \(check.args.joined(separator: " ")) --as=\(check.user): \(out)")
        #expect(out.status == (check.allowed ? 0 : 1), "\(check.args) --as=\(check.user): \(out)")
      }

      // The mirror's own token (its kubeconfig, no impersonation) gets the same answers from a
      // SelfSubjectAccessReview, and may not impersonate anyone.
      let token = try await admin.requestToken(serviceAccount: "swiftmesh-mirror", namespace: "swiftmesh-multicluster")
      let mirrorConfig = files.dir.appendingPathComponent("mirror.kubeconfig").path
      try await server.kubeconfigYAML(token: token).write(toFile: mirrorConfig, atomically: true, encoding: .utf8)
      let whoami = try await files.kubectl(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"], kubeconfig: mirrorConfig)
      #expect(
        whoami.stdout == "\(mirror) [\"system:serviceaccounts\",\"system:serviceaccounts:swiftmesh-multicluster\",\"system:authenticated\"]",
        "kubectl auth whoami: \(whoami)")
      let own = try await files.kubectl(["auth", "can-i", "list", "secrets", "-n", "swiftmesh-multicluster"], kubeconfig: mirrorConfig)
      #expect(own.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "yes", "\(own)")
      let ownNo = try await files.kubectl(["auth", "can-i", "create", "secrets", "-n", "default"], kubeconfig: mirrorConfig)
      #expect(ownNo.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "no", "\(ownNo)")
      let impersonate = try await files.kubectl(["get", "secrets", "--as=\(remote)"], kubeconfig: mirrorConfig)
      #expect(impersonate.status != 0)
      #expect(
        impersonate.stderr.contains(
          "serviceaccounts \"swiftmesh-remote-mirror\" is forbidden: User \"\(mirror)\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"swiftmesh-multicluster\""),
        "\(impersonate.stderr)")
      // What the mirror may do, it does: list the Secrets with its own token.
      let list = try await files.kubectl(["-n", "swiftmesh-multicluster", "get", "secrets"], kubeconfig: mirrorConfig)
      #expect(list.status == 0, "\(list)")
    }
  }

  @Test("a token of an account with no binding: 403 on a list of Secrets, in the real server's words")
  func forbiddenWithoutBinding() async throws {
    try await withServer { server, admin in
      let token = try await Self.account("nobody", "default", server, admin)
      let client = try KubeClient(config: try await server.clientConfig(token: token))
      defer { Task { try? await client.shutdown() } }
      let user = "system:serviceaccount:default:nobody"
      await #expect {
        _ = try await client.list(Secret.self, namespace: "default")
      } throws: { error in
        guard let e = error as? KubeError, e.isForbidden, e.httpStatus == 403 else { return false }
        return e.status?.message
          == "secrets is forbidden: User \"\(user)\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
          && e.status?.reason == "Forbidden" && e.status?.details?.kind == "secrets"
      }
      await #expect {
        _ = try await client.list(Secret.self)
      } throws: { error in
        (error as? KubeError)?.status?.message
          == "secrets is forbidden: User \"\(user)\" cannot list resource \"secrets\" in API group \"\" at the cluster scope"
      }
      await #expect {
        _ = try await client.get(Link.self, name: "west", namespace: "default")
      } throws: { error in
        let status = (error as? KubeError)?.status
        return status?.message
          == "links.multicluster.swiftmesh.io \"west\" is forbidden: User \"\(user)\" cannot get resource \"links\" in API group \"multicluster.swiftmesh.io\" in the namespace \"default\""
          && status?.details?.group == "multicluster.swiftmesh.io" && status?.details?.name == "west"
      }
      // Discovery and access reviews of itself are every authenticated user's.
      _ = try await client.send(.GET, path: "/apis")

      if kubectlAvailable {
        let files = try await Files(server)
        defer { files.remove() }
        let config = files.dir.appendingPathComponent("nobody.kubeconfig").path
        try await server.kubeconfigYAML(token: token).write(toFile: config, atomically: true, encoding: .utf8)
        let get = try await files.kubectl(["get", "secrets"], kubeconfig: config)
        #expect(get.status != 0)
        #expect(
          get.stderr.contains(
            "Error from server (Forbidden): secrets is forbidden: User \"\(user)\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""),
          "\(get.stderr)")
      }

      // A RoleBinding gives exactly what its role says, in its namespace only.
      try server.state.create(group: "rbac.authorization.k8s.io", resource: "roles", namespace: "default", object: [
        "metadata": ["name": "read-one-secret"],
        "rules": [["apiGroups": [""], "resources": ["secrets"], "resourceNames": ["creds"], "verbs": ["get"]]],
      ])
      try server.state.create(group: "rbac.authorization.k8s.io", resource: "rolebindings", namespace: "default", object: [
        "metadata": ["name": "nobody-reads-creds"],
        "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-one-secret"],
        "subjects": [["kind": "ServiceAccount", "name": "nobody", "namespace": "default"]],
      ])
      try server.state.create(Secret(metadata: ObjectMeta(name: "creds", namespace: "default"), data: ["k": Data("v".utf8)]))
      try server.state.create(Secret(metadata: ObjectMeta(name: "other", namespace: "default"), data: ["k": Data("v".utf8)]))
      let creds = try await client.get(Secret.self, name: "creds", namespace: "default")
      #expect(creds.name == "creds")
      await #expect { _ = try await client.get(Secret.self, name: "other", namespace: "default") } throws: {
        ($0 as? KubeError)?.isForbidden == true
      }
      await #expect { _ = try await client.list(Secret.self, namespace: "default") } throws: {
        ($0 as? KubeError)?.isForbidden == true
      }
    }
  }

  @Test("python3-kubernetes over TLS: the admin lists, an unbound account gets 403 Forbidden, a bad token 401", .enabled(if: pythonKubernetesAvailable))
  func pythonClient() async throws {
    try await withServer { server, admin in
      let files = try await Files(server)
      defer { files.remove() }
      let nobody = files.dir.appendingPathComponent("nobody.kubeconfig").path
      try await server.kubeconfigYAML(token: try await Self.account("nobody", "default", server, admin))
        .write(toFile: nobody, atomically: true, encoding: .utf8)
      let bad = files.dir.appendingPathComponent("bad.kubeconfig").path
      try await server.kubeconfigYAML(token: "not-a-token").write(toFile: bad, atomically: true, encoding: .utf8)
      let script = """
        import json, sys
        from kubernetes import client, config
        from kubernetes.client.rest import ApiException
        for path in sys.argv[1:]:
            api = client.CoreV1Api(config.new_client_from_config(config_file=path))
            try:
                print("OK", len(api.list_namespaced_secret("default").items), flush=True)
            except ApiException as e:
                body = json.loads(e.body)
                print(e.status, body["reason"], body["message"], flush=True)
        """
      let out = try await Subprocess.run(systemPython, ["-c", script, files.kubeconfig, nobody, bad])
      #expect(out.status == 0, "\(out.stderr)")
      #expect(
        out.stdout.split(separator: "\n").map(String.init) == [
          "OK 0",
          "403 Forbidden secrets is forbidden: User \"system:serviceaccount:default:nobody\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\"",
          "401 Unauthorized Unauthorized",
        ], "\(out)")
    }
  }

  @Test("malformed, expired, deleted-account and other-audience tokens: 401, and the server goes on", .enabled(if: curlAvailable))
  func badTokens() async throws {
    try await withServer { server, admin in
      let files = try await Files(server)
      defer { files.remove() }
      let url = try await server.url() + "/api/v1/namespaces/default/services"
      let expired = "expired-token"
      server.state.registerServiceAccountToken(
        expired, for: ServiceAccountRef(name: "old", namespace: "default"), expires: Date().addingTimeInterval(-1))
      let deletedToken = try await Self.account("gone", "default", server, admin)
      try server.state.delete(ServiceAccount.self, name: "gone", namespace: "default")
      try server.state.create(ServiceAccount(metadata: ObjectMeta(name: "web", namespace: "default")))
      let otherAudience = try await admin.requestToken(
        serviceAccount: "web", namespace: "default", audiences: ["identity.swiftmesh.io"])
      let cases: [(String, String?, String?)] = [
        ("malformed", "eyJhbGciOiJSUzI1NiJ9.not-a-jwt", nil),
        ("spaces", "two words", nil),
        ("garbage", "swiftmesh-local.AAAA", nil),
        ("empty bearer", nil, "Authorization: Bearer "),
        ("basic auth", nil, "Authorization: Basic YWRtaW46YWRtaW4="),
        ("expired", expired, nil),
        ("deleted account", deletedToken, nil),
        ("another audience", otherAudience, nil),
      ]
      for (what, token, header) in cases {
        let answer = try await files.curl(url, token: token, header: header)
        #expect(answer.status == 401, "\(what): \(answer)")
        #expect((try? JSONValue.parse(Data(answer.body.utf8)))?["reason"] == "Unauthorized", "\(what): \(answer.body)")
        // Bad credentials are refused even where anonymous requests are welcome.
        #expect(try await files.curl(try await server.url() + "/readyz", token: token, header: header).status == 401, "\(what) on /readyz")
      }
      // The server goes on.
      _ = try await admin.list(KubeService.self, namespace: "default")
      #expect(try await files.curl(url, token: try server.state.credentials().adminToken).status == 200)
    }
  }

  @Test("SubjectAccessReview answers for another user, to those allowed to ask; impersonating groups takes the verb too")
  func subjectAccessReview() async throws {
    try await withServer { server, admin in
      try server.state.create(group: "rbac.authorization.k8s.io", resource: "clusterroles", object: [
        "metadata": ["name": "read-services"],
        "rules": [["apiGroups": [""], "resources": ["services"], "verbs": ["list"]]],
      ])
      try server.state.create(group: "rbac.authorization.k8s.io", resource: "clusterrolebindings", object: [
        "metadata": ["name": "auditors-read-services"],
        "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "read-services"],
        "subjects": [["kind": "Group", "name": "auditors"]],
      ])
      func review(_ client: KubeClient, user: String, groups: [String]) async throws -> JSONValue {
        let body: JSONValue = [
          "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
          "spec": [
            "user": .string(user), "groups": .array(groups.map { .string($0) }),
            "resourceAttributes": ["verb": "list", "resource": "services", "namespace": "default"],
          ],
        ]
        return try JSONValue.parse(
          try await client.send(.POST, path: "/apis/authorization.k8s.io/v1/subjectaccessreviews", body: body))
      }
      let yes = try await review(admin, user: "carol", groups: ["auditors"])
      #expect(yes["status"]?["allowed"] == true)
      #expect(yes["status"]?["reason"]?.stringValue?.contains("ClusterRoleBinding \"auditors-read-services\"") == true, "\(yes)")
      #expect(try await review(admin, user: "carol", groups: [])["status"]?["allowed"] == false)

      let token = try await Self.account("asker", "default", server, admin)
      let asker = try KubeClient(config: try await server.clientConfig(token: token))
      defer { Task { try? await asker.shutdown() } }
      await #expect { _ = try await review(asker, user: "carol", groups: ["auditors"]) } throws: {
        ($0 as? KubeError)?.isForbidden == true
      }
      // Impersonating a user and a group: both need the impersonate verb.
      try server.state.create(group: "rbac.authorization.k8s.io", resource: "clusterroles", object: [
        "metadata": ["name": "be-carol"],
        "rules": [["apiGroups": [""], "resources": ["users"], "resourceNames": ["carol"], "verbs": ["impersonate"]]],
      ])
      try server.state.create(group: "rbac.authorization.k8s.io", resource: "clusterrolebindings", object: [
        "metadata": ["name": "asker-is-carol"],
        "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "be-carol"],
        "subjects": [["kind": "ServiceAccount", "name": "asker", "namespace": "default"]],
      ])
      let files = try await Files(server)
      defer { files.remove() }
      let config = files.dir.appendingPathComponent("asker.kubeconfig").path
      try await server.kubeconfigYAML(token: token).write(toFile: config, atomically: true, encoding: .utf8)
      if kubectlAvailable {
        let asCarol = try await files.kubectl(["auth", "whoami", "--as", "carol", "-o", "jsonpath={.status.userInfo.username}"], kubeconfig: config)
        #expect(asCarol.stdout == "carol", "\(asCarol)")
      }
      if Self.curlAvailable {
        // (kubectl words a refused discovery or whoami request its own way; curl shows the Status.)
        let url = try await server.url() + "/api/v1/namespaces/default/services"
        let asCarol = try await _MeshTestSupport.Subprocess.run(
          "curl", ["-s", "--cacert", files.ca, "-H", "Authorization: Bearer \(token)", "-H", "Impersonate-User: carol", url])
        #expect(
          try JSONValue.parse(Data(asCarol.stdout.utf8))["message"]?.stringValue
            == "services is forbidden: User \"carol\" cannot list resource \"services\" in API group \"\" in the namespace \"default\"",
          "\(asCarol)")
        let asAuditor = try await _MeshTestSupport.Subprocess.run(
          "curl",
          ["-s", "--cacert", files.ca, "-H", "Authorization: Bearer \(token)", "-H", "Impersonate-User: carol",
           "-H", "Impersonate-Group: auditors", url])
        #expect(
          try JSONValue.parse(Data(asAuditor.stdout.utf8))["message"]?.stringValue
            == "groups \"auditors\" is forbidden: User \"system:serviceaccount:default:asker\" cannot impersonate resource \"groups\" in API group \"\" at the cluster scope",
          "\(asAuditor)")
      }
    }
  }

  @Test("insecure HTTP: no authentication on loopback, refused on any other address")
  func insecureHTTP() async throws {
    try await withServer(configure: { $0.transport = .insecureHTTP }) { server, client in
      #expect(try await server.url().hasPrefix("http://127.0.0.1:"))
      _ = try await client.list(Secret.self)
      #expect(try server.certificateAuthorityPEM() == nil)
      #expect(try await !server.kubeconfigYAML().contains("token:"))
    }
    let exposed = LocalKubeAPIServer(configuration: .defaults {
      $0.host = "0.0.0.0"
      $0.transport = .insecureHTTP
    })
    await #expect {
      try await exposed.run()
    } throws: { error in
      guard let e = error as? MeshError else { return false }
      return e.message.contains("refusing to serve plain HTTP without authentication on 0.0.0.0")
    }
  }

  @Test("a restarted server on the same state keeps its CA and admin token")
  func credentialsOutliveServer() async throws {
    let state = LocalKubeState()
    let first = try await withServer(state: state) { server, _ in try await server.clientConfig() }
    try await withServer(state: state) { server, _ in
      let second = try await server.clientConfig()
      #expect(first.certificateAuthorityPEM == second.certificateAuthorityPEM)
      #expect(first.token == second.token)
    }
  }
}

/// RBAC decisions on the stored roles and bindings, without the network.
@Suite("RBAC")
struct RBACTests {
  let state = LocalKubeState()
  let alice = UserInfo(name: "alice", groups: ["devs", "system:authenticated"])
  let web = UserInfo.serviceAccount(ServiceAccountRef(name: "web", namespace: "shop"))

  func role(_ kind: String, _ name: String, namespace: String? = nil, _ rules: [JSONValue]) throws {
    var metadata: JSONValue = ["name": .string(name)]
    if let namespace { metadata["namespace"] = .string(namespace) }
    try state.create(group: "rbac.authorization.k8s.io", resource: kind == "Role" ? "roles" : "clusterroles",
                     namespace: namespace, object: ["metadata": metadata, "rules": .array(rules)])
  }

  func bind(_ name: String, namespace: String? = nil, role: (kind: String, name: String), _ subjects: [JSONValue]) throws {
    var metadata: JSONValue = ["name": .string(name)]
    if let namespace { metadata["namespace"] = .string(namespace) }
    try state.create(
      group: "rbac.authorization.k8s.io", resource: namespace == nil ? "clusterrolebindings" : "rolebindings",
      namespace: namespace,
      object: [
        "metadata": metadata, "subjects": .array(subjects),
        "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": .string(role.kind), "name": .string(role.name)],
      ])
  }

  func allowed(_ user: UserInfo, _ a: AccessAttributes) -> Bool { state.authorize(user, a).allowed }

  @Test("verbs, groups, resources, subresources and resourceNames must all match")
  func ruleMatching() throws {
    try role("ClusterRole", "links-status", [
      ["apiGroups": ["multicluster.swiftmesh.io"], "resources": ["links/status"], "verbs": ["get", "patch"]],
      ["apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"], "verbs": ["get", "update"]],
      ["apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["*"]],
    ])
    try bind("alice", role: ("ClusterRole", "links-status"), [["kind": "User", "name": "alice"]])
    let g = "multicluster.swiftmesh.io"
    #expect(allowed(alice, .resource(verb: "patch", group: g, resource: "links", subresource: "status", namespace: "x", name: "w")))
    #expect(!allowed(alice, .resource(verb: "patch", group: g, resource: "links", namespace: "x", name: "w")))
    #expect(!allowed(alice, .resource(verb: "update", group: g, resource: "links", subresource: "status", namespace: "x", name: "w")))
    #expect(!allowed(alice, .resource(verb: "patch", group: "", resource: "links", subresource: "status", namespace: "x", name: "w")))
    #expect(allowed(alice, .resource(verb: "get", resource: "configmaps", namespace: "a", name: "settings")))
    #expect(!allowed(alice, .resource(verb: "get", resource: "configmaps", namespace: "a", name: "other")))
    #expect(!allowed(alice, .resource(verb: "list", resource: "configmaps", namespace: "a")), "resourceNames never allow a list")
    #expect(allowed(alice, .resource(verb: "update", group: "apps", resource: "deployments", subresource: "scale", namespace: "a", name: "d")))
    #expect(!allowed(alice, .resource(verb: "update", group: "apps", resource: "deployments", namespace: "a", name: "d")))
    #expect(!allowed(UserInfo(name: "bob", groups: ["system:authenticated"]), .resource(verb: "get", resource: "configmaps", namespace: "a", name: "settings")))
  }

  @Test("a RoleBinding grants in its namespace only, to a Role there or a ClusterRole; subjects by group and service account")
  func namespaces() throws {
    try role("ClusterRole", "read-services", [["apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]]])
    try role("Role", "write-endpoints", namespace: "shop", [["apiGroups": [""], "resources": ["endpoints"], "verbs": ["create"]]])
    try role("Role", "write-endpoints", namespace: "other", [["apiGroups": [""], "resources": ["endpoints"], "verbs": ["delete"]]])
    try bind("devs-read", namespace: "shop", role: ("ClusterRole", "read-services"), [["kind": "Group", "name": "devs"]])
    // A ServiceAccount subject without a namespace is in the binding's namespace.
    try bind("web-writes", namespace: "shop", role: ("Role", "write-endpoints"), [["kind": "ServiceAccount", "name": "web"]])
    #expect(allowed(alice, .resource(verb: "list", resource: "services", namespace: "shop")))
    #expect(!allowed(alice, .resource(verb: "list", resource: "services", namespace: "other")))
    #expect(!allowed(alice, .resource(verb: "list", resource: "services")), "a RoleBinding never grants at the cluster scope")
    #expect(allowed(web, .resource(verb: "create", resource: "endpoints", namespace: "shop")))
    #expect(!allowed(web, .resource(verb: "delete", resource: "endpoints", namespace: "shop")), "the Role of the binding's namespace")
    #expect(!allowed(web, .resource(verb: "create", resource: "endpoints", namespace: "other")))
    let sameNameElsewhere = UserInfo.serviceAccount(ServiceAccountRef(name: "web", namespace: "other"))
    #expect(!allowed(sameNameElsewhere, .resource(verb: "create", resource: "endpoints", namespace: "shop")))
    // Groups of every service account in a namespace.
    try bind("shop-accounts", namespace: "shop", role: ("ClusterRole", "read-services"), [["kind": "Group", "name": "system:serviceaccounts:shop"]])
    #expect(allowed(web, .resource(verb: "watch", resource: "services", namespace: "shop")))
    #expect(state.authorize(web, .resource(verb: "watch", resource: "services", namespace: "shop")).reason
              == "RBAC: allowed by RoleBinding \"shop-accounts/shop\" of ClusterRole \"read-services\" to Group \"system:serviceaccounts:shop\"")
  }

  @Test("system:masters passes everything; the defaults allow discovery and self-reviews to the authenticated only")
  func defaults() {
    #expect(allowed(.admin, .resource(verb: "delete", resource: "secrets", namespace: "kube-system", name: "x")))
    #expect(allowed(alice, .nonResource(verb: "get", path: "/apis/apps/v1")))
    #expect(allowed(alice, .nonResource(verb: "get", path: "/version")))
    #expect(!allowed(alice, .nonResource(verb: "post", path: "/apis")))
    #expect(!allowed(alice, .nonResource(verb: "get", path: "/metrics")))
    #expect(allowed(alice, .resource(verb: "create", group: "authorization.k8s.io", resource: "selfsubjectaccessreviews")))
    #expect(!allowed(alice, .resource(verb: "create", group: "authorization.k8s.io", resource: "subjectaccessreviews")))
    #expect(!allowed(.anonymous, .nonResource(verb: "get", path: "/api")))
    #expect(allowed(.anonymous, .nonResource(verb: "get", path: "/readyz")))
  }

  @Test("403 messages name the user, verb, resource, group and scope as the real server does")
  func forbiddenWording() {
    #expect(AccessAttributes.resource(verb: "list", resource: "secrets", namespace: "default").forbiddenMessage(for: web)
              == "secrets is forbidden: User \"system:serviceaccount:shop:web\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\"")
    #expect(AccessAttributes.resource(verb: "create", resource: "serviceaccounts", subresource: "token", namespace: "a", name: "b").forbiddenMessage(for: alice)
              == "serviceaccounts \"b\" is forbidden: User \"alice\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"a\"")
    #expect(AccessAttributes.resource(verb: "watch", group: "apps", resource: "deployments").forbiddenMessage(for: alice)
              == "deployments.apps is forbidden: User \"alice\" cannot watch resource \"deployments\" in API group \"apps\" at the cluster scope")
    #expect(AccessAttributes.nonResource(verb: "get", path: "/metrics").forbiddenMessage(for: alice)
              == "forbidden: User \"alice\" cannot get path \"/metrics\"")
  }
}
