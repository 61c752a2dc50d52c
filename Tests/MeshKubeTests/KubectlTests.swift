import Foundation
import MeshCore
import MeshKube
import MeshKubeLocal
import Testing
import _MeshTestSupport

/// kubectl and python3-kubernetes judge the embedded server.
@Suite("Real clients against the embedded server")
struct RealClientTests {
  /// Runs `body` with a server (HTTPS, authentication and RBAC, as by default) and the kubeconfig file it
  /// wrote (its CA and the admin token).
  func withKubeconfig(_ body: @Sendable (LocalKubeAPIServer, String, URL) async throws -> Void) async throws {
    try await withServer(configure: {
      $0.bookmarkInterval = .milliseconds(500)
    }) { server, _ in
      let dir = try temporaryDirectory()
      defer { try? FileManager.default.removeItem(at: dir) }
      let path = dir.appendingPathComponent("kubeconfig").path
      try await server.kubeconfigYAML().write(toFile: path, atomically: true, encoding: .utf8)
      try await body(server, path, dir)
    }
  }

  func kubectl(_ kubeconfig: String, _ dir: URL, _ args: [String]) -> [String] {
    ["--kubeconfig", kubeconfig, "--cache-dir", dir.appendingPathComponent("cache").path] + args
  }

  @Test("kubectl apply -f (Service, Endpoints, Link), get, get -o yaml, re-apply, delete", .enabled(if: kubectlAvailable))
  func kubectlApplyGetDelete() async throws {
    try await withKubeconfig { server, kubeconfig, dir in
      let manifest = dir.appendingPathComponent("app.yaml")
      func writeManifest(port: Int) throws {
        try """
          apiVersion: v1
          kind: Service
          metadata:
            name: web
            namespace: default
            labels: {app: web}
          spec:
            selector: {app: web}
            ports:
            - name: http
              port: \(port)
              targetPort: 8080
          ---
          apiVersion: v1
          kind: Endpoints
          metadata:
            name: web
            namespace: default
          subsets:
          - addresses: [{ip: 192.0.2.1}, {ip: 192.0.2.2}]
            ports: [{name: http, port: 8080}]
          ---
          apiVersion: multicluster.swiftmesh.io/v1alpha1
          kind: Link
          metadata:
            name: east
            namespace: default
          spec:
            targetClusterName: east
            gatewayAddresses: [192.0.2.10]
            gatewayPort: 4143
            probeSpec: {path: /ready, port: 4191, period: 3s}
          """.write(to: manifest, atomically: true, encoding: .utf8)
      }
      try writeManifest(port: 80)
      let apply = try await Subprocess.run(kubectlPath, kubectl(kubeconfig, dir, ["apply", "-f", manifest.path]))
      #expect(apply.status == 0, "kubectl apply failed: \(apply.stderr)")
      #expect(apply.stdout.contains("service/web created"), "\(apply.stdout)")
      #expect(apply.stdout.contains("link.multicluster.swiftmesh.io/east created"), "\(apply.stdout)")
      let svc = try #require(server.state.get(KubeService.self, name: "web", namespace: "default"))
      #expect(svc.spec?.ports?.first?.port == 80)
      #expect(svc.metadata.annotations?["kubectl.kubernetes.io/last-applied-configuration"] != nil)
      #expect(server.state.get(Endpoints.self, name: "web", namespace: "default")?.subsets?.first?.addresses?.count == 2)
      #expect(server.state.get(Link.self, name: "east", namespace: "default")?.spec.gatewayPort == 4143)

      let get = try await Subprocess.run(kubectlPath, kubectl(kubeconfig, dir, ["get", "services"]))
      #expect(get.status == 0, "\(get.stderr)")
      #expect(get.stdout.contains("web"), "\(get.stdout)")

      let yaml = try await Subprocess.run(kubectlPath, kubectl(kubeconfig, dir, ["get", "link", "east", "-o", "yaml"]))
      #expect(yaml.status == 0, "\(yaml.stderr)")
      #expect(yaml.stdout.contains("targetClusterName: east"), "\(yaml.stdout)")
      #expect(yaml.stdout.contains("kind: Link"))

      // Re-apply with a change: kubectl PATCHes with a strategic merge patch.
      try writeManifest(port: 81)
      let reapply = try await Subprocess.run(kubectlPath, kubectl(kubeconfig, dir, ["apply", "-f", manifest.path]))
      #expect(reapply.status == 0, "\(reapply.stderr)")
      #expect(reapply.stdout.contains("service/web configured"), "\(reapply.stdout)")
      let patched = try #require(server.state.get(KubeService.self, name: "web", namespace: "default"))
      #expect(patched.spec?.ports?.count == 1)
      #expect(patched.spec?.ports?.first?.port == 81)
      #expect(patched.spec?.ports?.first?.targetPort == .int(8080))
      #expect(patched.spec?.clusterIP == svc.spec?.clusterIP)

      let delete = try await Subprocess.run(kubectlPath, kubectl(kubeconfig, dir, ["delete", "service", "web"]))
      #expect(delete.status == 0, "\(delete.stderr)")
      #expect(delete.stdout.contains("deleted"))
      #expect(server.state.get(KubeService.self, name: "web", namespace: "default") == nil)
    }
  }

