import Foundation
import MeshInject
import MeshKube
import Testing

/// A pod spec with one application container (and, optionally, init containers of its own).
func podSpec(initContainers: [JSONValue]? = nil, hostNetwork: Bool = false) -> JSONValue {
  var spec: JSONValue = [
    "serviceAccountName": "web",
    "containers": [["name": "app", "image": "app:1", "ports": [["name": "http", "containerPort": 8080]]]],
  ]
  if let initContainers { spec["initContainers"] = .array(initContainers) }
  if hostNetwork { spec["hostNetwork"] = true }
  return spec
}

/// An object of `kind` whose pod (template) has `annotations`.
func workload(_ kind: String, annotations: [String: String]? = nil, spec: JSONValue = podSpec()) -> JSONValue {
  var template: JSONValue = ["metadata": ["labels": ["app": "web"]], "spec": spec]
  if let annotations { template["metadata"]?["annotations"] = .object(annotations.mapValues { .string($0) }) }
  let apiVersion: JSONValue = switch kind {
  case "Pod": "v1"
  case "Job", "CronJob": "batch/v1"
  default: "apps/v1"
  }
  var object: JSONValue = ["apiVersion": apiVersion, "kind": .string(kind), "metadata": ["name": "web", "namespace": "shop"]]
  switch kind {
  case "Pod":
    object["metadata"] = ["name": "web", "namespace": "shop", "labels": ["app": "web"]]
    if let annotations { object["metadata"]?["annotations"] = .object(annotations.mapValues { .string($0) }) }
    object["spec"] = spec
  case "CronJob":
    object["spec"] = ["schedule": "* * * * *", "jobTemplate": ["spec": ["template": template]]]
  default:
    object["spec"] = ["selector": ["matchLabels": ["app": "web"]], "template": template]
  }
  return object
}

/// The pod (template) of an object.
func template(_ object: JSONValue) -> JSONValue {
  switch object["kind"]?.stringValue {
  case "Pod": object
  case "CronJob": object["spec"]?["jobTemplate"]?["spec"]?["template"] ?? .null
  default: object["spec"]?["template"] ?? .null
  }
}

let testTrustRoots = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
let testInjector = PodInjector(configuration: .defaults { $0.trustRootsPEM = testTrustRoots })

/// The object after injection (fails the test when it is skipped).
func injected(_ object: JSONValue, namespace: [String: String] = [:], injector: PodInjector = testInjector) throws -> JSONValue {
  guard case .inject(let patch) = try injector.decide(object, namespaceAnnotations: namespace) else {
    Issue.record("not injected: \(try injector.decide(object, namespaceAnnotations: namespace))")
    throw InjectError.invalidObject("not injected")
  }
  return try patch.applied(to: object)
}

func container(_ pod: JSONValue, _ list: String, _ name: String) -> JSONValue? {
  pod["spec"]?[list]?.arrayValue?.first { $0["name"]?.stringValue == name }
}

func args(_ container: JSONValue?) -> [String] {
  container?["args"]?.arrayValue?.compactMap(\.stringValue) ?? []
}

@Suite("Patch builder")
struct PatchBuilderTests {
  static let kinds = ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"]

