import Foundation
import MeshCore
import MeshDiscovery
import MeshProxy
import Testing
import _MeshTestSupport

@Suite("Event loops (--event-loops) and the upstream HTTP/1.1 pool", .serialized)
struct EventLoopsTests {
  /// The names of this process's threads.
  static func threadNames() -> [String] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.compactMap { try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8) }
      .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
  }

  /// Threads of event loop groups other than the process-wide one (NIO names them `NIO-ELT-<group>-#<n>`).
  static func ownGroupThreads() -> Int { threadNames().filter { $0.hasPrefix("NIO-ELT-") }.count }

  /// curl arguments that fetch `url` `count` times, each response body to /dev/null.
  static func discarding(_ url: String, count: Int) -> [String] {
    Array(repeating: [url, "-o", "/dev/null"], count: count).flatMap { $0 }
  }

  @Test("a proxy with one event loop serves keep-alive requests on a thread of its own and stops it at the end")
  func oneEventLoop() async throws {
    let backend = try await TestHTTPServer(name: "backend")
    do {
      try await serve(backend)
    } catch {
      await backend.stop()
      throw error
    }
    await backend.stop()
  }

  func serve(_ backend: TestHTTPServer) async throws {
    let authority = try Authority("backend.default.svc.cluster.local:80")
    let discovery = InMemoryDiscovery([
      authority: EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: backend.port))])
    ])
    let before = Self.ownGroupThreads()
    try await withSingleProxy(discovery: discovery, configure: { $0.eventLoops = 1 }) { proxy in
      #expect(Self.ownGroupThreads() == before + 1, "\(Self.threadNames())")
      let outbound = try await proxy.boundPorts().outbound
      // 50 requests on one keep-alive connection, and 4 connections at once.
      let url = "http://127.0.0.1:\(outbound)/"
      let sequential = try await curl(
        ["-s", "-w", "%{http_code}\\n", "-H", "Host: \(authority)"] + Self.discarding(url, count: 50))
      #expect(sequential.stdout.split(separator: "\n") == Array(repeating: "200", count: 50), "\(sequential)")
      let parallel = try await curl(
        ["-s", "-Z", "--parallel-max", "4", "-w", "%{http_code}\\n", "-H", "Host: \(authority)"]
          + Self.discarding(url, count: 40))
      #expect(parallel.stdout.split(separator: "\n") == Array(repeating: "200", count: 40), "\(parallel)")
    }
    // The group is shut down with the proxy (its thread ends a moment later).
    let deadline = ContinuousClock.now + .seconds(5)
    while Self.ownGroupThreads() > before, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
    #expect(Self.ownGroupThreads() == before, "\(Self.threadNames())")
  }
}
