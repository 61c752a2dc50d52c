import Foundation

/// Network namespaces a test makes and always removes (with the processes it started in them).
public enum Namespaces {
  public static var available: Bool {
    guard getuid() == 0, Subprocess.which("ip") != nil, Subprocess.which("iptables-nft-save") != nil,
      Subprocess.which("curl") != nil, Subprocess.which("setpriv") != nil
    else { return false }
    let probe = "smi-probe-\(getpid())"
    guard (try? Subprocess.runBlocking("ip", ["netns", "add", probe]).status) == 0 else { return false }
    _ = try? Subprocess.runBlocking("ip", ["netns", "del", probe])
    return true
  }

  public static func with(_ names: [String], _ body: ([String]) async throws -> Void) async throws {
    await removeAbandoned()
    let unique = names.map { "\($0)-\(getpid())" }
    for name in unique {
      _ = try? await Subprocess.run("ip", ["netns", "del", name])
      let added = try await Subprocess.run("ip", ["netns", "add", name])
      guard added.status == 0 else { throw TestFailure("ip netns add \(name): \(added)") }
      _ = try await Subprocess.run("ip", ["netns", "exec", name, "ip", "link", "set", "lo", "up"])
    }
    do {
      try await body(unique)
    } catch {
      await remove(unique)
      throw error
    }
    await remove(unique)
  }

  /// Namespaces a test process that no longer runs made (`<name>-<pid>`: it crashed before removing them),
  /// with what runs in them and the veth pairs they hold (a bridge's host end among them).
  private static func removeAbandoned() async {
    guard let list = try? await Subprocess.run("ip", ["netns", "list"]).stdout else { return }
    let abandoned = list.split(separator: "\n").compactMap { line -> String? in
      guard let name = line.split(separator: " ").first, let dash = name.lastIndex(of: "-"),
        let pid = Int32(name[name.index(after: dash)...]), name.hasPrefix("sm"), pid != getpid(),
        kill(pid, 0) != 0
      else { return nil }
      return String(name)
    }
    await remove(abandoned)
  }

  private static func remove(_ names: [String]) async {
    for name in names {
      // Anything still running in it goes first; then the namespace (and its veth ends) goes.
      if let pids = try? await Subprocess.run("ip", ["netns", "pids", name]).stdout {
        for pid in pids.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
      }
      _ = try? await Subprocess.run("ip", ["netns", "del", name])
    }
  }

  /// A veth pair between two namespaces, `a` and `b` on a /30.
  public static func link(_ nsA: String, _ a: String, _ nsB: String, _ b: String) async throws {
    let veth = "v\(getpid() % 100000)"
    for command in [
      ["link", "add", "\(veth)a", "netns", nsA, "type", "veth", "peer", "name", "\(veth)b", "netns", nsB],
      ["-n", nsA, "addr", "add", "\(a)/30", "dev", "\(veth)a"],
      ["-n", nsB, "addr", "add", "\(b)/30", "dev", "\(veth)b"],
      ["-n", nsA, "link", "set", "\(veth)a", "up"],
      ["-n", nsB, "link", "set", "\(veth)b", "up"],
    ] {
      let out = try await Subprocess.run("ip", command)
      guard out.status == 0 else { throw TestFailure("ip \(command.joined(separator: " ")): \(out)") }
    }
  }

  /// A bridge in namespace `node` joining each of `pods` (namespace and address, all in one /24) and, with
  /// `host`, this process's own namespace at that address, by veth pairs (removed with `node`). Pods route
  /// everything else via `gateway`, so addresses outside the /24 (Service ClusterIPs) have a route.
  public static func bridge(
    node: String, host: String?, pods: [(namespace: String, address: String)], gateway: String
  ) async throws {
    let prefix = "s\(getpid() % 100000)"
    var commands: [[String]] = [
      ["-n", node, "link", "add", "br0", "type", "bridge"],
      ["-n", node, "link", "set", "br0", "up"],
    ]
    var members = pods.map { (namespace: Optional($0.namespace), address: $0.address) }
    if let host { members.append((namespace: nil, address: host)) }
    for (index, member) in members.enumerated() {
      let (inner, outer) = ("\(prefix)p\(index)", "\(prefix)b\(index)")
      let place = member.namespace.map { ["netns", $0] } ?? []
      let inNamespace = member.namespace.map { ["-n", $0] } ?? []
      commands += [
        ["link", "add", inner] + place + ["type", "veth", "peer", "name", outer, "netns", node],
        ["-n", node, "link", "set", outer, "master", "br0", "up"],
        inNamespace + ["addr", "add", "\(member.address)/24", "dev", inner],
        inNamespace + ["link", "set", inner, "up"],
      ]
      if member.namespace != nil { commands.append(inNamespace + ["route", "add", "default", "via", gateway]) }
    }
    for command in commands {
      let out = try await Subprocess.run("ip", command)
      guard out.status == 0 else { throw TestFailure("ip \(command.joined(separator: " ")): \(out)") }
    }
  }
}

/// The package's executables as the test build made them (they sit beside the test bundle).
public enum BuiltProduct {
  /// The path of executable `name` of this build, found from the test binary's path; the bare name (looked
  /// up on PATH) when it is not there.
  public static func path(_ name: String) -> String {
    let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    var directory = executable.deletingLastPathComponent()
    for _ in 0..<4 {
      let candidate = directory.appendingPathComponent(name).path
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
      directory = directory.deletingLastPathComponent()
    }
    return name
  }

  public static func exists(_ name: String) -> Bool { path(name).hasPrefix("/") }
}
