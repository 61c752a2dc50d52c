import Foundation
import MeshCore
import MeshKube
import MeshKubeLocal
import NIOHTTP1
import Testing

@Suite("Client against the embedded server")
struct ServerClientTests {
  @Test("typed create/get/update/patch/delete, with cluster IPs from the service CIDR")
  func crud() async throws {
    try await withServer { server, client in
      let created = try await client.create(service("web", "shop", labels: ["app": "web"]))
      let ip = try #require(created.spec?.clusterIP)
      #expect(ip.hasPrefix("10.9") || ip.hasPrefix("10.10") || ip.hasPrefix("10.11"))
      #expect(created.metadata.uid != nil)
      #expect(created.metadata.generation == 1)
      #expect(created.metadata.creationTimestamp != nil)

      let fetched = try await client.get(KubeService.self, name: "web", namespace: "shop")
      #expect(fetched.metadata.resourceVersion == created.metadata.resourceVersion)

      var changed = fetched
      changed.spec?.ports = [.init(name: "http", port: 8080)]
      let updated = try await client.update(changed)
      #expect(updated.metadata.generation == 2)
      #expect(updated.spec?.clusterIP == ip)

      // Stale resourceVersion: a typed, retryable conflict.
      await #expect {
        _ = try await client.update(fetched)
      } throws: { ($0 as? KubeError)?.isConflict == true }

      let retried = try await client.update(KubeService.self, name: "web", namespace: "shop") { svc in
        svc.metadata.labels?["tier"] = "front"
      }
      #expect(retried.metadata.labels?["tier"] == "front")
      #expect(retried.metadata.generation == 2, "labels are not spec")

      let patched = try await client.mergePatch(KubeService.self, name: "web", namespace: "shop",
                                                patch: ["metadata": ["labels": ["tier": nil, "patched": "yes"]]])
      #expect(patched.metadata.labels == ["app": "web", "patched": "yes"])

      await #expect {
        _ = try await client.create(service("web", "shop"))
      } throws: { ($0 as? KubeError)?.isAlreadyExists == true }

