public import Foundation
import MeshCore

/// Runs independent tools (openssl, curl, kubectl, ...) from tests.
public enum Subprocess {
  public struct Output: Sendable, CustomStringConvertible {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
  }

  /// The absolute path of `tool` on PATH, or nil.
  public static func which(_ tool: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for directory in path.split(separator: ":") {
      let candidate = "\(directory)/\(tool)"
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
  }

  /// Runs `tool` with `arguments` to completion, with `input` on standard input. The wait happens on a
  /// thread of its own, never on the concurrency pool (a blocked pool thread could starve the very server
  /// the tool is talking to).
  public static func run(
    _ tool: String, _ arguments: [String], input: Data? = nil, environment: [String: String]? = nil
  ) async throws -> Output {
    try await withCheckedThrowingContinuation { continuation in
      Thread.detachNewThread {
        continuation.resume(
          with: Result { try runBlocking(tool, arguments, input: input, environment: environment) })
      }
    }
  }

  /// As `run`, blocking the calling thread: only for code that is not on the concurrency pool.
  public static func runBlocking(
    _ tool: String, _ arguments: [String], input: Data? = nil, environment: [String: String]? = nil
  ) throws -> Output {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: which(tool) ?? tool)
    process.arguments = arguments
    if let environment {
      process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let stdout = Pipe()
    let stderr = Pipe()
    let stdin = Pipe()
    process.standardOutput = stdout
    process.standardError = stderr
    process.standardInput = stdin
    try process.runWithDefaultSignalMask()
    if let input { stdin.fileHandleForWriting.write(input) }
    try stdin.fileHandleForWriting.close()
    // Read both pipes fully before waiting, so a chatty tool never blocks on a full pipe.
    let errData = OneShotData()
    let errThread = Thread { errData.set(stderr.fileHandleForReading.readDataToEndOfFile()) }
    errThread.start()
    let outData = stdout.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let errBytes = errData.wait()
    return Output(
      status: process.terminationStatus,
      stdout: String(decoding: outData, as: UTF8.self),
      stderr: String(decoding: errBytes, as: UTF8.self))
  }
}

/// A one-shot value handed from a helper thread.
final class OneShotData: @unchecked Sendable {
  private let condition = NSCondition()
  private var value: Data?
  func set(_ data: Data) {
    condition.lock()
    value = data
    condition.signal()
    condition.unlock()
  }
  func wait() -> Data {
    condition.lock()
    defer { condition.unlock() }
    while value == nil { condition.wait() }
    return value!
  }
}

/// A fresh directory under the system temporary directory, removed by `remove()`.
public struct TemporaryDirectory: Sendable {
  public let path: String
  public init(prefix: String = "swiftmesh") throws {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    self.path = url.path
  }
  public func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
  public func remove() { try? FileManager.default.removeItem(atPath: path) }
}
