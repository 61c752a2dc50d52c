import NIOCore
import NIOHPACK

/// An HPACK encoder (RFC 7541) for header blocks the proxy writes itself: the first part of the proxy's own
/// HTTP/2 connection code for mesh hops (``HTTP2ConnectionHandler``), which takes the place of swift-nio-http2's
/// `NIOHTTP2Handler` there. That handler encodes with swift-nio-hpack's `HPACKEncoder` and takes no block encoded elsewhere;
/// through the mTLS pair its encoder was about 12,600 instructions for a request's nine fields, most of it
/// finding each field: the static table is a dictionary whose keys hash a byte at a time, and the dynamic
/// table is scanned from end to end (`Benchmarks/load/instructions.sh`).
///
/// Here one dictionary, keyed by name, finds a field in both tables with one hash of its name:
/// - its entry holds the name's first static index, the static table's values for it (`:method`, `:status`,
///   ...), and the name's dynamic-table entries, oldest first;
/// - a field is sent as an index when a table holds it whole, else as a literal that names it by index when a
///   table holds the name (a static index first, it never moves), else as a literal with its name;
/// - a literal is added to the dynamic table (incremental indexing) unless its `HPACKIndexing` says otherwise
///   or it is larger than the whole table; a field marked `neverIndexed` stays so (RFC 7541 section 7.1.3);
/// - strings are written as they are, without Huffman coding (valid HPACK, and what RFC 7541 appendices C.3
///   and C.5 show): a repeated field costs one or two bytes either way, and the CPU is what a proxy saves.
///
/// The dynamic table is at most the size the peer allows (`SETTINGS_HEADER_TABLE_SIZE`, 4,096 until it says)
/// and at most the size this side chooses; a change is told at the start of the next block (section 4.2,
/// the smallest size reached first when the table shrank and grew again). Used on one event loop.
struct HPACKBlockEncoder {
  /// The size of the table the peer's decoder holds until its SETTINGS say otherwise (RFC 7540 section 6.5.2).
  static let defaultTableSize = 4096

  /// The largest dynamic table this encoder uses, whatever the peer allows.
  let preferredTableSize: Int
  /// What the peer's decoder allows (its SETTINGS_HEADER_TABLE_SIZE).
  private(set) var peerTableSize = HPACKBlockEncoder.defaultTableSize
  /// The size the dynamic table is held to now: the smaller of the two.
  private(set) var tableSize: Int
  /// The bytes the table's entries count (name, value and 32 each: section 4.1).
  private(set) var tableLength = 0
  /// A size change the peer has not heard of yet: the smallest size since the last block.
  private var pendingSmallest: Int?

  /// The dynamic table, oldest first.
  private var table = CircularBuffer<Entry>(initialCapacity: 16)
  /// How many entries were ever added: the newest has sequence number `insertions - 1`, index 62.
  private var insertions = 0
  /// Every name either table holds, and names that left the dynamic table since the last clean-up.
  private var names: NameTable

  private struct Entry {
    var name: String
    /// Its name's place in ``names``.
    var slot: Int
    var value: String
    var length: Int
  }

  fileprivate struct Name {
    var name: String
    var hash: UInt64
    /// The name's first index in the static table, 0 when it has none.
    var staticIndex = 0
    /// The static entries of this name (index, value; the value is empty for most).
    var staticValues: [(index: Int, value: String)] = []
    /// The sequence numbers of this name's dynamic entries, oldest first, with their values.
    var dynamic: [(sequence: Int, value: String)] = []
  }

  /// - Parameter preferredTableSize: the largest dynamic table to use (0: none; every field is then an index
  ///   into the static table or a literal).
  init(preferredTableSize: Int = HPACKBlockEncoder.defaultTableSize) {
    precondition(preferredTableSize >= 0, "a table size is not negative")
    self.preferredTableSize = preferredTableSize
    self.tableSize = min(preferredTableSize, Self.defaultTableSize)
    self.names = Self.staticNames
    if tableSize != Self.defaultTableSize { pendingSmallest = tableSize }
  }

