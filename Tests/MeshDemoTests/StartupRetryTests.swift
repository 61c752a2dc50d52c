import Foundation
import Testing
import _MeshTestSupport

/// The executables as a pod runs them, started while the control plane is away: they stay up, say why they
/// are not ready, get ready on their own once it is back, and stop quietly on SIGTERM in any phase.
@Suite("Executables wait for the control plane", .serialized)
struct StartupRetryTests {
  static let bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
  static let curlAvailable = Subprocess.which("curl") != nil
  static func name(_ account: String) -> String { "\(account).default.serviceaccount.identity.swiftmesh.cluster.local" }

  /// A CA, an issuer and one token per service account, as `meshctl identity` makes them.
  struct ControlPlaneFiles {
    let dir: TemporaryDirectory
    var ca: String { dir.file("ca/ca.crt") }
    var issuer: String { dir.file("issuer") }
    var tokens: String { dir.file("tokens") }
    func token(_ account: String) -> String { dir.file("\(account).token") }

    init(accounts: [String]) async throws {
      dir = try TemporaryDirectory(prefix: "startup-retry")
      let initialised = try await Subprocess.run("\(StartupRetryTests.bin)/meshctl", ["identity", "init", "--out", dir.file("ca")])
      #expect(initialised.status == 0, "\(initialised)")
      let issued = try await Subprocess.run(
        "\(StartupRetryTests.bin)/meshctl", ["identity", "issuer", "--ca-dir", dir.file("ca"), "--out", dir.file("issuer")])
      #expect(issued.status == 0, "\(issued)")
      var lines = ""
      for account in accounts {
        lines += "token-\(account) \(account) default\n"
        try "token-\(account)\n".write(toFile: dir.file("\(account).token"), atomically: true, encoding: .utf8)
      }
      try lines.write(toFile: dir.file("tokens"), atomically: true, encoding: .utf8)
    }
  }

  /// An HTTP GET with curl: status (0 when nothing answered) and body.
  static func get(_ url: String, _ extra: [String] = []) async throws -> (status: Int, body: String) {
    let out = try await Subprocess.run("curl", ["-s", "-m", "5", "-w", "\n%{http_code}"] + extra + [url])
    let lines = out.stdout.split(separator: "\n", omittingEmptySubsequences: false)
    return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
  }

  static func proxyArguments(
    _ files: ControlPlaneFiles, account: String, identityPort: Int, destinationPort: Int, ports: [Int], app: Int,
    extra: [String] = []
  ) -> [String] {
    [
      "--identity", name(account), "--identity-server", "127.0.0.1:\(identityPort)", "--ca", files.ca,
      "--token", files.token(account), "--destination", "127.0.0.1:\(destinationPort)",
      "--outbound", "127.0.0.1:\(ports[0])", "--inbound", "127.0.0.1:\(ports[1])", "--admin", "127.0.0.1:\(ports[2])",
      "--app", "127.0.0.1:\(app)", "--failfast-timeout", "2", "--shutdown-grace-period", "2",
    ] + extra
  }

  @Test(
    "mesh-proxy, the gateway and mesh-mirror started 5 s before the identity service: live, not ready with the reason, then ready and serving mutual TLS without a restart; a request with no destination service answers 503 within one failfast",
    .enabled(if: curlAvailable), .timeLimit(.minutes(3)))
  func waitForIdentity() async throws {
    let files = try await ControlPlaneFiles(accounts: ["backend", "gateway", "mirror", "web"])
    defer { files.dir.remove() }
    let backend = try await TestHTTPServer(name: "backend")
    do {
      try await waitForIdentity(files: files, backend: backend)
    } catch {
      await backend.stop()
      throw error
    }
    await backend.stop()
  }

