import Foundation
import MeshKube
import MeshKubeLocal
import NIOHTTP1
import Testing
import _MeshTestSupport

@Suite("JSON Patch (RFC 6902)")
struct JSONPatchTests {
  func apply(_ document: String, _ patch: String) throws -> JSONValue {
    try JSONPatch(json: try JSONValue.parse(Data(patch.utf8))).applied(to: try JSONValue.parse(Data(document.utf8)))
  }

  func json(_ text: String) throws -> JSONValue { try JSONValue.parse(Data(text.utf8)) }

  @Test("the RFC's examples: add to objects and arrays, remove, replace, move, copy, test, ~ escapes, - appends")
  func rfcExamples() throws {
    #expect(try apply(#"{"foo":"bar"}"#, #"[{"op":"add","path":"/baz","value":"qux"}]"#) == json(#"{"baz":"qux","foo":"bar"}"#))
    #expect(try apply(#"{"foo":["bar","baz"]}"#, #"[{"op":"add","path":"/foo/1","value":"qux"}]"#) == json(#"{"foo":["bar","qux","baz"]}"#))
    #expect(try apply(#"{"foo":["bar"]}"#, #"[{"op":"add","path":"/foo/-","value":["abc","def"]}]"#) == json(#"{"foo":["bar",["abc","def"]]}"#))
    #expect(try apply(#"{"baz":"qux","foo":"bar"}"#, #"[{"op":"remove","path":"/baz"}]"#) == json(#"{"foo":"bar"}"#))
    #expect(try apply(#"{"foo":["bar","qux","baz"]}"#, #"[{"op":"remove","path":"/foo/1"}]"#) == json(#"{"foo":["bar","baz"]}"#))
    #expect(try apply(#"{"baz":"qux","foo":"bar"}"#, #"[{"op":"replace","path":"/baz","value":"boo"}]"#) == json(#"{"baz":"boo","foo":"bar"}"#))
    #expect(try apply(#"{"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}"#, #"[{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]"#)
      == json(#"{"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}"#))
    #expect(try apply(#"{"foo":["all","grass","cows","eat"]}"#, #"[{"op":"move","from":"/foo/1","path":"/foo/3"}]"#)
      == json(#"{"foo":["all","cows","eat","grass"]}"#))
    #expect(try apply(#"{"a":{"b":1}}"#, #"[{"op":"copy","from":"/a","path":"/c"}]"#) == json(#"{"a":{"b":1},"c":{"b":1}}"#))
    #expect(try apply(#"{"baz":"qux","foo":["a",2,"c"]}"#, #"[{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2.0}]"#)
      == json(#"{"baz":"qux","foo":["a",2,"c"]}"#))
    #expect(try apply(#"{"/":9,"~1":10}"#, #"[{"op":"test","path":"/~01","value":10},{"op":"replace","path":"/~1","value":1}]"#)
      == json(#"{"/":1,"~1":10}"#))
    #expect(try apply(#"{"a":1}"#, #"[{"op":"add","path":"","value":[1]}]"#) == json("[1]"))
    #expect(JSONPatch.escape("swiftmesh.io/inject") == "swiftmesh.io~1inject")
  }

  @Test("failures name the path: a failed test, a missing member, an index out of range, a bad patch; nothing half-applied")
  func failures() throws {
    func failure(_ document: String, _ patch: String) -> JSONPatch.Failure? {
      do { _ = try apply(document, patch) } catch let error as JSONPatch.Failure { return error } catch { return nil }
      return nil
    }
    let test = failure(#"{"baz":"qux"}"#, #"[{"op":"test","path":"/baz","value":"bar"}]"#)
    #expect(test?.isTestFailure == true)
    #expect(test?.description.contains("testing value /baz failed") == true, "\(String(describing: test))")
    #expect(failure(#"{"a":1}"#, #"[{"op":"remove","path":"/b"}]"#)?.description.contains("no member \"b\"") == true)
    #expect(failure(#"{"a":1}"#, #"[{"op":"replace","path":"/b","value":2}]"#) != nil)
    #expect(failure(#"{"a":[1]}"#, #"[{"op":"add","path":"/a/5","value":2}]"#)?.description.contains("out of range") == true)
    #expect(failure(#"{"a":[1]}"#, #"[{"op":"add","path":"/a/01","value":2}]"#) != nil)
    #expect(failure(#"{"a":1}"#, #"[{"op":"add","path":"/x/y","value":2}]"#) != nil)
    #expect(failure(#"{"a":{}}"#, #"[{"op":"move","from":"/a","path":"/a/b"}]"#) != nil)
    #expect(failure(#"{}"#, #"[{"op":"jump","path":"/a"}]"#)?.description.contains("unknown op") == true)
    #expect(failure(#"{}"#, #"[{"op":"add","path":"/a"}]"#)?.description.contains("no \"value\"") == true)
    #expect(failure(#"{}"#, #"{"op":"add"}"#)?.description.contains("must be an array") == true)
    #expect(failure(#"{}"#, #"[{"op":"add","path":"a","value":1}]"#)?.description.contains("does not start with /") == true)
  }
}

/// `kubectl patch --type=json` and the deprecated `/watch/` paths against the embedded server.
@Suite("JSON patch and /watch/ paths with kubectl", .enabled(if: kubectlAvailable))
struct KubectlJSONPatchTests {
  func withKubectl(_ body: @Sendable (LocalKubeAPIServer, @escaping @Sendable ([String]) async throws -> _MeshTestSupport.Subprocess.Output) async throws -> Void) async throws {
    try await withServer { server, _ in
      let dir = try temporaryDirectory()
      defer { try? FileManager.default.removeItem(at: dir) }
      let kubeconfig = dir.appendingPathComponent("kubeconfig").path
      try await server.kubeconfigYAML().write(toFile: kubeconfig, atomically: true, encoding: .utf8)
      try await body(server) { args in
        try await _MeshTestSupport.Subprocess.run(
          kubectlPath, ["--kubeconfig", kubeconfig, "--cache-dir", dir.appendingPathComponent("cache").path] + args)
      }
    }
  }

  @Test("add, replace and remove on a ConfigMap and a Service; a failing test is a 422 that changes nothing")
  func patch() async throws {
    try await withKubectl { server, kubectl in
      try server.state.create(resource: "configmaps", namespace: "default", object: [
        "metadata": ["name": "settings"], "data": ["mode": "fast", "level": "3"],
      ])
      try server.state.create(resource: "services", namespace: "default", object: [
        "metadata": ["name": "web"], "spec": ["selector": ["app": "web"], "ports": [["name": "http", "port": 80]]],
      ])
      let cm = try await kubectl(["patch", "configmap", "settings", "--type=json", "-p",
        #"[{"op":"add","path":"/data/region","value":"eu"},{"op":"replace","path":"/data/mode","value":"safe"},{"op":"remove","path":"/data/level"}]"#])
      #expect(cm.status == 0, "\(cm)")
      #expect(cm.stdout.contains("configmap/settings patched"), "\(cm)")
      let data = try server.state.get(resource: "configmaps", namespace: "default", name: "settings")["data"]
      #expect(data == ["mode": "safe", "region": "eu"])

      let svc = try await kubectl(["patch", "service", "web", "--type=json", "-p",
        #"[{"op":"add","path":"/spec/ports/-","value":{"name":"admin","port":9990}},{"op":"replace","path":"/spec/selector/app","value":"web-v2"},{"op":"add","path":"/metadata/labels","value":{"tier":"front"}}]"#])
      #expect(svc.status == 0, "\(svc)")
      let service = try server.state.get(resource: "services", namespace: "default", name: "web")
      #expect(service["spec"]?["ports"]?.arrayValue?.compactMap { $0["port"]?.intValue } == [80, 9990])
      #expect(service["spec"]?["selector"] == ["app": "web-v2"])
      #expect(service["metadata"]?["labels"] == ["tier": "front"])
      let ports = try await kubectl(["get", "service", "web", "-o", "jsonpath={.spec.ports[*].port}"])
      #expect(ports.stdout == "80 9990", "\(ports)")

      let before = try server.state.get(resource: "configmaps", namespace: "default", name: "settings")
      let failed = try await kubectl(["patch", "configmap", "settings", "--type=json", "-p",
        #"[{"op":"replace","path":"/data/mode","value":"turbo"},{"op":"test","path":"/data/region","value":"us"}]"#])
      #expect(failed.status != 0)
      #expect(failed.stderr.contains("testing value /data/region failed"), "\(failed)")
      #expect(try server.state.get(resource: "configmaps", namespace: "default", name: "settings") == before)
      let missing = try await kubectl(["patch", "configmap", "settings", "--type=json", "-p", #"[{"op":"remove","path":"/data/nothing"}]"#])
      #expect(missing.status != 0)
      #expect(missing.stderr.contains("/data/nothing"), "\(missing)")
    }
  }

  @Test("a failing test answers 422 Invalid on the wire")
  func status422() async throws {
    try await withServer { server, client in
      try server.state.create(resource: "configmaps", namespace: "default", object: ["metadata": ["name": "c"], "data": ["a": "1"]])
      do {
        _ = try await client.send(.PATCH, path: "/api/v1/namespaces/default/configmaps/c",
                                  body: [["op": "test", "path": "/data/a", "value": "2"]], contentType: "application/json-patch+json")
        Issue.record("the failing test was accepted")
      } catch let error as KubeError {
        #expect(error.httpStatus == 422, "\(error)")
        #expect(error.status?.reason == "Invalid")
      }
    }
  }

  @Test("a watch on /api/v1/watch/... and /apis/G/V/watch/... receives events (the collection, and one object by name)")
  func watchPaths() async throws {
    try await withKubectl { server, kubectl in
      try server.state.create(resource: "configmaps", namespace: "default", object: ["metadata": ["name": "one"]])
      try server.state.create(resource: "configmaps", namespace: "default", object: ["metadata": ["name": "two"]])
      try server.state.create(group: "apps", resource: "deployments", namespace: "default", object: ["metadata": ["name": "web"], "spec": [:]])
      func events(_ path: String) async throws -> [JSONValue] {
        let out = try await kubectl(["get", "--raw", path + (path.contains("?") ? "&" : "?") + "timeoutSeconds=1"])
        #expect(out.status == 0, "\(path): \(out)")
        return try out.stdout.split(separator: "\n").map { try JSONValue.parse(Data($0.utf8)) }
      }
      let all = try await events("/api/v1/watch/namespaces/default/configmaps")
      #expect(all.map { $0["type"] } == ["ADDED", "ADDED"])
      #expect(all.compactMap { $0["object"]?["metadata"]?["name"]?.stringValue } == ["one", "two"])
      let one = try await events("/api/v1/watch/namespaces/default/configmaps/two")
      #expect(one.compactMap { $0["object"]?["metadata"]?["name"]?.stringValue } == ["two"])
      let deployments = try await events("/apis/apps/v1/watch/deployments")
      #expect(deployments.compactMap { $0["object"]?["metadata"]?["name"]?.stringValue } == ["web"])
      #expect(deployments.first?["object"]?["apiVersion"] == "apps/v1")
      // Live events arrive too: a watch that is open when an object is created.
      async let live = events("/api/v1/watch/namespaces/default/configmaps?resourceVersion=\(server.state.resourceVersion)")
      try await eventually("the watch to open") { server.state.activeWatchCount > 0 }
      try server.state.create(resource: "configmaps", namespace: "default", object: ["metadata": ["name": "three"]])
      let arrived = try await live
      #expect(arrived.compactMap { $0["object"]?["metadata"]?["name"]?.stringValue } == ["three"])
    }
  }
}
