import ArgumentParser
import Foundation
import MeshInject
import MeshKube

/// `meshctl inject` and `meshctl uninject`: offline, on manifests, as `linkerd inject` does.
struct InjectCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "inject",
    abstract: "Mesh the workloads of Kubernetes manifests (YAML or JSON, Lists too); print the result.",
    discussion: """
      By default each Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job and \
      CronJob gets the annotation swiftmesh.io/inject: enabled on its pod template, and the injection webhook \
      adds the proxy when the pods are created. --manual writes the init container and the proxy sidecar \
      itself, with the patch builder the webhook uses. Other kinds pass through untouched. What was done to \
      each object is reported on standard error. Example: meshctl inject deploy.yaml | kubectl apply -f -
      """)

  @Argument(help: "Manifest files, or - for standard input.")
  var files: [String]
  @Flag(help: "Write the whole injection (init container, proxy, volumes, annotations) instead of the annotation.")
  var manual = false
  @Option(help: "With --manual: the trust anchors PEM (ca.crt) the proxy verifies the mesh with.")
  var ca: String?
  @OptionGroup var mesh: InjectOptions
  @Option(name: [.short, .customLong("output")], help: "yaml or json")
  var output = "yaml"

  func validate() throws {
    guard ["yaml", "json"].contains(output) else { throw ValidationError("--output must be yaml or json, not '\(output)'") }
    if manual, ca == nil { throw ValidationError("--manual needs the trust anchors: --ca ca.crt") }
    if !manual, ca != nil { throw ValidationError("--ca goes with --manual") }
  }

  func run() async throws {
    var mode = ManifestInjector.Mode.annotate
    if manual, let ca {
      let pem: String
      do { pem = try String(contentsOfFile: ca, encoding: .utf8) } catch {
        throw ValidationError("--ca \(ca): cannot read it (\(error.localizedDescription))")
      }
      guard pem.contains("-----BEGIN CERTIFICATE-----") else { throw ValidationError("--ca \(ca): no PEM certificate in it") }
      mode = .manual(PodInjector(configuration: mesh.configuration(trustRootsPEM: pem)))
    }
    try transformManifests(files, mode: mode, output: output)
  }
}

struct UninjectCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "uninject",
    abstract: "Remove what inject added (proxy, init container, volumes, annotations) from manifests; print the result.")

  @Argument(help: "Manifest files, or - for standard input.")
  var files: [String]
  @Option(name: [.short, .customLong("output")], help: "yaml or json")
  var output = "yaml"

  func validate() throws {
    guard ["yaml", "json"].contains(output) else { throw ValidationError("--output must be yaml or json, not '\(output)'") }
  }

  func run() async throws {
    try transformManifests(files, mode: .uninject, output: output)
  }
}

/// Reads every file (or standard input), transforms its documents, prints them, and reports each object on
/// standard error. Nothing is printed when any input is unreadable or invalid.
func transformManifests(_ files: [String], mode: ManifestInjector.Mode, output: String) throws {
  guard !files.isEmpty else { throw ValidationError("name at least one file, or - for standard input") }
  var documents: [JSONValue] = []
  for file in files {
    let data: Data
    if file == "-" {
      data = FileHandle.standardInput.readDataToEndOfFile()
    } else {
      guard let read = FileManager.default.contents(atPath: file) else { throw ValidationError("\(file): cannot read it") }
      data = read
    }
    do {
      documents += try KubeManifest.documents(String(decoding: data, as: UTF8.self), source: file == "-" ? "stdin" : file)
    } catch {
      throw ValidationError(error.description)
    }
  }
  let result: (documents: [JSONValue], outcomes: [ManifestInjector.Outcome])
  do { result = try ManifestInjector(mode: mode).transform(documents) } catch { throw ValidationError(error.description) }
  print(output == "json" ? try KubeManifest.json(result.documents) : try KubeManifest.yaml(result.documents), terminator: "")
  for outcome in result.outcomes {
    FileHandle.standardError.write(Data("\(outcome)\n".utf8))
  }
}
