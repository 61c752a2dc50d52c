public import Crypto
public import MeshCore
public import X509

/// Creates a proxy's key and its certificate signing request.
public enum WorkloadKey {
  /// A new ECDSA P-256 key and a CSR whose subject CN and only DNS SAN are the identity name.
  public static func makeCSR(
    for identity: IdentityName,
    privateKey: P256.Signing.PrivateKey = P256.Signing.PrivateKey()
  ) throws(MeshError) -> (privateKey: P256.Signing.PrivateKey, csr: CertificateSigningRequest) {
    do {
      let extensions = try Certificate.Extensions { SubjectAlternativeNames([.dnsName(identity.description)]) }
      let attributes = CertificateSigningRequest.Attributes(
        [try CertificateSigningRequest.Attribute(ExtensionRequest(extensions: extensions))])
      let csr = try CertificateSigningRequest(
        version: .v1,
        subject: try DistinguishedName { CommonName(identity.description) },
        privateKey: Certificate.PrivateKey(privateKey),
        attributes: attributes,
        signatureAlgorithm: .ecdsaWithSHA256
      )
      return (privateKey, csr)
    } catch {
      throw .internalError("creating a CSR for \(identity) failed", cause: error)
    }
  }
}
