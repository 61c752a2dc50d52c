import ArgumentParser
import Foundation
import Logging
import MeshKubeLocal
import ServiceLifecycle
import UnixSignals

/// `meshctl dev kube-api`: an in-memory Kubernetes API server for demos and tests, HTTPS with authentication
/// and RBAC unless `--insecure-http`.
///
///     meshctl dev kube-api --listen 127.0.0.1:6443 --kubeconfig-out /tmp/mesh.kubeconfig
///     kubectl --kubeconfig /tmp/mesh.kubeconfig apply -f manifests/
struct DevKubeAPICommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "kube-api",
    abstract: "Run an embedded, in-memory Kubernetes API server (kubectl works against it).",
    discussion: """
      Serves HTTPS with a certificate signed by a CA it makes at start (or --tls-cert/--tls-key), authenticates \
      bearer tokens (the admin token, group system:masters, and service-account tokens it issued with \
      TokenRequest, e.g. `kubectl create token`) and authorizes with RBAC over the Roles, ClusterRoles and \
      bindings it stores. Anonymous requests may read /healthz, /readyz, /livez and /version only. The \
      kubeconfig it writes (mode 0600) carries the CA and the admin token.
      """)

  @Option(help: "Address to listen on, host:port (port 0 picks a free one).")
  var listen: String = "127.0.0.1:6443"

  @Option(name: .customLong("kubeconfig-out"), help: "Write a kubeconfig for the server to this file.")
  var kubeconfigOut: String?

  @Option(help: "The admin bearer token (group system:masters); default a random one, in the written kubeconfig.")
  var token: String?

  @Option(name: .customLong("tls-cert"), help: "Serve with this PEM certificate chain instead of a generated one.")
  var tlsCert: String?

  @Option(name: .customLong("tls-key"), help: "The PEM private key of --tls-cert.")
  var tlsKey: String?

  @Option(
    name: .customLong("tls-ca"),
    help: "The PEM CA the written kubeconfig trusts with --tls-cert (default: the --tls-cert file itself).")
  var tlsCA: String?

  @Option(
    name: .customLong("tls-san"),
    help: "Another DNS name or IP address for the generated serving certificate (repeatable).")
  var tlsSAN: [String] = []

  @Flag(
    name: .customLong("insecure-http"),
    help: "Serve plain HTTP with no authentication or authorization (loopback addresses only).")
  var insecureHTTP = false

  @Option(name: .customLong("service-cidr"), help: "Range Service cluster IPs come from (data only).")
  var serviceCIDR: String = "10.96.0.0/12"

  @Option(name: .customLong("history-limit"), help: "Watch events kept; older resourceVersions get 410 Expired.")
  var historyLimit: Int = 10_000

  func run() async throws {
    guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]) else {
      throw ValidationError("--listen must be host:port, got '\(listen)'")
    }
    var host = String(listen[..<colon])
    if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    let transport = try transport(host: host)
    let logger = Logger(label: "meshctl.dev.kube-api")
    let state = LocalKubeState(configuration: .defaults {
      $0.serviceCIDR = serviceCIDR
      $0.historyLimit = historyLimit
      $0.adminToken = token
    })
    let server = LocalKubeAPIServer(
      configuration: .defaults {
        $0.host = host
        $0.port = port
        $0.transport = transport
        $0.subjectAlternativeNames = tlsSAN
      },
      state: state, logger: logger)
    let kubeconfigOut = self.kubeconfigOut
    let runner = KubeAPIRunner(server: server, kubeconfigPath: kubeconfigOut)
    let group = ServiceGroup(configuration: .init(
      services: [.init(service: runner)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
  }

  /// The transport the flags ask for, with every conflict and unreadable file reported before listening.
  func transport(host: String) throws -> LocalKubeAPIServer.Transport {
    if insecureHTTP {
      for (flag, value) in [("--tls-cert", tlsCert), ("--tls-key", tlsKey), ("--tls-ca", tlsCA), ("--token", token)] where value != nil {
        throw ValidationError("--insecure-http serves plain HTTP without authentication; \(flag) does not apply")
      }
      guard LocalKubeAPIServer.isLoopback(host) else {
        throw ValidationError(
          "--insecure-http serves without authentication, so it listens on loopback only (127.0.0.1, ::1, "
            + "localhost), not '\(host)'; drop --insecure-http to serve HTTPS with authentication")
      }
      return .insecureHTTP
    }
    switch (tlsCert, tlsKey) {
    case (nil, nil):
      if tlsCA != nil { throw ValidationError("--tls-ca goes with --tls-cert and --tls-key") }
      return .tls
    case (let cert?, let key?):
      func read(_ flag: String, _ path: String) throws -> String {
        do { return try String(contentsOfFile: path, encoding: .utf8) } catch {
          throw ValidationError("\(flag) \(path): cannot read: \(error.localizedDescription)")
        }
      }
      return .tlsCertificate(
        chainPEM: try read("--tls-cert", cert), keyPEM: try read("--tls-key", key),
        caPEM: try tlsCA.map { try read("--tls-ca", $0) })
    default:
      throw ValidationError("--tls-cert and --tls-key go together")
    }
  }
}

/// Runs the server and writes the kubeconfig once it listens.
private struct KubeAPIRunner: Service {
  let server: LocalKubeAPIServer
  let kubeconfigPath: String?

  func run() async throws {
    let path = kubeconfigPath
    do {
      try await cancelWhenGracefulShutdown {
        try await server.run(writingKubeconfigTo: path) { url in
          print("kube API listening on \(url)" + (path.map { "; kubeconfig written to \($0)" } ?? ""))
          // Scripts wait for this line in a log file: a pipe or a file buffers stdout until exit otherwise.
          fflush(nil)
        }
      }
    } catch is CancellationError {
      // SIGTERM / SIGINT: the shutdown we were asked for, not a failure.
    }
  }
}