  @Test("kubectl apply of a new CRD, then an object of it", .enabled(if: kubectlAvailable))
  func kubectlCRD() async throws {
    try await withKubeconfig { server, kubeconfig, dir in
      let manifest = dir.appendingPathComponent("crd.yaml")
      try """
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata:
          name: gadgets.example.com
        spec:
          group: example.com
          scope: Namespaced
          names: {kind: Gadget, plural: gadgets, singular: gadget}
          versions:
          - name: v1
            served: true
            storage: true
            schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
        """.write(to: manifest, atomically: true, encoding: .utf8)
      let crd = try await Subprocess.run(kubectlPath, kubectl(kubeconfig, dir, ["apply", "-f", manifest.path]))
      #expect(crd.status == 0, "\(crd.stderr)")
      let object = dir.appendingPathComponent("gadget.yaml")
      try "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {size: 3}\n"
        .write(to: object, atomically: true, encoding: .utf8)
      let apply = try await Subprocess.run(kubectlPath, kubectl(kubeconfig, dir, ["apply", "-f", object.path]))
      #expect(apply.status == 0, "\(apply.stderr)")
      let get = try await Subprocess.run(kubectlPath, kubectl(kubeconfig, dir, ["get", "gadgets", "-o", "jsonpath={.items[0].spec.size}"]))
      #expect(get.stdout == "3", "\(get.stdout) \(get.stderr)")
      _ = server
    }
  }

  @Test("kubectl get -w prints a change made through the Swift API", .enabled(if: kubectlAvailable))
  func kubectlWatch() async throws {
    try await withKubeconfig { server, kubeconfig, dir in
      try server.state.create(service("first", "default"))
      let watch = try Subprocess(kubectlPath, kubectl(kubeconfig, dir, ["get", "services", "-w", "-o", "name"]))
      defer { watch.terminate() }
      try await eventually("kubectl lists the first service") { watch.stdout.contains("service/first") }
      try await eventually("kubectl's watch is open") { server.state.activeWatchCount >= 1 }
      try server.state.create(service("second", "default"))
      try await eventually("kubectl prints the new service") { watch.stdout.contains("service/second") }
      watch.terminate()
      #expect(!watch.stderr.contains("error"), "\(watch.stderr)")
    }
  }

  @Test("kubectl with a wrong token reports Unauthorized", .enabled(if: kubectlAvailable))
  func kubectlUnauthorized() async throws {
    try await withKubeconfig { server, kubeconfig, dir in
      let bad = dir.appendingPathComponent("bad").path
      try await server.kubeconfigYAML(token: "wrong")
        .write(toFile: bad, atomically: true, encoding: .utf8)
      let get = try await Subprocess.run(kubectlPath, kubectl(bad, dir, ["get", "services"]))
      #expect(get.status != 0)
      #expect(get.stderr.contains("Unauthorized") || get.stderr.contains("credentials"), "\(get.stderr)")
    }
  }