  func waitForIdentity(files: ControlPlaneFiles, backend: TestHTTPServer) async throws {
    let identityPort = try await StablePorts.free()
    let destinationPort = try await StablePorts.free()  // nothing listens there: discovery is down throughout
    let sidecarPorts = [try await StablePorts.free(), try await StablePorts.free(), try await StablePorts.free()]
    let gatewayPorts = [try await StablePorts.free(), try await StablePorts.free(), try await StablePorts.free()]
    let mirrorAdmin = try await StablePorts.free()
    let kubeconfig = files.dir.file("kubeconfig")
    let api = try BackgroundProcess(
      "\(Self.bin)/meshctl", ["dev", "kube-api", "--listen", "127.0.0.1:0", "--kubeconfig-out", kubeconfig])
    defer { api.terminate() }
    // Not the server's "kube API listening" log line: that one comes before the kubeconfig is written.
    try await api.waitForOutput(containing: "kubeconfig written to", timeout: .seconds(30))

    let started = ContinuousClock.now
    let sidecar = try BackgroundProcess(
      "\(Self.bin)/mesh-proxy",
      Self.proxyArguments(
        files, account: "backend", identityPort: identityPort, destinationPort: destinationPort, ports: sidecarPorts,
        app: backend.port))
    defer { sidecar.terminate() }
    let gateway = try BackgroundProcess(
      "\(Self.bin)/mesh-proxy",
      Self.proxyArguments(
        files, account: "gateway", identityPort: identityPort, destinationPort: destinationPort, ports: gatewayPorts,
        app: backend.port, extra: ["--gateway"]))
    defer { gateway.terminate() }
    let mirror = try BackgroundProcess(
      "\(Self.bin)/mesh-mirror",
      [
        "--kubeconfig", kubeconfig, "--admin", "127.0.0.1:\(mirrorAdmin)", "--identity", Self.name("mirror"),
        "--identity-server", "127.0.0.1:\(identityPort)", "--ca", files.ca, "--token", files.token("mirror"),
      ])
    defer { mirror.terminate() }
    let components: [(name: String, process: BackgroundProcess, admin: Int)] = [
      ("mesh-proxy", sidecar, sidecarPorts[2]), ("mesh-proxy --gateway", gateway, gatewayPorts[2]),
      ("mesh-mirror", mirror, mirrorAdmin),
    ]
    func logs() -> String { components.map { "--- \($0.name):\n\($0.process.printed)" }.joined(separator: "\n") }

    // The identity service stays away for 5 s: each stays up, live, and not ready with the reason.
    for component in components {
      try await eventually("\(component.name) to answer /live", timeout: .seconds(30), every: .milliseconds(100), context: logs) {
        try await Self.get("http://127.0.0.1:\(component.admin)/live").status == 200
      }
    }
    var checks = 0
    while ContinuousClock.now < started + .seconds(5) {
      for component in components {
        #expect(component.process.isRunning, "\(component.name) exited while the identity service was away:\n\(logs())")
        let ready = try await Self.get("http://127.0.0.1:\(component.admin)/ready")
        #expect(ready.status == 503, "\(component.name) /ready: \(ready)")
        #expect(ready.body.contains("identity service"), "\(component.name) /ready gives no reason: \(ready.body)")
      }
      checks += 1
      try await Task.sleep(for: .milliseconds(500))
    }
    #expect(checks >= 2)
    for component in components {
      #expect(
        component.process.printed.contains("cannot get a certificate from the identity service yet; retrying"),
        "\(component.name) did not log its retries:\n\(component.process.printed)")
      #expect(component.process.errorLines.isEmpty, "\(component.name): \(component.process.errorLines)")
    }
    // The outbound and inbound listeners wait for the certificate: nothing accepts there yet.
    let early = try await Self.get("http://127.0.0.1:\(sidecarPorts[0])/", ["-H", "Host: backend.default.svc.cluster.local"])
    #expect(early.status == 0, "the outbound listener accepted before the proxy had a certificate: \(early)")

    // The identity service starts; everything gets ready within a few seconds.
    let identity = try BackgroundProcess(
      "\(Self.bin)/mesh-controller",
      ["identity", "--issuer-dir", files.issuer, "--tokens", files.tokens, "--listen", "127.0.0.1:\(identityPort)"])
    defer { identity.terminate() }
    try await identity.waitForOutput(containing: "identity service listening", timeout: .seconds(30))
    let identityUp = ContinuousClock.now
    for component in components {
      try await eventually("\(component.name) to get ready", timeout: .seconds(30), every: .milliseconds(100), context: logs) {
        try await Self.get("http://127.0.0.1:\(component.admin)/ready").status == 200
      }
    }
    let readyAfter = ContinuousClock.now - identityUp
    #expect(readyAfter < .seconds(15), "ready \(readyAfter) after the identity service came up")

    // The sidecar proxies over mutual TLS: curl with web's certificate, the proxy's certificate checked.
    let web = try await Subprocess.run(
      "\(Self.bin)/meshctl",
      [
        "identity", "certify", "--server", "127.0.0.1:\(identityPort)", "--ca", files.ca, "--token",
        files.token("web"), "--name", Self.name("web"), "--out", files.dir.file("web"),
      ])
    #expect(web.status == 0, "\(web)")
    let mtls = [
      "--http1.1", "--cacert", files.ca, "--cert", files.dir.file("web/tls.crt"), "--key", files.dir.file("web/tls.key"),
    ]
    let proxied = try await Self.get(
      "https://\(Self.name("backend")):\(sidecarPorts[1])/",
      mtls + ["--resolve", "\(Self.name("backend")):\(sidecarPorts[1]):127.0.0.1"])
    #expect(proxied.status == 200, "\(proxied)\n\(logs())")
    #expect(proxied.body.trimmingCharacters(in: .whitespacesAndNewlines) == "backend", "\(proxied)")
    // The gateway serves its probe path over mutual TLS with its certificate.
    let probe = try await Self.get(
      "https://\(Self.name("gateway")):\(gatewayPorts[2])/ready",
      mtls + ["--resolve", "\(Self.name("gateway")):\(gatewayPorts[2]):127.0.0.1"])
    #expect(probe.status == 200, "\(probe)\n\(gateway.printed)")

