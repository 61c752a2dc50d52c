import Foundation
import Logging
import MeshCore
public import MeshProxy
public import MeshTLS

/// Runs one proxy on loopback ports chosen by the OS around `body` (outbound, inbound and admin on
/// 127.0.0.1, failfast 1 s), and stops it afterwards, also when `body` throws.
public func withSingleProxy(
  tls: MeshTLS? = nil, discovery: InMemoryDiscovery, label: String = "test.proxy",
  configure: (inout ProxyConfiguration) -> Void = { _ in }, _ body: (MeshProxy) async throws -> Void
) async throws {
  var logger = Logger(label: label)
  logger.logLevel = ProcessInfo.processInfo.environment["MESH_TEST_LOG"].map { Logger.Level(rawValue: $0) ?? .warning } ?? .warning
  let proxy = MeshProxy(
    configuration: .defaults {
      $0.outboundAddress = try! Authority("127.0.0.1:0")
      $0.inboundAddress = try! Authority("127.0.0.1:0")
      $0.adminAddress = try! Authority("127.0.0.1:0")
      $0.failfastTimeout = .seconds(1)
      configure(&$0)
    }, tls: tls, discovery: discovery, logger: logger)
  try await withThrowingTaskGroup { group in
    group.addTask { try await proxy.run() }
    _ = try await proxy.boundPorts()
    do {
      try await body(proxy)
    } catch {
      group.cancelAll()
      throw error
    }
    group.cancelAll()
  }
}
