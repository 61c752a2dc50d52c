import AsyncHTTPClient
import Foundation
import Logging
import MeshInject
import MeshKube
import MeshKubeLocal
import NIOCore
import NIOHTTP1
import NIOSSL
import Testing
import _MeshTestSupport

/// `kubectl create -f` on the embedded API server, which calls the injection webhook: kubectl and the
/// stored pods judge.
@Suite("Injection webhook with kubectl", .enabled(if: kubectlAvailable), .timeLimit(.minutes(3)))
struct WebhookTests {
  static func podYAML(_ name: String, namespace: String = "shop", annotations: [String: String] = [:], hostNetwork: Bool = false) -> String {
    var text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: \(name)\n  namespace: \(namespace)\n"
    if !annotations.isEmpty {
      text += "  annotations:\n" + annotations.sorted { $0.key < $1.key }.map { "    \($0.key): \"\($0.value)\"\n" }.joined()
    }
    text += "spec:\n"
    if hostNetwork { text += "  hostNetwork: true\n" }
    text += "  containers:\n  - name: app\n    image: app:1\n    ports:\n    - containerPort: 8080\n"
    return text
  }

  func create(_ cluster: Cluster, _ yaml: String) async throws -> Subprocess.Output {
    let result = try await cluster.kubectl(["create", "-f", "-"], input: yaml)
    #expect(result.status == 0, "kubectl create: \(result)")
    return result
  }

  func storedPod(_ cluster: Cluster, _ name: String, namespace: String = "shop") throws -> JSONValue {
    try cluster.state.get(resource: "pods", namespace: namespace, name: name)
  }

  @Test("swiftmesh.io/inject: enabled on the pod: stored with the init container and the sidecar")
  func podAnnotation() async throws {
    try await withCluster { cluster in
      try cluster.registerWebhook()
      _ = try await cluster.kubectl(["create", "namespace", "shop"])
      _ = try await create(cluster, Self.podYAML("web", annotations: ["swiftmesh.io/inject": "enabled"]))
      let pod = try storedPod(cluster, "web")
      #expect(containerNames(pod).initContainers == ["swiftmesh-init", "swiftmesh-proxy"])
      #expect(containerNames(pod).containers == ["app"])
      #expect(pod["metadata"]?["labels"]?["swiftmesh.io/control-plane-ns"] == "swiftmesh")
      #expect(pod["metadata"]?["annotations"]?["swiftmesh.io/identity-trust-roots"] == .string(cluster.trustRootsPEM))
      // kubectl reads back what the webhook added.
      let names = try await cluster.kubectl(["-n", "shop", "get", "pod", "web", "-o", "jsonpath={.spec.initContainers[*].name}"])
      #expect(names.stdout == "swiftmesh-init swiftmesh-proxy", "\(names)")
      let policy = try await cluster.kubectl(["-n", "shop", "get", "pod", "web", "-o", "jsonpath={.spec.initContainers[1].restartPolicy}"])
      #expect(policy.stdout == "Always", "\(policy)")
    }
  }

  @Test("enabled on the namespace: its pods are injected, with its config annotations; disabled and hostNetwork pods are stored untouched")
  func namespaceAnnotation() async throws {
    try await withCluster { cluster in
      try cluster.registerWebhook()
      _ = try await cluster.kubectl(["create", "namespace", "shop"])
      let annotate = try await cluster.kubectl([
        "annotate", "namespace", "shop", "swiftmesh.io/inject=enabled", "config.swiftmesh.io/skip-outbound-ports=3306",
      ])
      #expect(annotate.status == 0, "\(annotate)")
      _ = try await create(cluster, Self.podYAML("web"))
      let web = try storedPod(cluster, "web")
      #expect(containerNames(web).initContainers == ["swiftmesh-init", "swiftmesh-proxy"])
      let initArgs = web["spec"]?["initContainers"]?.arrayValue?.first?["args"]?.arrayValue ?? []
      #expect(initArgs.contains("--outbound-ports-to-ignore=3306"), "\(initArgs)")

      let disabled = Self.podYAML("batch", annotations: ["swiftmesh.io/inject": "disabled"])
      _ = try await create(cluster, disabled)
      let host = Self.podYAML("agent", hostNetwork: true)
      _ = try await create(cluster, host)
      for (name, yaml) in [("batch", disabled), ("agent", host)] {
        let pod = try storedPod(cluster, name)
        let sent = try #require(try KubeManifest.documents(yaml).first)
        #expect(pod["spec"] == sent["spec"], "\(name) changed: \(pod)")
        #expect(pod["metadata"]?["annotations"] == sent["metadata"]?["annotations"])
        #expect(pod["metadata"]?["labels"] == nil)
      }
    }
  }

