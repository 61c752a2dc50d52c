import ArgumentParser
import Foundation
import MeshCore
import MeshIdentity
import X509

struct IdentityCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "identity",
    abstract: "Create the mesh's certificate authorities and obtain workload certificates.",
    subcommands: [Init.self, Issuer.self, Certify.self]
  )

  struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Create a trust anchor (ca.crt, ca.key) and a first issuer (issuer.crt, issuer.key).")

    @Option(help: "The trust domain identities end in.")
    var trustDomain: String = "cluster.local"
    @Option(help: "Directory to write the PEM files to.")
    var out: String
    @Option(help: "Lifetime of the anchor and issuer, in hours.")
    var lifetimeHours: Int = 365 * 24
    @Flag(help: "Overwrite existing files.")
    var force = false

    func run() async throws {
      let domain = try TrustDomain(trustDomain)
      let lifetime = Duration.seconds(lifetimeHours * 3600)
      try refuseOverwrite(out, [PEMFiles.anchorCertificate, PEMFiles.anchorKey, PEMFiles.issuerCertificate], force: force)
      let anchor = try TrustAnchor.makeAnchor(trustDomain: domain, lifetime: lifetime)
      let issuer = try TrustAnchor.makeIssuer(signedBy: anchor, trustDomain: domain, lifetime: lifetime)
      try PEMFiles.makeDirectory(out)
      try PEMFiles.write(PEMFiles.pem([anchor.certificate]), to: path(out, PEMFiles.anchorCertificate))
      try PEMFiles.write(PEMFiles.pem(anchor.privateKey), to: path(out, PEMFiles.anchorKey), secret: true)
      try PEMFiles.write(PEMFiles.pem([issuer.certificate]), to: path(out, PEMFiles.issuerCertificate))
      try PEMFiles.write(PEMFiles.pem(issuer.privateKey), to: path(out, PEMFiles.issuerKey), secret: true)
      print("trust anchor: \(path(out, PEMFiles.anchorCertificate)) (\(anchor.certificate.subject), valid until \(anchor.certificate.notValidAfter.ISO8601Format()))")
      print("issuer:       \(path(out, PEMFiles.issuerCertificate)) (\(issuer.certificate.subject))")
    }
  }

  struct Issuer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Create one more issuer under an existing trust anchor (one per cluster).")

    @Option(help: "Directory holding ca.crt and ca.key.")
    var caDir: String
    @Option(help: "Directory to write issuer.crt, issuer.key and a copy of ca.crt to.")
    var out: String
    @Option(help: "The trust domain identities end in.")
    var trustDomain: String = "cluster.local"
    @Option(help: "A cluster name recorded in the issuer's subject (OU).")
    var clusterName: String?
    @Option(help: "Lifetime of the issuer, in hours (never beyond the anchor's).")
    var lifetimeHours: Int = 365 * 24
    @Flag(help: "Overwrite existing files.")
    var force = false

    func run() async throws {
      let domain = try TrustDomain(trustDomain)
      let anchorCertificate = try PEMFiles.readCertificates(path(caDir, PEMFiles.anchorCertificate))[0]
      let anchorKey = try PEMFiles.readP256Key(path(caDir, PEMFiles.anchorKey))
      try refuseOverwrite(out, [PEMFiles.issuerCertificate, PEMFiles.issuerKey], force: force)
      let anchor = TrustAnchor.Credentials(certificate: anchorCertificate, privateKey: anchorKey)
      let issuer = try TrustAnchor.makeIssuer(
        signedBy: anchor, trustDomain: domain, clusterName: clusterName, lifetime: .seconds(lifetimeHours * 3600))
      try PEMFiles.makeDirectory(out)
      try PEMFiles.write(PEMFiles.pem([anchorCertificate]), to: path(out, PEMFiles.anchorCertificate))
      try PEMFiles.write(PEMFiles.pem([issuer.certificate]), to: path(out, PEMFiles.issuerCertificate))
      try PEMFiles.write(PEMFiles.pem(issuer.privateKey), to: path(out, PEMFiles.issuerKey), secret: true)
      print("issuer: \(path(out, PEMFiles.issuerCertificate)) (\(issuer.certificate.subject), valid until \(issuer.certificate.notValidAfter.ISO8601Format()))")
    }
  }

  struct Certify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Obtain a workload certificate from the identity service (writes tls.key and tls.crt).")

    @Option(help: "Identity service address, HOST:PORT.")
    var server: String
    @Option(help: "Trust anchor PEM file (ca.crt).")
    var ca: String
    @Option(help: "File holding the service-account token.")
    var token: String
    @Option(help: "Identity name to ask for.")
    var name: String
    @Option(help: "Directory to write tls.key and tls.crt to.")
    var out: String
    @Option(help: "Identity the identity service must present (default: derived from the requested name's trust domain and control-plane namespace).")
    var serverIdentity: String?

    func run() async throws {
      let identity = try IdentityName(name)
      let expected = try serverIdentity.map { raw throws(MeshError) in try IdentityName(raw) }
        ?? IdentityServer.serverIdentity(
          controlPlaneNamespace: identity.controlPlaneNamespace, trustDomain: identity.trustDomain)
      let tokenText: String
      do {
        tokenText = try String(contentsOfFile: token, encoding: .utf8)
      } catch {
        throw MeshError.invalidConfiguration("cannot read token file \(token)", cause: error)
      }
      let client = IdentityClient(
        configuration: .init(
          server: try Authority(server), trustAnchors: try PEMFiles.readCertificates(ca), serverIdentity: expected))
      let material = try await client.certify(identity: identity, token: tokenText)
      try PEMFiles.makeDirectory(out)
      try PEMFiles.write(PEMFiles.pem(material.privateKey), to: path(out, PEMFiles.workloadKey), secret: true)
      try PEMFiles.write(PEMFiles.pem(material.chain), to: path(out, PEMFiles.workloadCertificate))
      print("certified \(identity): serial \(material.leaf.serialNumber), valid until \(material.notValidAfter.ISO8601Format())")
      print("wrote \(path(out, PEMFiles.workloadCertificate)) and \(path(out, PEMFiles.workloadKey))")
    }
  }
}

func path(_ directory: String, _ file: String) -> String {
  (directory as NSString).appendingPathComponent(file)
}

func refuseOverwrite(_ directory: String, _ files: [String], force: Bool) throws {
  guard !force else { return }
  for file in files where FileManager.default.fileExists(atPath: path(directory, file)) {
    throw ValidationError("\(path(directory, file)) exists; pass --force to overwrite")
  }
}
