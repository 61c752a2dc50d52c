public import Foundation

/// What `mesh-proxy-init` sets up in a pod's network namespace: every inbound TCP connection goes to the
/// proxy's inbound port, every outbound one (but the proxy's own) to its outbound port, as
/// linkerd2-proxy-init does, in the `nat` table.
public struct ProxyInitConfiguration: Sendable, Equatable {
  /// Where inbound connections are redirected (the proxy's inbound listener).
  public var incomingProxyPort = 4143
  /// Where outbound connections are redirected (the proxy's outbound listener).
  public var outgoingProxyPort = 4140
  /// The proxy's user: its own connections leave unredirected.
  public var proxyUID = 2102
  /// Inbound destination ports left alone (the proxy's admin and tap ports by default).
  public var inboundPortsToIgnore: [PortRange] = [PortRange(4190), PortRange(4191)]
  /// Outbound destination ports left alone.
  public var outboundPortsToIgnore: [PortRange] = []
  /// Source subnets whose inbound connections are left alone (CIDRs of the rules' address family).
  public var subnetsToIgnore: [String] = []
  /// `ip6tables` instead of `iptables`.
  public var ipv6 = false

  public init() {}
}

/// A port or an inclusive range of ports, as `8080` or `8000-8100`.
public struct PortRange: Sendable, Equatable, CustomStringConvertible {
  public var lower: Int
  public var upper: Int

  public init(_ port: Int) {
    lower = port
    upper = port
  }

  public init(_ lower: Int, _ upper: Int) {
    self.lower = lower
    self.upper = upper
  }

  /// Parses `8080` or `8000-8100`.
  public init(parsing text: String) throws {
    let parts = text.split(separator: "-", omittingEmptySubsequences: false).map {
      $0.trimmingCharacters(in: .whitespaces)
    }
    guard parts.count == 1 || parts.count == 2, let lower = Int(parts[0]), let upper = Int(parts.last!),
      (1...65535).contains(lower), (1...65535).contains(upper), lower <= upper
    else { throw ProxyInitError("\"\(text)\" is not a port (1-65535) or a port range (low-high)") }
    self.lower = lower
    self.upper = upper
  }

  /// Parses a comma-separated list; empty gives an empty list.
  public static func list(_ text: String) throws -> [PortRange] {
    try text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
      .map { try PortRange(parsing: $0) }
  }

  public var description: String { lower == upper ? "\(lower)" : "\(lower)-\(upper)" }
  /// The form `-m multiport --dports` takes.
  var multiport: String { lower == upper ? "\(lower)" : "\(lower):\(upper)" }
}

public struct ProxyInitError: Error, CustomStringConvertible, Sendable {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// The rules, as `iptables-restore` input, and how to apply and remove them.
public enum ProxyInitRules {
  public static let redirectChain = "SWIFTMESH_INIT_REDIRECT"
  public static let outputChain = "SWIFTMESH_INIT_OUTPUT"
  /// Every rule's comment starts with this.
  public static let commentPrefix = "swiftmesh-init/"

  /// The rules of `configuration`, one `iptables-restore` line each (without the table and COMMIT lines).
  /// `iptables -m multiport` takes at most 15 ports per rule: longer lists become several rules.
  public static func rules(_ configuration: ProxyInitConfiguration) throws -> [String] {
    try validate(configuration)
    var rules: [String] = []
    func comment(_ name: String) -> String { "-m comment --comment \"\(commentPrefix)\(name)\"" }
    // Inbound.
    for subnet in configuration.subnetsToIgnore {
      rules.append("-A \(redirectChain) -s \(subnet) -p tcp -j RETURN \(comment("ignore-subnet"))")
    }
    for group in chunks(configuration.inboundPortsToIgnore) {
      rules.append(
        "-A \(redirectChain) -p tcp -m multiport --dports \(group) -j RETURN \(comment("ignore-inbound-ports"))")
    }
    rules.append(
      "-A \(redirectChain) -p tcp -j REDIRECT --to-ports \(configuration.incomingProxyPort) \(comment("redirect-all-incoming-to-proxy-port"))"
    )
    rules.append("-A PREROUTING -j \(redirectChain) \(comment("install-prerouting"))")
    // Outbound.
    rules.append(
      "-A \(outputChain) -m owner --uid-owner \(configuration.proxyUID) -j RETURN \(comment("ignore-proxy-user-id"))")
    rules.append("-A \(outputChain) -o lo -j RETURN \(comment("ignore-loopback"))")
    for group in chunks(configuration.outboundPortsToIgnore) {
      rules.append(
        "-A \(outputChain) -p tcp -m multiport --dports \(group) -j RETURN \(comment("ignore-outbound-ports"))")
    }
    rules.append(
      "-A \(outputChain) -p tcp -j REDIRECT --to-ports \(configuration.outgoingProxyPort) \(comment("redirect-all-outgoing-to-proxy-port"))"
    )
    rules.append("-A OUTPUT -j \(outputChain) \(comment("install-output"))")
    return rules
  }

