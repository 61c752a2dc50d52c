import Foundation
import MeshKube
import Testing

@Suite("Kubeconfig")
struct KubeconfigTests {
  static let good = """
    apiVersion: v1
    kind: Config
    current-context: west
    clusters:
    - name: west
      cluster:
        server: https://127.0.0.1:6443
        certificate-authority-data: \(Data("CA-PEM".utf8).base64EncodedString())
    - name: east
      cluster:
        server: https://127.0.0.2:6443
        insecure-skip-tls-verify: true
    users:
    - name: admin
      user:
        client-certificate-data: \(Data("CERT".utf8).base64EncodedString())
        client-key-data: \(Data("KEY".utf8).base64EncodedString())
    - name: robot
      user:
        token: s3cret
    contexts:
    - name: west
      context: {cluster: west, user: admin, namespace: shop}
    - name: east
      context: {cluster: east, user: robot}
    """

  func write(_ text: String, in dir: URL, _ name: String) throws -> String {
    let url = dir.appendingPathComponent(name)
    try text.write(to: url, atomically: true, encoding: .utf8)
    return url.path
  }

  @Test("current-context, -data fields, tokens, insecure-skip-tls-verify, --context")
  func resolve() throws {
    let config = try Kubeconfig.parse(yaml: Self.good)
    let west = try config.resolve()
    #expect(west.server == "https://127.0.0.1:6443")
    #expect(west.certificateAuthorityPEM == Data("CA-PEM".utf8))
    #expect(west.clientCertificatePEM == Data("CERT".utf8))
    #expect(west.clientKeyPEM == Data("KEY".utf8))
    #expect(west.namespace == "shop")
    let east = try config.resolve(context: "east")
    #expect(east.token == "s3cret")
    #expect(east.insecureSkipTLSVerify)
  }

  func expectError(_ yaml: String, context: String? = nil, contains text: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(sourceLocation: sourceLocation) {
      _ = try Kubeconfig.parse(yaml: yaml, path: "/x").resolve(context: context)
    } throws: { error in
      guard let e = error as? KubeError, e.isInvalidKubeconfig else { return false }
      if !e.message.contains(text) { Issue.record("'\(e.message)' does not contain '\(text)'", sourceLocation: sourceLocation) }
      return true
    }
  }

  @Test("broken files name the field")
  func errors() {
    expectError(Self.good.replacingOccurrences(of: "{cluster: east, user: robot}", with: "{cluster: foo, user: robot}"),
                context: "east", contains: "kubeconfig /x: context 'east' names cluster 'foo' which is not defined")
    expectError(Self.good.replacingOccurrences(of: "client-key-data: ", with: "client-key-data: '!!notbase64!!' #"),
                contains: "users[0].user.client-key-data: not base64")
    expectError(Self.good, context: "north", contains: "--context names context 'north' which is not defined")
    expectError(Self.good.replacingOccurrences(of: "user: robot}", with: "user: ghost}"), context: "east",
                contains: "context 'east' names user 'ghost' which is not defined")
    expectError(Self.good.replacingOccurrences(of: "server: https://127.0.0.2:6443", with: "server: 127.0.0.2"),
                context: "east", contains: "clusters[1].cluster.server: '127.0.0.2' is not an http(s) URL")
    expectError(Self.good.replacingOccurrences(of: "insecure-skip-tls-verify: true", with: "insecure-skip-tls-verify: [1]"),
                contains: "clusters[1].cluster.insecure-skip-tls-verify")
    expectError("clusters: [{name: a, cluster: {}}]\ncontexts: [{name: a, context: {cluster: a}}]\ncurrent-context: a",
                contains: "clusters[0].cluster.server: missing")
    expectError("clusters: []\n", contains: "current-context is not set")
  }

  @Test("KUBECONFIG lists merge with the first file winning per key; --kubeconfig must exist")
  func merge() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let a = try write("""
      current-context: one
      clusters: [{name: shared, cluster: {server: "http://127.0.0.1:1"}}]
      contexts: [{name: one, context: {cluster: shared}}]
      """, in: dir, "a")
    let b = try write("""
      current-context: two
      clusters: [{name: shared, cluster: {server: "http://127.0.0.1:2"}}, {name: only-b, cluster: {server: "http://127.0.0.1:3"}}]
      contexts: [{name: two, context: {cluster: only-b, user: u}}]
      users: [{name: u, user: {tokenFile: tok}}]
      """, in: dir, "b")
    try "file-token\n".write(to: dir.appendingPathComponent("tok"), atomically: true, encoding: .utf8)
    let env = ["KUBECONFIG": "\(a):\(dir.path)/missing:\(b)", "HOME": dir.path]
    let first = try KubeClientConfig.load(environment: env)
    #expect(first.server == "http://127.0.0.1:1")
    let second = try KubeClientConfig.load(context: "two", environment: env)
    #expect(second.server == "http://127.0.0.1:3")
    #expect(try second.currentToken() == "file-token", "tokenFile is relative to its kubeconfig")
    let flag = try KubeClientConfig.load(kubeconfig: b, environment: env)
    #expect(flag.server == "http://127.0.0.1:3", "--kubeconfig beats KUBECONFIG")
    #expect {
      _ = try KubeClientConfig.load(kubeconfig: "\(dir.path)/nope", environment: env)
    } throws: { ($0 as? KubeError)?.message.contains("file does not exist") == true }
  }

  @Test("in-cluster: service-account token and CA, KUBERNETES_SERVICE_HOST/PORT")
  func inCluster() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    try "sa-token".write(to: dir.appendingPathComponent("token"), atomically: true, encoding: .utf8)
    try "CA".write(to: dir.appendingPathComponent("ca.crt"), atomically: true, encoding: .utf8)
    try "mesh-system".write(to: dir.appendingPathComponent("namespace"), atomically: true, encoding: .utf8)
    let env = ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "HOME": dir.path]
    let config = try KubeClientConfig.load(environment: env, serviceAccountDirectory: dir.path)
    #expect(config.server == "https://10.96.0.1:443")
    #expect(config.certificateAuthorityPEM == Data("CA".utf8))
    #expect(try config.currentToken() == "sa-token")
    #expect(config.namespace == "mesh-system")
    #expect {
      _ = try KubeClientConfig.load(environment: ["HOME": dir.path], serviceAccountDirectory: dir.path)
    } throws: { ($0 as? KubeError)?.message.contains("KUBERNETES_SERVICE_HOST") == true }
  }
}
