import AsyncHTTPClient
import Foundation
import MeshCore
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// The demo's components as executables of their own (`meshctl demo --processes`), as in a real deployment:
/// each one started with its command line, its output in `<directory>/<name>.log`, watched while the demo
/// runs (a component that exits unasked fails the demo with its log's last lines), and stopped with SIGTERM,
/// then SIGKILL if it does not exit within its grace period.
final class DemoProcesses: Sendable {
  /// The executables the demo starts, expected side by side in `binDirectory`.
  static let executables = ["meshctl", "mesh-controller", "mesh-proxy", "mesh-mirror"]

  let binDirectory: String
  let directory: String
  let logLevel: String

  private final class Child: Sendable {
    let name: String
    let process: Process
    let log: String
    let commandLine: String
    let stopping = Atomic<Bool>(false)
    init(name: String, process: Process, log: String, commandLine: String) {
      self.name = name
      self.process = process
      self.log = log
      self.commandLine = commandLine
    }
  }
  private let children = Mutex<[String: Child]>([:])
  private let order = Mutex<[String]>([])

  /// `directory` holds the logs; `binDirectory` comes from `locate`.
  init(binDirectory: String, directory: String, logLevel: String) {
    self.binDirectory = binDirectory
    self.directory = directory
    self.logLevel = logLevel
  }

  /// The directory holding every executable the demo starts: `binDirectory`, default the running
  /// executable's own. Throws, naming the first missing one, if any is not built there.
  static func locate(binDirectory: String?) throws -> String {
    let bin = binDirectory ?? ownDirectory()
    for executable in executables where !FileManager.default.isExecutableFile(atPath: "\(bin)/\(executable)") {
      throw MeshError.invalidConfiguration(
        "--processes runs each component as its own executable, and \(executable) is not built in \(bin): "
          + "run `swift build` first (it builds every executable), or pass --bin-dir")
    }
    return bin
  }

  /// The directory of the running executable (`/proc/self/exe`, else argv[0]).
  static func ownDirectory() -> String {
    let executable =
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
      ?? URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
    return URL(fileURLWithPath: executable).deletingLastPathComponent().path
  }

  func path(_ file: String) -> String { "\(directory)/\(file)" }

  /// Runs `executable` to completion (a one-shot command such as `meshctl identity init`); its output goes
  /// to `<name>.log`. Throws with that output if it fails.
  func run(_ name: String, _ executable: String, _ arguments: [String], timeout: Duration = .seconds(60)) async throws {
    let child = try spawn(name, executable, arguments, register: false)
    let deadline = ContinuousClock.now + timeout
    while child.process.isRunning {
      if ContinuousClock.now > deadline {
        child.process.terminate()
        throw MeshError.unavailable("\(child.commandLine) did not finish within \(timeout)\(tail(of: child.log))")
      }
      do {
        try await Task.sleep(for: .milliseconds(20))
      } catch {
        // Cancelled: the command goes too.
        child.process.terminate()
        throw error
      }
    }
    guard child.process.terminationReason == .exit, child.process.terminationStatus == 0 else {
      throw MeshError.unavailable(
        "\(child.commandLine) failed (\(describe(child.process)))\(tail(of: child.log))")
    }
  }

  /// Starts a long-running component under `name` (its log is `<name>.log`).
  func start(_ name: String, _ executable: String, _ arguments: [String]) throws {
    _ = try spawn(name, executable, arguments, register: true)
  }

