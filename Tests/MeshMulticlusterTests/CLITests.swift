import Foundation
import MeshCore
import MeshIdentity
import MeshKube
import MeshKubeLocal
import MeshMulticluster
import Testing
import _MeshTestSupport

@Suite("meshctl multicluster, kubectl and promtool")
struct CLITests {
  /// Publishes west's gateway Service the way a gateway install would.
  static func addGatewayService(to cluster: Cluster, probePort: Int = 4191) throws {
    try cluster.state.create(
      KubeService(
        metadata: ObjectMeta(
          name: MirrorMetadata.gatewayServiceName, namespace: MirrorMetadata.multiclusterNamespace,
          annotations: [
            MirrorMetadata.gatewayIdentityAnnotation: Identities.gateway.description,
            MirrorMetadata.probePeriodAnnotation: "2s",
          ]),
        spec: .init(
          type: "LoadBalancer",
          ports: [
            .init(name: MirrorMetadata.gatewayPortName, port: 4143), .init(name: MirrorMetadata.probePortName, port: probePort),
          ])))
    // What a load balancer controller would write.
    _ = try cluster.state.patch(
      resource: "services", namespace: MirrorMetadata.multiclusterNamespace, name: MirrorMetadata.gatewayServiceName,
      patch: ["status": ["loadBalancer": ["ingress": [["ip": "192.0.2.44"]]]]])
  }

  func kubectl(_ kubeconfig: String, _ dir: TemporaryDirectory, _ args: [String], input: String? = nil) async throws -> Subprocess.Output {
    try await Subprocess.run(
      "/usr/bin/kubectl", ["--kubeconfig", kubeconfig, "--cache-dir", dir.file("cache")] + args, input: input.map { Data($0.utf8) })
  }

  @Test("Link manifests from west's gateway Service apply with kubectl on east, mirror, and unlink cleanly", .enabled(if: kubectlAvailable))
  func linkManifestAppliesWithKubectl() async throws {
    let dir = try TemporaryDirectory(prefix: "multicluster-cli")
    defer { dir.remove() }
    try await withClusters { east, west, group in
      try Self.addGatewayService(to: west)
      try west.addService("backend")
      let eastKubeconfig = dir.file("east.kubeconfig")
      try east.kubeconfig.write(toFile: eastKubeconfig, atomically: true, encoding: .utf8)

      let gateway = try await GatewayValues.read(from: west.client)
      #expect(gateway.addresses == ["192.0.2.44"])
      #expect(gateway.port == 4143 && gateway.probePort == 4191)
      #expect(gateway.identity == Identities.gateway.description)
      let manifest = LinkManifest(clusterName: "west", kubeconfig: west.kubeconfig, gateway: gateway)
      try manifest.validate()
      let yaml = try manifest.yaml()
      #expect(yaml.contains("kind: Secret") && yaml.contains("kind: Link") && yaml.contains("---"))

      let controller = start(supervisor(for: east), in: &group)
      defer { controller.stop() }
      let apply = try await kubectl(eastKubeconfig, dir, ["apply", "-f", "-"], input: yaml)
      #expect(apply.status == 0, "\(apply)")
      #expect(apply.stdout.contains("secret/cluster-credentials-west created"), "\(apply)")
      #expect(apply.stdout.contains("link.multicluster.swiftmesh.io/west created"), "\(apply)")
      let link = try #require(east.link("west"))
      #expect(link.spec.gatewayAddresses == ["192.0.2.44"])
      #expect(link.spec.probeSpec?.period == "2s")
      #expect(link.spec.selector == MirrorMetadata.defaultSelector)

      try await eventually("backend mirrored through the applied Link") {
        try east.mirrorNames(of: "west") == ["default/backend-west"]
      }
      try await eventually("status written") { east.condition("west", "MirrorsReady")?.status == "True" }
      let get = try await kubectl(eastKubeconfig, dir, ["get", "links", "-n", MirrorMetadata.multiclusterNamespace, "-o", "yaml"])
      #expect(get.status == 0, "\(get)")
      for text in ["targetClusterName: west", "mirroredServices:", "default/backend-west", "type: MirrorsReady", "type: CredentialsReady", "reason: Mirrored"] {
        #expect(get.stdout.contains(text), "kubectl get links -o yaml lacks '\(text)':\n\(get.stdout)")
      }
      // Re-applying the same manifests is a no-op for kubectl.
      let again = try await kubectl(eastKubeconfig, dir, ["apply", "-f", "-"], input: yaml)
      #expect(again.status == 0 && again.stdout.contains("unchanged"), "\(again)")

      let unlink = try await kubectl(
        eastKubeconfig, dir, ["delete", "-f", "-"], input: try LinkManifest.unlinkYAML(clusterName: "west"))
      #expect(unlink.status == 0, "\(unlink)")
      try await eventually("mirrors deleted with the Link") { try east.mirrorNames(of: "west").isEmpty }
      #expect(east.state.get(Secret.self, name: "cluster-credentials-west", namespace: MirrorMetadata.multiclusterNamespace) == nil)
    }
  }