  /// The peer's SETTINGS_HEADER_TABLE_SIZE arrived: the table shrinks at once if it must, and the next block
  /// starts by telling the decoder the size used.
  mutating func peerAllows(tableSize allowed: Int) {
    peerTableSize = max(allowed, 0)
    let size = min(preferredTableSize, peerTableSize)
    guard size != tableSize else { return }
    tableSize = size
    evict(toFit: 0)
    pendingSmallest = min(pendingSmallest ?? size, size)
  }

  /// Encodes one header block: every field of `headers` with its own indexing. The block is written into
  /// room reserved once for all of it.
  mutating func encode(_ headers: HPACKHeaders, into buffer: inout ByteBuffer) {
    // Two size updates, then for each field its strings and at most 6 bytes for each of its three integers
    // (a length under 2^28).
    var bound = 12
    for field in headers { bound &+= field.name.utf8.count &+ field.value.utf8.count &+ 18 }
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { out in
      var at = storeSizeUpdate(into: out)
      for field in headers {
        at = store(name: field.name, value: field.value, indexing: field.indexable, into: out, at: at)
      }
      return at
    }
  }

  /// Begins a header block: any table size change not yet told comes first (section 4.2). Every block starts
  /// here, before its first ``append(name:value:indexing:into:)``.
  mutating func startBlock(into buffer: inout ByteBuffer) {
    guard pendingSmallest != nil else { return }
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 12) { storeSizeUpdate(into: $0) }
  }

  /// Encodes one field of the block begun by ``startBlock(into:)``. `name` is lowercase, as HTTP/2 has it.
  mutating func append(name: String, value: String, indexing: HPACKIndexing = .indexable, into buffer: inout ByteBuffer) {
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: name.utf8.count + value.utf8.count + 18) { out in
      store(name: name, value: value, indexing: indexing, into: out, at: 0)
    }
  }

  private mutating func storeSizeUpdate(into out: UnsafeMutableRawBufferPointer) -> Int {
    guard let smallest = pendingSmallest else { return 0 }
    pendingSmallest = nil
    var at = 0
    if smallest < tableSize { at = Self.storeInteger(smallest, prefix: 5, flags: 0x20, into: out, at: at) }
    return Self.storeInteger(tableSize, prefix: 5, flags: 0x20, into: out, at: at)
  }

  /// One field into memory with room for it (its strings and 18 bytes): returns where the next byte goes.
  private mutating func store(
    name: String, value: String, indexing: HPACKIndexing, into out: UnsafeMutableRawBufferPointer, at start: Int
  ) -> Int {
    let hash = NameTable.hash(name)
    let slot = names.find(name, hash: hash)
    var nameIndex = 0
    if let slot {
      // Whole: the static table (it never moves), then the dynamic table, newest first. A field never to be
      // indexed is sent as the literal it came as.
      if indexing != .neverIndexed, let index = names.wholeIndex(slot, value: value, insertions: insertions) {
        return Self.storeInteger(index, prefix: 7, flags: 0x80, into: out, at: start)
      }
      nameIndex = names.nameIndex(slot, insertions: insertions)
    }
    let nameLength = name.utf8.count
    let valueLength = value.utf8.count
    let length = nameLength + valueLength + 32
    let indexed = indexing == .indexable && length <= tableSize
    // Prefix: 01 with incremental indexing (6 bits), 0001 never indexed, 0000 without indexing (4 bits).
    var at: Int
    if indexed {
      at = Self.storeInteger(nameIndex, prefix: 6, flags: 0x40, into: out, at: start)
    } else {
      at = Self.storeInteger(nameIndex, prefix: 4, flags: indexing == .neverIndexed ? 0x10 : 0x00, into: out, at: start)
    }
    if nameIndex == 0 { at = Self.storeString(name, length: nameLength, into: out, at: at) }
    at = Self.storeString(value, length: valueLength, into: out, at: at)
    if indexed { insert(name: name, hash: hash, slot: slot, value: value, length: length) }
    return at
  }

  /// How many names the encoder holds (tests: it stays bounded whatever names come).
  var namesHeld: Int { names.count }

  /// The dynamic table's entries, newest first (index 62 onwards): tests.
  var dynamicEntries: [(name: String, value: String)] {
    table.reversed().map { ($0.name, $0.value) }
  }

  // MARK: The dynamic table

  /// Adds a field to the dynamic table; `slot` is its name's place in ``names`` when it has one.
  private mutating func insert(name: String, hash: UInt64, slot known: Int?, value: String, length: Int) {
    evict(toFit: length)
    let slot: Int
    if let known {
      slot = known
    } else {
      // Names that left both tables stay in `names` until there are 64 of them.
      if names.count >= Self.staticNames.count + table.count + 64 { forgetUnusedNames() }
      slot = names.add(Name(name: name, hash: hash))
    }
    table.append(Entry(name: name, slot: slot, value: value, length: length))
    tableLength += length
    names[slot].dynamic.append((insertions, value))
    insertions += 1
  }

  /// Drops the oldest entries until `length` more bytes fit.
  private mutating func evict(toFit length: Int) {
    while tableLength + length > tableSize, let oldest = table.popFirst() {
      tableLength -= oldest.length
      // The oldest entry of the table is the oldest of its name.
      names[oldest.slot].dynamic.removeFirst()
    }
  }

  /// Makes ``names`` again from the static names and the dynamic table's: what fields with ever new names
  /// would add is dropped, so the names held stay bounded by the tables (every 64 new names, a pass over at
  /// most the 61 static entries and the dynamic table's).
  private mutating func forgetUnusedNames() {
    var kept = Self.staticNames
    let first = insertions - table.count
    for offset in table.indices {
      let entry = table[offset]
      let hash = names[entry.slot].hash
      let slot = kept.find(entry.name, hash: hash) ?? kept.add(Name(name: entry.name, hash: hash))
      kept[slot].dynamic.append((first + table.distance(from: table.startIndex, to: offset), entry.value))
      table[offset].slot = slot
    }
    names = kept
  }

  // MARK: Primitives (RFC 7541 section 5)

  /// An integer with an N-bit prefix; `flags` fills the first byte's bits above it.
  static func writeInteger(_ value: Int, prefix: Int, flags: UInt8, into buffer: inout ByteBuffer) {
    let limit = (1 << prefix) - 1
    if value < limit {
      buffer.writeInteger(flags | UInt8(value))
      return
    }
    buffer.writeInteger(flags | UInt8(limit))
    var rest = value - limit
    while rest >= 128 {
      buffer.writeInteger(UInt8(rest & 0x7F | 0x80))
      rest >>= 7
    }
    buffer.writeInteger(UInt8(rest))
  }

  /// A string literal as it is (H = 0).
  static func writeString(_ string: String, into buffer: inout ByteBuffer) {
    writeInteger(string.utf8.count, prefix: 7, flags: 0, into: &buffer)
    buffer.writeString(string)
  }

  /// ``writeInteger(_:prefix:flags:into:)`` into memory that has room: returns where the next byte goes.
  private static func storeInteger(
    _ value: Int, prefix: Int, flags: UInt8, into out: UnsafeMutableRawBufferPointer, at start: Int
  ) -> Int {
    let limit = (1 << prefix) - 1
    if value < limit {
      out[start] = flags | UInt8(value)
      return start + 1
    }
    out[start] = flags | UInt8(limit)
    var at = start + 1
    var rest = value - limit
    while rest >= 128 {
      out[at] = UInt8(rest & 0x7F | 0x80)
      rest >>= 7
      at += 1
    }
    out[at] = UInt8(rest)
    return at + 1
  }

  /// ``writeString(_:into:)`` into memory that has room: returns where the next byte goes.
  private static func storeString(_ string: String, length: Int, into out: UnsafeMutableRawBufferPointer, at start: Int)
    -> Int
  {
    let at = storeInteger(length, prefix: 7, flags: 0, into: out, at: start)
    UnsafeMutableRawBufferPointer(rebasing: out[at..<at + length]).copyBytes(from: string.utf8)
    return at + length
  }

  // MARK: The static table (RFC 7541 appendix A)

  /// Index 1 is the first entry.
  static let staticTable: [(name: String, value: String)] = [
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
  ]

  /// The static table by name: each name's first index, and its entries.
  private static let staticNames: NameTable = {
    var names = NameTable()
    for (offset, entry) in staticTable.enumerated() {
      let index = offset + 1
      let hash = NameTable.hash(entry.name)
      let slot = names.find(entry.name, hash: hash) ?? names.add(Name(name: entry.name, hash: hash, staticIndex: index))
      names[slot].staticValues.append((index, entry.value))
    }
    return names
  }()
}

