public import Foundation
import MeshCore
import Synchronization

/// A tool running beside a test (openssl s_server, nginx, ...): its output is collected as it comes, a test
/// can wait for a line with a deadline, and `terminate()` (or deinit) stops it.
public final class BackgroundProcess: Sendable {
  private let process: Process
  private let output = TextBuffer()
  private let input = Pipe()
  public let command: String

  public init(_ tool: String, _ arguments: [String], environment: [String: String]? = nil) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: Subprocess.which(tool) ?? tool)
    process.arguments = arguments
    if let environment {
      process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    process.standardInput = input
    self.process = process
    self.command = ([tool] + arguments).joined(separator: " ")
    try process.runWithDefaultSignalMask()
    // A plain thread drains the pipe until EOF, so the tool never blocks on a full pipe.
    let output = self.output
    let reader = pipe.fileHandleForReading
    Thread.detachNewThread {
      while true {
        let data = reader.availableData
        if data.isEmpty { break }
        output.append(String(decoding: data, as: UTF8.self))
      }
    }
  }

  /// Writes `text` to the process's standard input.
  public func write(_ text: String) throws {
    try input.fileHandleForWriting.write(contentsOf: Data(text.utf8))
  }

  /// Everything the process printed so far (stdout and stderr together).
  public var printed: String { output.text }
  public var isRunning: Bool { process.isRunning }

  /// Polls until the output contains `text`; throws with the output so far after `timeout`.
  public func waitForOutput(containing text: String, timeout: Duration = .seconds(10)) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if printed.contains(text) { return }
      if !process.isRunning { break }
      try await Task.sleep(for: .milliseconds(20))
    }
    if printed.contains(text) { return }
    throw TestFailure("'\(command)' did not print '\(text)' in time; it printed:\n\(printed)")
  }

  /// The process id.
  public var pid: Int32 { process.processIdentifier }

  /// Sends `signal` and waits up to `timeout` for the process to exit; returns its exit status, or nil
  /// when it was ended by a signal (SIGKILL after `timeout` included).
  public func stop(with signal: Int32 = SIGTERM, timeout: Duration = .seconds(10)) async throws -> Int32? {
    if process.isRunning { kill(process.processIdentifier, signal) }
    let deadline = ContinuousClock.now + timeout
    while process.isRunning && ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(20))
    }
    if process.isRunning {
      kill(process.processIdentifier, SIGKILL)
      process.waitUntilExit()
      return nil
    }
    return process.terminationReason == .exit ? process.terminationStatus : nil
  }

  /// Waits up to `timeout` for the process to exit by itself; returns its exit status (or the signal that
  /// ended it, negated), nil if it is still running.
  public func waitForExit(timeout: Duration) async throws -> Int32? {
    let deadline = ContinuousClock.now + timeout
    while process.isRunning && ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(20))
    }
    if process.isRunning { return nil }
    return process.terminationReason == .exit ? process.terminationStatus : -process.terminationStatus
  }

  /// The lines printed at error level or worse (swift-log's stream handler writes the level after the
  /// timestamp), and ArgumentParser's `Error:` lines.
  public var errorLines: [String] {
    printed.split(separator: "\n").map(String.init).filter { line in
      let words = line.split(separator: " ", maxSplits: 2)
      return line.hasPrefix("Error:") || (words.count > 1 && (words[1] == "error" || words[1] == "critical"))
    }
  }

  /// Stops the process: SIGTERM, then SIGKILL if it is still there after two seconds.
  public func terminate() {
    guard process.isRunning else { return }
    process.terminate()
    let deadline = Date().addingTimeInterval(2)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
  }

  deinit { terminate() }
}

/// A test-side failure with a message.
public struct TestFailure: Error, CustomStringConvertible {
  public var description: String
  public init(_ description: String) { self.description = description }
}

final class TextBuffer: Sendable {
  private let box = Mutex<String>("")
  func append(_ text: String) { box.withLock { $0 += text } }
  var text: String { box.withLock { $0 } }
}
