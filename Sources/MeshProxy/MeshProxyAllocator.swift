#if canImport(Glibc)
import Glibc
#endif

/// Process-wide allocator settings for a sidecar.
public enum MeshProxyAllocator {
  /// Limits glibc's malloc to `arenas` arenas (`mallopt(M_ARENA_MAX, …)`, as `MALLOC_ARENA_MAX=2` would).
  /// glibc creates up to eight arenas per core for the threads that allocate; a proxy's event loops and
  /// Swift's task threads then keep freed memory spread over many arenas, and RSS creeps up with traffic that
  /// churns objects (many distinct destinations, say) although nothing leaks. Call once, early. Does nothing
  /// where glibc's `mallopt` is not there.
  public static func limitArenas(_ arenas: Int32 = 2) {
    #if canImport(Glibc)
    // `mallopt` is declared in <malloc.h>, which the Glibc module does not export: look it up.
    typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(nil, "mallopt") else { return }
    let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
    let M_ARENA_MAX: Int32 = -8
    _ = mallopt(M_ARENA_MAX, arenas)
    #endif
  }
}
