import Foundation
import MeshCore
import MeshIdentity
@testable import MeshInstall
import Testing
import Yams
import _MeshTestSupport

/// `meshctl install`'s rendering: deterministic, complete, shaped by its options, and refusing bad input
/// with an error that names it.
@Suite("InstallManifest")
struct InstallManifestTests {
  /// A trust anchor and an issuer for `cluster` under it, written as `meshctl identity issuer` writes them.
  struct Fixture {
    var directory: TemporaryDirectory
    var issuerDir: String { directory.file("issuer") }
    var pki: TestPKI

    init(cluster: String? = "east") throws {
      directory = try TemporaryDirectory(prefix: "meshinstall")
      pki = try TestPKI(issuerClusterName: cluster)
      try pki.write(to: issuerDir)
    }

    func material() throws -> InstallManifest.KeyMaterial {
      try .load(issuerDirectory: issuerDir, injectorDirectory: directory.file("injector"))
    }
  }

  /// Every document of a YAML stream: (apiVersion, kind, namespace, name) and the parsed mapping.
  static func documents(_ yaml: String) throws -> [(id: String, node: Node)] {
    var result: [(String, Node)] = []
    let parser = try Parser(yaml: yaml)
    while let node = try parser.nextRoot() {
      let meta = node["metadata"]
      let id = [node["apiVersion"]?.string, node["kind"]?.string, meta?["namespace"]?.string, meta?["name"]?.string]
        .map { $0 ?? "-" }.joined(separator: " ")
      result.append((id, node))
    }
    return result
  }

  static func id(_ object: ManifestObject) -> String {
    "\(object.apiVersion) \(object.kind) \(object.namespace ?? "-") \(object.name)"
  }

  @Test("the YAML parses into exactly the objects the manifest lists, in order, CRDs first")
  func yamlParses() throws {
    let fixture = try Fixture()
    defer { fixture.directory.remove() }
    let manifest = try InstallManifest(options: .defaults(), material: try fixture.material())
    let parsed = try Self.documents(manifest.yaml)
    #expect(parsed.map(\.id) == manifest.objects.map(Self.id))
    #expect(manifest.parts.map(\.part) == InstallManifest.Part.allCases)
    let kinds = parsed.map { $0.node["kind"]?.string ?? "" }
    #expect(kinds.prefix(3) == ["CustomResourceDefinition", "CustomResourceDefinition", "CustomResourceDefinition"])
    #expect(!kinds.dropFirst(3).contains("CustomResourceDefinition"))
    for expected in [
      "apps/v1 Deployment swiftmesh swiftmesh-identity", "apps/v1 Deployment swiftmesh swiftmesh-destination",
      "apps/v1 Deployment swiftmesh swiftmesh-injector", "apps/v1 Deployment swiftmesh-multicluster swiftmesh-gateway",
      "apps/v1 Deployment swiftmesh-multicluster swiftmesh-mirror", "v1 Secret swiftmesh swiftmesh-identity-issuer",
      "v1 Secret swiftmesh swiftmesh-injector-tls", "v1 Service swiftmesh swiftmesh-injector",
      "admissionregistration.k8s.io/v1 MutatingWebhookConfiguration - swiftmesh-proxy-injector",
      "v1 ConfigMap swiftmesh swiftmesh-identity-trust-roots",
      "v1 ConfigMap swiftmesh-multicluster swiftmesh-identity-trust-roots",
    ] {
      #expect(parsed.contains { $0.id == expected }, "no \(expected)")
    }
    // Namespaces come before anything in them.
    let firstNamespaced = try #require(manifest.objects.firstIndex { $0.namespace != nil })
    let lastNamespace = try #require(manifest.objects.lastIndex { $0.kind == "Namespace" })
    #expect(lastNamespace < firstNamespaced)
  }

