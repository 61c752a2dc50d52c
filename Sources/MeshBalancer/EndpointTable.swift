/// The endpoints of a ``P2CBalancer`` by slot, and the slot of each endpoint.
///
/// Slot reads are on the pick path, so the endpoints live in a manually managed buffer: reading
/// one needs only `Endpoint`'s own metadata, never a generic-metadata look-up of an `Array` or
/// `Optional` of it.
///
/// Not thread-safe by itself: ``P2CBalancer`` only touches it while holding its state lock.
final class EndpointTable<Endpoint: Hashable & Sendable>: @unchecked Sendable {
  private var storage: UnsafeMutablePointer<Endpoint>
  private var capacity: Int
  /// Which slots of `storage` are initialized.
  private(set) var occupied: [Bool] = []
  /// The slot of every endpoint in a slot (active or draining).
  private(set) var index: [Endpoint: Int] = [:]

  init() {
    self.capacity = 4
    self.storage = .allocate(capacity: self.capacity)
  }

  deinit {
    for (slot, isOccupied) in self.occupied.enumerated() where isOccupied {
      (self.storage + slot).deinitialize(count: 1)
    }
    self.storage.deallocate()
  }

  /// The endpoint in `slot`, which must be occupied.
  func endpoint(at slot: Int) -> Endpoint {
    precondition(slot < self.occupied.count && self.occupied[slot], "slot \(slot) is empty")
    return self.storage[slot]
  }

  /// The slot of `endpoint`, if it is in one.
  func slot(of endpoint: Endpoint) -> Int? {
    self.index[endpoint]
  }

  /// Puts `endpoint` into the empty `slot`.
  func set(_ endpoint: Endpoint, at slot: Int) {
    if slot >= self.capacity {
      let capacity = max(self.capacity * 2, slot + 1)
      let storage = UnsafeMutablePointer<Endpoint>.allocate(capacity: capacity)
      for (occupiedSlot, isOccupied) in self.occupied.enumerated() where isOccupied {
        (storage + occupiedSlot).moveInitialize(from: self.storage + occupiedSlot, count: 1)
      }
      self.storage.deallocate()
      self.storage = storage
      self.capacity = capacity
    }
    if slot >= self.occupied.count {
      self.occupied.append(contentsOf: repeatElement(false, count: slot + 1 - self.occupied.count))
    }
    precondition(!self.occupied[slot], "slot \(slot) is occupied")
    (self.storage + slot).initialize(to: endpoint)
    self.occupied[slot] = true
    self.index[endpoint] = slot
  }

  /// Empties `slot`.
  func clear(slot: Int) {
    precondition(self.occupied[slot], "slot \(slot) is already empty")
    let endpoint = (self.storage + slot).move()
    self.occupied[slot] = false
    self.index.removeValue(forKey: endpoint)
  }
}