  @Test(
    "kubectl create namespace | serviceaccount | secret | configmap | token (protobuf bodies); other kinds refused clearly",
    .enabled(if: kubectlAvailable))
  func kubectlCreateProtobuf() async throws {
    try await withKubeconfig { server, kubeconfig, dir in
      func run(_ args: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        try await Subprocess.run(kubectlPath, kubectl(kubeconfig, dir, args))
      }
      for args in [
        ["create", "namespace", "pb"], ["-n", "pb", "create", "serviceaccount", "backend"],
        ["-n", "pb", "create", "secret", "generic", "creds", "--from-literal=user=ada", "--from-literal=pass=s3cr=t"],
        ["-n", "pb", "create", "configmap", "settings", "--from-literal=mode=fast"],
      ] {
        let out = try await run(args)
        #expect(out.status == 0, "kubectl \(args): \(out)")
      }
      let secret = try #require(server.state.get(Secret.self, name: "creds", namespace: "pb"))
      #expect(secret.data?["user"] == Data("ada".utf8))
      #expect(secret.data?["pass"] == Data("s3cr=t".utf8))
      #expect(secret.type == "Opaque")
      let configMap = try server.state.get(resource: "configmaps", namespace: "pb", name: "settings")
      #expect(configMap["data"]?["mode"]?.stringValue == "fast")
      #expect(server.state.get(ServiceAccount.self, name: "backend", namespace: "pb") != nil)

      // kubectl create token: a TokenRequest; the token passes a TokenReview for its audience only.
      let token = try await run(["-n", "pb", "create", "token", "backend", "--audience", "identity.swiftmesh.io", "--duration", "1h"])
      #expect(token.status == 0, "\(token)")
      let value = token.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
      #expect(!value.isEmpty)
      let client = try KubeClient(config: try await server.clientConfig())
      defer { Task { try? await client.shutdown() } }
      let account = try await TokenReviewValidator(client: client, audiences: ["identity.swiftmesh.io"]).validate(token: value)
      #expect(account == ServiceAccountRef(name: "backend", namespace: "pb"))
      await #expect {
        _ = try await TokenReviewValidator(client: client, audiences: ["other.example"]).validate(token: value)
      } throws: { "\($0)".contains("is invalid for the target audiences") }
      await #expect {
        _ = try await TokenReviewValidator(client: client).validate(token: value)
      } throws: { "\($0)".contains("is invalid for the target audiences") }

      let missing = try await run(["-n", "pb", "create", "token", "nobody"])
      #expect(missing.status != 0)
      #expect(missing.stderr.contains("serviceaccounts \"nobody\" not found"), "\(missing.stderr)")
      let short = try await run(["-n", "pb", "create", "token", "backend", "--duration", "5m"])
      #expect(short.status != 0)
      #expect(short.stderr.contains("less than 10 minutes"), "\(short.stderr)")
      // A kind whose protobuf form is not decoded here: refused with the way out, nothing half-created.
      let service = try await run(["-n", "pb", "create", "service", "clusterip", "web", "--tcp=80:8080"])
      #expect(service.status != 0)
      #expect(service.stderr.contains("send JSON (kubectl apply does)"), "\(service.stderr)")
      #expect(server.state.get(KubeService.self, name: "web", namespace: "pb") == nil)

      // The token dies with its service account.
      let delete = try await run(["-n", "pb", "delete", "serviceaccount", "backend"])
      #expect(delete.status == 0, "\(delete)")
      await #expect {
        _ = try await TokenReviewValidator(client: client, audiences: ["identity.swiftmesh.io"]).validate(token: value)
      } throws: { "\($0)".contains("has been deleted") }
    }
  }

  @Test("python3-kubernetes lists and watches Services", .enabled(if: pythonKubernetesAvailable))
  func pythonWatch() async throws {
    try await withKubeconfig { server, kubeconfig, dir in
      try server.state.create(service("before", "py"))
      let script = """
        import sys
        from kubernetes import client, config, watch
        config.load_kube_config(config_file=sys.argv[1])
        v1 = client.CoreV1Api()
        print("LIST", ",".join(s.metadata.name for s in v1.list_namespaced_service("py").items), flush=True)
        w = watch.Watch()
        for ev in w.stream(v1.list_namespaced_service, namespace="py", timeout_seconds=60):
            o = ev["object"]
            print(ev["type"], o.metadata.name, o.metadata.resource_version, (o.metadata.labels or {}).get("v", "-"), flush=True)
            if ev["type"] == "DELETED":
                break
        print("DONE", flush=True)
        """
      let python = try Subprocess(systemPython, ["-c", script, kubeconfig])
      defer { python.terminate() }
      try await eventually("python lists") { python.stdout.contains("LIST before") || !python.process.isRunning }
      #expect(python.stdout.contains("LIST before"), "\(python.stderr)")
      try await eventually("python's initial ADDED") { python.stdout.contains("ADDED before") || !python.process.isRunning }
      try server.state.create(service("during", "py"))
      try server.state.mergePatch(KubeService.self, name: "during", namespace: "py", patch: ["metadata": ["labels": ["v": "2"]]])
      try server.state.delete(KubeService.self, name: "during", namespace: "py")
      let status = try await python.wait(timeout: .seconds(30))
      #expect(status == 0, "\(python.stderr)")
      let lines = python.stdout.split(separator: "\n").map(String.init)
      let events = lines.filter { $0.hasPrefix("ADDED during") || $0.hasPrefix("MODIFIED during") || $0.hasPrefix("DELETED during") }
      #expect(events.count == 3, "\(lines)")
      #expect(events.map { $0.split(separator: " ")[0] } == ["ADDED", "MODIFIED", "DELETED"])
      #expect(events.dropFirst().first?.hasSuffix(" 2") == true)
      #expect(lines.last == "DONE")
    }
  }
}
