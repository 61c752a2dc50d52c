import Foundation
import Logging
import NIOHTTP1
import MeshKube
import Synchronization

extension ServiceMirror {
  /// Records a condition (`status` nil means Unknown); its transition time changes only with its status.
  func setCondition(_ type: String, _ status: Bool?, reason: String, message: String) {
    let value = status.map { $0 ? "True" : "False" } ?? "Unknown"
    let changed = shared.withLock { s -> Bool in
      let old = s.conditions[type]
      if old?.status == value, old?.reason == reason, old?.message == message { return false }
      let time = old?.status == value ? old?.lastTransitionTime : Self.timestamp()
      s.conditions[type] = Condition(type: type, status: value, reason: reason, message: message, lastTransitionTime: time)
      return true
    }
    if changed { statusSignal.notify() }
  }

  static func timestamp() -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: Date())
  }

  /// The status as it should be on the Link.
  var desiredStatus: Link.Status {
    shared.withLock { s in
      Link.Status(mirroredServices: s.mirrored, conditions: ConditionType.order.compactMap { s.conditions[$0] })
    }
  }

  /// Writes the Link's status whenever it changed, at most once per `statusInterval`.
  func statusWriter() async {
    var written: Link.Status?
    while !Task.isCancelled {
      await statusSignal.wait()
      if Task.isCancelled { return }
      let status = desiredStatus
      if status != written {
        do {
          try await writeStatus(status)
          written = status
        } catch let error as KubeError where error.isNotFound {
          logger.debug("the Link is gone; status not written")
        } catch {
          if Task.isCancelled { return }
          logger.warning("could not write the Link's status; retrying", metadata: ["error": "\(error)"])
          statusSignal.notify()
        }
      }
      do { try await Task.sleep(for: configuration.statusInterval) } catch { return }
    }
  }

  /// A merge patch of `status`: on the status subresource where the CRD has one, else on the Link.
  func writeStatus(_ status: Link.Status) async throws {
    let slash = linkKey.firstIndex(of: "/")!
    let namespace = String(linkKey[..<slash])
    let name = String(linkKey[linkKey.index(after: slash)...])
    let patch: JSONValue = ["status": try JSONValue.encoding(status)]
    do {
      _ = try await localClient.send(
        .PATCH, path: Link.collectionPath(namespace: namespace) + "/\(name)/status", body: patch,
        contentType: "application/merge-patch+json")
    } catch let error as KubeError where error.isNotFound {
      _ = try await localClient.mergePatch(Link.self, name: name, namespace: namespace, patch: patch)
    }
  }
}
