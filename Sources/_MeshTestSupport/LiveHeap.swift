import CMeshMalloc

/// Bytes this process has allocated with malloc and not freed (all arenas, and mmapped chunks), in kB; 0
/// where the C library cannot say. Unlike RSS it does not move with what the allocator keeps of freed
/// memory: memory that requests leave behind shows here as their count times its size.
public func liveHeapKB() -> Int {
  Int(cmeshmalloc_live_bytes() / 1024)
}
