import ArgumentParser
import Foundation
import Logging
import MeshKubeLocal
import ServiceLifecycle
import UnixSignals

/// `meshctl dev kube-api`: an in-memory Kubernetes API server for demos and tests.
///
///     meshctl dev kube-api --listen 127.0.0.1:6443 --kubeconfig-out /tmp/mesh.kubeconfig
///     kubectl --kubeconfig /tmp/mesh.kubeconfig apply -f manifests/
struct DevKubeAPICommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "kube-api",
    abstract: "Run an embedded, in-memory Kubernetes API server (kubectl works against it).")

  @Option(help: "Address to listen on, host:port (port 0 picks a free one).")
  var listen: String = "127.0.0.1:6443"

  @Option(name: .customLong("kubeconfig-out"), help: "Write a kubeconfig for the server to this file.")
  var kubeconfigOut: String?

  @Option(help: "Require this bearer token (kubectl only sends tokens over TLS, so use it with other clients).")
  var token: String?

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
    let logger = Logger(label: "meshctl.dev.kube-api")
    let state = LocalKubeState(configuration: .defaults {
      $0.serviceCIDR = serviceCIDR
      $0.historyLimit = historyLimit
    })
    let server = LocalKubeAPIServer(
      configuration: .defaults {
        $0.host = host
        $0.port = port
        $0.bearerToken = token
      },
      state: state, logger: logger)
    let kubeconfigOut = self.kubeconfigOut
    let runner = KubeAPIRunner(server: server, kubeconfigPath: kubeconfigOut)
    let group = ServiceGroup(configuration: .init(
      services: [.init(service: runner)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
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
        }
      }
    } catch is CancellationError {
      // SIGTERM / SIGINT: the shutdown we were asked for, not a failure.
    }
  }
}