  @Test("The meshctl binary: link | kubectl apply, export-service, gateways (table and json), unexport-service",
        .enabled(if: kubectlAvailable && meshctlPath != nil))
  func meshctlBinary() async throws {
    let meshctl = try #require(meshctlPath)
    let dir = try TemporaryDirectory(prefix: "multicluster-meshctl")
    defer { dir.remove() }
    try await withClusters { east, west, group in
      try Self.addGatewayService(to: west)
      try west.addService("backend", exported: false)
      let eastKubeconfig = dir.file("east.kubeconfig")
      let westKubeconfig = dir.file("west.kubeconfig")
      try east.kubeconfig.write(toFile: eastKubeconfig, atomically: true, encoding: .utf8)
      try west.kubeconfig.write(toFile: westKubeconfig, atomically: true, encoding: .utf8)
      let metrics = MirrorMetrics()
      let controller = supervisor(for: east, metrics: metrics)
      let admin = MirrorAdminServer(address: try Authority("127.0.0.1:0"), metrics: metrics, logger: testLogger) {
        controller.reports
      }
      let handles = [start(controller, in: &group), start(admin, in: &group)]
      defer { for h in handles { h.stop() } }

      let link = try await Subprocess.run(
        meshctl, ["multicluster", "link", "--cluster-name", "west", "--kubeconfig", westKubeconfig, "--gateway-port", "4243"])
      #expect(link.status == 0, "\(link)")
      #expect(link.stdout.contains("gatewayPort: 4243"), "\(link.stdout)")
      let apply = try await kubectl(eastKubeconfig, dir, ["apply", "-f", "-"], input: link.stdout)
      #expect(apply.status == 0, "\(apply)")

      let export = try await Subprocess.run(
        meshctl, ["multicluster", "export-service", "backend", "-n", "default", "--kubeconfig", westKubeconfig])
      #expect(export.status == 0 && export.stdout.contains("service default/backend exported"), "\(export)")
      try await eventually("backend mirrored after export-service") {
        try east.mirrorNames(of: "west") == ["default/backend-west"]
          && east.state.get(Endpoints.self, name: "backend-west", namespace: "default")?.subsets?.first?.ports?.first?.port == 4243
      }

      let adminPort = try await admin.port()
      var output: Subprocess.Output?
      try await eventually("meshctl multicluster gateways shows 1 service: \(output?.description ?? "-")") {
        output = try await Subprocess.run(meshctl, ["multicluster", "gateways", "--admin", "127.0.0.1:\(adminPort)"])
        return output?.stdout.contains("NotProbed  1          1") == true
      }
      let table = try #require(output)
      #expect(table.status == 0, "\(table)")
      let lines = table.stdout.split(separator: "\n")
      #expect(lines.first == "CLUSTER  ALIVE      ADDRESSES  NUM_SVC  LATENCY_P50  LATENCY_P95  LATENCY_P99", "\(table.stdout)")
      #expect(lines.dropFirst().first?.hasPrefix("west     NotProbed  1          1") == true, "\(table.stdout)")
      let json = try await Subprocess.run(meshctl, ["multicluster", "gateways", "--admin", "127.0.0.1:\(adminPort)", "-o", "json"])
      #expect(json.status == 0, "\(json)")
      let reports = try JSONDecoder().decode([GatewayReport].self, from: Data(json.stdout.utf8))
      #expect(reports.map(\.cluster) == ["west"] && reports.first?.numServices == 1)

      let unexport = try await Subprocess.run(
        meshctl, ["multicluster", "unexport-service", "backend", "-n", "default", "--kubeconfig", westKubeconfig])
      #expect(unexport.status == 0, "\(unexport)")
      try await eventually("mirror deleted after unexport-service") { try east.mirrorNames(of: "west").isEmpty }

      let missing = try await Subprocess.run(
        meshctl, ["multicluster", "export-service", "nope", "-n", "default", "--kubeconfig", westKubeconfig])
      #expect(missing.status != 0 && missing.stderr.contains("service default/nope does not exist"), "\(missing)")
      let unlink = try await Subprocess.run(meshctl, ["multicluster", "unlink", "--cluster-name", "west"])
      #expect(unlink.status == 0 && unlink.stdout.contains("kind: Link") && unlink.stdout.contains("cluster-credentials-west"), "\(unlink)")
      let bad = try await Subprocess.run(
        meshctl, ["multicluster", "link", "--cluster-name", "west", "--kubeconfig", westKubeconfig, "--gateway-addresses", "gw example"])
      #expect(bad.status != 0 && bad.stderr.contains("'gw example' is neither an IP address nor a DNS name"), "\(bad)")
      // A DNS name (a cloud load balancer's) is a gateway address; given as a flag, the Link keeps it.
      let named = try await Subprocess.run(
        meshctl, ["multicluster", "link", "--cluster-name", "west", "--kubeconfig", westKubeconfig, "--gateway-addresses", "gw.west.example,192.0.2.9"])
      #expect(named.status == 0, "\(named)")
      #expect(named.stdout.contains("- gw.west.example") && named.stdout.contains("- 192.0.2.9"), "\(named.stdout)")
      #expect(
        named.stdout.split(separator: "\n").contains { $0.contains(MirrorMetadata.followGatewayServiceAnnotation) && $0.contains("false") },
        "\(named.stdout)")
    }
  }

  @Test("The mesh-mirror binary: mirrors with mTLS probes, SIGTERM deletes nothing, a restart converges",
        .enabled(if: productsDirectory != nil))
  func meshMirrorBinary() async throws {
    let binary = try #require(productsDirectory?.appendingPathComponent("mesh-mirror").path)
    let meshctl = try #require(meshctlPath)
    let dir = try TemporaryDirectory(prefix: "multicluster-mesh-mirror")
    defer { dir.remove() }
    let pki = try TestPKI()
    let material = try pki.workload(Identities.mirror)
    try PEMFiles.write(PEMFiles.pem(material.chain), to: dir.file("tls.crt"))
    try PEMFiles.write(PEMFiles.pem(material.privateKey), to: dir.file("tls.key"), secret: true)
    try PEMFiles.write(PEMFiles.pem([pki.anchor.certificate]), to: dir.file("ca.crt"))
    let gateway = try await TestGateway(pki: pki)
    try await withClusters { east, west, _ in
      try west.addService("one")
      try west.addService("two")
      try west.addService("three")
      try east.linkTo(
        west, gatewayAddresses: ["127.0.0.1"], gatewayIdentity: Identities.gateway.description,
        probe: Link.ProbeSpec(path: "/ready", port: gateway.port, period: "200ms", timeout: "1s", failureThreshold: 3))
      let kubeconfig = dir.file("east.kubeconfig")
      try east.kubeconfig.write(toFile: kubeconfig, atomically: true, encoding: .utf8)
      let adminPort = try await MeshTLSEcho.freePort()
      let arguments = [
        "--kubeconfig", kubeconfig, "--admin", "127.0.0.1:\(adminPort)", "--cert", dir.file("tls.crt"),
        "--key", dir.file("tls.key"), "--ca", dir.file("ca.crt"), "--target-check-interval", "0.3",
      ]
      let first = try BackgroundProcess(binary, arguments)
      try await first.waitForOutput(containing: "admin listening")
      try await eventually("3 mirrors, gateway alive", timeout: .seconds(15)) {
        try east.mirrorNames(of: "west") == ["default/one-west", "default/three-west", "default/two-west"]
          && east.condition("west", "GatewayAlive")?.status == "True"
      }
      var table: Subprocess.Output?
      try await eventually("meshctl multicluster gateways shows west alive with 3 services: \(table?.description ?? "-")") {
        table = try await Subprocess.run(meshctl, ["multicluster", "gateways", "--admin", "127.0.0.1:\(adminPort)"])
        return table?.stdout.split(separator: "\n").dropFirst().first?.hasPrefix("west     True   1/1        3") == true
      }
      #expect(table?.status == 0)
      first.terminate()
      #expect(!first.isRunning)
      #expect(try east.mirrorNames(of: "west").count == 3, "stopping mesh-mirror deletes nothing:\n\(first.printed)")

      try west.deleteService("one")
      try west.addService("four")
      try west.state.mergePatch(
        KubeService.self, name: "three", namespace: "default",
        patch: ["spec": ["ports": [["name": "http", "port": 3333, "protocol": "TCP"]]]])
      let second = try BackgroundProcess(binary, arguments)
      defer { second.terminate() }
      try await eventually("converged after the restart", timeout: .seconds(15)) {
        try east.mirrorNames(of: "west") == ["default/four-west", "default/three-west", "default/two-west"]
          && east.mirrors(of: "west")["default/three-west"]?.spec?.ports?.map(\.port) == [3333]
      }
      #expect(gateway.clientIdentities.contains(Identities.mirror))
    }
    await gateway.stop()
  }

  @Test("promtool accepts the mirror's /metrics", .enabled(if: Subprocess.which("promtool") != nil))
  func promtool() async throws {
    let pki = try TestPKI()
    let gateway = try await TestGateway(pki: pki)
    try await withClusters { east, west, group in
      try west.addService("api")
      try east.linkTo(
        west, gatewayAddresses: ["127.0.0.1"], gatewayIdentity: Identities.gateway.description,
        probe: Link.ProbeSpec(path: "/ready", port: gateway.port, period: "100ms", timeout: "1s", failureThreshold: 3))
      let metrics = MirrorMetrics()
      let controller = supervisor(for: east, tls: try mirrorTLS(pki), metrics: metrics)
      let admin = MirrorAdminServer(address: try Authority("127.0.0.1:0"), metrics: metrics, logger: testLogger) {
        controller.reports
      }
      let handles = [start(controller, in: &group), start(admin, in: &group)]
      defer { for h in handles { h.stop() } }
      try await eventually("probes and a mirror") {
        east.condition("west", "GatewayAlive")?.status == "True" && east.condition("west", "MirrorsReady")?.status == "True"
          && east.link("west")?.status?.mirroredServices == ["default/api-west"]
      }
      let exposition = try await httpGet(port: try await admin.port(), "/metrics")
      #expect(exposition.status == 200)
      for name in ["gateway_alive", "gateway_probe_latency_ms_bucket", "gateway_probes_total", "mirror_services", "mirror_target_reachable", "mirror_kube_writes_total"] {
        #expect(exposition.body.contains(name), "no \(name) in \(exposition.body)")
      }
      let check = try await Subprocess.run("promtool", ["check", "metrics"], input: Data(exposition.body.utf8))
      // promtool parses the exposition (exit 1 would be a format error). Its only lint note may be the
      // name `gateway_probe_latency_ms` the issue fixes ("abbreviated units"), like the proxy's `response_latency_ms`.
      let problems = (check.stdout + check.stderr).split(separator: "\n").filter {
        !$0.contains("gateway_probe_latency_ms metric names should not contain abbreviated units")
      }
      #expect(check.status == 0 || (check.status == 3 && problems.isEmpty), "\(check)")
    }
    await gateway.stop()
  }
}
