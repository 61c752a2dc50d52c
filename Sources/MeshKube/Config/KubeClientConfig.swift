public import Foundation

/// Where and how to reach an API server: the result of resolving a kubeconfig or in-cluster config.
public struct KubeClientConfig: Sendable, Hashable {
  /// Base URL, e.g. `https://127.0.0.1:6443`.
  public var server: String
  /// PEM bundle to trust for the server certificate; nil uses the system roots.
  public var certificateAuthorityPEM: Data?
  /// PEM client certificate and key for mutual TLS.
  public var clientCertificatePEM: Data?
  public var clientKeyPEM: Data?
  /// Bearer token.
  public var token: String?
  /// A file to read the bearer token from on each request (rotated service-account tokens).
  public var tokenFile: String?
  /// Skip server certificate verification (kubeconfig `insecure-skip-tls-verify`).
  public var insecureSkipTLSVerify: Bool
  /// Override of the TLS server name (`tls-server-name`).
  public var tlsServerName: String?
  /// The context's default namespace, if it names one.
  public var namespace: String?

  public init(
    server: String, certificateAuthorityPEM: Data? = nil, clientCertificatePEM: Data? = nil,
    clientKeyPEM: Data? = nil, token: String? = nil, tokenFile: String? = nil,
    insecureSkipTLSVerify: Bool = false, tlsServerName: String? = nil, namespace: String? = nil
  ) {
    self.server = server
    self.certificateAuthorityPEM = certificateAuthorityPEM
    self.clientCertificatePEM = clientCertificatePEM
    self.clientKeyPEM = clientKeyPEM
    self.token = token
    self.tokenFile = tokenFile
    self.insecureSkipTLSVerify = insecureSkipTLSVerify
    self.tlsServerName = tlsServerName
    self.namespace = namespace
  }

  /// The bearer token to send now: `token`, else the current contents of `tokenFile`.
  public func currentToken() throws -> String? {
    if let token, !token.isEmpty { return token }
    guard let tokenFile else { return nil }
    do {
      return try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    } catch {
      throw KubeError.invalidKubeconfig("tokenFile \(tokenFile): cannot read: \(error.localizedDescription)")
    }
  }

  /// Resolves configuration the way kubectl does: `kubeconfig` (the `--kubeconfig` flag, must
  /// exist), else `KUBECONFIG` (colon-separated, missing files skipped, first file to define a key
  /// wins), else `~/.kube/config`, else the in-cluster service account. `context` is `--context`.
  public static func load(
    kubeconfig: String? = nil, context: String? = nil,
    environment: [String: String] = ProcessInfo.processInfo.environment,
    serviceAccountDirectory: String = InCluster.defaultServiceAccountDirectory
  ) throws -> Self {
    if let kubeconfig {
      guard FileManager.default.fileExists(atPath: kubeconfig) else {
        throw KubeError.invalidKubeconfig("kubeconfig \(kubeconfig): file does not exist")
      }
      return try Kubeconfig.load(paths: [kubeconfig]).resolve(context: context)
    }
    if let list = environment["KUBECONFIG"], !list.isEmpty {
      let paths = list.split(separator: ":").map(String.init).filter { FileManager.default.fileExists(atPath: $0) }
      if !paths.isEmpty { return try Kubeconfig.load(paths: paths).resolve(context: context) }
    }
    if let home = environment["HOME"] {
      let path = "\(home)/.kube/config"
      if FileManager.default.fileExists(atPath: path) {
        return try Kubeconfig.load(paths: [path]).resolve(context: context)
      }
    }
    return try InCluster.config(environment: environment, serviceAccountDirectory: serviceAccountDirectory)
  }
}

/// In-cluster configuration: the pod's service-account token and CA, `KUBERNETES_SERVICE_HOST/PORT`.
public enum InCluster {
  public static let defaultServiceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

  public static func config(
    environment: [String: String] = ProcessInfo.processInfo.environment,
    serviceAccountDirectory: String = defaultServiceAccountDirectory
  ) throws -> KubeClientConfig {
    guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty,
      let port = environment["KUBERNETES_SERVICE_PORT"], !port.isEmpty
    else {
      throw KubeError.invalidKubeconfig(
        "no kubeconfig found and not in a cluster: KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set")
    }
    let tokenPath = "\(serviceAccountDirectory)/token"
    guard FileManager.default.fileExists(atPath: tokenPath) else {
      throw KubeError.invalidKubeconfig("in-cluster config: service-account token \(tokenPath) does not exist")
    }
    let caPath = "\(serviceAccountDirectory)/ca.crt"
    let ca = FileManager.default.contents(atPath: caPath)
    let namespace = (try? String(contentsOfFile: "\(serviceAccountDirectory)/namespace", encoding: .utf8))?
      .trimmingCharacters(in: .whitespacesAndNewlines)
    let hostPart = host.contains(":") ? "[\(host)]" : host
    return KubeClientConfig(
      server: "https://\(hostPart):\(port)", certificateAuthorityPEM: ca, tokenFile: tokenPath, namespace: namespace)
  }
}