  @Test("the same inputs render the same bytes; another injector directory changes only the injector's objects")
  func deterministic() throws {
    let fixture = try Fixture()
    defer { fixture.directory.remove() }
    let options = InstallOptions.defaults { $0.highAvailability = true }
    let first = try InstallManifest(options: options, material: try fixture.material()).yaml
    let second = try InstallManifest(options: options, material: try fixture.material()).yaml
    #expect(first == second)
    var other = try fixture.material()
    other.webhook = try WebhookMaterial.generate()
    let regenerated = try InstallManifest(options: options, material: other)
    let changed = zip(
      try InstallManifest(options: options, material: try fixture.material()).objects, regenerated.objects
    ).filter { $0 != $1 }.map { $0.0.name }
    #expect(changed == ["swiftmesh-injector-tls", "swiftmesh-proxy-injector"])
  }

  @Test("the issuer Secret and the trust roots hold the issuer directory's files; the webhook's caBundle is the injector's CA")
  func keyMaterial() throws {
    let fixture = try Fixture()
    defer { fixture.directory.remove() }
    let material = try fixture.material()
    let parsed = try Self.documents(try InstallManifest(options: .defaults(), material: material).yaml)
    func node(_ id: String) throws -> Node { try #require(parsed.first { $0.id == id }?.node, "no \(id)") }
    func decoded(_ value: Node?) -> String? {
      value?.string.flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) }
    }
    let issuer = try node("v1 Secret swiftmesh swiftmesh-identity-issuer")
    let issuerFiles = try ["ca.crt", "issuer.crt", "issuer.key"].map {
      try String(contentsOfFile: fixture.issuerDir + "/" + $0, encoding: .utf8)
    }
    #expect(decoded(issuer["data"]?["ca.crt"]) == issuerFiles[0])
    #expect(decoded(issuer["data"]?["issuer.crt"]) == issuerFiles[1])
    #expect(decoded(issuer["data"]?["issuer.key"]) == issuerFiles[2])
    for namespace in ["swiftmesh", "swiftmesh-multicluster"] {
      let roots = try node("v1 ConfigMap \(namespace) swiftmesh-identity-trust-roots")
      #expect(roots["data"]?["ca.crt"]?.string == issuerFiles[0], "\(namespace)")
    }
    let tls = try node("v1 Secret swiftmesh swiftmesh-injector-tls")
    #expect(tls["type"]?.string == "kubernetes.io/tls")
    #expect(decoded(tls["data"]?["tls.key"]) == material.webhook.keyPEM)
    let webhook = try node("admissionregistration.k8s.io/v1 MutatingWebhookConfiguration - swiftmesh-proxy-injector")
    let hook = try #require(webhook["webhooks"]?[0])
    #expect(decoded(hook["clientConfig"]?["caBundle"]) == material.webhook.caPEM)
    #expect(hook["clientConfig"]?["service"]?["name"]?.string == "swiftmesh-injector")
    #expect(hook["clientConfig"]?["service"]?["path"]?.string == "/inject")
    #expect(hook["failurePolicy"]?.string == "Ignore")
    #expect(hook["sideEffects"]?.string == "None")
    #expect(hook["rules"]?[0]?["operations"]?[0]?.string == "CREATE")
    #expect(hook["rules"]?[0]?["resources"]?[0]?.string == "pods")
    let excluded = try #require(hook["namespaceSelector"]?["matchExpressions"]?[0])
    #expect(excluded["key"]?.string == "swiftmesh.io/is-control-plane" && excluded["operator"]?.string == "NotIn")
    let controlPlane = try node("v1 Namespace - swiftmesh")
    #expect(controlPlane["metadata"]?["labels"]?["swiftmesh.io/is-control-plane"]?.string == "true")
    let injector = try node("apps/v1 Deployment swiftmesh swiftmesh-injector")
    let container = try #require(injector["spec"]?["template"]?["spec"]?["containers"]?[0])
    #expect(container["args"]?.array().compactMap(\.string) == [
      "injector", "--listen", "0.0.0.0:8443", "--tls-cert", "/var/run/swiftmesh/injector/tls.crt",
      "--tls-key", "/var/run/swiftmesh/injector/tls.key", "--trust-domain=cluster.local",
      "--cluster-domain=cluster.local", "--proxy-version=0.1.0", "--proxy-image=ghcr.io/swiftmesh/mesh-proxy:0.1.0",
      "--proxy-init-image=ghcr.io/swiftmesh/mesh-proxy:0.1.0", "--log-level=info",
    ])
    let service = try node("v1 Service swiftmesh swiftmesh-injector")
    #expect(service["spec"]?["ports"]?[0]?["port"]?.int == 443)
  }

  @Test("registry, version and cluster domain reach every image and address; --ha scales and spreads")
  func options() throws {
    let fixture = try Fixture()
    defer { fixture.directory.remove() }
    let options = InstallOptions.defaults {
      $0.imageRegistry = "registry.example.com:5000/mesh"
      $0.version = "1.2.3-rc.1"
      $0.clusterDomain = "east.example"
      $0.highAvailability = true
    }
    let manifest = try InstallManifest(options: options, material: try fixture.material())
    let parsed = try Self.documents(manifest.yaml)
    var images: Set<String> = []
    for (id, node) in parsed where id.hasPrefix("apps/v1 Deployment") {
      let spec = try #require(node["spec"])
      let container = try #require(spec["template"]?["spec"]?["containers"]?[0])
      images.insert(container["image"]?.string ?? "")
      let name = node["metadata"]?["name"]?.string ?? ""
      let scaled = name != "swiftmesh-mirror"
      #expect(spec["replicas"]?.int == (scaled ? 3 : 1), "\(name)")
      #expect((spec["template"]?["spec"]?["affinity"] != nil) == scaled, "\(name)")
      #expect(
        parsed.contains { $0.id == "policy/v1 PodDisruptionBudget \(node["metadata"]?["namespace"]?.string ?? "") \(name)" } == scaled,
        "\(name): PodDisruptionBudget")
    }
    #expect(images == [
      "registry.example.com:5000/mesh/mesh-controller:1.2.3-rc.1", "registry.example.com:5000/mesh/mesh-proxy:1.2.3-rc.1",
      "registry.example.com:5000/mesh/mesh-mirror:1.2.3-rc.1",
    ])
    #expect(manifest.yaml.contains("--identity-server=swiftmesh-identity.swiftmesh.svc.east.example:8080"))
    #expect(manifest.yaml.contains("--cluster-domain=east.example"))
    #expect(!manifest.yaml.contains("svc.cluster.local"))
    // The trust domain is the issuer's, whatever the DNS domain.
    #expect(manifest.yaml.contains("swiftmesh-gateway.swiftmesh-multicluster.serviceaccount.identity.swiftmesh.cluster.local"))
    let single = try InstallManifest(options: .defaults(), material: try fixture.material())
    #expect(!single.objects.contains { $0.kind == "PodDisruptionBudget" })
  }

  @Test("--crds and --control-plane split the manifest; uninstall names every object, the webhook first")
  func scopes() throws {
    let fixture = try Fixture()
    defer { fixture.directory.remove() }
    let material = try fixture.material()
    let all = try InstallManifest(options: .defaults(), material: material)
    let crds = try InstallManifest(options: .defaults { $0.scope = .crds }, material: nil)
    let controlPlane = try InstallManifest(options: .defaults { $0.scope = .controlPlane }, material: material)
    #expect(crds.objects.map(\.kind) == ["CustomResourceDefinition", "CustomResourceDefinition", "CustomResourceDefinition"])
    #expect(crds.objects + controlPlane.objects == all.objects)
    #expect(crds.yaml + "---\n" + controlPlane.yaml == all.yaml)

    let uninstall = try Self.documents(InstallManifest.uninstallYAML(scope: .all))
    // The webhook first (nothing waits for a departing injector), then the rest in reverse apply order.
    let webhook = "admissionregistration.k8s.io/v1 MutatingWebhookConfiguration - swiftmesh-proxy-injector"
    #expect(uninstall.first?.id == webhook)
    // With --ha or without: the PodDisruptionBudgets too (`kubectl delete --ignore-not-found` skips absent ones).
    let highlyAvailable = try InstallManifest(options: .defaults { $0.highAvailability = true }, material: material)
    #expect(uninstall.dropFirst().map(\.id) == highlyAvailable.objects.reversed().map(Self.id).filter { $0 != webhook })
    #expect(uninstall.allSatisfy { $0.node["spec"] == nil && $0.node["data"] == nil })
    let uninstallControlPlane = try Self.documents(InstallManifest.uninstallYAML(scope: .controlPlane))
    #expect(!uninstallControlPlane.contains { $0.id.contains("CustomResourceDefinition") })
  }

  // MARK: - bad input

  static func error(_ body: () throws -> Void) -> MeshError? {
    do {
      try body()
      return nil
    } catch let error as MeshError {
      return error
    } catch {
      Issue.record("not a MeshError: \(error)")
      return nil
    }
  }

  @Test("a missing issuer directory, or none, is an error naming it")
  func missingIssuer() throws {
    let missing = Self.error { _ = try IssuerMaterial.load(directory: "/nonexistent/issuer-east") }
    #expect(missing?.message.contains("--issuer-dir /nonexistent/issuer-east: no such directory") == true, "\(String(describing: missing))")
    let none = Self.error { _ = try InstallManifest(options: .defaults(), material: nil) }
    #expect(none?.message.contains("--issuer-dir is required") == true, "\(String(describing: none))")
  }

  @Test("an issuer not signed by the anchor in ca.crt, or with another's key, is refused")
  func foreignIssuer() throws {
    let fixture = try Fixture()
    defer { fixture.directory.remove() }
    let other = try TestPKI(issuerClusterName: "east")
    let dir = fixture.directory.file("foreign")
    try fixture.pki.write(to: dir, issuer: other.issuer)
    let unsigned = Self.error { _ = try IssuerMaterial.load(directory: dir) }
    #expect(unsigned?.message.contains("is not signed by the trust anchor") == true, "\(String(describing: unsigned))")

    try PEMFiles.write(PEMFiles.pem(other.anchor.privateKey), to: fixture.issuerDir + "/issuer.key", secret: true)
    let wrongKey = Self.error { _ = try IssuerMaterial.load(directory: fixture.issuerDir) }
    #expect(wrongKey?.message.contains("is not the key of") == true, "\(String(describing: wrongKey))")
  }

  @Test("the cluster name comes from the issuer unless given, and must agree with it")
  func clusterName() throws {
    let east = try Fixture(cluster: "east")
    defer { east.directory.remove() }
    let material = try east.material()
    let derived = try InstallManifest(options: .defaults(), material: material)
    #expect(derived.yaml.contains("clusterName: east"))
    let mismatch = Self.error { _ = try InstallManifest(options: .defaults { $0.clusterName = "west" }, material: material) }
    #expect(mismatch?.message.contains("the issuer was made for cluster east") == true, "\(String(describing: mismatch))")

    let unnamed = try Fixture(cluster: nil)
    defer { unnamed.directory.remove() }
    let required = Self.error { _ = try InstallManifest(options: .defaults(), material: try unnamed.material()) }
    #expect(required?.message.contains("--cluster-name is required") == true, "\(String(describing: required))")
    let given = try InstallManifest(options: .defaults { $0.clusterName = "west" }, material: try unnamed.material())
    #expect(given.yaml.contains("clusterName: west"))
  }

  @Test("flag values that cannot go into the manifests are refused, naming the flag", arguments: [
    ("--image-registry", InstallOptions.defaults { $0.imageRegistry = "Registry With Spaces" }),
    ("--image-registry", InstallOptions.defaults { $0.imageRegistry = "ghcr.io/swiftmesh/" }),
    ("--version", InstallOptions.defaults { $0.version = "v1:latest" }),
    ("--version", InstallOptions.defaults { $0.version = "" }),
    ("--cluster-name", InstallOptions.defaults { $0.clusterName = "East_1" }),
    ("--cluster-domain", InstallOptions.defaults { $0.clusterDomain = "cluster..local" }),
  ])
  func badValues(flag: String, options: InstallOptions) throws {
    let error = Self.error { try options.validate() }
    #expect(error?.message.hasPrefix(flag) == true, "\(String(describing: error))")
    let rendering = Self.error { _ = try InstallManifest(options: options, material: nil) }
    #expect(rendering?.message.hasPrefix(flag) == true)
  }

  @Test("an injector directory is generated once, then read back; a partial or foreign one is refused")
  func injectorDirectory() throws {
    let directory = try TemporaryDirectory(prefix: "meshinstall")
    defer { directory.remove() }
    let dir = directory.file("injector")
    let generated = try WebhookMaterial.loadOrGenerate(directory: dir)
    #expect(try WebhookMaterial.loadOrGenerate(directory: dir) == generated)
    let other = try WebhookMaterial.generate()
    try PEMFiles.write(other.caPEM, to: dir + "/ca.crt")
    let foreign = Self.error { _ = try WebhookMaterial.loadOrGenerate(directory: dir) }
    #expect(foreign?.message.contains("is not signed by") == true, "\(String(describing: foreign))")
    try FileManager.default.removeItem(atPath: dir + "/tls.key")
    let partial = Self.error { _ = try WebhookMaterial.loadOrGenerate(directory: dir) }
    #expect(partial?.message.contains("but not tls.key") == true, "\(String(describing: partial))")
  }

  // MARK: - meshctl

  /// Where `swift build` put meshctl: next to this test bundle.
  static let meshctl = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    .appendingPathComponent("meshctl").path
  static let meshctlBuilt = FileManager.default.isExecutableFile(atPath: meshctl)

  @Test("meshctl install with bad input exits non-zero, says why on stderr and prints nothing", .enabled(if: meshctlBuilt))
  func cliRefuses() async throws {
    let fixture = try Fixture()
    defer { fixture.directory.remove() }
    let cases: [([String], String)] = [
      (["install"], "--issuer-dir is required"),
      (["install", "--issuer-dir", fixture.directory.file("missing")], "no such directory"),
      (["install", "--issuer-dir", fixture.issuerDir, "--cluster-name", "west"], "made for cluster east"),
      (["install", "--issuer-dir", fixture.issuerDir, "--version", "bad tag"], "--version 'bad tag'"),
      (["install", "--issuer-dir", fixture.issuerDir, "--cluster-domain", "bad domain"], "--cluster-domain 'bad domain'"),
      (["install", "--crds", "--control-plane"], "exclude each other"),
      (["install", "--issuer-dir", fixture.issuerDir, "--replicas", "3"], "Unknown option '--replicas'"),
    ]
    for (arguments, message) in cases {
      let result = try await Subprocess.run(Self.meshctl, arguments)
      #expect(result.status != 0, "\(arguments): \(result)")
      #expect(result.stdout.isEmpty, "\(arguments) printed: \(result.stdout.prefix(200))")
      #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
    }
    let good = try await Subprocess.run(Self.meshctl, ["install", "--issuer-dir", fixture.issuerDir, "--injector-tls-dir", fixture.directory.file("injector")])
    #expect(good.status == 0, "\(good.stderr)")
    #expect(good.stdout == (try InstallManifest(options: .defaults(), material: try fixture.material())).yaml)
  }
}