  @Test("a webhook reached through its service reference (the Service's port to its endpoint)")
  func serviceReference() async throws {
    try await withCluster { cluster in
      let port = try #require(URLComponents(string: cluster.injectorURL)?.port)
      try cluster.state.create(resource: "services", namespace: "swiftmesh", object: [
        "metadata": ["name": "swiftmesh-injector"],
        "spec": ["selector": ["app": "injector"], "ports": [["name": "https", "port": 443, "targetPort": .int(Int64(port))]]],
      ])
      try cluster.state.create(resource: "endpoints", namespace: "swiftmesh", object: [
        "metadata": ["name": "swiftmesh-injector"],
        "subsets": [["addresses": [["ip": "127.0.0.1"]], "ports": [["name": "https", "port": .int(Int64(port))]]]],
      ])
      try cluster.registerWebhook(
        failurePolicy: "Fail", service: ["namespace": "swiftmesh", "name": "swiftmesh-injector", "path": "/inject", "port": 443])
      _ = try await create(cluster, Self.podYAML("web", namespace: "default", annotations: ["swiftmesh.io/inject": "enabled"]))
      #expect(containerNames(try storedPod(cluster, "web", namespace: "default")).initContainers == ["swiftmesh-init", "swiftmesh-proxy"])
    }
  }

  @Test("the control plane's namespace is left alone by the namespace selector")
  func controlPlaneNamespace() async throws {
    try await withCluster { cluster in
      try cluster.registerWebhook()
      _ = try await create(cluster, Self.podYAML("identity", namespace: "swiftmesh", annotations: ["swiftmesh.io/inject": "enabled"]))
      #expect(containerNames(try storedPod(cluster, "identity", namespace: "swiftmesh")).initContainers.isEmpty)
    }
  }

  @Test("a bad config annotation: the pod is created uninjected and kubectl shows the webhook's warning")
  func badConfigAnnotation() async throws {
    try await withCluster { cluster in
      try cluster.registerWebhook()
      _ = try await cluster.kubectl(["create", "namespace", "shop"])
      let result = try await create(cluster, Self.podYAML(
        "web", annotations: ["swiftmesh.io/inject": "enabled", "config.swiftmesh.io/proxy-uid": "root"]))
      #expect(result.stderr.contains("proxy not injected: config.swiftmesh.io/proxy-uid: 'root'"), "\(result)")
      #expect(containerNames(try storedPod(cluster, "web")).initContainers.isEmpty)
    }
  }

