import Foundation
import Logging
import MeshCore
import MeshKube
import MeshKubeLocal
import NIOCore
import NIOPosix
import Testing
import _MeshTestSupport

/// Runs an informer for Services in `namespace` against the server of `state` on `port` (over TLS, trusting the
/// state's CA, with `token`, default the admin's), collecting its events, around `body`.
func withInformer(
  port: Int, state: LocalKubeState, namespace: String, token: String? = nil,
  _ body: (Informer<KubeService>, EventLog<KubeService>) async throws -> Void
) async throws {
  let credentials = try state.credentials()
  let client = try KubeClient(
    config: KubeClientConfig(
      server: "https://127.0.0.1:\(port)", certificateAuthorityPEM: Data(credentials.certificateAuthorityPEM.utf8),
      token: token ?? credentials.adminToken),
    connectTimeout: .milliseconds(300))
  let informer = Informer<KubeService>(client: client, configuration: .defaults {
    $0.namespace = namespace
    $0.initialBackoff = .milliseconds(20)
    $0.maxBackoff = .milliseconds(300)
  })
  let log = EventLog<KubeService>()
  let events = informer.events()
  try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await informer.run() }
    group.addTask { for await e in events { log.append(e) } }
    do {
      try await body(informer, log)
    } catch {
      group.cancelAll()
      try? await client.shutdown()
      throw error
    }
    group.cancelAll()
  }
  try await client.shutdown()
}

@Suite("Informer")
struct InformerTests {
  @Test("syncs, then follows adds, updates and deletes")
  func basic() async throws {
    let state = LocalKubeState()
    for i in 0..<5 { try state.create(service("s\(i)", "basic")) }
    try state.create(service("elsewhere", "other"))
    try await withServer(state: state) { server, _ in
      try await withInformer(port: try await server.port(), state: server.state, namespace: "basic") { informer, log in
        try await eventually("sync") { informer.store.hasSynced && log.count == 5 }
        try state.mergePatch(KubeService.self, name: "s0", namespace: "basic", patch: ["metadata": ["labels": ["x": "1"]]])
        try state.delete(KubeService.self, name: "s1", namespace: "basic")
        try state.create(service("s5", "basic", labels: ["x": "1"]))
        try await eventually("three changes") { log.count == 8 }
        #expect(try storeMatches(informer.store, state, namespace: "basic"))
        #expect(informer.store.list(label: "x", value: "1").map(\.name) == ["s0", "s5"])
        #expect(informer.store.list(namespace: "basic").count == 5)
        #expect(informer.store.list(matching: LabelSelector(matchLabels: ["x": "1"])).count == 2)
        log.checkOrdering()
        let kinds = log.all.suffix(3).map { e -> String in
          switch e { case .added: "added"; case .updated: "updated"; case .deleted: "deleted" }
        }
        #expect(kinds == ["updated", "deleted", "added"])
      }
    }
  }

  @Test("a watch cut mid-stream resumes from the last resourceVersion: nothing lost, nothing twice")
  func watchCut() async throws {
    let state = LocalKubeState()
    for i in 0..<5 { try state.create(service("s\(i)", "cut")) }
    try await withServer(state: state) { server, _ in
      try await withInformer(port: try await server.port(), state: server.state, namespace: "cut") { informer, log in
        try await eventually("sync") { informer.store.hasSynced && log.count == 5 }
        try state.mergePatch(KubeService.self, name: "s0", namespace: "cut", patch: ["metadata": ["labels": ["v": "1"]]])
        try await eventually("first update") { log.count == 6 }
        try await eventually("a watch open") { state.activeWatchCount == 1 }
        state.dropWatchConnections()
        try state.create(service("s5", "cut"))
        try state.delete(KubeService.self, name: "s1", namespace: "cut")
        try state.mergePatch(KubeService.self, name: "s2", namespace: "cut", patch: ["metadata": ["labels": ["v": "2"]]])
        try state.mergePatch(KubeService.self, name: "s2", namespace: "cut", patch: ["metadata": ["labels": ["v": "3"]]])
        try await eventually("store matches") { try storeMatches(informer.store, state, namespace: "cut") && log.count == 10 }
        #expect(informer.statistics.watches >= 2)
        #expect(informer.statistics.lists == 1, "resumed without re-listing")
        #expect(log.count == 10, "\(log.summary)")
        log.checkOrdering()
      }
    }
  }