/// The scalars the manifests write read back as the strings they were, to a YAML 1.1 reader (Yams's
/// default resolver: yes/no booleans, octal and hex integers, sexagesimals, timestamps).
@Suite("YAML scalars")
struct YAMLScalarTests {
  @Test("every scalar reads back as the same string", arguments: [
    "true", "Yes", "on", "y", "N", "null", "~", "1", "0755", "0x1F", "1e3", "1:20", "2001-12-14", "-1", ".inf",
    "-.5", "+1", "-", "=", "--gateway", "0.1.0", "203.0.113.10", "a: b", "a:", ":a", "x=1",
    "ghcr.io/swiftmesh/mesh-proxy:0.1.0", "", "has space", "quote\"s", "back\\slash", "line\nbreak", "#comment",
  ])
  func roundTrip(value: String) throws {
    let node = try #require(try Yams.compose(yaml: "key: \(YAML.scalar(value))\n")?["key"])
    #expect(node.tag.description == Tag.Name.str.rawValue, "\(value) read as \(node.tag): \(YAML.scalar(value))")
    #expect(node.string == value)
  }

  @Test("plain where nothing is ambiguous")
  func plain() {
    for value in ["--gateway", "0.1.0", "ghcr.io/swiftmesh/mesh-proxy:0.1.0", "swiftmesh", "--listen=0.0.0.0:8443"] {
      #expect(YAML.scalar(value) == value)
    }
  }
}
