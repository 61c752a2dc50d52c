import Foundation
public import Logging
import MeshCore
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOSSL
public import ServiceLifecycle
import Synchronization

/// The injection webhook: HTTPS, `POST /inject` with an AdmissionReview, answered by an
/// `AdmissionReviewHandler`. Anything else is a 404 (another path) or 405 (another method); a body over
/// `maxBodyBytes` is a 413. Runs until cancelled or graceful shutdown.
public final class InjectorServer: ServiceLifecycle.Service, Sendable {
  public struct Configuration: Sendable {
    /// Listen address. Default 0.0.0.0.
    public var host = "0.0.0.0"
    /// Listen port; 0 lets the OS choose (see `port()`). Default 8443.
    public var port = 8443
    /// The largest review body read. Default 8 MiB.
    public var maxBodyBytes = 8 << 20

    public init() {}
    public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
      var c = Self()
      configure(&c)
      return c
    }
  }

  /// The path the webhook serves.
  public static let path = "/inject"

  public let configuration: Configuration
  let handler: AdmissionReviewHandler
  let tls: NIOSSLContext
  let logger: Logger
  let bound = OneShot<Int>()

  /// A server presenting `certificateChainPEM` with `privateKeyPEM` (the API server verifies it with the
  /// webhook's `caBundle`).
  public init(configuration: Configuration, certificateChainPEM: String, privateKeyPEM: String,
              handler: AdmissionReviewHandler, logger: Logger) throws {
    let chain: [NIOSSLCertificate]
    let key: NIOSSLPrivateKey
    do {
      chain = try NIOSSLCertificate.fromPEMBytes(Array(certificateChainPEM.utf8))
      key = try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem)
    } catch {
      throw MeshError.invalidConfiguration("the injector's TLS certificate or key is not usable PEM", cause: error)
    }
    guard !chain.isEmpty else { throw MeshError.invalidConfiguration("the injector's TLS certificate file holds no certificate") }
    var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
    tls.applicationProtocols = ["http/1.1"]
    self.tls = try NIOSSLContext(configuration: tls)
    self.configuration = configuration
    self.handler = handler
    self.logger = logger
  }

  /// The bound port, once `run()` listens (throws if binding failed).
  public func port() async throws -> Int { try await bound.value() }

  public func run() async throws {
    let listener: ConnectionListener<Void, HTTPServerRequestPart, HTTPServerResponsePart>
    do {
      let tls = self.tls
      listener = try await ConnectionListener.bind(host: configuration.host, port: configuration.port) { channel in
        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
      }
    } catch {
      bound.fail(error)
      throw error
    }
    let port = listener.channel.localAddress?.port ?? 0
    bound.succeed(port)
    logger.info("injector listening", metadata: ["address": "\(configuration.host):\(port)", "path": "\(Self.path)"])
    await withGracefulShutdownHandler {
      await listener.serve { _, connection in await self.serve(connection) }
    } onGracefulShutdown: {
      listener.close()
    }
  }

  /// Serves one connection's requests in order. On graceful shutdown an idle connection is closed at once
  /// and a request in flight is answered first, with `Connection: close` (the API server keeps connections
  /// alive, so waiting for it to close them would hold shutdown up).
  func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
    let phase = ConnectionPhase()
    do {
      try await withGracefulShutdownHandler {
        try await connection.executeThenClose { inbound, outbound in
          var head: HTTPRequestHead?
          var body = ByteBuffer()
          var tooLarge = false
          for try await part in inbound {
            switch part {
            case .head(let h):
              phase.state.withLock { $0.busy = true }
              head = h
              body.clear()
              tooLarge = false
            case .body(var chunk):
              if body.readableBytes + chunk.readableBytes > configuration.maxBodyBytes { tooLarge = true } else { body.writeBuffer(&chunk) }
            case .end:
              guard let request = head else { continue }
              head = nil
              let answer = await self.answer(request, body: Data(buffer: body), tooLarge: tooLarge)
              var headers = HTTPHeaders()
              headers.add(name: "Content-Type", value: answer.contentType)
              headers.add(name: "Content-Length", value: String(answer.body.count))
              let keepAlive = request.isKeepAlive && answer.status != 413 && !phase.state.withLock { $0.stopping }
              if !keepAlive { headers.add(name: "Connection", value: "close") }
              try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .init(statusCode: answer.status), headers: headers)))
              try await outbound.write(.body(.byteBuffer(ByteBuffer(data: answer.body))))
              try await outbound.write(.end(nil))
              if !keepAlive { return }
              phase.state.withLock { $0.busy = false }
            }
          }
        }
      } onGracefulShutdown: {
        let idle = phase.state.withLock { s -> Bool in
          s.stopping = true
          return !s.busy
        }
        if idle { connection.channel.close(promise: nil) }
      }
    } catch {
      logger.debug("connection ended", metadata: ["error": "\(error)"])
    }
  }

  func answer(_ request: HTTPRequestHead, body: Data, tooLarge: Bool) async -> AdmissionReviewHandler.Answer {
    let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
    guard path == Self.path else { return AdmissionReviewHandler.text(404, "not found: \(path) (the webhook serves \(Self.path))") }
    guard request.method == .POST else { return AdmissionReviewHandler.text(405, "\(request.method) \(path): POST an AdmissionReview") }
    guard !tooLarge else { return AdmissionReviewHandler.text(413, "the review is larger than \(configuration.maxBodyBytes) bytes") }
    return await handler.answer(body)
  }
}

/// Whether a connection is answering a request, and whether graceful shutdown has begun.
final class ConnectionPhase: Sendable {
  let state = Mutex<(busy: Bool, stopping: Bool)>((false, false))
}