/// The names an ``HPACKBlockEncoder`` knows, found by a hash of their bytes eight at a time: a dictionary keyed
/// by `String` hashed each name with SipHash, about 300 instructions a field (a third of the encoder's cost).
/// Open addressing with linear probing; names are only added (the encoder starts over from the static names to
/// drop them). The hash is seeded per process, so that which names collide cannot be chosen from outside.
private struct NameTable {
  private(set) var names: [HPACKBlockEncoder.Name] = []
  /// Index into `names` plus one; 0 is empty. A power of two, at most half full.
  private var slots = [Int32](repeating: 0, count: 256)

  private static let seed = UInt64.random(in: .min ... .max)

  var count: Int { names.count }

  subscript(slot: Int) -> HPACKBlockEncoder.Name {
    get { names[slot] }
    _modify { yield &names[slot] }
  }

  /// The index of a table entry with this name and `value`, if one has it: the static table first, then the
  /// dynamic table, newest first (`insertions`: the encoder's count). Read in place, without a copy.
  func wholeIndex(_ slot: Int, value: String, insertions: Int) -> Int? {
    names.withUnsafeBufferPointer { names in
      for entry in names[slot].staticValues where entry.value == value { return entry.index }
      let dynamic = names[slot].dynamic
      var at = dynamic.count
      while at > 0 {
        at -= 1
        if dynamic[at].value == value { return HPACKBlockEncoder.staticTable.count + insertions - dynamic[at].sequence }
      }
      return nil
    }
  }