  @Test("410 Expired while disconnected: re-list, emit only the difference (synthetic deletes)")
  func expiredRelist() async throws {
    let state = LocalKubeState()
    for i in 0..<4 { try state.create(service("s\(i)", "gone")) }
    let stablePort = try await StablePorts.free()
    let first = LocalKubeAPIServer(configuration: .defaults { $0.port = stablePort }, state: state)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await first.run() }
      let port = try await first.port()
      try await withInformer(port: port, state: state, namespace: "gone") { informer, log in
        try await eventually("sync") { informer.store.hasSynced && log.count == 4 }
        first.stop()
        // While it is down: changes, then the history is compacted past the informer's version.
        try state.delete(KubeService.self, name: "s0", namespace: "gone")
        try state.mergePatch(KubeService.self, name: "s1", namespace: "gone", patch: ["metadata": ["labels": ["v": "2"]]])
        try state.create(service("s4", "gone"))
        state.compactHistory()
        let second = LocalKubeAPIServer(configuration: .defaults { $0.port = port }, state: state)
        group.addTask { try await second.run() }
        _ = try await second.port()
        try await eventually("store matches after re-list") {
          try storeMatches(informer.store, state, namespace: "gone") && log.count == 7
        }
        #expect(informer.statistics.lists >= 2)
        log.checkOrdering()
        let tail = log.summary.suffix(3)
        #expect(tail.contains { $0.hasPrefix("deleted gone/s0") }, "\(log.summary)")
        #expect(tail.contains { $0.hasPrefix("updated gone/s1") })
        #expect(tail.contains { $0.hasPrefix("added gone/s4") })
        second.stop()
      }
      group.cancelAll()
    }
  }

  @Test("server restarted on the same port with changes made while it was down")
  func serverRestart() async throws {
    let state = LocalKubeState()
    for i in 0..<3 { try state.create(service("s\(i)", "restart")) }
    let stablePort = try await StablePorts.free()
    let first = LocalKubeAPIServer(configuration: .defaults { $0.port = stablePort }, state: state)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await first.run() }
      let port = try await first.port()
      try await withInformer(port: port, state: state, namespace: "restart") { informer, log in
        try await eventually("sync") { informer.store.hasSynced && log.count == 3 }
        first.stop()
        try state.create(service("s3", "restart"))
        try state.delete(KubeService.self, name: "s2", namespace: "restart")
        try state.mergePatch(KubeService.self, name: "s0", namespace: "restart", patch: ["metadata": ["labels": ["v": "2"]]])
        // Some reconnects fail with "connection refused" and back off.
        try await eventually("a failed reconnect") { informer.statistics.errors >= 1 }
        let second = LocalKubeAPIServer(configuration: .defaults { $0.port = port }, state: state)
        group.addTask { try await second.run() }
        _ = try await second.port()
        try await eventually("store matches after restart") {
          try storeMatches(informer.store, state, namespace: "restart") && log.count == 6
        }
        #expect(informer.statistics.lists == 1, "resumed from history without a re-list")
        log.checkOrdering()
        second.stop()
      }
      group.cancelAll()
    }
  }

  @Test("a corrupt watch line is logged, and the informer re-watches from the last good version")
  func corruptLine() async throws {
    let state = LocalKubeState()
    try state.create(service("a", "corrupt"))
    try await withServer(state: state) { server, _ in
      try await withInformer(port: try await server.port(), state: server.state, namespace: "corrupt") { informer, log in
        try await eventually("sync") { informer.store.hasSynced && log.count == 1 }
        try await eventually("a watch open") { state.activeWatchCount == 1 }
        state.injectWatchLine("{\"type\":\"ADDED\",\"object\":{not json")
        try state.create(service("b", "corrupt"))
        try await eventually("recovered") { try storeMatches(informer.store, state, namespace: "corrupt") && log.count == 2 }
        try await eventually("error counted") { informer.statistics.errors >= 1 }
        state.injectWatchLine("{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":5}}}")
        try state.create(service("c", "corrupt"))
        try await eventually("recovered again") { try storeMatches(informer.store, state, namespace: "corrupt") && log.count == 3 }
        log.checkOrdering()
      }
    }
  }

  @Test("an informer with a rejected token backs off and never syncs; no crash")
  func unauthorizedInformer() async throws {
    try await withServer { server, _ in
      try await withInformer(port: try await server.port(), state: server.state, namespace: "x", token: "wrong") { informer, _ in
        try await eventually("several failures") { informer.statistics.errors >= 3 }
        #expect(!informer.store.hasSynced)
      }
    }
  }
}

