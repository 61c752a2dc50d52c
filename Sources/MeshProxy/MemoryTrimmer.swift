import CMeshMalloc

/// Gives memory that malloc holds free back to the system once there is enough of it to matter.
///
/// glibc keeps what a program frees in its arenas for reuse, and gives back only what sits at an arena's top.
/// After a flood of connections ends, their buffers are free but scattered between live allocations, so the
/// process keeps them (tens of megabytes) until the next flood. `malloc_trim(0)` releases the free pages inside
/// the arenas too. It walks every arena, so it runs from a timer, not per connection.
struct MemoryTrimmer: Sendable {
  /// Free bytes in malloc's arenas above which a trim is worth its walk.
  var threshold: Int

  /// Bytes malloc's arenas hold free now (0 where the C library cannot say).
  static var freeBytes: Int { Int(cmeshmalloc_free_bytes()) }

  /// Trims when more than ``threshold`` bytes are free; returns the free bytes it found then, or nil if it did
  /// not trim (too little free, or nothing could be given back).
  func trimIfWorthIt() -> Int? {
    let free = Self.freeBytes
    guard free > threshold else { return nil }
    return cmeshmalloc_trim() == 1 ? free : nil
  }
}
