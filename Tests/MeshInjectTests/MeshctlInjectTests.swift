import Foundation
import MeshInject
import MeshKube
import MeshKubeLocal
import Testing
import _MeshTestSupport

/// `meshctl inject` and `uninject`, the built binary on manifest files and standard input.
@Suite("meshctl inject and uninject", .enabled(if: built("meshctl") != nil), .timeLimit(.minutes(3)))
struct MeshctlInjectTests {
  func meshctl(_ args: [String], input: String? = nil) async throws -> Subprocess.Output {
    try await Subprocess.run(try #require(built("meshctl")), args, input: input.map { Data($0.utf8) })
  }

  func documents(_ text: String) throws -> [JSONValue] { try KubeManifest.documents(text) }

  @Test("by default the pod templates get the annotation; the Service passes through untouched; each object is reported")
  func annotates() async throws {
    let result = try await meshctl(["inject", golden("web.yaml")])
    #expect(result.status == 0, "\(result)")
    let original = try documents(try String(contentsOfFile: golden("web.yaml"), encoding: .utf8))
    let output = try documents(result.stdout)
    #expect(output.count == 3)
    #expect(output[0]["spec"]?["template"]?["metadata"]?["annotations"]?["swiftmesh.io/inject"] == "enabled")
    #expect(output[0]["spec"]?["template"]?["spec"] == original[0]["spec"]?["template"]?["spec"])
    #expect(output[1] == original[1])
    #expect(output[2]["spec"]?["jobTemplate"]?["spec"]?["template"]?["metadata"]?["annotations"]?["swiftmesh.io/inject"] == "enabled")
    #expect(result.stderr.contains("deployment/web annotated"), "\(result.stderr)")
    #expect(result.stderr.contains("cronjob/report annotated"), "\(result.stderr)")
    // What the webhook would skip is reported, not annotated.
    let list = try await meshctl(["inject", golden("list.json")])
    #expect(list.status == 0, "\(list)")
    #expect(list.stderr.contains("statefulset/db annotated"), "\(list.stderr)")
    #expect(list.stderr.contains("pod/node-agent skipped: the pod uses the host's network"), "\(list.stderr)")
  }

  @Test("a List in JSON, --manual -o json: the StatefulSet is injected, the ConfigMap untouched, the hostNetwork pod skipped with its reason")
  func list() async throws {
    let result = try await meshctl(["inject", "--manual", "--ca", golden("ca.crt"), "-o", "json", golden("list.json")])
    #expect(result.status == 0, "\(result)")
    let original = try #require(try documents(try String(contentsOfFile: golden("list.json"), encoding: .utf8)).first)
    let list = try JSONValue.parse(Data(result.stdout.utf8))
    let items = list["items"]?.arrayValue ?? []
    #expect(items.count == 3)
    #expect(containerNames(template(items[0])).initContainers == ["swiftmesh-init", "swiftmesh-proxy"])
    #expect(items[1] == original["items"]?.arrayValue?[1])
    #expect(items[2] == original["items"]?.arrayValue?[2])
    #expect(result.stderr.contains("statefulset/db injected"), "\(result.stderr)")
    #expect(result.stderr.contains("pod/node-agent skipped: the pod uses the host's network"), "\(result.stderr)")
  }

  @Test("inject | uninject returns the original, with and without --manual, YAML and JSON")
  func roundTrip() async throws {
    for file in ["web.yaml", "list.json"] {
      let text = try String(contentsOfFile: golden(file), encoding: .utf8)
      for extra in [[], ["--manual", "--ca", golden("ca.crt")]] {
        let injected = try await meshctl(["inject"] + extra + ["-"], input: text)
        #expect(injected.status == 0, "\(injected)")
        #expect(injected.stdout != text)
        let uninjected = try await meshctl(["uninject", "-"], input: injected.stdout)
        #expect(uninjected.status == 0, "\(uninjected)")
        #expect(try documents(uninjected.stdout) == documents(text), "\(file) \(extra): \(uninjected.stdout)")
      }
    }
  }

  @Test("--manual on the golden Deployment and CronJob gives the golden output")
  func goldenManual() async throws {
    let result = try await meshctl(["inject", "--manual", "--ca", golden("ca.crt"), golden("web.yaml")])
    #expect(result.status == 0, "\(result)")
    let expected = try String(contentsOfFile: golden("web.manual.yaml"), encoding: .utf8)
    #expect(result.stdout == expected, "regenerate with: meshctl inject --manual --ca Golden/ca.crt Golden/web.yaml > Golden/web.manual.yaml")
  }

  @Test("--manual gives the pod the webhook gives", .enabled(if: kubectlAvailable))
  func manualEqualsWebhook() async throws {
    let pem = try String(contentsOfFile: golden("ca.crt"), encoding: .utf8)
    try await withCluster(trustRootsPEM: pem) { cluster in
      try cluster.registerWebhook()
      let yaml = WebhookTests.podYAML(
        "web", namespace: "default",
        annotations: ["swiftmesh.io/inject": "enabled", "config.swiftmesh.io/skip-inbound-ports": "9090", "config.swiftmesh.io/proxy-cpu-request": "50m"])
      let created = try await cluster.kubectl(["create", "-f", "-"], input: yaml)
      #expect(created.status == 0, "\(created)")
      let stored = try cluster.state.get(resource: "pods", namespace: "default", name: "web")
      let manual = try await meshctl(["inject", "--manual", "--ca", golden("ca.crt"), "-"], input: yaml)
      #expect(manual.status == 0, "\(manual)")
      let pod = try #require(try documents(manual.stdout).first)
      #expect(containerNames(pod).initContainers == ["swiftmesh-init", "swiftmesh-proxy"])
      #expect(pod["spec"] == stored["spec"])
      #expect(pod["metadata"]?["annotations"] == stored["metadata"]?["annotations"])
      #expect(pod["metadata"]?["labels"] == stored["metadata"]?["labels"])
    }
  }

  @Test("bad input: a missing file, YAML that does not parse, --manual without --ca, an unknown output: an error and nothing printed")
  func badInput() async throws {
    let missing = try await meshctl(["inject", "/nonexistent/app.yaml"])
    #expect(missing.status != 0)
    #expect(missing.stderr.contains("/nonexistent/app.yaml: cannot read it"), "\(missing)")
    let broken = try await meshctl(["inject", "-"], input: "kind: Pod\nmetadata: [unclosed\n")
    #expect(broken.status != 0)
    #expect(broken.stdout.isEmpty)
    #expect(broken.stderr.contains("stdin"), "\(broken)")
    let duplicate = try await meshctl(["inject", "-"], input: "kind: Pod\nkind: Service\n")
    #expect(duplicate.stderr.contains("duplicate key 'kind'"), "\(duplicate)")
    let noCA = try await meshctl(["inject", "--manual", golden("web.yaml")])
    #expect(noCA.status != 0)
    #expect(noCA.stderr.contains("--manual needs the trust anchors"), "\(noCA)")
    let output = try await meshctl(["inject", "-o", "xml", golden("web.yaml")])
    #expect(output.stderr.contains("--output must be yaml or json"), "\(output)")
  }
}

/// The injected spec against independent judges: kubectl accepts it, and the executables declare every flag.
@Suite("Injected pods against kubectl and the executables' --help")
struct InjectedSpecTests {
  @Test("kubectl apply --dry-run=client accepts every injected workload kind", .enabled(if: kubectlAvailable))
  func kubectlAccepts() async throws {
    var objects: [JSONValue] = []
    for kind in PatchBuilderTests.kinds {
      var object = try injected(workload(kind, annotations: ["swiftmesh.io/inject": "enabled"]))
      object["metadata"]?["namespace"] = "default"
      objects.append(object)
    }
    let workloads = objects
    try await withCluster { cluster in
      let file = cluster.directory.file("injected.yaml")
      try KubeManifest.yaml(workloads).write(toFile: file, atomically: true, encoding: .utf8)
      let dryRun = try await cluster.kubectl(["apply", "--dry-run=client", "-f", file])
      #expect(dryRun.status == 0, "\(dryRun)")
      #expect(dryRun.stdout.split(separator: "\n").filter { $0.hasSuffix("(dry run)") }.count == workloads.count, "\(dryRun)")
      // And for real: the server stores each as sent.
      let apply = try await cluster.kubectl(["apply", "-f", file])
      #expect(apply.status == 0, "\(apply)")
      let initContainers = try await cluster.kubectl(["get", "cronjob", "web", "-o", "jsonpath={.spec.jobTemplate.spec.template.spec.initContainers[*].name}"])
      #expect(initContainers.stdout == "swiftmesh-init swiftmesh-proxy", "\(initContainers)")
    }
  }

