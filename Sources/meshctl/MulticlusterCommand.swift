import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import MeshCore
import MeshKube
import MeshMulticluster
import NIOCore
import NIOHTTP1

/// `meshctl multicluster`: link clusters, export services, see gateways.
struct MulticlusterCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "multicluster",
    abstract: "Link clusters, export services, and see the gateways of linked clusters.",
    subcommands: [Link.self, Unlink.self, ExportService.self, UnexportService.self, Gateways.self, Check.self])

  enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
  }

  static var quietLogger: Logger {
    var logger = Logger(label: "meshctl")
    logger.logLevel = .critical
    return logger
  }

  /// `link`: prints the credentials Secret and the Link to apply on the source cluster.
  struct Link: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "link",
      abstract: "Print the Secret and Link (YAML) that link this cluster to a target cluster; apply them on the source.",
      discussion: """
        Gateway values not given as flags are read from the target's gateway Service \
        (\(MirrorMetadata.multiclusterNamespace)/\(MirrorMetadata.gatewayServiceName)): addresses from \
        status.loadBalancer.ingress (ip or hostname), spec.externalIPs or the annotation \
        \(MirrorMetadata.gatewayAddressesAnnotation), and the mirror keeps following that Service; \
        ports named \(MirrorMetadata.gatewayPortName) and \(MirrorMetadata.probePortName); identity from \
        \(MirrorMetadata.gatewayIdentityAnnotation).

          meshctl multicluster link --cluster-name west --kubeconfig west.kubeconfig | kubectl apply -f -
        """)

    @Option(help: "Name of the target cluster (mirrors are called <service>-<cluster-name>).")
    var clusterName: String
    @Option(help: "Kubeconfig of the target cluster (stored in the Secret; the mirror reaches the target with it).")
    var kubeconfig: String
    @Option(help: "Kubeconfig context of the target (default: its current context).")
    var context: String?
    @Option(help: "Namespace of the Link and Secret on the source, and of the gateway Service on the target.")
    var namespace: String = MirrorMetadata.multiclusterNamespace
    @Option(help: "The target cluster's DNS domain.")
    var clusterDomain: String = LinkSettings.defaultClusterDomain
    @Option(help: """
      Gateway addresses, IPs or DNS names, comma separated (default: from the gateway Service, which the \
      mirror then keeps following; given here, the Link keeps these).
      """)
    var gatewayAddresses: String?
    @Option(help: "Gateway port (default: the gateway Service's mc-gateway port, else 4143).")
    var gatewayPort: Int?
    @Option(help: "Gateway identity (default: the gateway Service's annotation).")
    var gatewayIdentity: String?
    @Option(help: "Gateway probe port (default: the gateway Service's mc-probe port, else 4191).")
    var probePort: Int?
    @Option(help: "Label selector (key=value) of exported services.")
    var selector: String = "\(MirrorMetadata.exportedLabel)=true"

    func run() async throws {
      let text: String
      do {
        text = try String(contentsOfFile: kubeconfig, encoding: .utf8)
      } catch {
        throw ValidationError("--kubeconfig \(kubeconfig): cannot read: \(error.localizedDescription)")
      }
      var gateway = GatewayValues()
      if gatewayAddresses == nil || gatewayPort == nil || gatewayIdentity == nil {
        let config = try Kubeconfig.parse(yaml: text, path: kubeconfig).resolve(context: context)
        let client = try KubeClient(config: config, logger: MulticlusterCommand.quietLogger)
        do {
          gateway = try await GatewayValues.read(from: client, namespace: namespace)
        } catch let error as MulticlusterError {
          try? await client.shutdown()
          throw MulticlusterCLIError(error.message)
        } catch {
          try? await client.shutdown()
          throw MulticlusterCLIError("cannot read the gateway Service from \(config.server): \(error)")
        }
        try await client.shutdown()
      }
      if let gatewayAddresses {
        gateway.addresses = gatewayAddresses.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
      }
      if let gatewayPort { gateway.port = gatewayPort }
      if let gatewayIdentity { gateway.identity = gatewayIdentity }
      if let probePort { gateway.probePort = probePort }
      var manifest = LinkManifest(clusterName: clusterName, kubeconfig: text, gateway: gateway)
      manifest.namespace = namespace
      manifest.clusterDomain = clusterDomain
      manifest.selector = try Self.parseSelector(selector)
      manifest.followGatewayService = gatewayAddresses == nil
      do { try manifest.validate() } catch { throw MulticlusterCLIError(error.message) }
      print(try manifest.yaml(), terminator: "")
    }

    static func parseSelector(_ text: String) throws -> LabelSelector {
      var labels: [String: String] = [:]
      for part in text.split(separator: ",") {
        let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        guard pair.count == 2, !pair[0].isEmpty else {
          throw ValidationError("--selector '\(text)': expected key=value[,key=value]")
        }
        labels[pair[0]] = pair[1]
      }
      guard !labels.isEmpty else { throw ValidationError("--selector is empty: it would export nothing") }
      return LabelSelector(matchLabels: labels)
    }
  }

  /// `unlink`: prints what to delete on the source (the Link, whose mirrors the controller then deletes,
  /// and its Secret).
  struct Unlink: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "unlink",
      abstract: "Print the Link and Secret (YAML) to delete on the source: kubectl delete -f -")
    @Option(help: "Name of the target cluster.")
    var clusterName: String
    @Option(help: "Namespace of the Link and Secret.")
    var namespace: String = MirrorMetadata.multiclusterNamespace

    func run() async throws {
      print(try LinkManifest.unlinkYAML(clusterName: clusterName, namespace: namespace), terminator: "")
    }
  }

  struct ServiceTarget: ParsableArguments {
    @Argument(help: "The Service to export or unexport.")
    var name: String
    @Option(name: .shortAndLong, help: "Its namespace.")
    var namespace: String = "default"
    @Option(help: "Kubeconfig of the cluster the Service is in (default: KUBECONFIG, ~/.kube/config).")
    var kubeconfig: String?
    @Option(help: "Kubeconfig context.")
    var context: String?

    /// Sets (or with nil removes) the export label.
    func label(_ value: String?) async throws {
      let config = try KubeClientConfig.load(kubeconfig: kubeconfig, context: context)
      let client = try KubeClient(config: config, logger: MulticlusterCommand.quietLogger)
      let patch: JSONValue = ["metadata": ["labels": [MirrorMetadata.exportedLabel: value.map { .string($0) } ?? .null]]]
      do {
        _ = try await client.mergePatch(KubeService.self, name: name, namespace: namespace, patch: patch)
      } catch let error as KubeError where error.isNotFound {
        try? await client.shutdown()
        throw MulticlusterCLIError("service \(namespace)/\(name) does not exist")
      } catch {
        try? await client.shutdown()
        throw error
      }
      try await client.shutdown()
    }
  }

  struct ExportService: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "export-service",
      abstract: "Export a service to linked clusters (sets \(MirrorMetadata.exportedLabel)=true).")
    @OptionGroup var target: ServiceTarget

    func run() async throws {
      try await target.label("true")
      print("service \(target.namespace)/\(target.name) exported")
    }
  }

  struct UnexportService: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "unexport-service",
      abstract: "Stop exporting a service (removes \(MirrorMetadata.exportedLabel)); its mirrors are deleted.")
    @OptionGroup var target: ServiceTarget

    func run() async throws {
      try await target.label(nil)
      print("service \(target.namespace)/\(target.name) unexported")
    }
  }

  /// `gateways`: the mirror controller's view of each linked cluster's gateway.
  struct Gateways: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "gateways",
      abstract: "Show the gateways of linked clusters as the mirror controller sees them.")
    @Option(help: "The mirror controller's admin address, HOST:PORT.")
    var admin: String = "127.0.0.1:9999"
    @Option(name: .shortAndLong, help: "Output format: table or json.")
    var output: OutputFormat = .table
    @Option(help: "Seconds to wait for the answer.")
    var timeout: Double = 10

    func run() async throws {
      let address: Authority
      do { address = try Authority(admin) } catch { throw ValidationError("--admin '\(admin)': \(error.message)") }
      let host = address.host.contains(":") ? "[\(address.host)]" : address.host
      let url = "http://\(host):\(address.port)/gateways"
      let client = HTTPClient(eventLoopGroupProvider: .singleton)
      let body: ByteBuffer
      do {
        let response = try await client.execute(
          HTTPClientRequest(url: url), timeout: .milliseconds(Int64(timeout * 1000)))
        body = try await response.body.collect(upTo: 16 * 1024 * 1024)
        guard response.status == .ok else {
          throw MulticlusterCLIError("\(url) answered \(response.status.code): \(String(buffer: body))")
        }
      } catch {
        try? await client.shutdown()
        if error is MulticlusterCLIError { throw error }
        throw MulticlusterCLIError("cannot read \(url): \(error)")
      }
      try await client.shutdown()
      let reports = try JSONDecoder().decode([GatewayReport].self, from: Data(body.readableBytesView))
      switch output {
      case .json:
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(reports), as: UTF8.self))
      case .table:
        print(GatewayReport.table(reports), terminator: "")
      }
    }
  }
}

