import Foundation
public import Logging
public import MeshCore
public import MeshIdentity
public import ServiceLifecycle
public import X509

/// A workload's mesh identity as an executable gets it at start: read the trust anchors and the
/// service-account token, `Certify` with the identity service, build the TLS contexts, and keep them
/// current (the rotator renews at 70 % of the lifetime; the follower installs each renewal).
public struct CertifiedWorkload: Sendable {
  public let tls: MeshTLS
  public let material: WorkloadCertificate
  /// Run these beside the workload: the rotator and the follower that installs what it renews.
  public let services: [any Service]

  /// Prepares (`WorkloadCertifier`), then certifies, retrying while the identity service is away or refuses.
  public static func certify(
    identity: String, identityServer: String, caFile: String, tokenFile: String,
    configuration: MeshTLS.Configuration = .defaults(), retry: WorkloadCertifier.Retry = .defaults(),
    logger: Logger, onWaiting: @escaping @Sendable (WorkloadCertifier.Waiting) -> Void = { _ in }
  ) async throws -> CertifiedWorkload {
    let certifier = try WorkloadCertifier(
      identity: identity, identityServer: identityServer, caFile: caFile, tokenFile: tokenFile)
    return try await certifier.certify(configuration: configuration, retry: retry, logger: logger, onWaiting: onWaiting)
  }
}

/// Gets a workload its first certificate. The constructor checks what no retry can fix (the identity name
/// parses, the trust anchors read, the identity service address parses) and throws at once;
/// `certify` then asks the identity service until it answers, with jittered exponential back-off while it
/// cannot be reached (or answers UNAVAILABLE) and a slow, steady retry while it refuses the identity
/// (PERMISSION_DENIED, UNAUTHENTICATED: the token may be fixed or rotated). Every failed attempt is logged
/// at warning level with its reason and reported to `onWaiting` (for `/ready`).
public struct WorkloadCertifier: Sendable {
  public struct Retry: Sendable {
    /// Delay after the first failed attempt to reach the identity service. Default 500 ms.
    public var initialBackoff: Duration = .milliseconds(500)
    /// Largest delay while the identity service cannot be reached. Default 10 s.
    public var maximumBackoff: Duration = .seconds(10)
    /// Delay after the identity service refused the identity (or the token could not be read). Default 30 s.
    public var refusedBackoff: Duration = .seconds(30)
    /// Each delay is shortened by up to this fraction, at random, so proxies restarted together do not
    /// retry together. Default 0.5.
    public var jitter: Double = 0.5

    public init() {}

    public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
      var retry = Self()
      configure(&retry)
      return retry
    }

