import MeshKube

/// The containers and volumes injection adds. Each executable's arguments are built in one place
/// (`initArguments`, `proxyArguments`), from flags `mesh-proxy-init --help` and `mesh-proxy --help` list.
extension PodInjector {
  static let identityDirectory = "/var/run/swiftmesh/identity"
  static let tokenDirectory = "/var/run/swiftmesh/token"
  static let namespaceVariable = "SWIFTMESH_POD_NAMESPACE"
  static let serviceAccountVariable = "SWIFTMESH_POD_SERVICE_ACCOUNT"

  /// `mesh-proxy-init`'s arguments: the proxy's ports and uid, and what not to redirect.
  public func initArguments(_ config: ProxyConfigAnnotations) -> [String] {
    let inboundIgnored = ["\(configuration.tapPort)", "\(configuration.adminPort)"] + config.skipInboundPorts
    var args = [
      "--incoming-proxy-port=\(configuration.inboundPort)",
      "--outgoing-proxy-port=\(configuration.outboundPort)",
      "--proxy-uid=\(config.proxyUID ?? configuration.proxyUID)",
      "--inbound-ports-to-ignore=\(inboundIgnored.joined(separator: ","))",
    ]
    if !config.skipOutboundPorts.isEmpty {
      args.append("--outbound-ports-to-ignore=\(config.skipOutboundPorts.joined(separator: ","))")
    }
    if !config.skipSubnets.isEmpty { args.append("--subnets-to-ignore=\(config.skipSubnets.joined(separator: ","))") }
    return args
  }

  /// `mesh-proxy`'s arguments: transparent, behind `mesh-proxy-init`'s rules (inbound connections reach the
  /// application on their original port). The identity is the pod's service account in the pod's namespace,
  /// which the kubelet substitutes from the downward-API variables.
  public func proxyArguments(_ config: ProxyConfigAnnotations) -> [String] {
    let c = configuration
    var args = [
      "--transparent",
      "--identity=$(\(Self.serviceAccountVariable)).$(\(Self.namespaceVariable)).serviceaccount.identity."
        + "\(c.controlPlaneNamespace).\(c.trustDomain)",
      "--identity-server=\(c.resolvedIdentityServer)",
      "--ca=\(Self.identityDirectory)/ca.crt",
      "--token=\(Self.tokenDirectory)/token",
      "--destination=\(c.resolvedDestination)",
      "--outbound=127.0.0.1:\(c.outboundPort)",
      "--inbound=0.0.0.0:\(c.inboundPort)",
      "--admin=0.0.0.0:\(c.adminPort)",
    ]
    if let opaque = config.opaquePorts, !opaque.isEmpty {
      args.append("--opaque-ports=\(opaque.joined(separator: ","))")
    }
    args.append("--log-level=\(config.proxyLogLevel ?? c.proxyLogLevel)")
    return args
  }

  func initContainer(_ config: ProxyConfigAnnotations) -> JSONValue {
    [
      "name": .string(InjectAnnotations.initContainerName),
      "image": .string(config.proxyInitImage ?? configuration.resolvedProxyInitImage),
      "imagePullPolicy": "IfNotPresent",
      "command": ["mesh-proxy-init"],
      "args": .array(initArguments(config).map { .string($0) }),
      "securityContext": [
        "runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false, "privileged": false,
        "readOnlyRootFilesystem": true,
        "capabilities": ["add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]],
      ],
      "volumeMounts": [["name": .string(InjectAnnotations.xtablesLockVolume), "mountPath": "/run"]],
      "terminationMessagePolicy": "FallbackToLogsOnError",
    ]
  }

  /// The proxy as a native sidecar: an init container with `restartPolicy: Always`, so it starts before the
  /// application's containers and stops after them.
  func proxyContainer(_ config: ProxyConfigAnnotations) -> JSONValue {
    func fieldEnv(_ name: String, _ path: String) -> JSONValue {
      ["name": .string(name), "valueFrom": ["fieldRef": ["fieldPath": .string(path)]]]
    }
    func probe(_ path: String) -> JSONValue {
      ["httpGet": ["path": .string(path), "port": .int(Int64(configuration.adminPort))], "periodSeconds": 10]
    }
    var container: JSONValue = [
      "name": .string(InjectAnnotations.proxyContainerName),
      "image": .string(config.proxyImage ?? configuration.resolvedProxyImage),
      "imagePullPolicy": "IfNotPresent",
      "restartPolicy": "Always",
      "command": ["mesh-proxy"],
      "args": .array(proxyArguments(config).map { .string($0) }),
      "env": [fieldEnv(Self.namespaceVariable, "metadata.namespace"), fieldEnv(Self.serviceAccountVariable, "spec.serviceAccountName")],
      "ports": [
        ["name": "swiftmesh-proxy", "containerPort": .int(Int64(configuration.inboundPort))],
        ["name": "swiftmesh-admin", "containerPort": .int(Int64(configuration.adminPort))],
      ],
      "readinessProbe": probe("/ready"),
      "livenessProbe": probe("/live"),
      "securityContext": [
        "runAsUser": .int(Int64(config.proxyUID ?? configuration.proxyUID)), "runAsNonRoot": true,
        "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": ["drop": ["ALL"]],
      ],
      "volumeMounts": [
        ["name": .string(InjectAnnotations.identityVolume), "mountPath": .string(Self.identityDirectory), "readOnly": true],
        ["name": .string(InjectAnnotations.tokenVolume), "mountPath": .string(Self.tokenDirectory), "readOnly": true],
      ],
      "terminationMessagePolicy": "FallbackToLogsOnError",
    ]
    var requests: [String: JSONValue] = [:]
    var limits: [String: JSONValue] = [:]
    if let v = config.proxyCPURequest { requests["cpu"] = .string(v) }
    if let v = config.proxyMemoryRequest { requests["memory"] = .string(v) }
    if let v = config.proxyCPULimit { limits["cpu"] = .string(v) }
    if let v = config.proxyMemoryLimit { limits["memory"] = .string(v) }
    if !requests.isEmpty || !limits.isEmpty {
      var resources: [String: JSONValue] = [:]
      if !requests.isEmpty { resources["requests"] = .object(requests) }
      if !limits.isEmpty { resources["limits"] = .object(limits) }
      container["resources"] = .object(resources)
    }
    return container
  }

  /// The trust anchors, from the pod's own annotation (downward API), and the projected token for the
  /// identity service's audience.
  var volumes: [JSONValue] {
    [
      [
        "name": .string(InjectAnnotations.identityVolume),
        "downwardAPI": ["items": [[
          "path": "ca.crt",
          "fieldRef": ["fieldPath": .string("metadata.annotations['\(InjectAnnotations.identityTrustRoots)']")],
        ]]],
      ],
      [
        "name": .string(InjectAnnotations.tokenVolume),
        "projected": ["sources": [[
          "serviceAccountToken": [
            "path": "token", "audience": .string(InjectAnnotations.tokenAudience), "expirationSeconds": 86400,
          ]
        ]]],
      ],
      ["name": .string(InjectAnnotations.xtablesLockVolume), "emptyDir": [:]],
    ]
  }
}