@Suite("Bad input")
struct BadInputTests {
  @Test("401 with an invalid token names the reason")
  func unauthorized() async throws {
    try await withServer { server, good in
      _ = try await good.list(KubeService.self, namespace: "default")
      let bad = try KubeClient(config: try await server.clientConfig(token: "expired"))
      await #expect {
        _ = try await bad.list(KubeService.self, namespace: "default")
      } throws: { error in
        guard let e = error as? KubeError else { return false }
        return e.isUnauthorized && e.httpStatus == 401 && e.message.contains("Unauthorized")
      }
      try await bad.shutdown()
    }
  }

  @Test("connection refused is a transport error naming the address")
  func connectionRefused() async throws {
    // Bind, learn the port, close: nothing listens there now.
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
    let port = channel.localAddress!.port!
    try await channel.close()
    let client = try KubeClient(config: KubeClientConfig(server: "http://127.0.0.1:\(port)"), connectTimeout: .milliseconds(500))
    await #expect {
      _ = try await client.get(KubeService.self, name: "x", namespace: "default")
    } throws: { error in
      guard let e = error as? KubeError else { return false }
      return e.isTransport && e.message.contains("127.0.0.1:\(port)")
    }
    try await client.shutdown()
  }

  @Test("a non-JSON error body gives the HTTP status and a snippet of the body")
  func nonJSONError() async throws {
    try await withRawServer(response: "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 33\r\nConnection: close\r\n\r\n<html>upstream went away</html>\r\n") { port in
      let client = try KubeClient(config: KubeClientConfig(server: "http://127.0.0.1:\(port)"))
      await #expect {
        _ = try await client.list(KubeService.self, namespace: "default")
      } throws: { error in
        guard let e = error as? KubeError else { return false }
        return e.httpStatus == 502 && e.message.contains("<html>upstream went away</html>") && e.message.contains("HTTP 502")
      }
      try await client.shutdown()
    }
  }

  @Test("a watch answering a corrupt line from a raw server throws a decoding error, not a crash")
  func corruptFromRawServer() async throws {
    let body = "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"namespace\":\"d\",\"resourceVersion\":\"5\"}}}\n%%garbage%%\n"
    let response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
    try await withRawServer(response: response) { port in
      let client = try KubeClient(config: KubeClientConfig(server: "http://127.0.0.1:\(port)"))
      let stream = try await client.watch(KubeService.self, namespace: "d", options: .init(resourceVersion: "1"))
      var iterator = stream.makeAsyncIterator()
      let first = try await iterator.next()
      if case .added(let s)? = first { #expect(s.name == "a") } else { Issue.record("expected ADDED, got \(String(describing: first))") }
      await #expect {
        _ = try await iterator.next()
      } throws: { error in
        guard let e = error as? KubeError else { return false }
        return e.isDecoding && e.message.contains("%%garbage%%")
      }
      try await client.shutdown()
    }
  }
}

/// A tiny TCP server that answers every connection with `response` (after the request head) and closes.
func withRawServer(response: String, _ body: @Sendable (Int) async throws -> Void) async throws {
  let server = try await ConnectionListener<Void, ByteBuffer, ByteBuffer>.bind(host: "127.0.0.1", port: 0) { _ in }
  let port = server.channel.localAddress!.port!
  try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask {
      await server.serve { _, connection in
        try? await connection.executeThenClose { input, output in
          var seen = ""
          for try await chunk in input {
            seen += String(buffer: chunk)
            if seen.contains("\r\n\r\n") { break }
          }
          try await output.write(ByteBuffer(string: response))
        }
      }
    }
    defer { server.close() }
    try await body(port)
    group.cancelAll()
  }
}
