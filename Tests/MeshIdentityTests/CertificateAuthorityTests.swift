import Crypto
import Foundation
import MeshCore
import MeshIdentity
import Testing
import X509
import _MeshTestSupport

@Suite("Certificate authority")
struct CertificateAuthorityTests {
  let web = IdentityName.test("web")

  @Test("a leaf is P-256, 24 h, backdated 20 s, with the identity as its only DNS SAN and both EKUs")
  func leafShape() throws {
    let pki = try TestPKI()
    let now = Date()
    let material = try pki.workload(web, now: now)
    let leaf = material.leaf
    #expect(P256.Signing.PublicKey(leaf.publicKey) != nil)
    #expect(leaf.dnsNames == [web.description])
    #expect(abs(leaf.notValidBefore.timeIntervalSince(now) + 20) < 1.5)
    #expect(abs(leaf.notValidAfter.timeIntervalSince(now) - 24 * 3600) < 1.5)
    let eku = try #require(try leaf.extensions.extendedKeyUsage)
    #expect(eku.contains(.serverAuth) && eku.contains(.clientAuth))
    #expect(try leaf.extensions.basicConstraints == .notCertificateAuthority)
    #expect(material.intermediates == [pki.issuer.certificate])
  }

  @Test("a leaf never outlives its issuer")
  func capsLifetime() throws {
    let pki = try TestPKI(issuerLifetime: .seconds(3600))
    let leaf = try pki.workload(web).leaf
    #expect(leaf.notValidAfter == pki.issuer.certificate.notValidAfter)
  }

  @Test("an expired issuer refuses to sign, naming the expiry")
  func expiredIssuer() throws {
    let past = Date().addingTimeInterval(-7200)
    let pki = try TestPKI(issuerLifetime: .seconds(3600), now: past)
    let authority = try pki.authority()
    let (_, csr) = try WorkloadKey.makeCSR(for: web)
    #expect {
      _ = try authority.sign(csr: csr, for: web)
    } throws: { error in
      let error = try #require(error as? MeshError)
      return error.code == .expired && error.message.contains("expired at")
    }
  }

  @Test("a CSR for another identity is refused with both names")
  func otherIdentity() throws {
    let (_, csr) = try WorkloadKey.makeCSR(for: .test("api"))
    #expect {
      try CertificateAuthority.check(csr: csr, expected: web)
    } throws: { error in
      let error = try #require(error as? MeshError)
      return error.code == .permissionDenied && error.message.contains("api.default") && error.message.contains("web.default")
    }
  }

  @Test("garbage CSR bytes are an invalid argument")
  func garbage() {
    #expect(throws: MeshError.invalidArgument("")) { try CertificateAuthority.parseCSR(der: [0x30, 0x03, 0x01, 0x02]) }
    #expect(throws: MeshError.invalidArgument("")) { try CertificateAuthority.parseCSR(der: []) }
  }

  @Test("the issuer key must match the issuer certificate")
  func mismatchedKey() throws {
    let pki = try TestPKI()
    #expect(throws: MeshError.invalidConfiguration("")) {
      try CertificateAuthority(issuerCertificate: pki.issuer.certificate, issuerKey: P256.Signing.PrivateKey())
    }
  }

  @Test("PEM files round-trip and a broken file names itself")
  func pemFiles() throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let pki = try TestPKI()
    try pki.write(to: dir.path)
    let loaded = try PEMFiles.loadIssuer(directory: dir.path)
    #expect(loaded.authority.issuerCertificate == pki.issuer.certificate)
    #expect(loaded.trustAnchors == [pki.anchor.certificate])
    try PEMFiles.write("not pem", to: dir.file("issuer.crt"))
    #expect {
      _ = try PEMFiles.loadIssuer(directory: dir.path)
    } throws: { error in
      (error as? MeshError)?.message.contains("issuer.crt") == true
    }
  }

  @Test("the token file maps tokens to service accounts and names bad lines")
  func tokenFile() async throws {
    let validator = try TokenFileValidator(contents: "# local tokens\ns3cret web default\n\nt2 api prod # trailing\n")
    #expect(validator.count == 2)
    #expect(try await validator.validate(token: "s3cret\n") == ServiceAccountRef(name: "web", namespace: "default"))
    await #expect(throws: MeshError.unauthenticated("")) { try await validator.validate(token: "nope") }
    #expect {
      _ = try TokenFileValidator(contents: "a b\n")
    } throws: { error in
      (error as? MeshError)?.message.contains("line 1") == true
    }
  }
}
