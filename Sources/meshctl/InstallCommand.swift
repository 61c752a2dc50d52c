import ArgumentParser
import MeshCore
import MeshInstall

struct InstallCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "install",
    abstract: "Print everything one cluster needs, as YAML for `kubectl apply -f -`.",
    discussion: """
      CRDs first, then the namespaces, RBAC, identity (with the issuer Secret from --issuer-dir and the trust \
      roots), destination, the proxy injector (with its serving certificate and webhook configuration), the \
      multi-cluster gateway and the service mirror. The same inputs print the same YAML; the injector's serving \
      certificate is generated each time unless --injector-tls-dir keeps it.

        meshctl identity init --out ca
        meshctl identity issuer --ca-dir ca --out issuer-east --cluster-name east
        meshctl install --issuer-dir issuer-east | kubectl apply -f -

      As Linkerd splits it: `meshctl install --crds | kubectl apply -f -`, then \
      `meshctl install --control-plane --issuer-dir issuer-east | kubectl apply -f -`.
      """)

  @Option(help: "Registry the images are pulled from (<registry>/mesh-proxy:<version>, ...).")
  var imageRegistry: String = "ghcr.io/swiftmesh"
  @Option(help: "Image tag to deploy.")
  var version: String = PackageVersion.current
  @Option(help: "This cluster's name in the mesh (default: the one the issuer records).")
  var clusterName: String?
  @Option(help: "The cluster's DNS domain.")
  var clusterDomain: String = "cluster.local"
  @Flag(help: "Three replicas of identity, destination, injector and gateway on distinct nodes, with PodDisruptionBudgets.")
  var ha = false
  @OptionGroup var parts: PartsOptions
  @Option(help: "Directory holding this cluster's ca.crt, issuer.crt and issuer.key (meshctl identity issuer --out).")
  var issuerDir: String?
  @Option(help: "Directory with the injector's ca.crt, tls.crt and tls.key; generated and written there when empty.")
  var injectorTLSDir: String?

  func run() async throws {
    let options = InstallOptions.defaults {
      $0.imageRegistry = imageRegistry
      $0.version = version
      $0.clusterName = clusterName
      $0.clusterDomain = clusterDomain
      $0.highAvailability = ha
      $0.scope = parts.scope
    }
    try options.validate()
    var material: InstallManifest.KeyMaterial?
    if options.scope != .crds {
      guard let issuerDir else {
        throw ValidationError(
          "--issuer-dir is required (make one with `meshctl identity issuer --ca-dir CA_DIR --out DIR --cluster-name NAME`)")
      }
      material = try .load(issuerDirectory: issuerDir, injectorDirectory: injectorTLSDir)
    }
    // Everything is rendered before anything is printed: an error prints nothing.
    print(try InstallManifest(options: options, material: material).yaml, terminator: "")
  }
}

struct UninstallCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "uninstall",
    abstract: "Print what `meshctl install` creates, for `kubectl delete --ignore-not-found -f -`.",
    discussion: """
      Every object `meshctl install` may create (with --ha or without: --ignore-not-found skips the ones it \
      did not), named only: the webhook configuration first (so no pod waits for an injector that is going \
      away), then the rest in reverse order, the CRDs last (deleting them deletes every Link, ServiceProfile \
      and TrafficSplit). Applications' injected proxies stay until their pods are re-created.

        meshctl uninstall | kubectl delete --ignore-not-found -f -
      """)

  @OptionGroup var parts: PartsOptions

  func run() async throws {
    print(InstallManifest.uninstallYAML(scope: parts.scope), terminator: "")
  }
}

/// `--crds` and `--control-plane`: the two halves of an installation, as Linkerd splits it.
struct PartsOptions: ParsableArguments {
  @Flag(help: "Only the CustomResourceDefinitions.")
  var crds = false
  @Flag(help: "Everything but the CustomResourceDefinitions.")
  var controlPlane = false

  func validate() throws {
    if crds && controlPlane {
      throw ValidationError("--crds and --control-plane exclude each other: run one, then the other")
    }
  }

  var scope: InstallOptions.Scope { crds ? .crds : controlPlane ? .controlPlane : .all }
}
