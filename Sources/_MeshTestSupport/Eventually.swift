/// What `eventually` throws when its condition did not hold in time. Swift Testing records it as the test's
/// issue; its description names what was awaited, for how long, and where.
public struct TimedOut: Error, CustomStringConvertible {
  public var what: String
  public var timeout: Duration
  /// `File.swift:line` of the `eventually` call.
  public var location: String
  /// What the caller added to explain the failure (logs, state), or empty.
  public var context: String

  public init(what: String, timeout: Duration, location: String = "", context: String = "") {
    self.what = what
    self.timeout = timeout
    self.location = location
    self.context = context
  }

  public var description: String {
    "timed out after \(timeout) waiting for \(what)" + (location.isEmpty ? "" : " (\(location))")
      + (context.isEmpty ? "" : "\n\(context)")
  }
}

/// Polls `condition` every `interval` until it holds, or throws `TimedOut` once `timeout` has passed
/// (`context` is evaluated then, and added to the error).
public func eventually(
  _ what: @autoclosure () -> String, timeout: Duration = .seconds(15), every interval: Duration = .milliseconds(10),
  context: () -> String = { "" }, fileID: String = #fileID, line: Int = #line,
  _ condition: () async throws -> Bool
) async throws {
  let deadline = ContinuousClock.now + timeout
  while ContinuousClock.now < deadline {
    if try await condition() { return }
    try await Task.sleep(for: interval)
  }
  throw TimedOut(what: what(), timeout: timeout, location: "\(fileID):\(line)", context: context())
}