extension MulticlusterCommand {
  /// `check`: is this cluster's multi-cluster setup healthy? One line per check; exit 1 on any cross.
  struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "check",
      abstract: "Check this cluster's multi-cluster setup: one line per check with a tick or a cross; exit 1 on any cross.",
      discussion: """
        Checks the Link CRD; each Link's spec; that its credentials Secret reaches the target and may list and \
        watch what the mirror reads; that both clusters publish the same trust anchor (ConfigMap \
        \(MulticlusterCheck.trustRootsConfigMap), key ca.crt, compared by SHA-256 fingerprint); that the \
        mirror controller of each Link runs (its heartbeat Lease) and is ready; that each gateway is alive, \
        with its latency; that every mirror has endpoints; and that no mirror is orphaned.
        """)

    @Option(help: "Kubeconfig of the source cluster, where the Links are (default: KUBECONFIG, ~/.kube/config).")
    var kubeconfig: String?
    @Option(help: "Kubeconfig context.")
    var context: String?
    @Option(help: "Namespace of the Links.")
    var namespace: String = MirrorMetadata.multiclusterNamespace
    @Option(help: "The control plane's namespace (where the trust-roots ConfigMap is looked for first).")
    var controlPlaneNamespace: String = "swiftmesh"
    @Option(name: .shortAndLong, help: "Output format: table (one line per check) or json.")
    var output: OutputFormat = .table
    @Option(help: "Seconds to wait for each target's API server to connect.")
    var timeout: Double = 5

    func run() async throws {
      guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
      let config: KubeClientConfig
      do {
        config = try KubeClientConfig.load(kubeconfig: kubeconfig, context: context)
      } catch {
        throw MulticlusterCLIError("cannot load the kubeconfig\(kubeconfig.map { " \($0)" } ?? ""): \(error)")
      }
      let client = try KubeClient(
        config: config, connectTimeout: .milliseconds(Int64(timeout * 1000)), logger: MulticlusterCommand.quietLogger)
      var options = MulticlusterCheck.Options()
      options.namespace = namespace
      options.controlPlaneNamespace = controlPlaneNamespace
      options.connectTimeout = .milliseconds(Int64(timeout * 1000))
      let results = await MulticlusterCheck.run(local: client, options: options, logger: MulticlusterCommand.quietLogger)
      try? await client.shutdown()
      let ok = results.allSatisfy(\.ok)
      switch output {
      case .json:
        struct Report: Encodable {
          var ok: Bool
          var checks: [MulticlusterCheck.Result]
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(Report(ok: ok, checks: results)), as: UTF8.self))
      case .table:
        for result in results { print(result.line) }
        let crosses = results.filter { !$0.ok }.count
        print(ok ? "\nStatus check results are √" : "\nStatus check results are × (\(crosses) of \(results.count) checks failed)")
      }
      if !ok { throw ExitCode(1) }
    }
  }
}

/// A failure of a multicluster command (printed as `Error: <message>`, without the usage text).
struct MulticlusterCLIError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}
