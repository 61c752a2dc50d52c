import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension LocalKubeAPIServer {
  /// What `meshctl dev kube-api` runs: serves, and once listening writes a kubeconfig for this
  /// server (its CA and the admin token; mode 0600) to `kubeconfigPath` (when given) and calls `onListening`
  /// with the URL; returns when cancelled or on graceful shutdown.
  public func run(writingKubeconfigTo kubeconfigPath: String?, onListening: @Sendable (String) -> Void = { _ in }) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await self.run() }
      let url = try await self.url()
      if let kubeconfigPath {
        try Self.writeSecret(try await kubeconfigYAML(), to: kubeconfigPath)
      }
      onListening(url)
      try await group.next()
      group.cancelAll()
    }
  }

  /// Writes `text` to `path` readable by its owner only (it holds a token), replacing the file atomically.
  public static func writeSecret(_ text: String, to path: String) throws {
    let url = URL(fileURLWithPath: path)
    let temporary = url.deletingLastPathComponent()
      .appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString.prefix(8))")
    guard FileManager.default.createFile(
      atPath: temporary.path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
    else {
      throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
    }
    guard rename(temporary.path, path) == 0 else {
      let code = errno
      try? FileManager.default.removeItem(at: temporary)
      throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, NSUnderlyingErrorKey: POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)])
    }
  }
}
