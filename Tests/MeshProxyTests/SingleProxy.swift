import Foundation
import Logging
import MeshCore
import MeshDiscovery
import MeshIdentity
import MeshProxy
import MeshTLS
import _MeshTestSupport

/// Runs a gateway (discovery `gatewayDiscovery`: what its cluster resolves) and, in front of it, a client
/// proxy to which `backend` resolves to the gateway (mutual TLS, the gateway's identity, as a mirror service
/// does), then `body` with the client proxy's outbound port. Both stop afterwards.
func withGatewayPath(
  backend: Authority, gatewayDiscovery: InMemoryDiscovery, clientProfile: Profile? = nil, label: String,
  _ body: (_ outbound: Int) async throws -> Void
) async throws {
  let pki = try TestPKI()
  let gatewayIdentity = IdentityName.test("swiftmesh-gateway", "swiftmesh-multicluster")
  let gatewayTLS = try MeshTLS(material: try pki.workload(gatewayIdentity), trustAnchors: [pki.anchor.certificate])
  try await withSingleProxy(tls: gatewayTLS, discovery: gatewayDiscovery, label: "\(label).gateway", configure: {
    $0.gatewayMode = true
  }) { gateway in
    let gatewayPort = try await gateway.boundPorts().inbound
    let clientDiscovery = InMemoryDiscovery([
      backend: EndpointSet(
        exists: true,
        endpoints: [
          Endpoint(
            address: try Authority(host: "127.0.0.1", port: gatewayPort), tlsIdentity: gatewayIdentity,
            protocolHint: .http2)
        ])
    ])
    if let clientProfile { clientDiscovery.setProfile(clientProfile, for: backend) }
    let clientTLS = try MeshTLS(material: try pki.workload(.test("web")), trustAnchors: [pki.anchor.certificate])
    try await withSingleProxy(tls: clientTLS, discovery: clientDiscovery, label: "\(label).client") { client in
      try await body(try await client.boundPorts().outbound)
    }
  }
}