  /// `iptables-restore --noflush` input that installs `configuration` over `existing` (the `nat` table as
  /// `iptables-save` prints it): the two chains are declared (so emptied, or created), jumps to them that
  /// are already in place are removed first, and the rules added. Running it twice gives the same rules.
  public static func applyInput(_ configuration: ProxyInitConfiguration, existing: String) throws -> String {
    var lines = ["*nat", ":\(redirectChain) - [0:0]", ":\(outputChain) - [0:0]"]
    lines += installedJumps(existing).map { "-D" + $0.dropFirst(2) }
    lines += try rules(configuration)
    lines.append("COMMIT")
    return lines.joined(separator: "\n") + "\n"
  }

  /// `iptables-restore --noflush` input that removes what `applyInput` added to `existing`, and only that:
  /// the jumps from the built-in chains, then the two chains. Nil when there is nothing of ours.
  public static func cleanupInput(existing: String) -> String? {
    let jumps = installedJumps(existing)
    let chains = [redirectChain, outputChain].filter { chain in
      existing.split(separator: "\n").contains { $0.hasPrefix(":\(chain) ") }
    }
    guard !jumps.isEmpty || !chains.isEmpty else { return nil }
    var lines = ["*nat"]
    lines += jumps.map { "-D" + $0.dropFirst(2) }
    lines += chains.map { "-F \($0)" }
    lines += chains.map { "-X \($0)" }
    lines.append("COMMIT")
    return lines.joined(separator: "\n") + "\n"
  }

  /// Rules in built-in chains that jump to ours (`-A PREROUTING -j SWIFTMESH_INIT_REDIRECT ...`).
  static func installedJumps(_ saved: String) -> [String] {
    saved.split(separator: "\n").map(String.init).filter { line in
      (line.hasPrefix("-A PREROUTING ") || line.hasPrefix("-A OUTPUT "))
        && (line.contains("-j \(redirectChain)") || line.contains("-j \(outputChain)"))
    }
  }

  private static func chunks(_ ports: [PortRange]) -> [String] {
    stride(from: 0, to: ports.count, by: 15).map { start in
      ports[start..<min(start + 15, ports.count)].map(\.multiport).joined(separator: ",")
    }
  }

  private static func validate(_ configuration: ProxyInitConfiguration) throws {
    for (name, port) in [
      ("--incoming-proxy-port", configuration.incomingProxyPort),
      ("--outgoing-proxy-port", configuration.outgoingProxyPort),
    ] where !(1...65535).contains(port) {
      throw ProxyInitError("\(name) \(port) is not a port (1-65535)")
    }
    guard configuration.proxyUID >= 0 else { throw ProxyInitError("--proxy-uid must not be negative") }
    for subnet in configuration.subnetsToIgnore {
      try validateCIDR(subnet, ipv6: configuration.ipv6)
    }
  }

  private static func validateCIDR(_ text: String, ipv6: Bool) throws {
    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
    let family = ipv6 ? "IPv6" : "IPv4"
    guard parts.count == 2, let bits = Int(parts[1]), (0...(ipv6 ? 128 : 32)).contains(bits) else {
      throw ProxyInitError("\"\(text)\" is not an \(family) subnet (address/prefix-length)")
    }
    var buffer = [UInt8](repeating: 0, count: 16)
    let ok = String(parts[0]).withCString { inet_pton(ipv6 ? AF_INET6 : AF_INET, $0, &buffer) } == 1
    guard ok else { throw ProxyInitError("\"\(text)\" is not an \(family) subnet (address/prefix-length)") }
  }
}

/// `iptables-save` and `iptables-restore` (nft or legacy; IPv4 or IPv6), run as processes.
public struct IPTables: Sendable {
  public enum Mode: String, Sendable, CaseIterable {
    case nft, legacy
  }

  public var mode: Mode
  public var ipv6: Bool

  public init(mode: Mode = .nft, ipv6: Bool = false) {
    self.mode = mode
    self.ipv6 = ipv6
  }

