import Foundation
import MeshIdentity
import MeshInstall
import MeshKube
import MeshKubeLocal
import Testing
import _MeshTestSupport

/// `Examples/kubernetes/`: the files are `meshctl install`'s output, every document parses and names itself,
/// the CRDs match the Swift resource types, the containers use only flags the executables declare, and kubectl
/// accepts every file.
@Suite("Examples/kubernetes manifests")
struct ExampleManifestsTests {
  static let directory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Examples/kubernetes")

  /// The YAML files, in apply order (their names are numbered).
  static func files() throws -> [URL] {
    try FileManager.default.contentsOfDirectory(atPath: directory.path)
      .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }
      .sorted()
      .map { directory.appendingPathComponent($0) }
  }

  struct Document: Sendable {
    var file: String
    var index: Int
    var object: JSONValue
    var apiVersion: String { object["apiVersion"]?.stringValue ?? "" }
    var kind: String { object["kind"]?.stringValue ?? "" }
    var name: String { object["metadata"]?["name"]?.stringValue ?? "" }
    var namespace: String? { object["metadata"]?["namespace"]?.stringValue }
    var label: String { "\(file)#\(index) \(kind) \(name)" }
  }

  /// Every non-empty document of `file`, as JSON values (duplicate keys are an error, as for kubectl).
  static func documents(_ file: URL) throws -> [Document] {
    let text = try String(contentsOf: file, encoding: .utf8)
    return try KubeManifest.documents(text, source: file.lastPathComponent).enumerated().map {
      Document(file: file.lastPathComponent, index: $0.offset, object: $0.element)
    }
  }

  static func allDocuments() throws -> [Document] {
    try files().flatMap { try documents($0) }
  }

  /// The options and cluster the examples are rendered for.
  static let exampleOptions = InstallOptions.defaults { $0.clusterName = "east" }

  /// What each example file holds: one part of `meshctl install`'s output, without the objects that carry an
  /// installation's keys (the issuer Secret, the trust roots, the injector's certificate and webhook).
  static func renderedExamples() throws -> [String: String] {
    let directory = try TemporaryDirectory(prefix: "examples")
    defer { directory.remove() }
    try TestPKI(issuerClusterName: "east").write(to: directory.path)
    let material = try InstallManifest.KeyMaterial.load(issuerDirectory: directory.path)
    let manifest = try InstallManifest(options: exampleOptions, material: material)
    var files: [String: String] = [:]
    for (part, objects) in manifest.parts {
      let header = """
        # Generated: `meshctl install --cluster-name east` (part \(part.rawValue)), without the objects that carry
        # an installation's keys. Install with `meshctl install`; regenerate this file with
        # SWIFTMESH_REGENERATE_EXAMPLES=1 swift test --filter ExampleManifestsTests.

        """
      files[part.fileName] = header + objects.filter { !$0.carriesKeyMaterial }.map(\.yaml).joined(separator: "---\n")
    }
    return files
  }

  @Test("the files are meshctl install's output, part by part, without key material")
  func generated() throws {
    let expected = try Self.renderedExamples()
    if ProcessInfo.processInfo.environment["SWIFTMESH_REGENERATE_EXAMPLES"] == "1" {
      for (name, text) in expected {
        try text.write(to: Self.directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
      }
    }
    #expect(Set(try Self.files().map(\.lastPathComponent)) == Set(expected.keys))
    for (name, text) in expected.sorted(by: { $0.key < $1.key }) {
      let actual = try? String(contentsOf: Self.directory.appendingPathComponent(name), encoding: .utf8)
      #expect(
        actual == text,
        "Examples/kubernetes/\(name) differs from meshctl install's output: SWIFTMESH_REGENERATE_EXAMPLES=1 swift test --filter ExampleManifestsTests")
    }
  }

  @Test("every document of every file has apiVersion, kind and metadata.name; no object twice")
  func documentsParse() throws {
    let files = try Self.files()
    #expect(files.count == InstallManifest.Part.allCases.count, "expected the numbered manifests in \(Self.directory.path), found \(files.map(\.lastPathComponent))")
    var seen: Set<String> = []
    for file in files {
      let documents = try Self.documents(file)
      #expect(!documents.isEmpty, "\(file.lastPathComponent) holds no document")
      for document in documents {
        #expect(document.apiVersion.isEmpty == false, "\(document.label): no apiVersion")
        #expect(document.kind.isEmpty == false, "\(document.label): no kind")
        #expect(document.name.isEmpty == false, "\(document.label): no metadata.name")
        let key = "\(document.apiVersion)/\(document.kind)/\(document.namespace ?? "")/\(document.name)"
        #expect(seen.insert(key).inserted, "\(document.label): defined twice")
      }
    }
  }

  @Test("the CRDs name Link, ServiceProfile and TrafficSplit as the Swift types do, and apply comes first")
  func crdNames() throws {
    let files = try Self.files()
    let crdFile = try #require(files.first)
    let crds = try Self.documents(crdFile)
    #expect(crds.allSatisfy { $0.kind == "CustomResourceDefinition" }, "the first file must hold the CRDs only")
    func check<R: KubeResource>(_ type: R.Type) throws {
      let crd = try #require(crds.first { $0.name == "\(R.plural).\(R.group)" }, "no CRD \(R.plural).\(R.group)")
      let spec = crd.object["spec"]
      #expect(crd.apiVersion == "apiextensions.k8s.io/v1")
      #expect(spec?["group"]?.stringValue == R.group)
      #expect(spec?["names"]?["kind"]?.stringValue == R.kind)
      #expect(spec?["names"]?["plural"]?.stringValue == R.plural)
      #expect(spec?["scope"]?.stringValue == (R.namespaced ? "Namespaced" : "Cluster"))
      let versions = spec?["versions"]?.arrayValue ?? []
      #expect(versions.map { $0["name"]?.stringValue } == [R.version], "\(R.kind): versions")
      #expect(versions.first?["served"] == .bool(true) && versions.first?["storage"] == .bool(true))
    }
    try check(Link.self)
    try check(ServiceProfile.self)
    try check(TrafficSplit.self)
    #expect(crds.count == 3)
  }

  /// Every field the Swift type writes is declared by the CRD's schema with a matching type.
  @Test("the CRD schemas declare every field of fully populated Link, ServiceProfile and TrafficSplit objects")
  func schemasCoverTheSwiftTypes() throws {
    let crds = try Self.documents(try #require(try Self.files().first))
    func schema(_ plural: String) throws -> JSONValue {
      let crd = try #require(crds.first { $0.name.hasPrefix("\(plural).") })
      return try #require(crd.object["spec"]?["versions"]?.arrayValue?.first?["schema"]?["openAPIV3Schema"])
    }
    let link = Link(
      metadata: ObjectMeta(name: "west", namespace: "swiftmesh-multicluster"),
      spec: .init(
        targetClusterName: "west", targetClusterDomain: "cluster.local", clusterCredentialsSecret: "cluster-credentials-west",
        gatewayAddresses: ["192.0.2.1"], gatewayPort: 4143,
        gatewayIdentity: "swiftmesh-gateway.swiftmesh-multicluster.serviceaccount.identity.swiftmesh.cluster.local",
        probeSpec: .init(path: "/ready", port: 4191, period: "3s", timeout: "30s", failureThreshold: 3),
        selector: LabelSelector(
          matchLabels: ["mirror.swiftmesh.io/exported": "true"],
          matchExpressions: [.init(key: "tier", operator: "In", values: ["web"])])),
      status: .init(
        mirroredServices: ["default/backend-west"],
        conditions: [Condition(type: "Ready", status: "True", reason: "Mirrored", message: "ok", lastTransitionTime: "2025-01-01T00:00:00Z")]))
    let profile = ServiceProfile(
      metadata: ObjectMeta(name: "backend.default.svc.cluster.local", namespace: "default"),
      spec: .init(
        routes: [
          .init(
            name: "GET /items",
            condition: .init(method: "GET", pathRegex: "/items", all: [.init(method: "GET")], any: [.init(pathRegex: "/a")], not: .init(method: "POST")),
            responseClasses: [.init(condition: .init(status: .init(min: 500, max: 599)), isFailure: true)],
            isRetryable: true, timeout: "250ms")
        ],
        retryBudget: .init(retryRatio: 0.2, minRetriesPerSecond: 10, ttl: "10s")))
    let split = TrafficSplit(
      metadata: ObjectMeta(name: "backend-split", namespace: "default"),
      spec: .init(service: "backend", backends: [.init(service: "backend", weight: 50), .init(service: "backend-west", weight: 50)]))

    var problems: [String] = []
    Self.conform(try JSONValue.encoding(link), to: try schema(Link.plural), at: "Link", &problems)
    Self.conform(try JSONValue.encoding(profile), to: try schema(ServiceProfile.plural), at: "ServiceProfile", &problems)
    Self.conform(try JSONValue.encoding(split), to: try schema(TrafficSplit.plural), at: "TrafficSplit", &problems)
    #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
  }

  /// Checks `value` against an OpenAPI v3 schema (types, declared properties, required fields).
  static func conform(_ value: JSONValue, to schema: JSONValue, at path: String, _ problems: inout [String]) {
    if schema["x-kubernetes-preserve-unknown-fields"] == .bool(true) { return }
    let type = schema["type"]?.stringValue
    switch value {
    case .object(let object):
      guard type == "object" else { problems.append("\(path): an object, schema says \(type ?? "nothing")"); return }
      for required in schema["required"]?.arrayValue?.compactMap(\.stringValue) ?? [] where object[required] == nil {
        problems.append("\(path).\(required): required by the schema, not written by the Swift type")
      }
      let properties = schema["properties"]?.objectValue
      for (key, member) in object.sorted(by: { $0.key < $1.key }) {
        if path.split(separator: ".").count == 1, ["apiVersion", "kind", "metadata"].contains(key) { continue }
        if let properties {
          guard let sub = properties[key] else { problems.append("\(path).\(key): not in the schema"); continue }
          conform(member, to: sub, at: "\(path).\(key)", &problems)
        } else if let additional = schema["additionalProperties"], case .object = additional {
          conform(member, to: additional, at: "\(path).\(key)", &problems)
        } else {
          problems.append("\(path).\(key): the schema declares no properties")
        }
      }
    case .array(let items):
      guard type == "array" else { problems.append("\(path): an array, schema says \(type ?? "nothing")"); return }
      guard let itemSchema = schema["items"] else { problems.append("\(path): no items schema"); return }
      for (index, item) in items.enumerated() { conform(item, to: itemSchema, at: "\(path)[\(index)]", &problems) }
    case .string(let string):
      if type != "string" { problems.append("\(path): a string, schema says \(type ?? "nothing")") }
      if let allowed = schema["enum"]?.arrayValue?.compactMap(\.stringValue), !allowed.contains(string) {
        problems.append("\(path): '\(string)' not in \(allowed)")
      }
    case .int:
      if type != "integer" && type != "number" { problems.append("\(path): an integer, schema says \(type ?? "nothing")") }
    case .double:
      if type != "number" { problems.append("\(path): a number, schema says \(type ?? "nothing")") }
    case .bool:
      if type != "boolean" { problems.append("\(path): a boolean, schema says \(type ?? "nothing")") }
    case .null:
      break
    }
  }

  @Test("the gateway Service carries what `meshctl multicluster link` reads")
  func gatewayService() throws {
    let documents = try Self.allDocuments()
    let gateway = try #require(
      documents.first { $0.kind == "Service" && $0.name == "swiftmesh-gateway" && $0.namespace == "swiftmesh-multicluster" })
    let ports = gateway.object["spec"]?["ports"]?.arrayValue ?? []
    #expect(ports.first { $0["name"]?.stringValue == "mc-gateway" }?["port"]?.intValue == 4143)
    #expect(ports.first { $0["name"]?.stringValue == "mc-probe" }?["port"]?.intValue == 4191)
    #expect(
      gateway.object["metadata"]?["annotations"]?["mirror.swiftmesh.io/gateway-identity"]?.stringValue
        == "swiftmesh-gateway.swiftmesh-multicluster.serviceaccount.identity.swiftmesh.cluster.local")
    // Each Deployment runs under the ServiceAccount its identity names, defined in the same files.
    for deployment in documents where deployment.kind == "Deployment" {
      let account = deployment.object["spec"]?["template"]?["spec"]?["serviceAccountName"]?.stringValue
      #expect(account == deployment.name, "\(deployment.label): serviceAccountName \(account ?? "none")")
      #expect(
        documents.contains { $0.kind == "ServiceAccount" && $0.name == account && $0.namespace == deployment.namespace },
        "\(deployment.label): no ServiceAccount \(account ?? "")")
    }
  }

  // MARK: - flags

  /// Where `swift build` put the executables: next to this test bundle.
  static let binDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
  static let executablesBuilt = ["mesh-controller", "mesh-proxy", "mesh-mirror"].allSatisfy {
    FileManager.default.isExecutableFile(atPath: binDirectory.appendingPathComponent($0).path)
  }

  @Test("containers use only flags their executable declares (its --help)", .enabled(if: executablesBuilt))
  func containerFlags() async throws {
    var checked = 0
    for document in try Self.allDocuments() where document.kind == "Deployment" {
      for container in document.object["spec"]?["template"]?["spec"]?["containers"]?.arrayValue ?? [] {
        let command = container["command"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let args = container["args"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let executable = try #require(command.first, "\(document.label): no command")
        let subcommands = args.prefix { !$0.hasPrefix("-") }
        let help = try await _MeshTestSupport.Subprocess.run(
          Self.binDirectory.appendingPathComponent(executable).path, Array(subcommands) + ["--help"])
        // An unknown subcommand's --help prints the executable's own help.
        let usage = "USAGE: \(([executable] + subcommands).joined(separator: " "))"
        #expect(help.status == 0 && help.stdout.contains(usage), "\(executable) \(subcommands.joined(separator: " ")) --help: \(help)")
        for arg in args where arg.hasPrefix("--") {
          let flag = String(arg.prefix { $0 != "=" })
          let declared = help.stdout.split(whereSeparator: { " \n\t,[]<>".contains($0) }).contains { $0 == flag }
          #expect(declared, "\(document.label): \(executable) \(subcommands.joined(separator: " ")) has no \(flag)")
          checked += 1
        }
      }
    }
    #expect(checked > 20)
  }

  // MARK: - kubectl

  /// Stand-ins for the built-in kinds the embedded server does not serve (it serves the mesh's objects only),
  /// registered as schemaless custom resources so kubectl can map them.
  @Test(
    "kubectl apply accepts every file, dry-run and for real, against the embedded API; a second apply changes nothing",
    .enabled(if: kubectlAvailable))
  func kubectlAccepts() async throws {
    let files = try Self.files()
    try await withServer { server, _ in
      let dir = try temporaryDirectory()
      defer { try? FileManager.default.removeItem(at: dir) }
      let kubeconfig = dir.appendingPathComponent("kubeconfig").path
      try await server.kubeconfigYAML().write(toFile: kubeconfig, atomically: true, encoding: .utf8)
      func kubectl(_ args: [String]) async throws -> _MeshTestSupport.Subprocess.Output {
        try await _MeshTestSupport.Subprocess.run(
          kubectlPath, ["--kubeconfig", kubeconfig, "--cache-dir", dir.appendingPathComponent("cache").path] + args)
      }

      let crds = try #require(files.first)
      let applied = try await kubectl(["apply", "-f", crds.path])
      #expect(applied.status == 0, "kubectl apply -f \(crds.lastPathComponent): \(applied)")
      for plural in ["links.multicluster.swiftmesh.io", "serviceprofiles.policy.swiftmesh.io", "trafficsplits.split.swiftmesh.io"] {
        #expect(applied.stdout.contains("customresourcedefinition.apiextensions.k8s.io/\(plural)"), "\(applied.stdout)")
      }

      for file in files {
        let documents = try Self.documents(file)
        let dryRun = try await kubectl(["apply", "--dry-run=client", "-f", file.path])
        #expect(dryRun.status == 0, "kubectl apply --dry-run=client -f \(file.lastPathComponent): \(dryRun)")
        let lines = dryRun.stdout.split(separator: "\n").filter { $0.hasSuffix("(dry run)") }
        #expect(lines.count == documents.count, "\(file.lastPathComponent): \(documents.count) documents, kubectl said:\n\(dryRun.stdout)")
      }

      // For real, in order: every document is created, and stored as sent.
      for file in files {
        let apply = try await kubectl(["apply", "-f", file.path])
        #expect(apply.status == 0, "kubectl apply -f \(file.lastPathComponent): \(apply)")
      }
      let deployments = try await kubectl(["get", "deployments", "-A", "-o", "name"])
      #expect(
        Set(deployments.stdout.split(separator: "\n").map(String.init))
          == ["deployment.apps/swiftmesh-identity", "deployment.apps/swiftmesh-destination",
              "deployment.apps/swiftmesh-gateway", "deployment.apps/swiftmesh-mirror", "deployment.apps/swiftmesh-injector"],
        "\(deployments)")
      let args = try await kubectl([
        "-n", "swiftmesh", "get", "deployment", "swiftmesh-identity", "-o", "jsonpath={.spec.template.spec.containers[0].args}",
      ])
      #expect(args.stdout.contains("--token-review"), "\(args)")
      let binding = try await kubectl(["get", "clusterrolebindings", "-o", "name"])
      #expect(binding.stdout.contains("clusterrolebinding.rbac.authorization.k8s.io/swiftmesh-identity"), "\(binding)")
      for file in files {
        let again = try await kubectl(["apply", "-f", file.path])
        #expect(again.status == 0, "\(again)")
        let changed = again.stdout.split(separator: "\n").filter { !$0.hasSuffix(" unchanged") }
        #expect(changed.isEmpty, "a second apply of \(file.lastPathComponent) changed: \(changed)")
      }
    }
  }
}
