import Foundation
import Logging
import MeshCore
import MeshKube
import MeshKubeLocal
import Synchronization
import Testing
import _MeshTestSupport

/// Runs a server on 127.0.0.1:0 and a client for it around `body`.
func withServer<T: Sendable>(
  state: LocalKubeState = LocalKubeState(),
  configure: (inout LocalKubeAPIServer.Configuration) -> Void = { _ in },
  _ body: @Sendable (LocalKubeAPIServer, KubeClient) async throws -> T
) async throws -> T {
  let server = LocalKubeAPIServer(configuration: .defaults(configure: configure), state: state)
  return try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await server.run() }
    _ = try await server.port()
    let client = try KubeClient(config: try await server.clientConfig())
    do {
      let result = try await body(server, client)
      try await client.shutdown()
      server.stop()
      group.cancelAll()
      return result
    } catch {
      try? await client.shutdown()
      server.stop()
      group.cancelAll()
      throw error
    }
  }
}

/// Collects an informer's events.
final class EventLog<R: KubeResource>: Sendable {
  let events = Mutex<[InformerEvent<R>]>([])
  func append(_ e: InformerEvent<R>) { events.withLock { $0.append(e) } }
  var all: [InformerEvent<R>] { events.withLock { $0 } }
  var count: Int { events.withLock { $0.count } }

  /// `kind key rv` lines, for readable failures.
  var summary: [String] {
    all.map { e in
      switch e {
      case .added(let o): "added \(o.metadata.key) \(o.metadata.resourceVersion ?? "")"
      case .updated(_, let o): "updated \(o.metadata.key) \(o.metadata.resourceVersion ?? "")"
      case .deleted(let o): "deleted \(o.metadata.key) \(o.metadata.resourceVersion ?? "")"
      }
    }
  }

  /// Per object, events come in resourceVersion order, never twice, and nothing follows a delete
  /// except a re-add.
  func checkOrdering() {
    var last: [String: (Int, Bool)] = [:]
    for e in all {
      let key = e.object.metadata.key
      let rv = Int(e.object.metadata.resourceVersion ?? "") ?? -1
      if let (prev, deleted) = last[key] {
        if case .deleted = e {
          #expect(!deleted, "\(key) deleted twice")
          #expect(rv >= prev, "\(key): delete rv \(rv) before \(prev)")
        } else {
          #expect(rv > prev, "\(key): rv \(rv) not after \(prev) — \(summary)")
          if case .updated = e { #expect(!deleted, "\(key) updated after delete") }
        }
      }
      if case .deleted = e { last[key] = (rv, true) } else { last[key] = (rv, false) }
    }
  }
}

/// Whether the informer's store matches the server's objects exactly (keys and resourceVersions).
func storeMatches<R: KubeResource>(_ store: Store<R>, _ state: LocalKubeState, namespace: String?) throws -> Bool {
  let truth = try state.list(R.self, namespace: namespace).map { "\($0.metadata.key)@\($0.metadata.resourceVersion ?? "")" }
  let cached = store.items.map { "\($0.metadata.key)@\($0.metadata.resourceVersion ?? "")" }
  return truth == cached
}

func service(_ name: String, _ namespace: String, labels: [String: String]? = nil, port: Int = 80) -> KubeService {
  KubeService(metadata: ObjectMeta(name: name, namespace: namespace, labels: labels),
          spec: .init(selector: ["app": name], ports: [.init(name: "http", port: port)]))
}

func temporaryDirectory() throws -> URL {
  let dir = FileManager.default.temporaryDirectory.appendingPathComponent("meshkube-\(UUID().uuidString)")
  try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
  return dir
}

/// A running subprocess whose output is collected as it arrives.
final class Subprocess: Sendable {
  let process: Process
  let pipes: (out: Pipe, err: Pipe)
  let output = Mutex<(stdout: Data, stderr: Data)>((Data(), Data()))

  init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    self.process = process
    self.pipes = (out, err)
    out.fileHandleForReading.readabilityHandler = { [weak self] h in
      let d = h.availableData
      self?.output.withLock { $0.stdout.append(d) }
    }
    err.fileHandleForReading.readabilityHandler = { [weak self] h in
      let d = h.availableData
      self?.output.withLock { $0.stderr.append(d) }
    }
    try process.runWithDefaultSignalMask()
  }

  var stdout: String { String(decoding: output.withLock { $0.stdout }, as: UTF8.self) }
  var stderr: String { String(decoding: output.withLock { $0.stderr }, as: UTF8.self) }

  /// Waits for exit (polling with a deadline); kills the process on timeout.
  func wait(timeout: Duration = .seconds(60)) async throws -> Int32 {
    let deadline = ContinuousClock.now + timeout
    while process.isRunning {
      if ContinuousClock.now > deadline {
        terminate()
        throw TimedOut(what: "\(process.executableURL?.path ?? "") \(process.arguments ?? []) to exit; stderr: \(stderr)", timeout: timeout)
      }
      try await Task.sleep(for: .milliseconds(20))
    }
    drain()
    return process.terminationStatus
  }

  func terminate() {
    if process.isRunning { process.terminate() }
    process.waitUntilExit()
    drain()
  }

  /// Stops the handlers and reads what is left in the pipes.
  private func drain() {
    pipes.out.fileHandleForReading.readabilityHandler = nil
    pipes.err.fileHandleForReading.readabilityHandler = nil
    let out = pipes.out.fileHandleForReading.readDataToEndOfFile()
    let err = pipes.err.fileHandleForReading.readDataToEndOfFile()
    output.withLock {
      $0.stdout.append(out)
      $0.stderr.append(err)
    }
  }

  /// Runs to completion.
  static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                  timeout: Duration = .seconds(60)) async throws -> (status: Int32, stdout: String, stderr: String) {
    let p = try Subprocess(executable, arguments, environment: environment)
    let status = try await p.wait(timeout: timeout)
    return (status, p.stdout, p.stderr)
  }
}

let kubectlPath = "/usr/bin/kubectl"
let kubectlAvailable = FileManager.default.isExecutableFile(atPath: kubectlPath)
let systemPython = "/usr/bin/python3"
let pythonKubernetesAvailable: Bool = {
  guard FileManager.default.isExecutableFile(atPath: systemPython) else { return false }
  let p = Process()
  p.executableURL = URL(fileURLWithPath: systemPython)
  p.arguments = ["-c", "import kubernetes"]
  p.standardOutput = FileHandle.nullDevice
  p.standardError = FileHandle.nullDevice
  do { try p.run() } catch { return false }
  p.waitUntilExit()
  return p.terminationStatus == 0
}()
