import MeshProxyInit
import Testing

@Suite("mesh-proxy-init rules")
struct ProxyInitRulesTests {
  /// The `--simulate` output for the defaults plus one of everything, as `iptables-restore` reads it.
  @Test("the rules for the defaults plus ignored ports, a range and a subnet (golden)")
  func golden() throws {
    var configuration = ProxyInitConfiguration()
    configuration.outboundPortsToIgnore = try PortRange.list("8080, 9000-9100")
    configuration.subnetsToIgnore = ["198.18.5.0/24"]
    let expected = """
      *nat
      :SWIFTMESH_INIT_REDIRECT - [0:0]
      :SWIFTMESH_INIT_OUTPUT - [0:0]
      -A SWIFTMESH_INIT_REDIRECT -s 198.18.5.0/24 -p tcp -j RETURN -m comment --comment "swiftmesh-init/ignore-subnet"
      -A SWIFTMESH_INIT_REDIRECT -p tcp -m multiport --dports 4190,4191 -j RETURN -m comment --comment "swiftmesh-init/ignore-inbound-ports"
      -A SWIFTMESH_INIT_REDIRECT -p tcp -j REDIRECT --to-ports 4143 -m comment --comment "swiftmesh-init/redirect-all-incoming-to-proxy-port"
      -A PREROUTING -j SWIFTMESH_INIT_REDIRECT -m comment --comment "swiftmesh-init/install-prerouting"
      -A SWIFTMESH_INIT_OUTPUT -m owner --uid-owner 2102 -j RETURN -m comment --comment "swiftmesh-init/ignore-proxy-user-id"
      -A SWIFTMESH_INIT_OUTPUT -o lo -j RETURN -m comment --comment "swiftmesh-init/ignore-loopback"
      -A SWIFTMESH_INIT_OUTPUT -p tcp -m multiport --dports 8080,9000:9100 -j RETURN -m comment --comment "swiftmesh-init/ignore-outbound-ports"
      -A SWIFTMESH_INIT_OUTPUT -p tcp -j REDIRECT --to-ports 4140 -m comment --comment "swiftmesh-init/redirect-all-outgoing-to-proxy-port"
      -A OUTPUT -j SWIFTMESH_INIT_OUTPUT -m comment --comment "swiftmesh-init/install-output"
      COMMIT

      """
    #expect(try ProxyInitRules.applyInput(configuration, existing: "") == expected)
  }

  @Test("more than 15 ignored ports become several multiport rules")
  func multiportLimit() throws {
    var configuration = ProxyInitConfiguration()
    configuration.inboundPortsToIgnore = (1...20).map { PortRange(1000 + $0) }
    let rules = try ProxyInitRules.rules(configuration).filter { $0.contains("ignore-inbound-ports") }
    #expect(rules.count == 2)
    #expect(rules[0].contains("--dports 1001,1002,1003,1004,1005,1006,1007,1008,1009,1010,1011,1012,1013,1014,1015 "))
    #expect(rules[1].contains("--dports 1016,1017,1018,1019,1020 "))
  }

  @Test("jumps already installed are removed before they are added again; cleanup removes only ours")
  func existingRules() throws {
    let saved = """
      *nat
      :PREROUTING ACCEPT [0:0]
      :OUTPUT ACCEPT [0:0]
      :SWIFTMESH_INIT_OUTPUT - [0:0]
      :SWIFTMESH_INIT_REDIRECT - [0:0]
      :KUBE-SERVICES - [0:0]
      -A PREROUTING -j KUBE-SERVICES
      -A PREROUTING -m comment --comment "swiftmesh-init/install-prerouting" -j SWIFTMESH_INIT_REDIRECT
      -A OUTPUT -m comment --comment "swiftmesh-init/install-output" -j SWIFTMESH_INIT_OUTPUT
      COMMIT
      """
    let apply = try ProxyInitRules.applyInput(ProxyInitConfiguration(), existing: saved)
    #expect(apply.contains("-D PREROUTING -m comment --comment \"swiftmesh-init/install-prerouting\" -j SWIFTMESH_INIT_REDIRECT\n"))
    #expect(apply.contains("-D OUTPUT -m comment --comment \"swiftmesh-init/install-output\" -j SWIFTMESH_INIT_OUTPUT\n"))
    #expect(!apply.contains("KUBE-SERVICES"))
    let cleanup = try #require(ProxyInitRules.cleanupInput(existing: saved))
    #expect(
      cleanup == """
        *nat
        -D PREROUTING -m comment --comment "swiftmesh-init/install-prerouting" -j SWIFTMESH_INIT_REDIRECT
        -D OUTPUT -m comment --comment "swiftmesh-init/install-output" -j SWIFTMESH_INIT_OUTPUT
        -F SWIFTMESH_INIT_REDIRECT
        -F SWIFTMESH_INIT_OUTPUT
        -X SWIFTMESH_INIT_REDIRECT
        -X SWIFTMESH_INIT_OUTPUT
        COMMIT

        """)
    #expect(ProxyInitRules.cleanupInput(existing: "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n") == nil)
  }

  @Test("bad input: ports, ranges and subnets that do not parse are refused with the value named")
  func badInput() throws {
    for text in ["0", "65536", "http", "9100-9000", "1-2-3"] {
      #expect(throws: ProxyInitError.self) { try PortRange.list(text) }
    }
    do {
      _ = try PortRange.list("80,eighty")
      Issue.record("accepted eighty")
    } catch let error as ProxyInitError {
      #expect(error.description.contains("\"eighty\""))
    }
    for subnet in ["198.18.0.0", "198.18.0.0/33", "not-a-subnet/24", "fd00::/64"] {
      var configuration = ProxyInitConfiguration()
      configuration.subnetsToIgnore = [subnet]
      #expect(throws: ProxyInitError.self, "\(subnet)") { try ProxyInitRules.rules(configuration) }
    }
    var v6 = ProxyInitConfiguration()
    v6.ipv6 = true
    v6.subnetsToIgnore = ["fd00::/64"]
    #expect(try ProxyInitRules.rules(v6).contains { $0.contains("-s fd00::/64") })
    var badPort = ProxyInitConfiguration()
    badPort.incomingProxyPort = 70000
    #expect(throws: ProxyInitError.self) { try ProxyInitRules.rules(badPort) }
  }
}
