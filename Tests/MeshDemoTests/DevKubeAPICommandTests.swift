import Foundation
import Testing
import _MeshTestSupport

/// `meshctl dev kube-api` as a user runs it: HTTPS by default, a certificate of one's own, and the limits of
/// `--insecure-http`. openssl makes the certificate; kubectl and curl judge the server.
@Suite("meshctl dev kube-api", .serialized)
struct DevKubeAPICommandTests {
  static let bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
  static let toolsAvailable = ["kubectl", "curl", "openssl"].allSatisfy { Subprocess.which($0) != nil }

  /// Starts `meshctl dev kube-api` with `arguments` and waits for the kubeconfig it writes.
  static func start(_ dir: TemporaryDirectory, _ arguments: [String]) async throws -> BackgroundProcess {
    let kubeconfig = dir.file("kubeconfig")
    let api = try BackgroundProcess(
      "\(bin)/meshctl", ["dev", "kube-api", "--listen", "127.0.0.1:0", "--kubeconfig-out", kubeconfig] + arguments)
    let deadline = ContinuousClock.now + .seconds(30)
    while !FileManager.default.fileExists(atPath: kubeconfig) {
      guard api.isRunning else { throw TestFailure("meshctl dev kube-api exited: \(api.printed)") }
      guard ContinuousClock.now < deadline else { throw TestFailure("no kubeconfig after 30 s: \(api.printed)") }
      try await Task.sleep(for: .milliseconds(50))
    }
    return api
  }

  static func server(in kubeconfig: String) throws -> String {
    let text = try String(contentsOfFile: kubeconfig, encoding: .utf8)
    let line = try #require(text.split(separator: "\n").first { $0.contains("server:") })
    return line.split(separator: " ").last.map(String.init) ?? ""
  }

  @Test(
    "--tls-cert/--tls-key with an openssl certificate: the kubeconfig (0600) trusts it; kubectl and curl agree",
    .enabled(if: toolsAvailable))
  func ownCertificate() async throws {
    let dir = try TemporaryDirectory(prefix: "kube-api-tls")
    defer { dir.remove() }
    let openssl = try await Subprocess.run(
      "openssl",
      [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
        "-keyout", dir.file("tls.key"), "-out", dir.file("tls.crt"), "-subj", "/CN=swiftmesh-test",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
      ])
    #expect(openssl.status == 0, "\(openssl)")
    let api = try await Self.start(dir, ["--tls-cert", dir.file("tls.crt"), "--tls-key", dir.file("tls.key")])
    defer { api.terminate() }
    let kubeconfig = dir.file("kubeconfig")
    let mode = try FileManager.default.attributesOfItem(atPath: kubeconfig)[.posixPermissions] as? Int
    #expect(mode == 0o600, "the kubeconfig holds the admin token")
    let server = try Self.server(in: kubeconfig)
    #expect(server.hasPrefix("https://127.0.0.1:"))

    let get = try await Subprocess.run(
      "kubectl", ["--kubeconfig", kubeconfig, "--cache-dir", dir.file("cache"), "get", "namespaces", "-o", "name"])
    #expect(get.status == 0, "\(get)")
    #expect(get.stdout.contains("namespace/default"))
    func curl(_ path: String) async throws -> String {
      try await Subprocess.run(
        "curl", ["-s", "--max-time", "10", "--cacert", dir.file("tls.crt"), "-o", "/dev/null", "-w", "%{http_code}", server + path]
      ).stdout
    }
    #expect(try await curl("/readyz") == "200")
    #expect(try await curl("/api/v1/secrets") == "401")
  }

  @Test("--insecure-http: refused on 0.0.0.0 before listening; on loopback, plain HTTP without a token", .enabled(if: toolsAvailable))
  func insecureHTTP() async throws {
    let exposed = try await Subprocess.run(
      "\(Self.bin)/meshctl", ["dev", "kube-api", "--insecure-http", "--listen", "0.0.0.0:0"])
    #expect(exposed.status == 64, "\(exposed)")
    #expect(exposed.stderr.contains("--insecure-http serves without authentication, so it listens on loopback only"), "\(exposed.stderr)")
    let mixed = try await Subprocess.run(
      "\(Self.bin)/meshctl", ["dev", "kube-api", "--insecure-http", "--tls-cert", "/x", "--tls-key", "/y"])
    #expect(mixed.status == 64)
    #expect(mixed.stderr.contains("--tls-cert does not apply"), "\(mixed.stderr)")
    let half = try await Subprocess.run("\(Self.bin)/meshctl", ["dev", "kube-api", "--tls-cert", "/x"])
    #expect(half.status == 64)
    #expect(half.stderr.contains("--tls-cert and --tls-key go together"), "\(half.stderr)")

    let dir = try TemporaryDirectory(prefix: "kube-api-http")
    defer { dir.remove() }
    let api = try await Self.start(dir, ["--insecure-http"])
    defer { api.terminate() }
    let server = try Self.server(in: dir.file("kubeconfig"))
    #expect(server.hasPrefix("http://127.0.0.1:"))
    let secrets = try await Subprocess.run(
      "curl", ["-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", server + "/api/v1/secrets"])
    #expect(secrets.stdout == "200")
  }
}
