public import Foundation

extension LocalKubeAPIServer {
  /// What `meshctl dev kube-api` runs: serves, and once listening writes a kubeconfig for this
  /// server to `kubeconfigPath` (when given) and calls `onListening` with the URL; returns when
  /// cancelled or on graceful shutdown.
  public func run(writingKubeconfigTo kubeconfigPath: String?, onListening: @Sendable (String) -> Void = { _ in }) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await self.run() }
      let url = try await self.url()
      if let kubeconfigPath {
        try await kubeconfigYAML().write(toFile: kubeconfigPath, atomically: true, encoding: .utf8)
      }
      onListening(url)
      try await group.next()
      group.cancelAll()
    }
  }
}
