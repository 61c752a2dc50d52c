// Identity benchmarks: what a CA pays per workload certificate, and what a proxy pays to ask for one.
//
//   swift package --package-path Benchmarks benchmark --target IdentityBenchmarks
import Benchmark
import Crypto
import Foundation
import SwiftASN1
import MeshCore
import MeshIdentity
import X509

let benchmarks: @Sendable () -> Void = {
  Benchmark.defaultConfiguration = .init(
    metrics: [.wallClock, .throughput, .mallocCountTotal, .peakMemoryResident],
    maxDuration: .seconds(3),
    maxIterations: 10_000
  )

  let identity = try! IdentityName(serviceAccount: "web", namespace: "default")
  let anchor = try! TrustAnchor.makeAnchor(trustDomain: .clusterLocal)
  let issuer = try! TrustAnchor.makeIssuer(signedBy: anchor, trustDomain: .clusterLocal)
  let authority = try! CertificateAuthority(issuerCertificate: issuer.certificate, issuerKey: issuer.privateKey)

  // The proxy's side: a fresh P-256 key and a CSR naming its identity.
  Benchmark("key + CSR") { benchmark in
    for _ in benchmark.scaledIterations {
      blackHole(try WorkloadKey.makeCSR(for: identity))
    }
  }

  // The CA's side: parse the DER CSR, check it (key type, signature, SAN) and sign a leaf.
  Benchmark("CSR signing (parse + check + sign)") { benchmark in
    var serializer = DER.Serializer()
    try serializer.serialize(try WorkloadKey.makeCSR(for: identity).csr)
    let der = serializer.serializedBytes
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      let csr = try CertificateAuthority.parseCSR(der: der)
      blackHole(try authority.sign(csr: csr, for: identity))
    }
    benchmark.stopMeasurement()
  }

  // Peer verification as every handshake does it: chain to the anchor and identity check.
  Benchmark("verify peer chain + identity") { benchmark in
    let (key, csr) = try WorkloadKey.makeCSR(for: identity)
    let leaf = try authority.sign(csr: csr, for: identity)
    let material = WorkloadCertificate(privateKey: key, leaf: leaf, intermediates: authority.issuerChain)
    let verifier = IdentityVerifier(trustAnchors: [anchor.certificate])
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      blackHole(await verifier.verify(chain: material.chain, expected: identity))
    }
    benchmark.stopMeasurement()
  }
}
