import Crypto
import Foundation
import GRPCCore
import Logging
import MeshAPI
import MeshCore
import MeshIdentity
import SwiftASN1
import Synchronization
import Testing
import X509
import _MeshTestSupport

/// End to end: the gRPC identity service on loopback, a real client, and openssl as the judge.
@Suite("Identity service")
struct IdentityServiceTests {
  static let tokens = "web-token web default\napi-token api prod\n"
  let web = IdentityName.test("web")

  /// Runs an identity server on 127.0.0.1:0 for the duration of `body`.
  func withServer(
    pki: TestPKI,
    now: @escaping @Sendable () -> Date = { Date() },
    _ body: (IdentityClient) async throws -> Void
  ) async throws {
    let server = try IdentityServer(
      configuration: .defaults {
        $0.host = "127.0.0.1"
        $0.port = 0
      },
      authority: try pki.authority(),
      validator: try TokenFileValidator(contents: Self.tokens),
      logger: Logger(label: "test.identity"),
      now: now)
    try await withThrowingTaskGroup { group in
      group.addTask { try await server.run() }
      let port = try await server.listeningPort
      let client = IdentityClient(
        configuration: .init(
          server: try Authority(host: "127.0.0.1", port: port),
          trustAnchors: [pki.anchor.certificate],
          serverIdentity: try IdentityServer.serverIdentity()))
      try await body(client)
      group.cancelAll()
    }
  }

  func request(identity: IdentityName, token: String, csr: [UInt8]) -> Swiftmesh_Identity_CertifyRequest {
    var request = Swiftmesh_Identity_CertifyRequest()
    request.identity = identity.description
    request.token = Data(token.utf8)
    request.certificateSigningRequest = Data(csr)
    return request
  }

  func der(_ csr: CertificateSigningRequest) throws -> [UInt8] {
    var serializer = DER.Serializer()
    try serializer.serialize(csr)
    return serializer.serializedBytes
  }

  @Test("a leaf obtained through the service passes openssl verify, with P-256, the SAN and about 24 h")
  func certifyAndVerifyWithOpenSSL() async throws {
    let pki = try TestPKI()
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    try pki.write(to: dir.path)
    try await withServer(pki: pki) { client in
      let material = try await client.certify(identity: web, token: "web-token")
      try PEMFiles.write(PEMFiles.pem(material.chain), to: dir.file("tls.crt"))
      try PEMFiles.write(PEMFiles.pem(material.privateKey), to: dir.file("tls.key"), secret: true)
    }
    let verify = try await Subprocess.run(
      "openssl", ["verify", "-CAfile", dir.file("ca.crt"), "-untrusted", dir.file("issuer.crt"), dir.file("tls.crt")])
    #expect(verify.status == 0, "\(verify)")
    #expect(verify.stdout.contains(": OK"))
    let text = try await Subprocess.run("openssl", ["x509", "-in", dir.file("tls.crt"), "-noout", "-text"])
    #expect(text.stdout.contains("prime256v1") || text.stdout.contains("P-256"))
    #expect(text.stdout.contains("DNS:\(web)"))
    #expect(text.stdout.contains("TLS Web Server Authentication, TLS Web Client Authentication"))
    let end = try await Subprocess.run("openssl", ["x509", "-in", dir.file("tls.crt"), "-noout", "-checkend", "\(23 * 3600)"])
    #expect(end.status == 0, "valid for more than 23 h")
    let notLonger = try await Subprocess.run("openssl", ["x509", "-in", dir.file("tls.crt"), "-noout", "-checkend", "\(24 * 3600 + 5)"])
    #expect(notLonger.status != 0, "valid for no more than about 24 h")
  }

  @Test("a leaf from a sibling issuer verifies against the shared ca.crt; an unrelated anchor's does not")
  func siblingAndUnrelatedIssuers() async throws {
    let pki = try TestPKI()
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    try pki.write(to: dir.path)
    let west = try pki.siblingIssuer(clusterName: "west")
    let westLeaf = try pki.workload(.test("backend"), issuer: west)
    try PEMFiles.write(PEMFiles.pem([westLeaf.leaf]), to: dir.file("west-leaf.crt"))
    try PEMFiles.write(PEMFiles.pem([west.certificate]), to: dir.file("west-issuer.crt"))
    let ok = try await Subprocess.run(
      "openssl",
      ["verify", "-CAfile", dir.file("ca.crt"), "-untrusted", dir.file("west-issuer.crt"), dir.file("west-leaf.crt")])
    #expect(ok.status == 0, "\(ok)")

    let other = try TestPKI()
    let otherLeaf = try other.workload(.test("backend"))
    try PEMFiles.write(PEMFiles.pem([otherLeaf.leaf]), to: dir.file("other-leaf.crt"))
    try PEMFiles.write(PEMFiles.pem([other.issuer.certificate]), to: dir.file("other-issuer.crt"))
    let refused = try await Subprocess.run(
      "openssl",
      ["verify", "-CAfile", dir.file("ca.crt"), "-untrusted", dir.file("other-issuer.crt"), dir.file("other-leaf.crt")])
    #expect(refused.status != 0, "\(refused)")
  }

