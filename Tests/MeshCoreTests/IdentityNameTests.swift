import Foundation
import MeshCore
import Testing

@Suite("Identity names")
struct IdentityNameTests {
  @Test("formats the Linkerd-style identity name")
  func formats() throws {
    let name = try IdentityName(serviceAccount: "web", namespace: "default")
    #expect(name.description == "web.default.serviceaccount.identity.swiftmesh.cluster.local")
  }

  @Test("parses and round-trips, with a multi-label trust domain")
  func parses() throws {
    let name = try IdentityName("api.prod.serviceaccount.identity.mesh.example.org")
    #expect(name.serviceAccount == "api")
    #expect(name.namespace == "prod")
    #expect(name.controlPlaneNamespace == "mesh")
    #expect(name.trustDomain.name == "example.org")
    #expect(try IdentityName(name.description) == name)
  }

  @Test(
    "errors name the bad part",
    arguments: [
      ("web.default", "expected <serviceaccount>"),
      ("web.default.sa.identity.swiftmesh.cluster.local", "third label is 'sa'"),
      ("web.default.serviceaccount.ident.swiftmesh.cluster.local", "fourth label is 'ident'"),
      ("Web.default.serviceaccount.identity.swiftmesh.cluster.local", "service account 'Web'"),
      ("web.-x.serviceaccount.identity.swiftmesh.cluster.local", "namespace '-x'"),
      ("web.default.serviceaccount.identity.swiftmesh.cluster..local", "empty label"),
    ])
  func rejects(input: String, fragment: String) {
    #expect {
      _ = try IdentityName(input)
    } throws: { error in
      guard let error = error as? MeshError else { return false }
      return error.code == .invalidIdentity && error.message.contains(fragment)
    }
  }

  @Test("trust domains drop a trailing dot and reject upper case")
  func trustDomain() throws {
    #expect(try TrustDomain("cluster.local.").name == "cluster.local")
    #expect(throws: MeshError.invalidIdentity("")) { try TrustDomain("Cluster.local") }
  }
}

@Suite("Authorities")
struct AuthorityTests {
  @Test("parses host:port, IPv6 literals and defaults")
  func parses() throws {
    let a = try Authority("Backend.Default.svc.cluster.local.:8080")
    #expect(a.host == "backend.default.svc.cluster.local")
    #expect(a.port == 8080)
    #expect(a.kubernetesService()?.name == "backend")
    #expect(a.kubernetesService()?.namespace == "default")
    let v6 = try Authority("[::1]:4140")
    #expect(v6.host == "::1")
    #expect(v6.description == "[::1]:4140")
    #expect(v6.isIPAddress)
    #expect(try Authority("127.0.0.1", defaultPort: 80).description == "127.0.0.1:80")
    #expect(try Authority("web", defaultPort: 80).kubernetesService() == nil)
  }

  @Test("IPv4 literals, underscores in names, case and equality")
  func literalsAndNames() throws {
    #expect(try Authority("10.0.0.255:80").isIPAddress)
    #expect(try !Authority("10.0.0.256:80", defaultPort: nil).isIPAddress, "256 is a name label, not an octet")
    #expect(try !Authority("1.2.3:80").isIPAddress)
    #expect(try !Authority("1.2.3.4.5:80").isIPAddress)
    #expect(try !Authority("1234.2.3.4:80").isIPAddress)
    #expect(try Authority("_grpc._tcp.backend:80").host == "_grpc._tcp.backend")
    #expect(try Authority("WEB.Default:80") == Authority(host: "web.default", port: 80))
    #expect(try Authority("web:80").hashValue == Authority(host: "web", port: 80).hashValue)
    #expect(try Authority("web:80") != Authority("web:81"))
    #expect(throws: MeshError.self) { try Authority("-web:80") }
    #expect(throws: MeshError.self) { try Authority("web..default:80") }
  }

  @Test("authority text parsed byte by byte: ports, brackets, label rules and the errors named")
  func parsingEdges() throws {
    #expect(try Authority("backend:0080").port == 80)
    #expect(throws: MeshError.self) { try Authority("backend:+80") }
    #expect(throws: MeshError.self) { try Authority("backend:8o") }
    #expect(throws: MeshError.self) { try Authority("backend:") }
    #expect(throws: MeshError.self) { try Authority("backend:99999999999999999999999") }
    #expect(throws: MeshError.self) { try Authority("backend:65536") }
    #expect(try Authority("backend:65535").port == 65535)
    #expect(throws: MeshError.self) { try Authority("[::1") }
    #expect(throws: MeshError.self) { try Authority("[::1]x") }
    #expect(throws: MeshError.self) { try Authority(":80") }
    #expect(try Authority("a-b.c", defaultPort: 1).host == "a-b.c")
    for bad in ["web-.default", "web.-default", "web.default-", "we b", "web.", ".web", "caf\u{e9}", "web..a"] {
      #expect(throws: MeshError.self, "\(bad)") { try Authority(host: bad == "web." ? "web.." : bad, port: 80) }
    }
    let long = String(repeating: "a", count: 63)
    #expect(try Authority(host: "\(long).b", port: 80).host.count == 65)
    #expect(throws: MeshError.self) { try Authority(host: "\(long)a.b", port: 80) }
    #expect(throws: MeshError.self) { try Authority(host: Array(repeating: "abcdefghi", count: 26).joined(separator: "."), port: 80) }
    do {
      _ = try Authority("web_-x.b!d:80")
      Issue.record("accepted a name with '!'")
    } catch {
      #expect("\(error)".contains("label 'web_-x' ") == false && "\(error)".contains("b!d"), "\(error)")
    }
  }

  @Test("travels as its text in JSON, and bad text fails to decode")
  func codable() throws {
    let authorities = [try Authority("backend.default.svc.cluster.local:8080"), try Authority("[::1]:4140")]
    let json = try JSONEncoder().encode(authorities)
    #expect(String(decoding: json, as: UTF8.self) == #"["backend.default.svc.cluster.local:8080","[::1]:4140"]"#)
    #expect(try JSONDecoder().decode([Authority].self, from: json) == authorities)
    #expect(throws: MeshError.self) { try JSONDecoder().decode([Authority].self, from: Data(#"["bad host:80"]"#.utf8)) }
    let identity = try IdentityName("web.default.serviceaccount.identity.swiftmesh.cluster.local")
    let encoded = try JSONEncoder().encode([identity])
    #expect(try JSONDecoder().decode([IdentityName].self, from: encoded) == [identity])
  }

  @Test(
    "rejects bad authorities with the reason",
    arguments: [
      ("backend", "no port"), ("backend:http", "port 'http' is not a number"), ("backend:70000", "outside 0-65535"),
      (":80", "empty host"), ("bad host:80", "character"), ("[::1:80", "unterminated"),
    ])
  func rejects(input: String, fragment: String) {
    #expect {
      _ = try Authority(input)
    } throws: { error in
      (error as? MeshError)?.message.contains(fragment) == true
    }
  }
}
