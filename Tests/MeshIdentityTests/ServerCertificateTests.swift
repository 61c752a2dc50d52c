import Foundation
import MeshCore
import MeshIdentity
import Testing
import X509
import _MeshTestSupport

/// `TrustAnchor.makeRoot` and `makeServerCertificate`: what the embedded Kubernetes API serves with.
@Suite("Server certificates")
struct ServerCertificateTests {
  static let opensslAvailable = Subprocess.which("openssl") != nil

  @Test("openssl verifies a server certificate for its DNS names and IP addresses, and for no other", .enabled(if: opensslAvailable))
  func opensslVerifies() async throws {
    let root = try TrustAnchor.makeRoot(commonName: "test-root")
    let leaf = try TrustAnchor.makeServerCertificate(
      commonName: "api", dnsNames: ["localhost", "kubernetes.default.svc"], ipAddresses: ["127.0.0.1", "::1"],
      signedBy: root)
    #expect(leaf.certificate.notValidAfter <= root.certificate.notValidAfter)
    #expect(try leaf.certificate.extensions.basicConstraints == .notCertificateAuthority)
    let dir = try TemporaryDirectory(prefix: "server-cert")
    defer { dir.remove() }
    try PEMFiles.write(PEMFiles.pem([root.certificate]), to: dir.file("ca.crt"))
    try PEMFiles.write(PEMFiles.pem([leaf.certificate]), to: dir.file("tls.crt"))
    func verify(_ check: [String]) async throws -> Subprocess.Output {
      try await Subprocess.run(
        "openssl", ["verify", "-purpose", "sslserver", "-CAfile", dir.file("ca.crt")] + check + [dir.file("tls.crt")])
    }
    for check in [["-verify_ip", "127.0.0.1"], ["-verify_ip", "::1"], ["-verify_hostname", "kubernetes.default.svc"]] {
      let out = try await verify(check)
      #expect(out.status == 0, "\(check): \(out)")
    }
    for check in [["-verify_ip", "10.0.0.1"], ["-verify_hostname", "example.com"]] {
      let out = try await verify(check)
      #expect(out.status != 0, "\(check) must not verify: \(out)")
    }
  }

  @Test("an address that is not an IP is refused, naming it")
  func badAddress() throws {
    let root = try TrustAnchor.makeRoot(commonName: "test-root")
    #expect {
      _ = try TrustAnchor.makeServerCertificate(commonName: "api", dnsNames: [], ipAddresses: ["300.1.1.1"], signedBy: root)
    } throws: { error in
      guard let error = error as? MeshError else { return false }
      return error.message == "'300.1.1.1' is not an IPv4 or IPv6 address"
    }
  }
}