  /// Whether `help` (an executable's --help) declares `flag`.
  func declares(_ help: String, _ flag: String) -> Bool {
    help.split(whereSeparator: { " \n\t,[]<>".contains($0) }).contains { $0 == flag }
  }

  @Test("the proxy's arguments are flags mesh-proxy --help lists; the init container's, flags mesh-proxy-init --help lists",
        .enabled(if: built("mesh-proxy") != nil && built("mesh-proxy-init") != nil))
  func flagsExist() async throws {
    let pod = try injected(workload("Pod", annotations: [
      "swiftmesh.io/inject": "enabled", "config.swiftmesh.io/skip-outbound-ports": "3306", "config.swiftmesh.io/skip-subnets": "10.0.0.0/8",
      "config.swiftmesh.io/opaque-ports": "4222",
    ]))
    for (name, executable) in [("swiftmesh-proxy", "mesh-proxy"), ("swiftmesh-init", "mesh-proxy-init")] {
      let c = try #require(container(pod, "initContainers", name))
      #expect(c["command"] == [.string(executable)])
      let help = try await Subprocess.run(try #require(built(executable)), ["--help"])
      #expect(help.status == 0, "\(help)")
      let flags = args(c).map { String($0.prefix { $0 != "=" }) }
      #expect(flags.count >= 4)
      for flag in flags { #expect(declares(help.stdout, flag), "\(executable) --help has no \(flag)") }
    }
  }

  @Test("the init container's arguments are accepted by mesh-proxy-init --simulate", .enabled(if: built("mesh-proxy-init") != nil))
  func initArgumentsRun() async throws {
    let pod = try injected(workload("Pod", annotations: [
      "swiftmesh.io/inject": "enabled", "config.swiftmesh.io/skip-inbound-ports": "9090,9100-9200",
      "config.swiftmesh.io/skip-outbound-ports": "3306", "config.swiftmesh.io/skip-subnets": "10.0.0.0/8",
    ]))
    let c = try #require(container(pod, "initContainers", "swiftmesh-init"))
    let simulated = try await Subprocess.run(try #require(built("mesh-proxy-init")), args(c) + ["--simulate"])
    #expect(simulated.status == 0, "\(simulated)")
    #expect(simulated.stdout.contains("SWIFTMESH_INIT_REDIRECT"), "\(simulated)")
    #expect(simulated.stdout.contains("9100:9200"), "\(simulated)")
    #expect(simulated.stdout.contains("10.0.0.0/8"), "\(simulated)")
  }
}