  /// The index that names this name: its static one, else its newest dynamic entry's, else 0.
  func nameIndex(_ slot: Int, insertions: Int) -> Int {
    let name = names[slot]
    if name.staticIndex > 0 { return name.staticIndex }
    guard let newest = name.dynamic.last else { return 0 }
    return HPACKBlockEncoder.staticTable.count + insertions - newest.sequence
  }

  static func hash(_ name: String) -> UInt64 {
    var name = name
    return name.withUTF8 { bytes in
      var hash = seed ^ UInt64(bytes.count)
      var at = 0
      let raw = UnsafeRawBufferPointer(bytes)
      while at + 8 <= raw.count {
        hash = (hash ^ raw.loadUnaligned(fromByteOffset: at, as: UInt64.self)) &* 0x9E37_79B9_7F4A_7C15
        hash ^= hash >> 29
        at += 8
      }
      var tail: UInt64 = 0
      if raw.count >= 8 {
        // The last eight bytes, overlapping what was hashed.
        if at < raw.count { tail = raw.loadUnaligned(fromByteOffset: raw.count - 8, as: UInt64.self) }
      } else {
        var shift: UInt64 = 0
        for byte in raw {
          tail |= UInt64(byte) << shift
          shift &+= 8
        }
      }
      hash = (hash ^ tail) &* 0x9E37_79B9_7F4A_7C15
      return hash ^ (hash >> 32)
    }
  }

  /// The place of `name` in `names`, if it is there.
  func find(_ name: String, hash: UInt64) -> Int? {
    let mask = slots.count - 1
    var at = Int(truncatingIfNeeded: hash) & mask
    while true {
      let slot = Int(slots[at])
      if slot == 0 { return nil }
      if names[slot - 1].hash == hash, names[slot - 1].name == name { return slot - 1 }
      at = (at + 1) & mask
    }
  }

  /// Adds a name that is not there: returns its place in `names`.
  mutating func add(_ name: HPACKBlockEncoder.Name) -> Int {
    if (names.count + 1) * 2 > slots.count { grow() }
    names.append(name)
    place(names.count - 1, hash: name.hash)
    return names.count - 1
  }

  private mutating func place(_ index: Int, hash: UInt64) {
    let mask = slots.count - 1
    var at = Int(truncatingIfNeeded: hash) & mask
    while slots[at] != 0 { at = (at + 1) & mask }
    slots[at] = Int32(index + 1)
  }

  private mutating func grow() {
    slots = [Int32](repeating: 0, count: slots.count * 2)
    for (index, name) in names.enumerated() { place(index, hash: name.hash) }
  }
}