  var family: String { ipv6 ? "ip6tables" : "iptables" }
  public var saveCommand: String { "\(family)-\(mode.rawValue)-save" }
  public var restoreCommand: String { "\(family)-\(mode.rawValue)-restore" }

  /// The `nat` table as `iptables-save -t nat` prints it.
  public func saveNAT() throws -> String {
    try run(saveCommand, ["-t", "nat"], input: nil)
  }

  /// Feeds `input` to `iptables-restore --noflush`.
  public func restore(_ input: String) throws {
    _ = try run(restoreCommand, ["--noflush"], input: input)
  }

  /// Installs the rules of `configuration` (idempotent).
  public func apply(_ configuration: ProxyInitConfiguration) throws {
    try restore(try ProxyInitRules.applyInput(configuration, existing: try saveNAT()))
  }

  /// Removes what `apply` installed; nothing else. Whether there was anything to remove.
  @discardableResult
  public func cleanup() throws -> Bool {
    guard let input = ProxyInitRules.cleanupInput(existing: try saveNAT()) else { return false }
    try restore(input)
    return true
  }

  private func run(_ command: String, _ arguments: [String], input: String?) throws -> String {
    let path = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map { "\($0)/\(command)" }
      .first { FileManager.default.isExecutableFile(atPath: $0) }
    guard let path else {
      throw ProxyInitError("\(command) not found (install iptables; --iptables-mode nft or legacy picks which)")
    }
    let result = try Spawn.run(path, arguments, input: input.map { Array($0.utf8) } ?? [])
    guard result.status == 0 else {
      let shown = ([command] + arguments).joined(separator: " ")
      let message = String(decoding: result.stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
      throw ProxyInitError(
        "\(shown) failed (exit \(result.status)): \(message)" + (input.map { "\ninput was:\n\($0)" } ?? ""))
    }
    return String(decoding: result.stdout, as: UTF8.self)
  }
}

/// Runs a program to completion with `posix_spawn`, feeding it `input` and collecting both outputs with
/// `poll`. Not Foundation's `Process`: in a fresh network namespace (an init container's, a test's) its
/// run loop cannot set up its wake-up sockets and waits forever.
enum Spawn {
  struct Result {
    var status: Int32
    var stdout: [UInt8]
    var stderr: [UInt8]
  }

  static func run(_ path: String, _ arguments: [String], input: [UInt8]) throws -> Result {
    var inPipe: [Int32] = [0, 0]
    var outPipe: [Int32] = [0, 0]
    var errPipe: [Int32] = [0, 0]
    guard pipe(&inPipe) == 0, pipe(&outPipe) == 0, pipe(&errPipe) == 0 else {
      throw ProxyInitError("pipe() failed: errno \(errno)")
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
    posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
    for fd in inPipe + outPipe + errPipe { posix_spawn_file_actions_addclose(&actions, fd) }
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, path, &actions, nil, argv, environ)
    close(inPipe[0])
    close(outPipe[1])
    close(errPipe[1])
    guard spawned == 0 else {
      close(inPipe[1])
      close(outPipe[0])
      close(errPipe[0])
      throw ProxyInitError("could not start \(path): errno \(spawned)")
    }
    // Write the input, then read both outputs to their end.
    var written = 0
    while written < input.count {
      let n = input[written...].withUnsafeBytes { write(inPipe[1], $0.baseAddress, $0.count) }
      if n <= 0 { break }
      written += n
    }
    close(inPipe[1])
    var stdout: [UInt8] = []
    var stderr: [UInt8] = []
    var open: [(fd: Int32, isOut: Bool)] = [(outPipe[0], true), (errPipe[0], false)]
    var buffer = [UInt8](repeating: 0, count: 65536)
    while !open.isEmpty {
      var fds = open.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
      guard poll(&fds, nfds_t(fds.count), -1) >= 0 else {
        if errno == EINTR { continue }
        break
      }
      var stillOpen: [(fd: Int32, isOut: Bool)] = []
      for (index, entry) in open.enumerated() {
        guard fds[index].revents != 0 else {
          stillOpen.append(entry)
          continue
        }
        let n = read(entry.fd, &buffer, buffer.count)
        if n > 0 {
          if entry.isOut { stdout += buffer[0..<n] } else { stderr += buffer[0..<n] }
          stillOpen.append(entry)
        } else {
          close(entry.fd)
        }
      }
      open = stillOpen
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // WIFEXITED / WEXITSTATUS by hand (macros are not imported).
    let exited = (status & 0x7f) == 0
    return Result(status: exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), stdout: stdout, stderr: stderr)
  }
}