      try await client.delete(KubeService.self, name: "web", namespace: "shop")
      await #expect {
        _ = try await client.get(KubeService.self, name: "web", namespace: "shop")
      } throws: { error in
        guard let e = error as? KubeError else { return false }
        return e.isNotFound && e.status?.reason == "NotFound" && e.message.contains("\"web\" not found")
      }
      #expect(server.state.get(KubeService.self, name: "web", namespace: "shop") == nil)
    }
  }

  @Test("generateName gives a fresh name")
  func generateName() async throws {
    try await withServer { _, client in
      var sa = ServiceAccount(metadata: ObjectMeta(namespace: "ns1"))
      sa.metadata.generateName = "worker-"
      let a = try await client.create(sa)
      let b = try await client.create(sa)
      #expect(a.name.hasPrefix("worker-") && a.name.count == "worker-".count + 5)
      #expect(a.name != b.name)
    }
  }

  @Test("label selectors (=, ==, !=, in, notin, exists, !key), field selectors and paging")
  func selectorsAndPaging() async throws {
    try await withServer { server, client in
      for i in 0..<7 {
        var labels = ["app": "a\(i % 3)"]
        if i % 2 == 0 { labels["even"] = "true" }
        try server.state.create(service("s\(i)", "sel", labels: labels))
      }
      try server.state.create(service("other", "elsewhere", labels: ["app": "a0"]))
      func names(_ selector: String?, field: String? = nil, ns: String? = "sel") async throws -> [String] {
        try await client.list(KubeService.self, namespace: ns, options: .init(labelSelector: selector, fieldSelector: field)).items.map(\.name)
      }
      #expect(try await names("app=a0") == ["s0", "s3", "s6"])
      #expect(try await names("app==a1") == ["s1", "s4"])
      #expect(try await names("app!=a0") == ["s1", "s2", "s4", "s5"])
      #expect(try await names("app in (a1, a2)") == ["s1", "s2", "s4", "s5"])
      #expect(try await names("app notin (a1,a2)") == ["s0", "s3", "s6"])
      #expect(try await names("even") == ["s0", "s2", "s4", "s6"])
      #expect(try await names("!even") == ["s1", "s3", "s5"])
      #expect(try await names("app=a0,even") == ["s0", "s6"])
      #expect(try await names(nil, field: "metadata.name=s2") == ["s2"])
      #expect(try await names(nil, field: "metadata.name!=s2").count == 6)
      #expect(try await names("app=a0", ns: nil) == ["other", "s0", "s3", "s6"].sorted { a, b in
        (a == "other" ? "elsewhere/other" : "sel/\(a)") < (b == "other" ? "elsewhere/other" : "sel/\(b)")
      })
      await #expect {
        _ = try await names(nil, field: "spec.clusterIP=1.2.3.4")
      } throws: { ($0 as? KubeError)?.message.contains("field label not supported: spec.clusterIP") == true }

      var page = try await client.list(KubeService.self, namespace: "sel", options: .init(limit: 3))
      var seen = page.items.map(\.name)
      #expect(page.items.count == 3)
      #expect(page.metadata.remainingItemCount == 4)
      var pages = 1
      while let token = page.metadata.continue, pages < 10 {
        page = try await client.list(KubeService.self, namespace: "sel", options: .init(limit: 3, continue: token))
        seen += page.items.map(\.name)
        pages += 1
      }
      #expect(pages == 3)
      #expect(seen == (0..<7).map { "s\($0)" })
      let all = try await client.listAll(KubeService.self, namespace: "sel", options: .init(limit: 2))
      #expect(all.items.count == 7)
    }
  }

  @Test("fields the types do not model survive read-modify-write")
  func unknownFieldsKept() async throws {
    try await withServer { server, client in
      try server.state.create(group: "", resource: "services", namespace: "keep", object: [
        "metadata": ["name": "db", "labels": ["app": "db", "old": "x"]],
        "spec": ["ports": [["port": 5432, "name": "pg"]], "sessionAffinity": "ClientIP", "externalTrafficPolicy": "Local"],
        "status": ["loadBalancer": ["ingress": [["ip": "1.2.3.4"]]]],
      ])
      var svc = try await client.get(KubeService.self, name: "db", namespace: "keep")
      svc.metadata.labels = ["app": "db", "new": "y"]
      svc.spec?.ports?[0].port = 5433
      _ = try await client.update(svc)
      let stored = try server.state.get(resource: "services", namespace: "keep", name: "db")
      #expect(stored["spec"]?["sessionAffinity"] == "ClientIP")
      #expect(stored["spec"]?["externalTrafficPolicy"] == "Local")
      #expect(stored["status"]?["loadBalancer"]?["ingress"] == [["ip": "1.2.3.4"]])
      #expect(stored["spec"]?["ports"]?.arrayValue?.first?["port"] == 5433)
      #expect(stored["metadata"]?["labels"] == ["app": "db", "new": "y"], "a removed label stays removed")
    }
  }

  @Test("custom resources: the mesh's own, and any CRD created over the API")
  func customResources() async throws {
    try await withServer { server, client in
      let link = Link(metadata: ObjectMeta(name: "east", namespace: "mc"), spec: .init(
        targetClusterName: "east", targetClusterDomain: "cluster.local", clusterCredentialsSecret: "east-creds",
        gatewayAddresses: ["192.0.2.10"], gatewayPort: 4143, gatewayIdentity: "gw.mc.serviceaccount.identity.mesh.local",
        probeSpec: .init(path: "/ready", port: 4191, period: "3s", timeout: "1s", failureThreshold: 3),
        selector: LabelSelector(matchLabels: ["mirror": "true"])))
      let created = try await client.create(link)
      #expect(created.spec == link.spec)
      let profile = ServiceProfile(metadata: ObjectMeta(name: "web.shop.svc.cluster.local", namespace: "shop"), spec: .init(
        routes: [.init(name: "GET /items", condition: .init(method: "GET", pathRegex: "/items(/.*)?"),
                       responseClasses: [.init(condition: .init(status: .init(min: 500, max: 599)), isFailure: true)],
                       isRetryable: true, timeout: "250ms")],
        retryBudget: .init(retryRatio: 0.2, minRetriesPerSecond: 10, ttl: "10s")))
      #expect(try await client.create(profile).spec == profile.spec)
      let split = TrafficSplit(metadata: ObjectMeta(name: "web", namespace: "shop"),
                               spec: .init(service: "web", backends: [.init(service: "web-v1", weight: 90), .init(service: "web-v2", weight: 10)]))
      #expect(try await client.create(split).spec == split.spec)

      // A CRD over the API, then an object of it.
      _ = try await client.send(.POST, path: "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body: [
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": ["name": "widgets.example.com"],
        "spec": ["group": "example.com", "scope": "Namespaced",
                 "names": ["kind": "Widget", "plural": "widgets", "singular": "widget"],
                 "versions": [["name": "v1", "served": true, "storage": true]]],
      ])
      _ = try await client.send(.POST, path: "/apis/example.com/v1/namespaces/default/widgets",
                                body: ["apiVersion": "example.com/v1", "kind": "Widget", "metadata": ["name": "w1"], "spec": ["size": 3]])
      let list = try JSONValue.parse(try await client.send(.GET, path: "/apis/example.com/v1/widgets"))
      #expect(list["items"]?.arrayValue?.first?["spec"]?["size"] == 3)
      let discovery = try JSONValue.parse(try await client.send(.GET, path: "/apis/example.com/v1"))
      #expect(discovery["resources"]?.arrayValue?.first?["kind"] == "Widget")
      let groups = try JSONValue.parse(try await client.send(.GET, path: "/apis"))
      let names = groups["groups"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
      #expect(names.contains("multicluster.swiftmesh.io") && names.contains("example.com") && names.contains("split.swiftmesh.io"))
      _ = server
    }
  }

  @Test("TokenReviewValidator maps system:serviceaccount:<ns>:<name> and rejects unknown tokens")
  func tokenReview() async throws {
    try await withServer { server, client in
      server.state.registerServiceAccountToken("good-token", for: ServiceAccountRef(name: "web", namespace: "prod"))
      let validator = TokenReviewValidator(client: client)
      let account = try await validator.validate(token: "good-token")
      #expect(account == ServiceAccountRef(name: "web", namespace: "prod"))
      await #expect {
        _ = try await validator.validate(token: "bad-token")
      } throws: { ($0 as? MeshError)?.code == .unauthenticated }
    }
  }

  @Test("KubeClient.requestToken: a TokenRequest for an existing service account, reviewable for its audience")
  func requestToken() async throws {
    try await withServer { server, client in
      _ = try await client.create(ServiceAccount(metadata: ObjectMeta(name: "web", namespace: "default")))
      let token = try await client.requestToken(
        serviceAccount: "web", namespace: "default", audiences: ["identity.swiftmesh.io"], expirationSeconds: 3600)
      let account = try await TokenReviewValidator(client: client, audiences: ["identity.swiftmesh.io"]).validate(token: token)
      #expect(account == ServiceAccountRef(name: "web", namespace: "default"))
      await #expect {
        _ = try await client.requestToken(serviceAccount: "nobody", namespace: "default")
      } throws: { ($0 as? KubeError)?.isNotFound == true }
      await #expect {
        _ = try await client.requestToken(serviceAccount: "web", namespace: "default", expirationSeconds: 60)
      } throws: { "\($0)".contains("less than 10 minutes") }
    }
  }

  @Test("a watch replays history from a resourceVersion, sends bookmarks, and 410s when compacted")
  func rawWatch() async throws {
    try await withServer(configure: { $0.bookmarkInterval = .milliseconds(100) }) { server, client in
      let first = try server.state.create(service("a", "w"))
      try server.state.create(service("b", "w"))
      let stream = try await client.watch(KubeService.self, namespace: "w",
                                          options: .init(resourceVersion: first.metadata.resourceVersion, timeoutSeconds: 5))
      var sawB = false
      var sawBookmark = false
      for try await event in stream {
        switch event {
        case .added(let s): if s.name == "b" { sawB = true }
        case .bookmark: sawBookmark = true
        default: break
        }
        if sawB && sawBookmark { break }
      }
      #expect(sawB && sawBookmark)

      server.state.compactHistory()
      let expired = try await client.watch(KubeService.self, namespace: "w", options: .init(resourceVersion: first.metadata.resourceVersion))
      var status: KubeStatus?
      for try await event in expired {
        if case .error(let s) = event { status = s }
      }
      #expect(status?.code == 410)
      #expect(status?.reason == "Expired")
    }
  }
}
