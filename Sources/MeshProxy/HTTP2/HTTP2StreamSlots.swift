import NIOHTTP2

/// Values by stream ID, looked up without hashing: a slot per ID in a power-of-two array (the ID's low bits; a
/// connection's open streams are a window of recent IDs), and a dictionary for the rare stream whose slot an
/// older, longer-lived one holds. The array grows to keep at most half its slots full. `HTTP2StreamTable` does
/// the same for stream objects; this is for the value-type state of ``HTTP2ConnectionHandler`` and
/// ``HTTP2SendWindows``, changed in place through `_modify` (no copy of a queue inside a value).
struct HTTP2StreamSlots<Value> {
  /// The ID in each slot, 0 for none (stream 0 is the connection, never a key here).
  private var ids: [Int32]
  private var values: [Value?]
  private var overflow: [HTTP2StreamID: Value] = [:]
  /// Always nil: what an access to an absent stream's value yields.
  private var absent: Value?
  private(set) var count = 0

  init(capacity: Int = 16) {
    ids = Array(repeating: 0, count: capacity)
    values = Array(repeating: nil, count: capacity)
  }

  var isEmpty: Bool { count == 0 }

  private func slot(_ id: HTTP2StreamID) -> Int { Int(Int32(id)) & (ids.count - 1) }

  subscript(id: HTTP2StreamID) -> Value? {
    get {
      let slot = slot(id)
      if ids[slot] == Int32(id) { return values[slot] }
      return overflow.isEmpty ? nil : overflow[id]
    }
    _modify {
      let slot = slot(id)
      if ids[slot] == Int32(id) {
        yield &values[slot]
        if values[slot] == nil {
          ids[slot] = 0
          count -= 1
        }
      } else if !overflow.isEmpty, overflow[id] != nil {
        yield &overflow[id]
        if overflow[id] == nil { count -= 1 }
      } else {
        // Yielded from storage, not a local: a coroutine's frame holding a `Value?` is too large for the room
        // its caller gives, and was allocated with malloc on every access (four a request through the pair).
        yield &absent
        if let value = absent.take() { insert(value, for: id) }
      }
    }
    set {
      if let newValue {
        let slot = slot(id)
        if ids[slot] == Int32(id) {
          values[slot] = newValue
        } else if !overflow.isEmpty, overflow[id] != nil {
          overflow[id] = newValue
        } else {
          insert(newValue, for: id)
        }
      } else {
        removeValue(forKey: id)
      }
    }
  }

  /// `body` on the value of stream `id` in place, or nil when there is none. The way to change a value on a
  /// request's path: the subscript's `_modify` is a coroutine, and its frame, too large for the room its
  /// caller gives, was allocated with malloc on every access.
  @inline(__always) @discardableResult
  mutating func update<Result>(_ id: HTTP2StreamID, _ body: (inout Value) -> Result) -> Result? {
    let slot = slot(id)
    if ids[slot] == Int32(id) { return body(&values[slot]!) }
    guard !overflow.isEmpty, overflow[id] != nil else { return nil }
    return body(&overflow[id]!)
  }

  @discardableResult
  mutating func removeValue(forKey id: HTTP2StreamID) -> Value? {
    let slot = slot(id)
    if ids[slot] == Int32(id) {
      ids[slot] = 0
      count -= 1
      return values[slot].take()
    }
    guard !overflow.isEmpty, let value = overflow.removeValue(forKey: id) else { return nil }
    count -= 1
    return value
  }

  /// The IDs held, in no particular order.
  var keys: [HTTP2StreamID] {
    var keys: [HTTP2StreamID] = []
    keys.reserveCapacity(count)
    for id in ids where id != 0 { keys.append(HTTP2StreamID(id)) }
    keys.append(contentsOf: overflow.keys)
    return keys
  }

  /// Changes every value in place.
  mutating func updateAll(_ body: (inout Value) throws -> Void) rethrows {
    for slot in ids.indices where ids[slot] != 0 { try body(&values[slot]!) }
    for id in overflow.keys { try body(&overflow[id]!) }
  }

  /// Every value, in no particular order.
  var allValues: [Value] {
    var all = values.compactMap { $0 }
    all.append(contentsOf: overflow.values)
    return all
  }

  private mutating func insert(_ value: Value, for id: HTTP2StreamID) {
    if count >= ids.count / 2 { grow() }
    let slot = slot(id)
    if ids[slot] == 0 {
      ids[slot] = Int32(id)
      values[slot] = value
    } else {
      overflow[id] = value
    }
    count += 1
  }

  private mutating func grow() {
    var bigger = HTTP2StreamSlots(capacity: ids.count * 2)
    for slot in ids.indices where ids[slot] != 0 { bigger.insert(values[slot]!, for: HTTP2StreamID(ids[slot])) }
    for (id, value) in overflow { bigger.insert(value, for: id) }
    self = bigger
  }
}

extension Optional {
  fileprivate mutating func take() -> Wrapped? {
    defer { self = nil }
    return self
  }
}