  @Test("with the injector down, failurePolicy Ignore still creates the pod; Fail refuses it with the reason")
  func injectorDown() async throws {
    try await withCluster { cluster in
      try cluster.registerWebhook(failurePolicy: "Ignore")
      _ = try await cluster.kubectl(["create", "namespace", "shop"])
      try await cluster.stopInjector()
      _ = try await create(cluster, Self.podYAML("web", annotations: ["swiftmesh.io/inject": "enabled"]))
      #expect(containerNames(try storedPod(cluster, "web")).initContainers.isEmpty)

      try cluster.state.delete(group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", name: "swiftmesh-proxy-injector")
      try cluster.registerWebhook(failurePolicy: "Fail")
      let refused = try await cluster.kubectl(["create", "-f", "-"], input: Self.podYAML("api", annotations: ["swiftmesh.io/inject": "enabled"]))
      #expect(refused.status != 0)
      #expect(refused.stderr.contains("failed calling webhook \"injector.swiftmesh.io\""), "\(refused)")
      #expect((try? storedPod(cluster, "api")) == nil)
    }
  }

  @Test("a webhook whose certificate the caBundle does not trust is a failed call")
  func untrustedCertificate() async throws {
    try await withCluster { cluster in
      try cluster.registerWebhook(failurePolicy: "Fail")
      // Swap the caBundle for another CA's.
      var configuration = try cluster.state.get(group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", name: "swiftmesh-proxy-injector")
      var webhook = try #require(configuration["webhooks"]?.arrayValue?.first)
      webhook["clientConfig"]?["caBundle"] = .string(Data(try WebhookCertificates().caPEM.utf8).base64EncodedString())
      configuration["webhooks"] = [webhook]
      try cluster.state.update(group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", name: "swiftmesh-proxy-injector", object: configuration)
      let refused = try await cluster.kubectl(["create", "-f", "-"], input: Self.podYAML("web", namespace: "default", annotations: ["swiftmesh.io/inject": "enabled"]))
      #expect(refused.status != 0)
      #expect(refused.stderr.contains("failed calling webhook"), "\(refused)")
    }
  }

  @Test("the injector answers a malformed review with 400 and the reason, other methods 405, other paths 404, and keeps serving")
  func malformedReviews() async throws {
    try await withCluster { cluster in
      var tls = TLSConfiguration.makeClientConfiguration()
      tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(cluster.certificates.caPEM.utf8)))
      let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
      func post(_ body: String, path: String = "/inject", method: HTTPMethod = .POST) async throws -> (Int, String) {
        var request = HTTPClientRequest(url: cluster.injectorURL.replacingOccurrences(of: "/inject", with: path))
        request.method = method
        if method == .POST { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await client.execute(request, timeout: .seconds(10))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 20)))
      }
      do {
        let cases: [(String, String)] = [
          ("{not json", "the body is not JSON"),
          (#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"1"}}"#, "expected apiVersion admission.k8s.io/v1"),
          (#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "no request"),
          (#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#, "request.uid is missing"),
          (#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","kind":{"kind":"Pod"},"object":[]}}"#,
           "request.object of a CREATE is not an object"),
        ]
        for (body, reason) in cases {
          let (status, text) = try await post(body)
          #expect(status == 400, "\(body): \(status) \(text)")
          #expect(text.contains(reason), "\(body): \(text)")
        }
        #expect(try await post("", method: .GET).0 == 405)
        #expect(try await post("{}", path: "/mutate").0 == 404)
        // Still serving: a well-formed review of a pod without the annotation is allowed, unpatched, its uid echoed.
        let review = #"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"abc-1","operation":"CREATE","namespace":"default","kind":{"group":"","version":"v1","kind":"Pod"},"object":{"metadata":{"name":"p"},"spec":{"containers":[]}}}}"#
        let (status, text) = try await post(review)
        #expect(status == 200)
        let answer = try JSONValue.parse(Data(text.utf8))
        #expect(answer["response"]?["uid"] == "abc-1")
        #expect(answer["response"]?["allowed"] == true)
        #expect(answer["response"]?["patch"] == nil)
        try await client.shutdown()
      } catch {
        try? await client.shutdown()
        throw error
      }
    }
  }

  @Test("mesh-controller injector: trust anchors from the control plane's ConfigMap, namespaces from the API; SIGTERM stops it",
        .enabled(if: built("mesh-controller") != nil))
  func controllerBinary() async throws {
    try await withCluster { cluster in
      let pem = try String(contentsOfFile: golden("ca.crt"), encoding: .utf8)
      try cluster.state.create(resource: "configmaps", namespace: "swiftmesh", object: [
        "metadata": ["name": "swiftmesh-identity-trust-roots"], "data": ["ca.crt": .string(pem)],
      ])
      let cert = cluster.directory.file("tls.crt")
      let key = cluster.directory.file("tls.key")
      try cluster.certificates.chainPEM.write(toFile: cert, atomically: true, encoding: .utf8)
      try cluster.certificates.keyPEM.write(toFile: key, atomically: true, encoding: .utf8)
      let controller = try #require(built("mesh-controller"))

      // Bad files are immediate, clear errors.
      let missing = try await Subprocess.run(controller, ["injector", "--tls-cert", "/nonexistent/tls.crt", "--tls-key", key])
      #expect(missing.status != 0)
      #expect(missing.stderr.contains("--tls-cert /nonexistent/tls.crt: cannot read it"), "\(missing)")

      let injector = try BackgroundProcess(controller, [
        "injector", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key, "--kubeconfig", cluster.kubeconfig,
      ])
      defer { injector.terminate() }
      try await injector.waitForOutput(containing: "injector listening")
      let port = try #require(injector.printed.firstMatch(of: /address=127\.0\.0\.1:(\d+)/).map { String($0.1) })
      try cluster.registerWebhook(failurePolicy: "Fail", url: "https://127.0.0.1:\(port)/inject")
      _ = try await cluster.kubectl(["create", "namespace", "shop"])
      _ = try await cluster.kubectl(["annotate", "namespace", "shop", "swiftmesh.io/inject=enabled"])
      _ = try await create(cluster, Self.podYAML("web"))
      let pod = try storedPod(cluster, "web")
      #expect(containerNames(pod).initContainers == ["swiftmesh-init", "swiftmesh-proxy"])
      #expect(pod["metadata"]?["annotations"]?["swiftmesh.io/identity-trust-roots"] == .string(pem))
      try await injector.waitForOutput(containing: "injected")
      // A client holding a connection open (as the API server keeps them alive) does not hold up SIGTERM.
      let idle = try BackgroundProcess("openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-ign_eof"])
      defer { idle.terminate() }
      try await idle.waitForOutput(containing: "Verify return code")
      #expect(idle.isRunning, "\(idle.printed)")
      let started = ContinuousClock.now
      #expect(try await injector.stop(timeout: .seconds(10)) == 0, "\(injector.printed)")
      #expect(ContinuousClock.now - started < .seconds(5))
    }
  }

  @Test("the webhook's patch, decoded, is what the patch builder returns for the same pod")
  func reviewPatch() async throws {
    let handler = AdmissionReviewHandler(injector: testInjector, logger: .init(label: "test")) { _ in [:] }
    let pod = workload("Pod", annotations: ["swiftmesh.io/inject": "enabled"])
    let review: JSONValue = [
      "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
      "request": ["uid": "u-2", "operation": "CREATE", "namespace": "shop", "kind": ["group": "", "version": "v1", "kind": "Pod"], "object": pod],
    ]
    let answer = await handler.answer(review.serialized())
    #expect(answer.status == 200)
    let response = try JSONValue.parse(answer.body)["response"]
    #expect(response?["uid"] == "u-2")
    #expect(response?["patchType"] == "JSONPatch")
    let encoded = try #require(response?["patch"]?.stringValue)
    let patch = try JSONValue.parse(try #require(Data(base64Encoded: encoded)))
    guard case .inject(let expected) = try testInjector.decide(pod) else { Issue.record("not injected"); return }
    #expect(try JSONPatch(json: patch) == expected)
  }
}
