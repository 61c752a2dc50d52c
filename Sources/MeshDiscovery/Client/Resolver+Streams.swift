import GRPCCore
import Logging
import MeshAPI
import MeshCore
import Synchronization

extension Resolver {
  /// Runs `stream` until it succeeds for good, reconnecting with backoff, until the watch stops.
  func runWatch<Value>(_ watch: ResolverWatch<Value>, _ stream: @escaping @Sendable () async throws -> Void) async {
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await watch.stopped() }
      group.addTask {
        var attempt = 0
        while !Task.isCancelled {
          let before = self.statistics.messagesReceived
          do {
            self.stats.withLock { $0.streamsOpened += 1 }
            try await stream()
          } catch let error as RPCError where error.code == .invalidArgument {
            watch.finish(throwing: DiscoveryError.invalidPath(error.message, cause: error))
            return
          } catch {
            if Task.isCancelled { return }
            self.logger.debug("destination stream failed; reconnecting", metadata: ["error": "\(error)"])
          }
          self.stats.withLock { $0.streamsBroken += 1 }
          attempt = self.statistics.messagesReceived > before ? 1 : attempt + 1
          do { try await Task.sleep(for: self.backoff(attempt)) } catch { return }
        }
      }
      await group.next()
      group.cancelAll()
    }
  }

  /// `initialBackoff * 2^(attempt-1)`, at most `maxBackoff`, times a jitter in [0.5, 1].
  func backoff(_ attempt: Int) -> Duration {
    let exponent = min(max(attempt - 1, 0), 20)
    var delay = configuration.initialBackoff * (1 << exponent)
    if delay > configuration.maxBackoff { delay = configuration.maxBackoff }
    return delay * Double.random(in: 0.5...1.0)
  }

  func request(_ authority: Authority) -> ClientRequest<Swiftmesh_Destination_GetDestination> {
    var message = Swiftmesh_Destination_GetDestination()
    message.path = authority.description
    message.contextToken = configuration.contextToken
    return ClientRequest(message: message)
  }

  var callOptions: CallOptions {
    var options = CallOptions.defaults
    options.waitForReady = false
    return options
  }

  /// One `Get` stream: a fresh builder per stream (the first message carries the whole set).
  func streamEndpoints(_ authority: Authority, into watch: ResolverWatch<EndpointSet>) async throws {
    try await destination.get(request: request(authority), options: callOptions) { response in
      var builder = EndpointSetBuilder()
      for try await message in response.messages {
        self.stats.withLock { $0.messagesReceived += 1 }
        let update = try EndpointUpdate(proto: message) { problem in
          self.logger.warning("destination answer partly unusable", metadata: ["authority": "\(authority)", "problem": "\(problem)"])
        }
        builder.apply(update)
        watch.publish(builder.snapshot)
      }
    }
  }

  /// One `GetProfile` stream: every message is a complete profile.
  func streamProfile(_ authority: Authority, into watch: ResolverWatch<Profile>) async throws {
    try await destination.getProfile(request: request(authority), options: callOptions) { response in
      for try await message in response.messages {
        self.stats.withLock { $0.messagesReceived += 1 }
        watch.publish(try Profile(proto: message))
      }
    }
  }
}
