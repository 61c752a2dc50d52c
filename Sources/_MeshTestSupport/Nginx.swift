public import Foundation

/// nginx as a backend on loopback: HTTP/1.1 with PUT (WebDAV) into its own root, and a second port that
/// speaks HTTP/2 with prior knowledge (h2c). Every response carries `x-served-by: <name>`.
public final class Nginx: Sendable {
  public let root: TemporaryDirectory
  public let http1Port: Int
  public let http2Port: Int
  private let process: BackgroundProcess

  /// `httpDirectives` go into the `http` block as written (e.g. `keepalive_requests 20;`).
  public init(
    http1Port: Int, http2Port: Int, name: String = "nginx", httpDirectives: String = "", workerConnections: Int = 256
  ) throws {
    guard Subprocess.which("nginx") != nil || FileManager.default.isExecutableFile(atPath: "/usr/sbin/nginx") else {
      throw TestFailure("nginx is not installed")
    }
    let root = try TemporaryDirectory(prefix: "swiftmesh-nginx")
    // nginx's workers run as an unprivileged user: they must be able to write the root and temp dirs.
    for directory in ["www", "body", "proxy", "fastcgi", "uwsgi", "scgi"] {
      try FileManager.default.createDirectory(atPath: root.file(directory), withIntermediateDirectories: true)
      try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: root.file(directory))
    }
    try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: root.path)
    try "hello from \(name)\n".write(toFile: root.file("www/index.html"), atomically: true, encoding: .utf8)
    let config = """
      worker_processes 1;
      error_log \(root.file("error.log")) warn;
      pid \(root.file("nginx.pid"));
      events { worker_connections \(workerConnections); }
      http {
        access_log \(root.file("access.log"));
        client_body_temp_path \(root.file("body"));
        proxy_temp_path \(root.file("proxy"));
        fastcgi_temp_path \(root.file("fastcgi"));
        uwsgi_temp_path \(root.file("uwsgi"));
        scgi_temp_path \(root.file("scgi"));
        client_max_body_size 64m;
        \(httpDirectives)
        server {
          listen 127.0.0.1:\(http1Port);
          listen 127.0.0.1:\(http2Port) http2;
          root \(root.file("www"));
          location / {
            dav_methods PUT DELETE;
            create_full_put_path on;
            add_header x-served-by \(name) always;
          }
        }
      }
      """
    try config.write(toFile: root.file("nginx.conf"), atomically: true, encoding: .utf8)
    self.root = root
    self.http1Port = http1Port
    self.http2Port = http2Port
    let binary = Subprocess.which("nginx") ?? "/usr/sbin/nginx"
    self.process = try BackgroundProcess(binary, ["-p", root.path, "-c", root.file("nginx.conf"), "-g", "daemon off;"])
  }

  /// nginx on two distinct free ports.
  public static func start(
    name: String = "nginx", httpDirectives: String = "", workerConnections: Int = 256
  ) async throws -> Nginx {
    let ports = try await MeshTLSEcho.freePorts(2)
    return try Nginx(
      http1Port: ports[0], http2Port: ports[1], name: name, httpDirectives: httpDirectives,
      workerConnections: workerConnections)
  }

  /// Waits until nginx answers on its HTTP/1.1 port.
  public func waitUntilServing(timeout: Duration = .seconds(10)) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      let probe = try await Subprocess.run("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(http1Port)/"])
      if probe.stdout == "200" { return }
      try await Task.sleep(for: .milliseconds(50))
    }
    throw TestFailure("nginx did not start: \(process.printed)\n\((try? String(contentsOfFile: root.file("error.log"), encoding: .utf8)) ?? "")")
  }

  /// What nginx wrote to its error log so far.
  public var errorLog: String { (try? String(contentsOfFile: root.file("error.log"), encoding: .utf8)) ?? "" }

  public func stop() {
    process.terminate()
    root.remove()
  }
}
