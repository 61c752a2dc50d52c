/// The multi-cluster gateway and the service mirror, in swiftmesh-multicluster.
extension Values {
  /// Volumes of a component that certifies with the identity service: the trust anchor, and its own
  /// service-account token projected for the audience identity.swiftmesh.io (re-read at every renewal).
  static let identityClientVolumes = """
    - name: trust-roots
      configMap:
        name: swiftmesh-identity-trust-roots
    - name: token
      projected:
        sources:
        - serviceAccountToken:
            path: token
            audience: identity.swiftmesh.io
            expirationSeconds: 86400
    """
  static let identityClientMounts = [("trust-roots", "/var/run/swiftmesh/trust-roots"), ("token", "/var/run/swiftmesh/token")]

  /// The flags a component that certifies with the identity service runs with.
  func identityClientArgs(_ serviceAccount: String) -> [String] {
    [
      "--identity=\(identity(serviceAccount, Self.multiclusterNamespace))",
      "--identity-server=\(serviceHost("swiftmesh-identity", Self.controlPlaneNamespace)):8080",
      "--ca=/var/run/swiftmesh/trust-roots/ca.crt",
      "--token=/var/run/swiftmesh/token/token",
    ]
  }

  var gateway: [ManifestObject] {
    let mc = Self.multiclusterNamespace
    let workload = Workload(
      name: "swiftmesh-gateway", namespace: mc,
      comment: [
        "The multi-cluster gateway: `mesh-proxy --gateway`. It admits mesh callers only (mutual TLS, any identity",
        "under the shared trust anchor) and forwards each request to the local service its authority names",
        "(<service>.<namespace>.svc.\(options.clusterDomain)). Its tap API stays on the pod's loopback.",
      ],
      scales: true,
      container: Container(
        name: "gateway", image: options.image("mesh-proxy"), command: "mesh-proxy",
        args: ["--gateway"] + identityClientArgs("swiftmesh-gateway") + [
          "--destination=\(serviceHost("swiftmesh-destination", Self.controlPlaneNamespace)):8086",
          "--inbound=0.0.0.0:4143", "--admin=0.0.0.0:4191", "--tap=127.0.0.1:4190",
          "--cluster-domain=\(options.clusterDomain)", "--shutdown-grace-period=30", "--log-level=info",
        ],
        ports: [("mc-gateway", 4143), ("mc-probe", 4191)], probe: .http(port: "mc-probe"), cpuRequest: "100m",
        memoryLimit: "512Mi", volumeMounts: Self.identityClientMounts),
      volumes: Self.identityClientVolumes,
      terminationGracePeriodSeconds: 40)
    return [deployment(workload)] + disruptionBudget(workload) + [
      service(
        "swiftmesh-gateway", namespace: mc, selecting: "swiftmesh-gateway",
        ports: [("mc-gateway", 4143), ("mc-probe", 4191)],
        comment: [
          "What linked clusters connect to; `meshctl multicluster link` reads its ports, addresses and annotations.",
          "Addresses come from status.loadBalancer.ingress, else spec.externalIPs, else the annotation",
          "mirror.swiftmesh.io/gateway-addresses (comma separated).",
        ],
        annotations: [
          "mirror.swiftmesh.io/gateway-identity": identity("swiftmesh-gateway", mc),
          "mirror.swiftmesh.io/probe-path": "/ready",
          "mirror.swiftmesh.io/probe-period": "3s",
        ],
        loadBalancer: true)
    ]
  }

  var mirror: [ManifestObject] {
    let mc = Self.multiclusterNamespace
    let workload = Workload(
      name: "swiftmesh-mirror", namespace: mc,
      comment: [
        "The service mirror (`mesh-mirror`): one controller per Link in swiftmesh-multicluster; mirrors the exported",
        "Services of each linked cluster as <service>-<cluster> and probes the linked gateways over mutual TLS.",
        "Links and their credentials Secrets come from `meshctl multicluster link ... | kubectl apply -f -`.",
        "One replica even with --ha: two controllers of one Link would race. It writes EndpointSlices, as the",
        "destination service reads them.",
      ],
      scales: false, recreate: true,
      container: Container(
        name: "mirror", image: options.image("mesh-mirror"), command: "mesh-mirror",
        args: ["--namespace=\(mc)", "--admin=0.0.0.0:9999"] + identityClientArgs("swiftmesh-mirror") + [
          "--repair-interval=60", "--target-check-interval=10", "--endpoints-api=endpointslices", "--log-level=info",
        ],
        ports: [("admin", 9999)], probe: .http(port: "admin"), cpuRequest: "50m", memoryLimit: "512Mi",
        volumeMounts: Self.identityClientMounts),
      volumes: Self.identityClientVolumes)
    return [
      deployment(workload),
      service(
        "swiftmesh-mirror-admin", namespace: mc, selecting: "swiftmesh-mirror", ports: [("admin", 9999)],
        comment: [
          "The mirror's admin endpoint (/metrics, /gateways, /ready, /live), for `meshctl multicluster gateways",
          "--admin` through a port-forward and for Prometheus.",
        ]),
    ]
  }
}
