import MeshCore
@testable import MeshDestination
import MeshDiscovery
import Testing

@Suite("Endpoint stream state machine")
struct StateMachineTests {
  func ep(_ last: Int, weight: UInt32 = 10_000) -> Endpoint {
    Endpoint(address: try! Authority(host: "10.0.0.\(last)", port: 80), weight: weight)
  }
  func set(_ lasts: [Int]) -> EndpointSet { EndpointSet(exists: true, endpoints: lasts.map { ep($0) }) }

  @Test("the first message carries the whole state", arguments: [
    (EndpointSet(exists: false), [EndpointUpdate.noEndpoints(exists: false)]),
    (EndpointSet(exists: true), [.noEndpoints(exists: true)]),
  ])
  func firstEmpty(target: EndpointSet, expected: [EndpointUpdate]) {
    var machine = EndpointStreamStateMachine()
    #expect(machine.next(target) == expected)
    #expect(machine.next(target) == [], "a repeated state sends nothing")
  }

  @Test("the first non-empty set is one add of every endpoint")
  func firstAdd() {
    var machine = EndpointStreamStateMachine()
    #expect(machine.next(set([3, 1, 2])) == [.add([ep(1), ep(2), ep(3)])])
  }

  @Test("changes are sent as a remove of the gone and an add of the new or changed")
  func diffs() {
    var machine = EndpointStreamStateMachine()
    _ = machine.next(set([1, 2, 3]))
    #expect(machine.next(set([1, 2, 3, 4, 5])) == [.add([ep(4), ep(5)])])
    #expect(machine.next(set([1, 2])) == [.remove([ep(3), ep(4), ep(5)].map(\.address))])
    #expect(machine.next(set([2, 6])) == [.remove([ep(1).address]), .add([ep(6)])])
    let reweighted = EndpointSet(exists: true, endpoints: [ep(2, weight: 5), ep(6)])
    #expect(machine.next(reweighted) == [.add([ep(2, weight: 5)])], "a changed endpoint is re-added, not removed")
    #expect(machine.next(reweighted) == [])
  }

  @Test("every transition between nothing, empty, missing and populated", arguments: [
    // (from, to, expected)
    (EndpointSet(exists: true), EndpointSet(exists: false), [EndpointUpdate.noEndpoints(exists: false)]),
    (EndpointSet(exists: false), EndpointSet(exists: true), [.noEndpoints(exists: true)]),
    (EndpointSet(exists: true, endpoints: [Endpoint(address: try! Authority("10.0.0.1:80"))]), EndpointSet(exists: true), [.noEndpoints(exists: true)]),
    (EndpointSet(exists: true, endpoints: [Endpoint(address: try! Authority("10.0.0.1:80"))]), EndpointSet(exists: false), [.noEndpoints(exists: false)]),
    (EndpointSet(exists: false), EndpointSet(exists: true, endpoints: [Endpoint(address: try! Authority("10.0.0.1:80"))]), [.add([Endpoint(address: try! Authority("10.0.0.1:80"))])]),
    (EndpointSet(exists: true), EndpointSet(exists: true, endpoints: [Endpoint(address: try! Authority("10.0.0.1:80"))]), [.add([Endpoint(address: try! Authority("10.0.0.1:80"))])]),
  ])
  func transitions(from: EndpointSet, to: EndpointSet, expected: [EndpointUpdate]) {
    var machine = EndpointStreamStateMachine()
    _ = machine.next(from)
    #expect(machine.next(to) == expected)
  }

  @Test("a builder fed the messages reproduces every target set")
  func roundTrip() {
    var machine = EndpointStreamStateMachine()
    var builder = EndpointSetBuilder()
    let targets = [set([1]), set([1, 2, 3, 4, 5]), set([1, 2]), EndpointSet(exists: true), set([7]), .doesNotExist, set([1, 9])]
    for target in targets {
      for update in machine.next(target) { builder.apply(update) }
      #expect(builder.snapshot == target)
    }
  }

  @Test("updates survive the wire form")
  func proto() throws {
    let rich = Endpoint(
      address: try Authority("10.0.0.1:80"), weight: 7,
      tlsIdentity: try IdentityName("web.app.serviceaccount.identity.swiftmesh.cluster.local"), protocolHint: .http2,
      authorityOverride: try Authority("web.app.svc.cluster.local:80"), metricLabels: ["pod": "web-1"])
    for update in [EndpointUpdate.add([rich, ep(2)]), .remove([ep(3).address]), .noEndpoints(exists: true), .noEndpoints(exists: false)] {
      #expect(try EndpointUpdate(proto: update.proto) == update)
    }
  }
}
