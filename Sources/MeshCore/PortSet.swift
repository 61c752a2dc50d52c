/// A set of TCP ports written as Kubernetes annotations and proxy flags write them: a comma-separated list of
/// ports and inclusive ranges, `25,587,4000-4100`.
public struct PortSet: Sendable, Hashable, CustomStringConvertible {
  /// The ranges, in the order given.
  public private(set) var ranges: [ClosedRange<Int>]

  public init(_ ports: some Sequence<Int>) {
    ranges = ports.map { $0...$0 }
  }

  public init(ranges: [ClosedRange<Int>]) {
    self.ranges = ranges
  }

  /// Parses `25,587,4000-4100`; spaces around items are ignored and an empty text is the empty set. An item
  /// that is not a port in 1-65535 or a `low-high` range is an `invalidArgument` error naming it.
  public init(parsing text: String) throws(MeshError) {
    var ranges: [ClosedRange<Int>] = []
    for item in text.split(separator: ",") {
      let trimmed = item.filter { $0 != " " && $0 != "\t" }
      if trimmed.isEmpty { continue }
      let bounds = trimmed.split(separator: "-", omittingEmptySubsequences: false)
      guard bounds.count <= 2, let lower = Int(bounds[0]), let upper = Int(bounds[bounds.count - 1]),
        (1...65_535).contains(lower), (1...65_535).contains(upper), lower <= upper
      else {
        throw MeshError.invalidArgument("'\(trimmed)' is not a port (1-65535) or a port range (low-high)")
      }
      ranges.append(lower...upper)
    }
    self.ranges = ranges
  }

  public func contains(_ port: Int) -> Bool { ranges.contains { $0.contains(port) } }

  public var isEmpty: Bool { ranges.isEmpty }

  public var description: String {
    ranges.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
      .joined(separator: ",")
  }

  /// The ports Linkerd treats as opaque by default: server-speaks-first protocols (SMTP, MySQL, Galera,
  /// PostgreSQL, Redis, Elasticsearch, memcached), which protocol detection would make wait.
  public static let defaultOpaquePorts = PortSet([25, 587, 3306, 4444, 5432, 6379, 9300, 11211])
}
