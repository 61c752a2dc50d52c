/// One component's Deployment: what differs between them; `Values.deployment` writes the rest the same way
/// for all (non-root uid 2102, read-only root filesystem, no capabilities, the component's ServiceAccount).
struct Workload {
  /// Deployment, ServiceAccount and `app.kubernetes.io/name` label.
  var name: String
  var namespace: String
  var comment: [String]
  /// Whether `--ha` gives it three replicas on three nodes and a PodDisruptionBudget.
  var scales: Bool
  /// One pod at a time (the mirror: two controllers of one Link would race).
  var recreate = false
  var container: Container
  /// The pod's `volumes`, as YAML list items at column 0.
  var volumes: String?
  var terminationGracePeriodSeconds: Int?
}

/// The one container of a component's pod.
struct Container {
  enum Probe {
    /// A TCP connect to the named port (gRPC servers).
    case tcp(port: String)
    /// `GET /ready` (readiness) and `GET /live` (liveness) on the named port.
    case http(port: String)
  }

  var name: String
  var image: String
  var command: String
  var args: [String]
  var ports: [(name: String, port: Int)]
  var probe: Probe
  var cpuRequest: String
  var memoryLimit: String
  /// `(volume name, mount path)`, read-only.
  var volumeMounts: [(name: String, path: String)] = []

  var yaml: String {
    var lines = [
      "name: \(name)",
      "image: \(YAML.scalar(image))",
      "command: \(YAML.flow([command]))",
      "args:",
    ]
    lines += args.map { "- \(YAML.scalar($0))" }
    lines.append("ports:")
    for port in ports { lines += ["- name: \(port.name)", "  containerPort: \(port.port)"] }
    switch probe {
    case .tcp(let port):
      lines += [
        "readinessProbe:", "  tcpSocket:", "    port: \(port)", "  periodSeconds: 5",
        "livenessProbe:", "  tcpSocket:", "    port: \(port)", "  periodSeconds: 10",
      ]
    case .http(let port):
      lines += [
        "readinessProbe:", "  httpGet:", "    path: /ready", "    port: \(port)", "  periodSeconds: 5",
        "livenessProbe:", "  httpGet:", "    path: /live", "    port: \(port)", "  periodSeconds: 10",
      ]
    }
    lines += [
      "resources:", "  requests:", "    cpu: \(cpuRequest)", "    memory: 64Mi", "  limits:", "    memory: \(memoryLimit)",
      "securityContext:", "  allowPrivilegeEscalation: false", "  readOnlyRootFilesystem: true", "  capabilities:",
      "    drop: [\"ALL\"]",
    ]
    if !volumeMounts.isEmpty {
      lines.append("volumeMounts:")
      for mount in volumeMounts { lines += ["- name: \(mount.name)", "  mountPath: \(mount.path)", "  readOnly: true"] }
    }
    return lines.joined(separator: "\n")
  }
}

extension Values {
  static let nameLabel = "app.kubernetes.io/name"

  func deployment(_ workload: Workload) -> ManifestObject {
    let name = workload.name
    let replicas = workload.scales ? options.replicas : 1
    var spec = ["spec:", "  replicas: \(replicas)"]
    if workload.recreate { spec += ["  strategy:", "    type: Recreate"] }
    spec += [
      "  selector:", "    matchLabels:", "      \(Self.nameLabel): \(name)",
      "  template:", "    metadata:", "      labels:", "        \(Self.nameLabel): \(name)",
      "        app.kubernetes.io/part-of: swiftmesh",
      "    spec:", "      serviceAccountName: \(name)",
    ]
    if workload.scales && options.highAvailability {
      // One replica per node: losing a node loses one replica.
      spec += [
        "      affinity:", "        podAntiAffinity:", "          requiredDuringSchedulingIgnoredDuringExecution:",
        "          - labelSelector:", "              matchLabels:", "                \(Self.nameLabel): \(name)",
        "            topologyKey: kubernetes.io/hostname",
      ]
    }
    spec += ["      securityContext:", "        runAsNonRoot: true", "        runAsUser: 2102", "      containers:"]
    spec.append(YAML.indent(Self.listItem(workload.container.yaml), 6))
    if let seconds = workload.terminationGracePeriodSeconds { spec.append("      terminationGracePeriodSeconds: \(seconds)") }
    if let volumes = workload.volumes { spec += ["      volumes:", YAML.indent(volumes, 6)] }
    return ManifestObject(
      apiVersion: "apps/v1", kind: "Deployment", name: name, namespace: workload.namespace,
      labels: [Self.nameLabel: name], comment: workload.comment, body: spec.joined(separator: "\n"))
  }

  /// With `--ha`, at most one replica of a scaled component down at a time (drains wait for the others).
  func disruptionBudget(_ workload: Workload) -> [ManifestObject] {
    guard workload.scales && options.highAvailability else { return [] }
    return [
      ManifestObject(
        apiVersion: "policy/v1", kind: "PodDisruptionBudget", name: workload.name, namespace: workload.namespace,
        labels: [Self.nameLabel: workload.name],
        body: """
          spec:
            maxUnavailable: 1
            selector:
              matchLabels:
                \(Self.nameLabel): \(workload.name)
          """)
    ]
  }

  /// A Service in front of a component's pods; each port targets the container port of its name.
  func service(
    _ name: String, namespace: String, selecting component: String, ports: [(name: String, port: Int)],
    comment: [String] = [], annotations: [String: String] = [:], loadBalancer: Bool = false
  ) -> ManifestObject {
    var spec = ["spec:"]
    if loadBalancer { spec.append("  type: LoadBalancer") }
    spec += ["  selector:", "    \(Self.nameLabel): \(component)", "  ports:"]
    for port in ports { spec += ["  - name: \(port.name)", "    port: \(port.port)", "    targetPort: \(port.name)"] }
    return ManifestObject(
      apiVersion: "v1", kind: "Service", name: name, namespace: namespace, labels: [Self.nameLabel: component],
      annotations: annotations, comment: comment, body: spec.joined(separator: "\n"))
  }

  func serviceAccount(_ name: String, namespace: String, comment: [String] = []) -> ManifestObject {
    ManifestObject(apiVersion: "v1", kind: "ServiceAccount", name: name, namespace: namespace, comment: comment, body: "")
  }

  /// `text` (a mapping at column 0) as a YAML list item: `- ` before the first line, two spaces before the rest.
  static func listItem(_ text: String) -> String {
    text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
      .map { $0.offset == 0 ? "- \($0.element)" : "  \($0.element)" }
      .joined(separator: "\n")
  }
}
