import Foundation
import MeshProxyInit
import Testing
import _MeshTestSupport

/// mesh-proxy-init in real network namespaces with the real kernel: rules as iptables-save shows them,
/// idempotence, cleanup, and where connections really go. Needs root, `ip` and iptables.
@Suite("mesh-proxy-init in network namespaces", .serialized, .enabled(if: Namespaces.available))
struct ProxyInitNamespaceTests {
  /// The built `mesh-proxy-init`.
  static let binary = BuiltProduct.path("mesh-proxy-init")

  func initCommand(_ namespace: String, _ arguments: [String]) async throws -> Subprocess.Output {
    try await Subprocess.run("timeout", ["30", "ip", "netns", "exec", namespace, Self.binary] + arguments)
  }

  func save(_ namespace: String, _ mode: String) async throws -> String {
    let out = try await Subprocess.run("ip", ["netns", "exec", namespace, "iptables-\(mode)-save", "-t", "nat"])
    // Without the generator's comment lines (they carry the time).
    return out.stdout.split(separator: "\n").filter { !$0.hasPrefix("#") }.joined(separator: "\n")
  }

  @Test("twice is the same as once; --cleanup leaves iptables-save as before (nft and legacy)", arguments: ["nft", "legacy"])
  func idempotentAndCleanup(mode: String) async throws {
    try await Namespaces.with(["smi-\(mode)"]) { names in
      let ns = names[0]
      // Something that is not ours, which must survive both runs and the cleanup.
      _ = try await Subprocess.run("ip", ["netns", "exec", ns, "iptables-\(mode)", "-t", "nat", "-N", "KUBE-TEST"])
      _ = try await Subprocess.run("ip", ["netns", "exec", ns, "iptables-\(mode)", "-t", "nat", "-A", "OUTPUT", "-j", "KUBE-TEST"])
      let before = try await save(ns, mode)
      let first = try await initCommand(ns, ["--iptables-mode", mode, "--outbound-ports-to-ignore", "8080"])
      #expect(first.status == 0, "\(first)")
      let once = try await save(ns, mode)
      let second = try await initCommand(ns, ["--iptables-mode", mode, "--outbound-ports-to-ignore", "8080"])
      #expect(second.status == 0, "\(second)")
      let twice = try await save(ns, mode)
      #expect(once == twice)
      #expect(once.contains("-A OUTPUT -j KUBE-TEST"))
      #expect(once.split(separator: "\n").filter { $0.contains("swiftmesh-init/") }.count == 8, "\(once)")
      #expect(once.split(separator: "\n").filter { $0.contains("swiftmesh-init/install-output") }.count == 1)
      let cleanup = try await initCommand(ns, ["--iptables-mode", mode, "--cleanup"])
      #expect(cleanup.status == 0, "\(cleanup)")
      #expect(try await save(ns, mode) == before)
      let again = try await initCommand(ns, ["--iptables-mode", mode, "--cleanup"])
      #expect(again.stdout.contains("no rules to remove"), "\(again)")
    }
  }

  /// Pod and peer namespaces on a veth pair (198.18.0.1 and 198.18.0.2). In the pod, stand-ins for the
  /// proxy's outbound (4140), inbound (4143) and admin (4191) ports; in the peer, servers on 80 and 8080.
  @Test("connections go where the rules say: outbound to 4140, inbound to 4143, but not the proxy's own, loopback or ignored ports")
  func redirection() async throws {
    try await Namespaces.with(["smi-pod", "smi-peer"]) { names in
      let (pod, peer) = (names[0], names[1])
      try await Namespaces.link(pod, "198.18.0.1", peer, "198.18.0.2")
      let podServers = try BackgroundProcess(
        "ip", ["netns", "exec", pod, WSLike.python, "-c", WSLike.servers, "4140=outbound-proxy", "4143=inbound-proxy", "4191=admin", "9999=pod-loopback"])
      defer { podServers.terminate() }
      let peerServers = try BackgroundProcess(
        "ip", ["netns", "exec", peer, WSLike.python, "-c", WSLike.servers, "80=peer-80", "8080=peer-8080"])
      defer { peerServers.terminate() }
      try await podServers.waitForOutput(containing: "ready", timeout: .seconds(20))
      try await peerServers.waitForOutput(containing: "ready", timeout: .seconds(20))
      let applied = try await initCommand(pod, ["--outbound-ports-to-ignore", "8080"])
      #expect(applied.status == 0, "\(applied)")

      func fetch(_ namespace: String, _ url: String, uid: Int? = nil) async throws -> String {
        var command = ["netns", "exec", namespace]
        if let uid { command += ["setpriv", "--reuid=\(uid)", "--regid=\(uid)", "--clear-groups"] }
        command += ["curl", "-s", "-m", "5", url]
        return try await Subprocess.run("ip", command).stdout
      }
      #expect(try await fetch(pod, "http://198.18.0.2/") == "outbound-proxy")
      #expect(try await fetch(pod, "http://198.18.0.2:8080/") == "peer-8080", "an ignored outbound port")
      #expect(try await fetch(pod, "http://198.18.0.2/", uid: 2102) == "peer-80", "the proxy's own connection")
      #expect(try await fetch(pod, "http://127.0.0.1:9999/") == "pod-loopback", "loopback")
      #expect(try await fetch(peer, "http://198.18.0.1/") == "inbound-proxy")
      #expect(try await fetch(peer, "http://198.18.0.1:12345/") == "inbound-proxy", "any inbound port")
      #expect(try await fetch(peer, "http://198.18.0.1:4191/") == "admin", "an ignored inbound port")
      // Cleaned up: nothing is redirected any more.
      _ = try await initCommand(pod, ["--cleanup"])
      #expect(try await fetch(pod, "http://198.18.0.2/") == "peer-80")
      #expect(try await fetch(peer, "http://198.18.0.1:4191/") == "admin")
    }
  }

  @Test("bad input: an unknown mode, a bad port or subnet gets a clear error and changes nothing")
  func badInput() async throws {
    try await Namespaces.with(["smi-bad"]) { names in
      let ns = names[0]
      let before = try await save(ns, "nft")
      for arguments in [
        ["--iptables-mode", "ebpf"], ["--inbound-ports-to-ignore", "80,http"], ["--subnets-to-ignore", "198.18.0.0/40"],
        ["--incoming-proxy-port", "0"],
      ] {
        let out = try await initCommand(ns, arguments)
        #expect(out.status != 0, "\(arguments): \(out)")
        #expect(out.stderr.contains("Error:"), "\(arguments): \(out)")
      }
      #expect(try await save(ns, "nft") == before)
    }
  }
}

/// Tiny HTTP servers, one per PORT=BODY argument, answering every request with BODY.
enum WSLike {
  static let python = "/usr/bin/python3"
  static let servers = """
    import http.server, socketserver, sys, threading
    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
    def handler(body):
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())
            def log_message(self, *a): pass
        return H
    for spec in sys.argv[1:]:
        port, body = spec.split("=", 1)
        server = Server(("0.0.0.0", int(port)), handler(body))
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
    """
}
