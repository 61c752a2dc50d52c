public import Logging
public import MeshCore
public import MeshDiscovery

/// Endpoint discovery from the destination service, through the `Resolver` (which reconnects with backoff
/// and keeps the last known state).
public struct ResolverDiscovery: EndpointDiscovery {
  public let resolver: Resolver
  private let logger: Logger

  public init(resolver: Resolver, logger: Logger) {
    self.resolver = resolver
    self.logger = logger
  }

  public func follow(_ authority: Authority, update: @escaping @Sendable (EndpointSet) -> Void) async {
    do {
      for try await snapshot in resolver.endpoints(for: authority) { update(snapshot) }
    } catch {
      // Stopped on purpose (the destination went idle, or the proxy stops): nothing to say.
      if Task.isCancelled || error is CancellationError { return }
      // The destination refused the name for good (for example an invalid path): treat it as unknown, so
      // requests go to the authority as given rather than wait for endpoints that will never come. At debug
      // level: the names come from requests, and a client must not be able to fill the log with them.
      logger.debug("destination refused authority", metadata: ["authority": "\(authority)", "error": "\(error)"])
      update(.doesNotExist)
    }
  }

  public func followProfile(_ authority: Authority, update: @escaping @Sendable (Profile) -> Void) async {
    do {
      for try await profile in resolver.profile(for: authority) { update(profile) }
    } catch {
      if Task.isCancelled || error is CancellationError { return }
      // Without a profile the destination is used as is: no routes, no retries, no split.
      logger.debug("destination refused profile", metadata: ["authority": "\(authority)", "error": "\(error)"])
    }
  }
}
