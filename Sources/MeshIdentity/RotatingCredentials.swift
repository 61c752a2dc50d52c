import Crypto
import Foundation
public import NIOCertificateReloading
public import NIOSSL
import Synchronization

/// A locked box holding the TLS credentials currently in force, as NIOSSL wants them. New handshakes read
/// it (a lock held for one copy), so rotation takes effect at once and never rebuilds a context per
/// connection.
public final class RotatingCredentials: CertificateReloader, Sendable {
  private let box: Mutex<NIOSSLContextConfigurationOverride>
  private let generationCounter = Atomic<Int>(0)

  public init(_ material: WorkloadCertificate) throws {
    self.box = Mutex(try Self.override(for: material))
  }

  /// Replaces the credentials; handshakes that start after this use the new ones.
  public func update(_ material: WorkloadCertificate) throws {
    let override = try Self.override(for: material)
    box.withLock { $0 = override }
    generationCounter.add(1, ordering: .releasing)
  }

  /// How many times the credentials were replaced.
  public var generation: Int { generationCounter.load(ordering: .acquiring) }

  public var sslContextConfigurationOverride: NIOSSLContextConfigurationOverride {
    box.withLock { $0 }
  }

  public var certificateChain: [NIOSSLCertificateSource] { sslContextConfigurationOverride.certificateChain ?? [] }
  public var privateKey: NIOSSLPrivateKeySource? { sslContextConfigurationOverride.privateKey }

  static func override(for material: WorkloadCertificate) throws -> NIOSSLContextConfigurationOverride {
    var override = NIOSSLContextConfigurationOverride()
    override.certificateChain = try material.nioCertificates().map { .certificate($0) }
    override.privateKey = .privateKey(try material.nioPrivateKey())
    return override
  }
}

extension WorkloadCertificate {
  /// The chain (leaf first) as NIOSSL certificates.
  public func nioCertificates() throws -> [NIOSSLCertificate] {
    try chain.map { try NIOSSLCertificate(bytes: try $0.derBytes(), format: .der) }
  }

  /// The private key as a NIOSSL key.
  public func nioPrivateKey() throws -> NIOSSLPrivateKey {
    try NIOSSLPrivateKey(bytes: Array(privateKey.pemRepresentation.utf8), format: .pem)
  }
}
