import ArgumentParser
import Foundation
import MeshProxyInit

@main
struct MeshProxyInitCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mesh-proxy-init",
    abstract: "Redirects a pod's TCP traffic through its mesh-proxy (iptables nat rules, as linkerd2-proxy-init).",
    discussion: """
      Inbound TCP goes to --incoming-proxy-port (chain SWIFTMESH_INIT_REDIRECT, from PREROUTING), outbound TCP
      to --outgoing-proxy-port (chain SWIFTMESH_INIT_OUTPUT, from OUTPUT), except the proxy's own connections
      (--proxy-uid), loopback, and the ports and subnets to ignore. Every rule carries a swiftmesh-init/...
      comment. Running it again replaces the rules (the same result); --cleanup removes exactly them.
      Needs CAP_NET_ADMIN (and CAP_NET_RAW) in the pod's network namespace.
      """)

  @Option(help: "Port inbound connections are redirected to (the proxy's inbound listener).")
  var incomingProxyPort = 4143
  @Option(help: "Port outbound connections are redirected to (the proxy's outbound listener).")
  var outgoingProxyPort = 4140
  @Option(help: "User ID of the proxy: its own connections are not redirected.")
  var proxyUid = 2102
  @Option(help: "Inbound destination ports (or ranges, low-high) not redirected, comma-separated.")
  var inboundPortsToIgnore = "4190,4191"
  @Option(help: "Outbound destination ports (or ranges) not redirected, comma-separated.")
  var outboundPortsToIgnore = ""
  @Option(help: "Source subnets (CIDR) whose inbound connections are not redirected, comma-separated.")
  var subnetsToIgnore = ""
  @Option(help: "Which iptables backend: nft (default, as Linkerd) or legacy.")
  var iptablesMode = "nft"
  @Flag(help: "Apply to IPv6 (ip6tables) instead of IPv4.")
  var ipv6 = false
  @Flag(help: "Print the iptables-restore input instead of applying it.")
  var simulate = false
  @Flag(help: "Remove the rules and chains mesh-proxy-init added, and nothing else.")
  var cleanup = false

  func run() throws {
    // A child that exits before reading all its input must not take this process with it.
    signal(SIGPIPE, SIG_IGN)
    guard let mode = IPTables.Mode(rawValue: iptablesMode) else {
      throw ValidationError("--iptables-mode must be nft or legacy, not \"\(iptablesMode)\"")
    }
    let iptables = IPTables(mode: mode, ipv6: ipv6)
    do {
      if cleanup {
        if simulate {
          print(ProxyInitRules.cleanupInput(existing: try iptables.saveNAT()) ?? "# nothing to remove", terminator: "")
        } else {
          let removed = try iptables.cleanup()
          print(removed ? "mesh-proxy-init: rules removed" : "mesh-proxy-init: no rules to remove")
        }
        return
      }
      var configuration = ProxyInitConfiguration()
      configuration.incomingProxyPort = incomingProxyPort
      configuration.outgoingProxyPort = outgoingProxyPort
      configuration.proxyUID = proxyUid
      configuration.inboundPortsToIgnore = try PortRange.list(inboundPortsToIgnore)
      configuration.outboundPortsToIgnore = try PortRange.list(outboundPortsToIgnore)
      configuration.subnetsToIgnore = subnetsToIgnore.split(separator: ",")
        .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
      configuration.ipv6 = ipv6
      if simulate {
        // What would be fed to iptables-restore --noflush on a namespace without our rules.
        print(try ProxyInitRules.applyInput(configuration, existing: ""), terminator: "")
        return
      }
      try iptables.apply(configuration)
      print("mesh-proxy-init: \(iptables.restoreCommand) applied \(try ProxyInitRules.rules(configuration).count) rules")
    } catch let error as ProxyInitError {
      throw ValidationError(error.description)
    }
  }
}