  @Test("bad requests each get their own status and message, and the service answers the next good request")
  func badInput() async throws {
    let pki = try TestPKI()
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    // An RSA CSR made by openssl, for the right identity.
    let rsa = try await Subprocess.run(
      "openssl",
      [
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", dir.file("rsa.key"), "-subj", "/CN=\(web)",
        "-addext", "subjectAltName=DNS:\(web)", "-outform", "DER", "-out", dir.file("rsa.csr"),
      ])
    try #require(rsa.status == 0, "\(rsa)")
    let rsaCSR = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir.file("rsa.csr"))))

    try await withServer(pki: pki) { client in
      let cases: [(String, Swiftmesh_Identity_CertifyRequest, MeshError.Code, String)] = [
        ("garbage CSR", request(identity: web, token: "web-token", csr: [0xde, 0xad, 0xbe, 0xef]), .invalidArgument, "not a DER PKCS#10"),
        (
          "CSR for another identity",
          request(identity: web, token: "web-token", csr: try der(WorkloadKey.makeCSR(for: .test("api")).csr)),
          .permissionDenied, "names 'api.default"
        ),
        ("RSA key", request(identity: web, token: "web-token", csr: rsaCSR), .invalidArgument, "RSA, expected ECDSA P-256"),
        (
          "unknown token", request(identity: web, token: "who-am-i", csr: try der(WorkloadKey.makeCSR(for: web).csr)),
          .unauthenticated, "token is not known"
        ),
        (
          "token for another identity",
          request(identity: web, token: "api-token", csr: try der(WorkloadKey.makeCSR(for: web).csr)),
          .permissionDenied, "token belongs to api.prod"
        ),
        ("malformed identity", request(identity: web, token: "web-token", csr: []), .invalidArgument, "invalid identity name"),
      ]
      for (label, bad, code, fragment) in cases {
        var bad = bad
        if label == "malformed identity" { bad.identity = "web.default" }
        await #expect(Comment(rawValue: label)) {
          _ = try await client.send(bad)
        } throws: { error in
          let error = try #require(error as? MeshError)
          return error.code == code && error.message.contains(fragment)
        }
        let good = try await client.certify(identity: web, token: "web-token")
        #expect(good.identity == web, "service still answers after \(label)")
      }
    }
  }

  @Test("an expired issuer is refused as a failed precondition; the service goes on")
  func expiredIssuer() async throws {
    let pki = try TestPKI()
    let skew = Mutex<TimeInterval>(0)
    try await withServer(pki: pki, now: { Date().addingTimeInterval(skew.withLock { $0 }) }) { client in
      skew.withLock { $0 = 2 * 365 * 24 * 3600 }
      await #expect {
        _ = try await client.certify(identity: web, token: "web-token")
      } throws: { error in
        let error = try #require(error as? MeshError)
        return error.code == .expired && error.message.contains("expired at")
      }
      skew.withLock { $0 = 0 }
      let good = try await client.certify(identity: web, token: "web-token")
      #expect(good.identity == web)
    }
  }

  @Test("a client refuses an identity service that presents another identity")
  func wrongServerIdentity() async throws {
    let pki = try TestPKI()
    try await withServer(pki: pki) { client in
      var config = client.configuration
      config.serverIdentity = .test("impostor", "swiftmesh")
      let picky = IdentityClient(configuration: config)
      await #expect {
        _ = try await picky.certify(identity: web, token: "web-token")
      } throws: { error in
        let message = (error as? MeshError)?.message ?? ""
        return message.contains("identity mismatch") && message.contains("impostor.swiftmesh")
          && message.contains("swiftmesh-identity.swiftmesh")
      }
    }
  }
}
