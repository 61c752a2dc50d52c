public import Foundation
import Logging
import MeshKube

extension ServiceMirror {
  /// The heartbeat Lease's name and namespace for this mirror's Link.
  var heartbeatLease: (name: String, namespace: String) {
    let slash = linkKey.firstIndex(of: "/")!
    let namespace = String(linkKey[..<slash])
    let name = String(linkKey[linkKey.index(after: slash)...])
    return (MirrorMetadata.heartbeatLeaseName(link: name), namespace)
  }

  /// Renews the heartbeat Lease every `heartbeatInterval` until cancelled: `renewTime` says the mirror runs,
  /// `leaseDurationSeconds` (three intervals) how long that holds, and the annotation
  /// `mirror.swiftmesh.io/gateway-report` carries the gateway report (`GatewayReport` as JSON).
  func heartbeat() async {
    let interval = configuration.heartbeatInterval
    let seconds = max(1, Int((Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18) * 3 + 0.999))
    let holder = ProcessInfo.processInfo.hostName
    let place = heartbeatLease
    var warned = false
    while !Task.isCancelled {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.sortedKeys]
      let reportJSON = (try? encoder.encode(self.report)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
      let now = Self.microTime(Date())
      do {
        do {
          _ = try await localClient.update(Lease.self, name: place.name, namespace: place.namespace) { lease in
            var spec = lease.spec ?? .init()
            spec.holderIdentity = holder
            spec.leaseDurationSeconds = seconds
            spec.renewTime = now
            lease.spec = spec
            var annotations = lease.metadata.annotations ?? [:]
            annotations[MirrorMetadata.gatewayReportAnnotation] = reportJSON
            lease.metadata.annotations = annotations
          }
        } catch let error as KubeError where error.isNotFound {
          _ = try await localClient.create(
            Lease(
              metadata: ObjectMeta(
                name: place.name, namespace: place.namespace,
                labels: [MirrorMetadata.clusterNameLabel: clusterName],
                annotations: [MirrorMetadata.gatewayReportAnnotation: reportJSON]),
              spec: .init(holderIdentity: holder, leaseDurationSeconds: seconds, acquireTime: now, renewTime: now)))
        }
        warned = false
      } catch {
        if Task.isCancelled { return }
        if !warned {
          logger.warning(
            "could not renew the heartbeat Lease; retrying",
            metadata: ["lease": "\(place.namespace)/\(place.name)", "error": "\(error)"])
          warned = true
        }
      }
      _ = await heartbeatSignal.wait(timeout: interval)
      // Coalesces a burst of changes into one renewal.
      do { try await Task.sleep(for: .milliseconds(100)) } catch { return }
    }
  }

  /// Deletes the heartbeat Lease (the Link was deleted).
  func deleteHeartbeat() async {
    let place = heartbeatLease
    do {
      try await localClient.delete(Lease.self, name: place.name, namespace: place.namespace)
    } catch {
      logger.debug("heartbeat Lease not deleted", metadata: ["error": "\(error)"])
    }
  }

  /// Kubernetes `MicroTime`: RFC 3339 with microseconds, UTC.
  public static func microTime(_ date: Date) -> String {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'"
    return formatter.string(from: date)
  }

  /// Parses `MicroTime` (or a plain RFC 3339 time).
  public static func parseTime(_ text: String) -> Date? {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let date = formatter.date(from: text) { return date }
    // ISO8601DateFormatter takes at most milliseconds on some platforms: drop the extra digits.
    if let dot = text.firstIndex(of: "."), let z = text.lastIndex(where: { $0 == "Z" || $0 == "+" || $0 == "-" }), z > dot {
      let fraction = text[text.index(after: dot)..<z].prefix(3)
      if let date = formatter.date(from: "\(text[..<dot]).\(fraction)\(text[z...])") { return date }
    }
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.date(from: text)
  }
}