  private func spawn(_ name: String, _ executable: String, _ arguments: [String], register: Bool) throws -> Child {
    let log = path("\(name).log")
    guard FileManager.default.createFile(atPath: log, contents: nil), let handle = FileHandle(forWritingAtPath: log)
    else { throw MeshError.unavailable("cannot write \(log)") }
    defer { try? handle.close() }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "\(binDirectory)/\(executable)")
    process.arguments = arguments
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    process.standardOutput = handle
    process.standardError = handle
    process.standardInput = FileHandle.nullDevice
    let commandLine = ([executable] + arguments).joined(separator: " ")
    let child = Child(name: name, process: process, log: log, commandLine: commandLine)
    if register {
      let duplicate = children.withLock { children -> Bool in
        if children[name] != nil { return true }
        children[name] = child
        return false
      }
      if duplicate { throw MeshError.invalidArgument("a component named \(name) is already running") }
      order.withLock { $0.append(name) }
    }
    do {
      try process.runWithDefaultSignalMask()
    } catch {
      if register { children.withLock { $0[name] = nil } }
      throw MeshError.unavailable("cannot start \(commandLine): \(error)")
    }
    return child
  }

  /// The process ids of the running components, by name.
  var running: [String: Int32] {
    children.withLock { children in
      children.filter { $0.value.process.isRunning }.mapValues { $0.process.processIdentifier }
    }
  }

  /// Throws if a component exited without being asked to: the demo cannot go on without it.
  func checkAlive() throws {
    let dead = children.withLock { children in
      children.values.first { !$0.process.isRunning && !$0.stopping.load(ordering: .relaxed) }
    }
    if let dead {
      throw MeshError.unavailable(
        "\(dead.name) (\(dead.commandLine)) exited unexpectedly (\(describe(dead.process)))\(tail(of: dead.log))")
    }
  }

  /// Polls `condition` every 50 ms for at most `timeout`, failing early if a component died.
  func wait(for what: String, timeout: Duration = .seconds(30), _ condition: @Sendable () async -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      try checkAlive()
      if await condition() { return }
      try await Task.sleep(for: .milliseconds(50))
    }
    try checkAlive()
    throw MeshError.unavailable("timed out after \(timeout) waiting for \(what); the logs are in \(directory)")
  }

  /// Waits until `url` answers 200 (a component's `/ready`).
  func waitReady(_ what: String, url: String, timeout: Duration = .seconds(30)) async throws {
    try await wait(for: "\(what) to answer \(url)", timeout: timeout) {
      let request = HTTPClientRequest(url: url)
      guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(2)) else { return false }
      _ = try? await response.body.collect(upTo: 1 << 20)
      return response.status == .ok
    }
  }

  /// Stops `name` with SIGTERM, then SIGKILL after `grace`.
  func stop(_ name: String, grace: Duration = .seconds(10)) async {
    guard let child = children.withLock({ $0[name] }) else { return }
    child.stopping.store(true, ordering: .relaxed)
    guard child.process.isRunning else { return }
    child.process.terminate()
    let deadline = ContinuousClock.now + grace
    while child.process.isRunning, ContinuousClock.now < deadline {
      try? await Task.sleep(for: .milliseconds(20))
    }
    if child.process.isRunning {
      kill(child.process.processIdentifier, SIGKILL)
      while child.process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
    }
  }

  /// Stops every component, the last started first (clients before the servers they use), all within
  /// `grace`. Not cancellable: it runs in the demo's cleanup, which may follow a cancellation.
  func stopAll(grace: Duration = .seconds(10)) async {
    let names = order.withLock { $0.reversed() }
    await Task {
      await withTaskGroup(of: Void.self) { group in
        for name in names { group.addTask { await self.stop(name, grace: grace) } }
      }
    }.value
  }

  private func describe(_ process: Process) -> String {
    process.terminationReason == .uncaughtSignal
      ? "signal \(process.terminationStatus)" : "exit status \(process.terminationStatus)"
  }

  private func tail(of log: String, lines: Int = 12) -> String {
    guard let text = try? String(contentsOfFile: log, encoding: .utf8), !text.isEmpty else { return "" }
    let last = text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    return "; last lines of \(log):\n\(last)"
  }

  /// Whether something accepts connections on 127.0.0.1:`port` now.
  static func isListening(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = loopback(port: port)
    return withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
  }

  private static func loopback(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return address
  }

  /// `count` distinct loopback ports nobody listens on now (all held while chosen, then released).
  static func freePorts(_ count: Int) throws -> [Int] {
    var descriptors: [Int32] = []
    defer { for fd in descriptors { close(fd) } }
    return try (0..<count).map { _ in
      let (fd, port) = try boundPort()
      descriptors.append(fd)
      return port
    }
  }

  /// A loopback port nobody listens on now (bound and released: the kernel does not hand it out again soon).
  static func freePort() throws -> Int {
    let (fd, port) = try boundPort()
    close(fd)
    return port
  }

  /// A socket bound to 127.0.0.1:0, and its port; the caller closes it.
  private static func boundPort() throws -> (Int32, Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw MeshError.unavailable("socket(): errno \(errno)") }
    var closeOnError = true
    defer { if closeOnError { close(fd) } }
    var address = loopback(port: 0)
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw MeshError.unavailable("bind(127.0.0.1:0): errno \(errno)") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw MeshError.unavailable("getsockname(): errno \(errno)") }
    closeOnError = false
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
  }
}