  @Test("every workload kind gets the init container, then the native sidecar, volumes, annotations and label", arguments: kinds)
  func injectsEveryKind(kind: String) throws {
    let object = workload(kind, annotations: ["swiftmesh.io/inject": "enabled"])
    let pod = template(try injected(object))
    let inits = pod["spec"]?["initContainers"]?.arrayValue ?? []
    #expect(inits.map { $0["name"]?.stringValue } == ["swiftmesh-init", "swiftmesh-proxy"])
    let initContainer = try #require(inits.first)
    #expect(initContainer["command"] == ["mesh-proxy-init"])
    #expect(initContainer["securityContext"]?["capabilities"]?["add"] == ["NET_ADMIN", "NET_RAW"])
    #expect(initContainer["securityContext"]?["capabilities"]?["drop"] == ["ALL"])
    let proxy = try #require(inits.last)
    #expect(proxy["restartPolicy"] == "Always")
    #expect(proxy["command"] == ["mesh-proxy"])
    #expect(proxy["securityContext"]?["runAsUser"] == 2102)
    #expect(proxy["readinessProbe"]?["httpGet"] == ["path": "/ready", "port": 4191])
    #expect(proxy["livenessProbe"]?["httpGet"] == ["path": "/live", "port": 4191])
    #expect(proxy["ports"]?.arrayValue?.compactMap { $0["containerPort"]?.intValue } == [4143, 4191])
    #expect(args(proxy).contains(
      "--identity=$(SWIFTMESH_POD_SERVICE_ACCOUNT).$(SWIFTMESH_POD_NAMESPACE).serviceaccount.identity.swiftmesh.cluster.local"))
    #expect(args(proxy).contains("--identity-server=swiftmesh-identity.swiftmesh.svc.cluster.local:8080"))
    #expect(args(proxy).contains("--destination=swiftmesh-destination.swiftmesh.svc.cluster.local:8086"))
    #expect(args(proxy).first == "--transparent")
    #expect(!args(proxy).contains { $0.hasPrefix("--app") }, "transparent: the application is reached on its own port")
    let env = proxy["env"]?.arrayValue ?? []
    #expect(env.map { $0["valueFrom"]?["fieldRef"]?["fieldPath"] } == ["metadata.namespace", "spec.serviceAccountName"])
    // The application's containers are as they were.
    #expect(pod["spec"]?["containers"] == template(object)["spec"]?["containers"])

    let volumes = pod["spec"]?["volumes"]?.arrayValue ?? []
    let token = try #require(volumes.first { $0["name"] == "swiftmesh-token" })
    #expect(token["projected"]?["sources"]?.arrayValue?.first?["serviceAccountToken"]?["audience"] == "identity.swiftmesh.io")
    let identity = try #require(volumes.first { $0["name"] == "swiftmesh-identity" })
    #expect(volumes.contains { $0["name"] == "swiftmesh-init-xtables-lock" && $0["emptyDir"] != nil })
    #expect(identity["downwardAPI"]?["items"]?.arrayValue?.first?["fieldRef"]?["fieldPath"]
      == "metadata.annotations['swiftmesh.io/identity-trust-roots']")

    let annotations = pod["metadata"]?["annotations"]
    #expect(annotations?["swiftmesh.io/proxy-version"] == "0.1.0")
    #expect(annotations?["swiftmesh.io/identity-trust-roots"] == .string(testTrustRoots))
    #expect(annotations?["swiftmesh.io/trust-root-sha256"]?.stringValue?.count == 64)
    #expect(annotations?["swiftmesh.io/inject"] == "enabled")
    #expect(pod["metadata"]?["labels"] == ["app": "web", "swiftmesh.io/control-plane-ns": "swiftmesh"])
  }

  @Test("the pod's own init containers and volumes are kept, after the mesh's")
  func keepsOwnInitContainers() throws {
    var spec = podSpec(initContainers: [["name": "migrate", "image": "app:1"]])
    spec["volumes"] = [["name": "config", "emptyDir": [:]]]
    let pod = try injected(workload("Pod", annotations: ["swiftmesh.io/inject": "enabled"], spec: spec))
    #expect(pod["spec"]?["initContainers"]?.arrayValue?.map { $0["name"]?.stringValue } == ["swiftmesh-init", "swiftmesh-proxy", "migrate"])
    #expect(pod["spec"]?["volumes"]?.arrayValue?.map { $0["name"]?.stringValue } == ["config", "swiftmesh-identity", "swiftmesh-token", "swiftmesh-init-xtables-lock"])
  }

  @Test("a pod template without metadata gets it")
  func templateWithoutMetadata() throws {
    var object = workload("Deployment")
    object["spec"]?["template"]?["metadata"] = nil
    let pod = template(try injected(object, namespace: ["swiftmesh.io/inject": "enabled"]))
    #expect(pod["metadata"]?["labels"] == ["swiftmesh.io/control-plane-ns": "swiftmesh"])
  }

  @Test("skip reasons: disabled (pod, namespace), not enabled, hostNetwork, already injected, no pod template")
  func skipReasons() throws {
    func decision(_ object: JSONValue, _ namespace: [String: String] = [:]) throws -> PodInjector.Decision {
      try testInjector.decide(object, namespaceAnnotations: namespace)
    }
    #expect(try decision(workload("Pod", annotations: ["swiftmesh.io/inject": "disabled"]), ["swiftmesh.io/inject": "enabled"])
      == .skip(.disabled(on: "pod")))
    #expect(try decision(workload("Deployment"), ["swiftmesh.io/inject": "disabled"]) == .skip(.disabled(on: "namespace")))
    #expect(try decision(workload("Deployment")) == .skip(.notEnabled))
    #expect(try decision(workload("Pod", annotations: ["swiftmesh.io/inject": "enabled"], spec: podSpec(hostNetwork: true)))
      == .skip(.hostNetwork))
    let once = try injected(workload("StatefulSet", annotations: ["swiftmesh.io/inject": "enabled"]))
    #expect(try decision(once) == .skip(.alreadyInjected))
    #expect(try decision(["apiVersion": "v1", "kind": "Service", "metadata": ["name": "web"]]) == .skip(.unsupportedKind("Service")))
    #expect(PodInjector.SkipReason.hostNetwork.description.contains("hostNetwork"))
    // --manual injects without the annotation, but still honours disabled.
    #expect(try testInjector.decide(workload("Deployment"), trigger: .always) != .skip(.notEnabled))
    #expect(try testInjector.decide(workload("Pod", annotations: ["swiftmesh.io/inject": "disabled"]), trigger: .always)
      == .skip(.disabled(on: "pod")))
  }

  @Test("the pod's enabled beats its namespace's disabled")
  func podOverridesNamespaceTrigger() throws {
    let pod = try injected(workload("Pod", annotations: ["swiftmesh.io/inject": "enabled"]), namespace: ["swiftmesh.io/inject": "disabled"])
    #expect(container(pod, "initContainers", "swiftmesh-proxy") != nil)
  }

  @Test("config annotations: inherited from the namespace, overridden by the pod")
  func configAnnotations() throws {
    let namespace = [
      "swiftmesh.io/inject": "enabled",
      "config.swiftmesh.io/skip-outbound-ports": "3306,5432",
      "config.swiftmesh.io/proxy-log-level": "debug",
      "config.swiftmesh.io/proxy-cpu-request": "100m",
      "config.swiftmesh.io/skip-subnets": "10.0.0.0/8",
    ]
    let object = workload("Deployment", annotations: [
      "config.swiftmesh.io/proxy-log-level": "warning",
      "config.swiftmesh.io/skip-inbound-ports": "9090,9100-9200",
      "config.swiftmesh.io/proxy-uid": "2200",
      "config.swiftmesh.io/proxy-memory-limit": "256Mi",
      "config.swiftmesh.io/proxy-image": "registry.local/mesh-proxy:dev",
    ])
    let pod = template(try injected(object, namespace: namespace))
    let initArgs = args(container(pod, "initContainers", "swiftmesh-init"))
    #expect(initArgs == [
      "--incoming-proxy-port=4143", "--outgoing-proxy-port=4140", "--proxy-uid=2200",
      "--inbound-ports-to-ignore=4190,4191,9090,9100-9200", "--outbound-ports-to-ignore=3306,5432",
      "--subnets-to-ignore=10.0.0.0/8",
    ])
    let proxy = container(pod, "initContainers", "swiftmesh-proxy")
    #expect(args(proxy).last == "--log-level=warning")
    #expect(proxy?["securityContext"]?["runAsUser"] == 2200)
    #expect(proxy?["image"] == "registry.local/mesh-proxy:dev")
    #expect(proxy?["resources"] == ["requests": ["cpu": "100m"], "limits": ["memory": "256Mi"]])
  }

  @Test("a bad or unknown config annotation is an error naming it", arguments: [
    ("config.swiftmesh.io/skip-inbound-ports", "80,http", "skip-inbound-ports: '80,http' (on the pod)"),
    ("config.swiftmesh.io/skip-outbound-ports", "70000", "skip-outbound-ports: '70000'"),
    ("config.swiftmesh.io/skip-subnets", "10.0.0.0", "skip-subnets: '10.0.0.0'"),
    ("config.swiftmesh.io/proxy-uid", "root", "proxy-uid: 'root'"),
    ("config.swiftmesh.io/proxy-log-level", "loud", "proxy-log-level: 'loud'"),
    ("config.swiftmesh.io/proxy-memory-limit", "lots", "proxy-memory-limit: 'lots'"),
    ("config.swiftmesh.io/proxy-colour", "blue", "proxy-colour (on the pod) is not a config annotation"),
  ])
  func badAnnotations(key: String, value: String, message: String) throws {
    let object = workload("Pod", annotations: ["swiftmesh.io/inject": "enabled", key: value])
    do {
      _ = try testInjector.decide(object)
      Issue.record("\(key)=\(value) was accepted")
    } catch {
      #expect(error == .invalidAnnotation(""))
      #expect(error.message.contains(message), "\(error.message)")
    }
  }

  @Test("the opaque-ports annotation reaches the proxy as --opaque-ports; without it the proxy keeps its default list")
  func opaquePorts() throws {
    let object = workload("Pod", annotations: ["swiftmesh.io/inject": "enabled", "config.swiftmesh.io/opaque-ports": "4222,5432"])
    #expect(args(container(try injected(object), "initContainers", "swiftmesh-proxy")).contains("--opaque-ports=4222,5432"))
    let plain = workload("Pod", annotations: ["swiftmesh.io/inject": "enabled"])
    #expect(!args(container(try injected(plain), "initContainers", "swiftmesh-proxy")).contains { $0.hasPrefix("--opaque-ports") })
    // Inherited from the namespace, it is also written on the pod, where the destination service reads it.
    let pod = try injected(plain, namespace: ["config.swiftmesh.io/opaque-ports": "6379"])
    #expect(args(container(pod, "initContainers", "swiftmesh-proxy")).contains("--opaque-ports=6379"))
    #expect(pod["metadata"]?["annotations"]?["config.swiftmesh.io/opaque-ports"] == "6379")
    #expect(try injected(object, namespace: ["config.swiftmesh.io/opaque-ports": "6379"])["metadata"]?["annotations"]?["config.swiftmesh.io/opaque-ports"] == "4222,5432")
  }

  @Test("an object whose kind promises a pod template but has none is an error")
  func malformedWorkload() throws {
    let object: JSONValue = ["apiVersion": "apps/v1", "kind": "Deployment", "metadata": ["name": "broken"], "spec": ["replicas": 1]]
    #expect(throws: InjectError.invalidObject("")) { try testInjector.decide(object, namespaceAnnotations: ["swiftmesh.io/inject": "enabled"]) }
  }
}
