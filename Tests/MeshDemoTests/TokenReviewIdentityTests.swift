import Foundation
import Testing
import _MeshTestSupport

/// `mesh-controller identity --token-review`: workloads authenticate with Kubernetes service-account tokens,
/// as in a real cluster. The executables run as a user would run them, against `meshctl dev kube-api`; kubectl
/// creates the service account and its token.
@Suite("mesh-controller identity --token-review", .serialized)
struct TokenReviewIdentityTests {
  static let bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
  static let kubectlAvailable = Subprocess.which("kubectl") != nil

  @Test(
    "a kubectl-created token for the identity audience certifies its own service account, and nothing else",
    .enabled(if: kubectlAvailable))
  func tokenReview() async throws {
    let dir = try TemporaryDirectory(prefix: "token-review")
    defer { dir.remove() }
    let kubeconfig = dir.file("kubeconfig")
    let api = try BackgroundProcess(
      "\(Self.bin)/meshctl", ["dev", "kube-api", "--listen", "127.0.0.1:0", "--kubeconfig-out", kubeconfig])
    defer { api.terminate() }
    try await eventually("the API server's kubeconfig", timeout: .seconds(30)) { FileManager.default.fileExists(atPath: kubeconfig) }

    func kubectl(_ args: [String]) async throws -> Subprocess.Output {
      try await Subprocess.run("kubectl", ["--kubeconfig", kubeconfig, "--cache-dir", dir.file("cache")] + args)
    }
    func meshctl(_ args: [String]) async throws -> Subprocess.Output {
      try await Subprocess.run("\(Self.bin)/meshctl", args)
    }
    #expect(try await meshctl(["identity", "init", "--out", dir.file("ca")]).status == 0)
    #expect(try await meshctl(["identity", "issuer", "--ca-dir", dir.file("ca"), "--out", dir.file("issuer")]).status == 0)
    #expect(try await kubectl(["create", "serviceaccount", "backend"]).status == 0)
    #expect(try await kubectl(["create", "serviceaccount", "web"]).status == 0)
    let token = try await kubectl(["create", "token", "backend", "--audience", "identity.swiftmesh.io", "--duration", "1h"])
    #expect(token.status == 0, "\(token)")
    try token.stdout.write(toFile: dir.file("backend.token"), atomically: true, encoding: .utf8)
    let apiToken = try await kubectl(["create", "token", "backend"])
    #expect(apiToken.status == 0, "\(apiToken)")
    try apiToken.stdout.write(toFile: dir.file("api.token"), atomically: true, encoding: .utf8)

    let port = try await StablePorts.free()
    let identity = try BackgroundProcess(
      "\(Self.bin)/mesh-controller",
      [
        "identity", "--issuer-dir", dir.file("issuer"), "--token-review", "--kubeconfig", kubeconfig,
        "--listen", "127.0.0.1:\(port)",
      ])
    defer { identity.terminate() }
    try await identity.waitForOutput(containing: "identity service listening", timeout: .seconds(30))

    func certify(_ name: String, token: String, out: String) async throws -> Subprocess.Output {
      try await meshctl([
        "identity", "certify", "--server", "127.0.0.1:\(port)", "--ca", dir.file("ca/ca.crt"),
        "--token", dir.file(token), "--name", "\(name).default.serviceaccount.identity.swiftmesh.cluster.local",
        "--out", dir.file(out),
      ])
    }
    let good = try await certify("backend", token: "backend.token", out: "backend")
    #expect(good.status == 0, "\(good)\n\(identity.printed)")
    // openssl reads the identity the certificate was issued for.
    let san = try await Subprocess.run("openssl", ["x509", "-in", dir.file("backend/tls.crt"), "-noout", "-ext", "subjectAltName"])
    #expect(san.stdout.contains("backend.default.serviceaccount.identity.swiftmesh.cluster.local"), "\(san)")

    let otherIdentity = try await certify("web", token: "backend.token", out: "web")
    #expect(otherIdentity.status != 0)
    #expect(otherIdentity.stderr.contains("token belongs to backend.default"), "\(otherIdentity.stderr)")

    let wrongAudience = try await certify("backend", token: "api.token", out: "api")
    #expect(wrongAudience.status != 0)
    #expect(wrongAudience.stderr.contains("is invalid for the target audiences [\"identity.swiftmesh.io\"]"), "\(wrongAudience.stderr)")

    try "not-a-token\n".write(toFile: dir.file("bad.token"), atomically: true, encoding: .utf8)
    let bad = try await certify("backend", token: "bad.token", out: "bad")
    #expect(bad.status != 0)
    #expect(bad.stderr.contains("unauthenticated"), "\(bad.stderr)")

    // Deleting the service account revokes its token; the identity service is still there for others.
    #expect(try await kubectl(["delete", "serviceaccount", "backend"]).status == 0)
    let revoked = try await certify("backend", token: "backend.token", out: "revoked")
    #expect(revoked.status != 0)
    #expect(revoked.stderr.contains("has been deleted"), "\(revoked.stderr)")
    #expect(identity.isRunning)
  }

  @Test("mesh-controller identity needs exactly one of --tokens and --token-review")
  func flags() async throws {
    let neither = try await Subprocess.run("\(Self.bin)/mesh-controller", ["identity", "--issuer-dir", "/nonexistent"])
    #expect(neither.status == 64)
    #expect(neither.stderr.contains("--tokens FILE or --token-review"), "\(neither.stderr)")
    let both = try await Subprocess.run(
      "\(Self.bin)/mesh-controller", ["identity", "--issuer-dir", "/nonexistent", "--tokens", "/x", "--token-review"])
    #expect(both.status == 64)
    #expect(both.stderr.contains("exclude each other"), "\(both.stderr)")
  }
}