    // No destination service: the answer comes within one failfast timeout (2 s) + 10 %, not two.
    let failfast = try await Subprocess.run(
      "curl",
      [
        "-s", "-o", "/dev/null", "-m", "10", "-w", "%{http_code} %{time_total}", "-H",
        "Host: nowhere.default.svc.cluster.local", "http://127.0.0.1:\(sidecarPorts[0])/",
      ])
    let answer = failfast.stdout.split(separator: " ")
    #expect(answer.first == "503", "\(failfast)")
    let seconds = Double(answer.last ?? "") ?? 99
    #expect(seconds <= 2.2, "503 after \(seconds) s; failfast is 2 s")
    #expect(seconds >= 1.5, "503 after \(seconds) s: it did not wait for discovery at all")

    // No restart: each certified once, in the process started at the beginning.
    for component in components {
      #expect(component.process.isRunning, "\(component.name) exited:\n\(component.process.printed)")
      let certified = component.process.printed.components(separatedBy: "] certified").count - 1
      #expect(certified == 1, "\(component.name) certified \(certified) times:\n\(component.process.printed)")
    }
    for component in components {
      let status = try await component.process.stop(with: SIGTERM)
      #expect(status == 0, "\(component.name) exit status on SIGTERM:\n\(component.process.printed)")
      #expect(component.process.errorLines.isEmpty, "\(component.name): \(component.process.errorLines)")
    }
  }

  @Test(
    "SIGTERM while retrying the control plane (unreachable or refusing) and while running: exit status 0, nothing at error level; a refused identity is said so in /ready",
    .enabled(if: curlAvailable), .timeLimit(.minutes(3)))
  func quietShutdown() async throws {
    let files = try await ControlPlaneFiles(accounts: ["backend", "gateway", "mirror"])
    defer { files.dir.remove() }
    let deadPort = try await StablePorts.free()  // no identity, destination or API server listens here
    // A kubeconfig naming an API server that is not there.
    let kubeconfig = files.dir.file("dead-kubeconfig")
    try """
      apiVersion: v1
      kind: Config
      clusters:
      - name: dead
        cluster:
          server: http://127.0.0.1:\(deadPort)
      contexts:
      - name: dead
        context:
          cluster: dead
          user: nobody
      current-context: dead
      users:
      - name: nobody
        user: {}

      """.write(toFile: kubeconfig, atomically: true, encoding: .utf8)
    func ports() async throws -> [Int] { [try await StablePorts.free(), try await StablePorts.free(), try await StablePorts.free()] }

    // The control plane that is up: an API server and an identity service (with a token file the proxy's
    // own token is not in, for the refused case).
    let liveKubeconfig = files.dir.file("kubeconfig")
    let api = try BackgroundProcess(
      "\(Self.bin)/meshctl", ["dev", "kube-api", "--listen", "127.0.0.1:0", "--kubeconfig-out", liveKubeconfig])
    defer { api.terminate() }
    let identityListen = try await StablePorts.free()
    let identity = try BackgroundProcess(
      "\(Self.bin)/mesh-controller",
      ["identity", "--issuer-dir", files.issuer, "--tokens", files.tokens, "--listen", "127.0.0.1:\(identityListen)"])
    defer { identity.terminate() }
    try await api.waitForOutput(containing: "kubeconfig written to", timeout: .seconds(30))
    try await identity.waitForOutput(containing: "identity service listening", timeout: .seconds(30))
    try "stolen-token\n".write(toFile: files.dir.file("refused.token"), atomically: true, encoding: .utf8)

    let sidecarPorts = try await ports()
    let gatewayPorts = try await ports()
    let refusedPorts = try await ports()
    let mirrorAdmin = try await StablePorts.free()
    let deadDestination = try await StablePorts.free()
    let liveDestination = try await StablePorts.free()
    let retrying = "cannot get a certificate from the identity service yet; retrying"
    var refusedArguments = Self.proxyArguments(
      files, account: "backend", identityPort: identityListen, destinationPort: deadPort, ports: refusedPorts,
      app: deadPort)
    refusedArguments[refusedArguments.firstIndex(of: "--token")! + 1] = files.dir.file("refused.token")
    let commands: [(name: String, executable: String, arguments: [String], waitFor: String)] = [
      (
        "mesh-proxy", "mesh-proxy",
        Self.proxyArguments(
          files, account: "backend", identityPort: deadPort, destinationPort: deadPort, ports: sidecarPorts,
          app: deadPort), retrying
      ),
      (
        "mesh-proxy --gateway", "mesh-proxy",
        Self.proxyArguments(
          files, account: "gateway", identityPort: deadPort, destinationPort: deadPort, ports: gatewayPorts,
          app: deadPort, extra: ["--gateway"]), retrying
      ),
      (
        "mesh-proxy (identity refused)", "mesh-proxy", refusedArguments,
        "the identity service refused this workload's identity; retrying slowly"
      ),
      (
        "mesh-mirror", "mesh-mirror",
        [
          "--kubeconfig", kubeconfig, "--admin", "127.0.0.1:\(mirrorAdmin)", "--identity", Self.name("mirror"),
          "--identity-server", "127.0.0.1:\(deadPort)", "--ca", files.ca, "--token", files.token("mirror"),
        ], retrying
      ),
      (
        "mesh-controller destination (API server down)", "mesh-controller",
        ["destination", "--kubeconfig", kubeconfig, "--listen", "127.0.0.1:\(deadDestination)"],
        // It first asks whether the API server serves EndpointSlices, and retries that.
        "retrying"
      ),
      (
        "mesh-controller destination (running)", "mesh-controller",
        ["destination", "--kubeconfig", liveKubeconfig, "--listen", "127.0.0.1:\(liveDestination)"],
        "destination service listening"
      ),
    ]
    var components: [(name: String, process: BackgroundProcess, retrying: String)] = []
    defer { for component in components { component.process.terminate() } }
    for command in commands {
      components.append(
        (command.name, try BackgroundProcess("\(Self.bin)/\(command.executable)", command.arguments), command.waitFor))
    }
    // Each is retrying its control plane (or running).
    for component in components {
      try await component.process.waitForOutput(containing: component.retrying, timeout: .seconds(30))
    }
    // A refusal is said as such in /ready too.
    let refusedReady = try await Self.get("http://127.0.0.1:\(refusedPorts[2])/ready")
    #expect(refusedReady.status == 503)
    #expect(refusedReady.body.contains("the identity service refused this workload's identity"), "\(refusedReady)")
    #expect(refusedReady.body.contains("unauthenticated"), "\(refusedReady)")
    // The control plane itself is stopped last, while running.
    components.append(("mesh-controller identity", identity, ""))
    components.append(("meshctl dev kube-api", api, ""))
    for component in components {
      let status = try await component.process.stop(with: SIGTERM)
      #expect(status == 0, "\(component.name) exit status on SIGTERM:\n\(component.process.printed)")
      #expect(
        component.process.errorLines.isEmpty,
        "\(component.name) logged errors on a normal stop: \(component.process.errorLines)")
    }
    // SIGINT (Ctrl-C) too, for one of them.
    let interrupted = try BackgroundProcess(
      "\(Self.bin)/mesh-proxy",
      Self.proxyArguments(
        files, account: "backend", identityPort: deadPort, destinationPort: deadPort, ports: try await ports(),
        app: deadPort))
    defer { interrupted.terminate() }
    try await interrupted.waitForOutput(containing: "retrying", timeout: .seconds(30))
    #expect(try await interrupted.stop(with: SIGINT) == 0, "\(interrupted.printed)")
    #expect(interrupted.errorLines.isEmpty, "\(interrupted.errorLines)")
  }

  @Test("What retrying cannot fix exits at once with a clear message: an unreadable CA file, an identity that does not parse")
  func fatalConfiguration() async throws {
    let files = try await ControlPlaneFiles(accounts: ["backend"])
    defer { files.dir.remove() }
    let port = try await StablePorts.free()
    let cases: [(arguments: [String], message: String)] = [
      (["--identity", Self.name("backend"), "--ca", files.dir.file("missing.crt")], files.dir.file("missing.crt")),
      (["--identity", "not an identity", "--ca", files.ca], "--identity 'not an identity'"),
    ]
    for (arguments, message) in cases {
      let proxy = try BackgroundProcess(
        "\(Self.bin)/mesh-proxy",
        arguments + [
          "--identity-server", "127.0.0.1:\(port)", "--token", files.token("backend"), "--admin", "127.0.0.1:0",
          "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0",
        ])
      defer { proxy.terminate() }
      let status = try await proxy.waitForExit(timeout: .seconds(20))
      #expect(status != nil && status != 0, "\(arguments) did not exit with a failure: \(String(describing: status))")
      #expect(proxy.printed.contains(message), "\(arguments): \(proxy.printed)")
      #expect(!proxy.printed.contains("retrying"), "\(arguments): \(proxy.printed)")
    }
  }
}