    /// The delay before retry number `attempt` (1 for the first retry), before jitter.
    public func delay(afterAttempt attempt: Int, refused: Bool) -> Duration {
      if refused { return refusedBackoff }
      let factor = pow(2.0, Double(min(max(attempt - 1, 0), 30)))
      let seconds = min(initialBackoff.timeInterval * factor, maximumBackoff.timeInterval)
      return .milliseconds(Int64(seconds * 1000))
    }
  }

  /// Why the workload has no certificate yet.
  public struct Waiting: Sendable, CustomStringConvertible {
    public enum Problem: Sendable, Hashable {
      /// The identity service could not be reached, or answered UNAVAILABLE: retried with growing delays.
      case unreachable
      /// The identity service refused the identity (PERMISSION_DENIED, UNAUTHENTICATED, ...): retried slowly.
      case refused
      /// The service-account token file cannot be read or is empty: retried slowly.
      case unusableToken
    }
    /// Failed attempts so far.
    public var attempts: Int
    public var problem: Problem
    /// What the last attempt failed with.
    public var reason: String
    /// When the next attempt happens.
    public var retryIn: Duration

    /// The identity service (or the local token) said no, rather than being unreachable.
    public var refused: Bool { problem != .unreachable }

    public var description: String {
      let retry = "attempt \(attempts), retrying in \(String(format: "%.1f", retryIn.timeInterval)) s"
      return switch problem {
      case .unreachable: "waiting for the identity service (\(retry)): \(reason)"
      case .refused: "the identity service refused this workload's identity (\(retry)): \(reason)"
      case .unusableToken: "the service-account token cannot be used (\(retry)): \(reason)"
      }
    }
  }

  public let identity: IdentityName
  public let trustAnchors: [Certificate]
  public let identityServer: Authority
  private let certifyOnce: @Sendable () async throws -> WorkloadCertificate
  private let random: @Sendable () -> Double

  public init(
    identity: String, identityServer: String, caFile: String, tokenFile: String,
    random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }
  ) throws(MeshError) {
    let name: IdentityName
    do {
      name = try IdentityName(identity)
    } catch {
      throw .invalidIdentity("--identity '\(identity)': \(error.message)")
    }
    let server: Authority
    do {
      server = try Authority(identityServer)
    } catch {
      throw .invalidConfiguration("identity service address '\(identityServer)': \(error.message)")
    }
    let anchors = try PEMFiles.readCertificates(caFile)
    self.identity = name
    self.trustAnchors = anchors
    self.identityServer = server
    self.random = random
    do {
      self.certifyOnce = try CertifiedWorkload.certifier(
        name: name, identityServer: identityServer, anchors: anchors, tokenFile: tokenFile)
    } catch let error as MeshError {
      throw error
    } catch {
      throw .invalidConfiguration("cannot prepare the identity client", cause: error)
    }
  }

  /// Certifies, retrying until the identity service issues a certificate; then builds the TLS contexts and
  /// the rotation services. Throws `CancellationError` when cancelled (graceful shutdown while waiting).
  public func certify(
    configuration: MeshTLS.Configuration = .defaults(), retry: Retry = .defaults(), logger: Logger,
    onWaiting: @escaping @Sendable (Waiting) -> Void = { _ in }
  ) async throws -> CertifiedWorkload {
    let (material, attempts) = try await firstCertificate(retry: retry, logger: logger, onWaiting: onWaiting)
    logger.notice(
      "certified",
      metadata: [
        "identity": "\(identity)", "valid_until": "\(material.notValidAfter)",
        "attempts": "\(attempts)",
      ])
    let tls = try MeshTLS(material: material, trustAnchors: trustAnchors, configuration: configuration, logger: logger)
    let rotator = CertificateRotator(initial: material, logger: logger, renew: certifyOnce)
    return CertifiedWorkload(
      tls: tls, material: material,
      services: [rotator, RotationFollower(tls: tls, updates: rotator.updates())])
  }

  /// Asks until the identity service issues a certificate; returns it and the number of attempts it took.
  private func firstCertificate(
    retry: Retry, logger: Logger, onWaiting: @Sendable (Waiting) -> Void
  ) async throws -> (WorkloadCertificate, Int) {
    var attempts = 0
    while true {
      try Task.checkCancellation()
      attempts += 1
      do {
        return (try await certifyOnce(), attempts)
      } catch {
        // A shutdown while an attempt was under way: not a failure of the attempt.
        if Task.isCancelled || error is CancellationError { throw CancellationError() }
        let problem = Self.problem(error)
        let base = retry.delay(afterAttempt: attempts, refused: problem != .unreachable)
        let delay = Duration.milliseconds(Int64(base.timeInterval * (1 - retry.jitter * random()) * 1000))
        let waiting = Waiting(attempts: attempts, problem: problem, reason: Self.reason(error), retryIn: delay)
        onWaiting(waiting)
        let message: Logger.Message =
          switch problem {
          case .unreachable: "cannot get a certificate from the identity service yet; retrying"
          case .refused:
            "the identity service refused this workload's identity; retrying slowly (the token may be fixed or rotated)"
          case .unusableToken: "the service-account token cannot be used; retrying slowly"
          }
        logger.warning(
          message,
          metadata: [
            "identity": "\(identity)", "identity_server": "\(identityServer)", "attempt": "\(attempts)",
            "retry_in_s": "\(String(format: "%.2f", delay.timeInterval))", "reason": "\(waiting.reason)",
          ])
        try await Task.sleep(for: delay)
      }
    }
  }

  /// What kind of failure `error` is: an identity service that cannot be reached is retried quickly; a
  /// refusal, or a token that cannot be read, changes only when the token or the service's policy does, so
  /// it is retried slowly.
  static func problem(_ error: any Error) -> Waiting.Problem {
    guard let error = error as? MeshError else { return .unreachable }
    if error.code == .invalidConfiguration { return .unusableToken }
    let refusals: [MeshError.Code] = [.permissionDenied, .unauthenticated, .invalidArgument, .invalidIdentity]
    return refusals.contains(error.code) ? .refused : .unreachable
  }

  /// The reason of a failed attempt, without the layers of wrapping: the code and the message.
  static func reason(_ error: any Error) -> String {
    guard let error = error as? MeshError else { return "\(error)" }
    if let cause = error.cause, error.message.hasSuffix("failed") || error.message.hasPrefix("cannot read") {
      return "\(error.code): \(error.message): \(cause)"
    }
    return "\(error.code): \(error.message)"
  }
}

extension CertifiedWorkload {
  /// One `Certify` call for `name`, reading the token file anew each time: Kubernetes rotates projected
  /// service-account tokens in place, and a renewal must present the current one, not the one read at start.
  static func certifier(
    name: IdentityName, identityServer: String, anchors: [Certificate], tokenFile: String
  ) throws -> @Sendable () async throws -> WorkloadCertificate {
    let client = IdentityClient(
      configuration: .init(
        server: try Authority(identityServer), trustAnchors: anchors,
        serverIdentity: try IdentityServer.serverIdentity(
          controlPlaneNamespace: name.controlPlaneNamespace, trustDomain: name.trustDomain)))
    return {
      let token: String
      do {
        token = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
      } catch {
        throw MeshError.invalidConfiguration("cannot read token file \(tokenFile)", cause: error)
      }
      guard !token.isEmpty else { throw MeshError.invalidConfiguration("token file \(tokenFile) is empty") }
      return try await client.certify(identity: name, token: token)
    }
  }
}

/// Installs every renewed certificate into a `MeshTLS`'s contexts, until graceful shutdown.
public struct RotationFollower: Service {
  let tls: MeshTLS
  let updates: AsyncStream<WorkloadCertificate>

  public init(tls: MeshTLS, updates: AsyncStream<WorkloadCertificate>) {
    self.tls = tls
    self.updates = updates
  }

  public func run() async throws {
    await cancelWhenGracefulShutdown { await tls.follow(updates) }
  }
}
